//! The poller's reads: the window at start, then only what changed since its last snapshot.
//!
//! Position in the journal is a PostgreSQL snapshot (`pg_snapshot`), not a sequence number: a
//! change is new when its transaction is visible now but was not visible in the previous
//! snapshot. A transaction that took its xid early and committed late is therefore still seen.

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::domain::Candle;

/// Where the poller is in the journal: the text form of a `pg_snapshot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position(pub String);

/// A minute that changed, with its candle as of the poll (`None`: it has no ticks any more).
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteChange {
    pub symbol: String,
    pub t: i64,
    pub candle: Option<Candle>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Changes {
    pub minutes: Vec<MinuteChange>,
    /// A TRUNCATE (or something else wholesale) happened: reload everything.
    pub reload: bool,
}

#[derive(sqlx::FromRow)]
struct CandleRecord {
    symbol: String,
    t: i64,
    open: Option<f64>,
    high: Option<f64>,
    low: Option<f64>,
    close: Option<f64>,
    volume: Option<f64>,
}

impl CandleRecord {
    fn candle(&self) -> Option<Candle> {
        Some(Candle {
            t: self.t,
            open: self.open?,
            high: self.high?,
            low: self.low?,
            close: self.close?,
            volume: self.volume.unwrap_or(0.0),
        })
    }
}

/// Every 1m candle since `since` for every symbol, and the position to read changes from.
#[tracing::instrument(name = "Load candle window", skip(pool))]
pub async fn load_window(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> anyhow::Result<(Position, Vec<(String, Candle)>)> {
    // One snapshot for both reads, so no change falls between them.
    let mut tx = pool.begin().await.context("starting the window read")?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .context("setting the window read's isolation")?;
    let position: String = sqlx::query_scalar("SELECT pg_current_snapshot()::text")
        .fetch_one(&mut *tx)
        .await
        .context("reading the journal position")?;
    let rows: Vec<CandleRecord> = sqlx::query_as(
        r#"
        SELECT symbol, extract(epoch FROM bucket)::bigint AS t, open, high, low, close, volume
        FROM one_min_candle
        WHERE bucket >= $1
        ORDER BY symbol, bucket
        "#,
    )
    .bind(since)
    .fetch_all(&mut *tx)
    .await
    .context("reading the candle window")?;
    tx.commit().await.context("ending the window read")?;
    let candles = rows
        .into_iter()
        .filter_map(|r| r.candle().map(|c| (r.symbol, c)))
        .collect();
    Ok((Position(position), candles))
}

/// The minutes changed by transactions committed since `from`, each recomputed from `ticks` by
/// `candlewick_minute_candle` (so an edit to an already-materialized TimescaleDB minute shows
/// at once), in one statement:
/// one round trip and one snapshot. The cost follows the number of changed minutes, never the
/// window or the number of viewers.
#[tracing::instrument(name = "Poll changes", skip_all)]
pub async fn poll_changes(pool: &PgPool, from: &Position) -> anyhow::Result<(Position, Changes)> {
    #[derive(sqlx::FromRow)]
    struct Row {
        position: String,
        wholesale: bool,
        symbol: Option<String>,
        t: Option<i64>,
        open: Option<f64>,
        high: Option<f64>,
        low: Option<f64>,
        close: Option<f64>,
        volume: Option<f64>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        r#"
        WITH prev AS (
            SELECT $1::text::pg_snapshot AS snap
        ),
        changed AS (
            SELECT DISTINCT c.symbol, c.bucket
            FROM candle_changes c, prev
            WHERE c.xid >= pg_snapshot_xmin(prev.snap)
              AND NOT pg_visible_in_snapshot(c.xid, prev.snap)
        )
        SELECT
            pg_current_snapshot()::text AS position,
            EXISTS (SELECT FROM changed WHERE symbol IS NULL) AS wholesale,
            k.symbol,
            extract(epoch FROM k.bucket)::bigint AS t,
            a.open, a.high, a.low, a.close, a.volume
        FROM (SELECT 1) AS one
        LEFT JOIN changed k ON k.symbol IS NOT NULL
        LEFT JOIN LATERAL candlewick_minute_candle(k.symbol, k.bucket) AS a ON true
        "#,
    )
    .bind(&from.0)
    .fetch_all(pool)
    .await
    .context("reading changed minutes")?;

    let mut changes = Changes::default();
    let mut position = from.clone();
    for row in rows {
        position = Position(row.position);
        changes.reload |= row.wholesale;
        let (Some(symbol), Some(t)) = (row.symbol, row.t) else {
            continue;
        };
        let rec = CandleRecord {
            symbol,
            t,
            open: row.open,
            high: row.high,
            low: row.low,
            close: row.close,
            volume: row.volume,
        };
        let candle = rec.candle();
        changes.minutes.push(MinuteChange {
            symbol: rec.symbol,
            t,
            candle,
        });
    }
    Ok((position, changes))
}

/// Forgets journal entries older than `keep`; a poller away longer than that reloads its window.
pub async fn prune(pool: &PgPool, keep: std::time::Duration) -> anyhow::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM candle_changes WHERE changed_at < now() - make_interval(secs => $1)",
    )
    .bind(keep.as_secs_f64())
    .execute(pool)
    .await
    .context("pruning the change journal")?;
    Ok(done.rows_affected())
}
