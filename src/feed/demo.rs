//! The demo feed: synthetic ticks, a geometric random walk per symbol. On an empty database it
//! first backfills a week through the bulk path, a day at a time, so the chart fills at once.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::db::audit::Author;
use crate::db::ticks;
use crate::domain::{Price, Symbol, Tick, Volume};

/// (symbol, starting price, typical trade size).
const MARKETS: [(&str, f64, f64); 3] = [
    ("BTC/USD", 61_000.0, 0.05),
    ("ETH/USD", 3_400.0, 0.8),
    ("SOL/USD", 145.0, 12.0),
];
/// Per-tick volatility of the log price (about 2 % a day for BTC/USD at two ticks a second).
const SIGMA: f64 = 0.000_05;
/// Per-tick pull of the log price back toward the market's starting price, so a week of
/// history stays around it instead of drifting away.
const REVERSION: f64 = 0.000_001;
/// Mean gap between live ticks (all symbols together): a few per second.
const LIVE_GAP: Duration = Duration::from_millis(300);
/// Share of live ticks that are BTC/USD (the rest split evenly).
const BTC_SHARE: f64 = 0.6;
/// Mean gap between backfilled ticks of one symbol.
const BACKFILL_GAP_SECS: f64 = 6.0;
const BACKFILL: TimeDelta = TimeDelta::days(7);
/// A start that finds the demo's newest tick older than this fills the time since (up to
/// [`BACKFILL`]): a backfill cut short by a stop, or the time the server was down.
const FILL_AFTER: TimeDelta = TimeDelta::minutes(1);

struct Walk {
    symbol: Symbol,
    price: f64,
    /// The price the walk reverts to.
    anchor: f64,
    size: f64,
}

impl Walk {
    /// The next trade at `time`; `scale` > 1 stands one tick in for that many live ones, so
    /// sparse history moves and trades as much per minute as the live feed does.
    fn step(&mut self, rng: &mut impl Rng, time: DateTime<Utc>, scale: f64) -> Option<Tick> {
        let pull = -REVERSION * scale * (self.price / self.anchor).ln();
        self.price *= (pull + SIGMA * scale.sqrt() * normal(rng)).exp();
        // Log-normal trade sizes: mostly small, sometimes large.
        let volume = scale * self.size * (0.9 * normal(rng)).exp();
        Some(Tick {
            time,
            symbol: self.symbol.clone(),
            price: Price::new((self.price * 100.0).round() / 100.0).ok()?,
            volume: Volume::new((volume * 10_000.0).round() / 10_000.0).ok()?,
        })
    }
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Runs until `stop`; database errors are logged and retried, never fatal. A stop during the
/// backfill ends it at once (the day being written is not stored); the next start goes on
/// from the last stored day.
pub async fn run(pool: PgPool, stop: CancellationToken) {
    let mut walks = loop {
        let prepared = tokio::select! {
            _ = stop.cancelled() => return,
            prepared = prepare(&pool) => prepared,
        };
        match prepared {
            Ok(w) => break w,
            Err(e) => {
                tracing::warn!(error = %e, "demo feed waiting for the database");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    tracing::info!(
        "demo feed: live ticks for {}",
        MARKETS.map(|m| m.0).join(", ")
    );
    let mut rng = SmallRng::from_rng(&mut rand::rng());
    loop {
        let gap = LIVE_GAP.mul_f64(rng.random_range(0.3..1.7));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(gap) => {}
        }
        // BTC/USD trades most.
        let i = if rng.random_bool(BTC_SHARE) {
            0
        } else {
            rng.random_range(1..walks.len())
        };
        let Some(tick) = walks[i].step(&mut rng, Utc::now(), 1.0) else {
            continue;
        };
        if let Err(e) = ticks::insert_ticks(&pool, &[tick], Author::DemoFeed).await {
            tracing::debug!(error = %e, "demo tick not written");
        }
    }
}

/// Picks up where the stored prices are, or backfills a week into an empty database; fills
/// the time since the demo's newest tick when that is over [`FILL_AFTER`] old.
async fn prepare(pool: &PgPool) -> anyhow::Result<Vec<Walk>> {
    let empty: bool = sqlx::query_scalar("SELECT NOT EXISTS (SELECT FROM ticks)")
        .fetch_one(pool)
        .await
        .context("checking for existing ticks")?;
    let newest: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT max(time) FROM ticks WHERE symbol = ANY($1)")
            .bind(MARKETS.map(|m| m.0).to_vec())
            .fetch_one(pool)
            .await
            .context("reading the demo's newest tick")?;
    let mut walks = Vec::new();
    for (symbol, start, size) in MARKETS {
        let last: Option<f64> = sqlx::query_scalar(
            "SELECT price FROM ticks WHERE symbol = $1 AND price > 0 ORDER BY time DESC LIMIT 1",
        )
        .bind(symbol)
        .fetch_optional(pool)
        .await
        .context("reading the last demo price")?
        .flatten();
        let symbol = Symbol::parse(symbol).map_err(|e| anyhow::anyhow!(e))?;
        walks.push(Walk {
            symbol,
            price: last.unwrap_or(start),
            anchor: start,
            size,
        });
    }
    let end = Utc::now();
    let start = end - BACKFILL;
    match newest {
        None if empty => backfill(pool, &mut walks, start, end).await?,
        Some(newest) if newest < end - FILL_AFTER => {
            backfill(pool, &mut walks, newest.max(start), end).await?;
        }
        _ => {}
    }
    Ok(walks)
}

/// Writes history from `start` to `end`, a day per transaction.
async fn backfill(
    pool: &PgPool,
    walks: &mut [Walk],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut rng = SmallRng::from_rng(&mut rand::rng());
    let mut total = 0u64;
    tracing::info!(from = %start, "demo feed: backfilling history");
    let span = end - start;
    let days = (span.num_seconds() + 86_399) / 86_400;
    for day in 0..days {
        let from = start + TimeDelta::days(day);
        let to = (from + TimeDelta::days(1)).min(end);
        let mut batch = Vec::new();
        for (i, w) in walks.iter_mut().enumerate() {
            let share = if i == 0 {
                BTC_SHARE
            } else {
                (1.0 - BTC_SHARE) / (MARKETS.len() - 1) as f64
            };
            let scale = BACKFILL_GAP_SECS / (LIVE_GAP.as_secs_f64() / share);
            let mut t = from;
            loop {
                let gap = -BACKFILL_GAP_SECS * rng.random_range(f64::EPSILON..1.0_f64).ln();
                t += TimeDelta::microseconds((gap.max(0.001) * 1e6) as i64);
                if t >= to {
                    break;
                }
                if let Some(tick) = w.step(&mut rng, t, scale) {
                    batch.push(tick);
                }
            }
        }
        total += ticks::insert_ticks(pool, &batch, Author::DemoFeed)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        tracing::info!(
            "demo feed: backfilled day {}/{days} ({total} ticks)",
            day + 1
        );
    }
    tracing::info!(ticks = total, elapsed = ?started.elapsed(), "demo feed: backfill done");
    Ok(())
}
