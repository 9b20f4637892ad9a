//! The polling actor: exactly one per server. It owns the candle window and the broadcast
//! channels; viewers talk to it by messages. Each poll reads only what changed since the last
//! one (see `db::journal`), so its database cost follows the changes, not the window or the
//! number of viewers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::oneshot;

use super::candles::CandleWindow;
use super::hub::{Hub, ServerMsg, Subscription};
use crate::db::Flavour;
use crate::db::journal::{self, Changes, Position};
use crate::domain::{Candle, Interval};
use crate::startup::Health;

/// How long the journal keeps changes; a poller away for longer reloads its window instead.
pub const JOURNAL_RETENTION: Duration = Duration::from_secs(3600);
/// How often old journal entries are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(300);
/// The longest wait between retries while the database is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Changed minutes older than this may already be materialized by TimescaleDB.
const MATERIALIZED_AFTER_SECS: i64 = 120;
/// A poll that takes longer than this (a connection hanging on a dead network) counts as
/// failed, so viewers learn the data is stale and the next poll can start.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Poller {
    pool: PgPool,
    flavour: Flavour,
    interval: Duration,
    window: Duration,
    health: Arc<Health>,
    candles: CandleWindow,
    hub: Hub,
    position: Option<Position>,
    in_flight: bool,
    failures: u32,
    next_attempt: Instant,
    stale_since: Option<Instant>,
    last_prune: Instant,
    /// A TimescaleDB refresh is running; changed ranges wait in `refresh_pending`, so slow
    /// refreshes never pile up.
    refreshing: bool,
    refresh_pending: Option<(i64, i64)>,
    /// The window has been read once (or the database was unreachable trying).
    loaded: bool,
    /// Viewers that came before the window was read: a snapshot must hold the whole window.
    waiting: Vec<(Subscribe, oneshot::Sender<Subscription>)>,
}

impl Poller {
    pub fn new(
        pool: PgPool,
        flavour: Flavour,
        interval: Duration,
        window: Duration,
        health: Arc<Health>,
    ) -> Self {
        Self {
            pool,
            flavour,
            interval,
            window,
            health,
            candles: CandleWindow::default(),
            hub: Hub::default(),
            position: None,
            in_flight: false,
            failures: 0,
            next_attempt: Instant::now(),
            stale_since: None,
            last_prune: Instant::now(),
            refreshing: false,
            refresh_pending: None,
            loaded: false,
            waiting: Vec::new(),
        }
    }

    fn window_start(&self) -> chrono::DateTime<Utc> {
        Utc::now() - chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::days(7))
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight || Instant::now() < self.next_attempt {
            return; // the previous poll is still running, or we are backing off: skip this tick
        }
        self.in_flight = true;
        let pool = self.pool.clone();
        let started = Instant::now();
        // Reload from scratch at start, after a TRUNCATE, or after an outage longer than the journal keeps.
        let reload_from = match &self.position {
            Some(p) if !self.stale_too_long() => Err(p.clone()),
            _ => Ok(self.window_start()),
        };
        let fut = async move {
            let read = async {
                match reload_from {
                    Ok(since) => journal::load_window(&pool, since)
                        .await
                        .map(|(p, rows)| (p, Work::Reload(rows))),
                    Err(from) => journal::poll_changes(&pool, &from)
                        .await
                        .map(|(p, c)| (p, Work::Changes(c))),
                }
            };
            tokio::time::timeout(POLL_TIMEOUT, read)
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "the poll took longer than {POLL_TIMEOUT:?}"
                    ))
                })
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.in_flight = false;
            metrics::histogram!("candlewick_poll_seconds").record(started.elapsed().as_secs_f64());
            match res {
                Ok((position, work)) => act.on_success(position, work, ctx),
                Err(e) => act.on_failure(e),
            }
        }));
    }

    fn stale_too_long(&self) -> bool {
        self.stale_since
            .is_some_and(|s| s.elapsed() > JOURNAL_RETENTION - Duration::from_secs(300))
    }

    fn on_success(&mut self, position: Position, work: Work, ctx: &mut Context<Self>) {
        self.position = Some(position);
        self.failures = 0;
        self.next_attempt = Instant::now();
        match work {
            Work::Reload(rows) => {
                self.reload(rows);
                if self.flavour == Flavour::TimescaleDb {
                    // Edits made while no poller watched (before start, or a TRUNCATE) may sit in
                    // materialized minutes: bring the aggregate up to date once.
                    self.refresh_pending = Some((0, Utc::now().timestamp()));
                    self.refresh_materialized(ctx);
                }
            }
            Work::Changes(changes) => self.apply(changes, ctx),
        }
        for symbol in self.candles.trim(self.window_start().timestamp()) {
            self.hub.invalidate(&symbol);
        }
        self.answer_waiting();
        self.hub.forget_unwatched();
        if self.stale_since.take().is_some() {
            tracing::info!("database reachable again; viewers are up to date");
            self.hub
                .send_all(&ServerMsg::Status { stale: false }.to_frame());
        }
        self.health.set_poll_ok(true);
        metrics::gauge!("candlewick_viewers").set(self.hub.viewers() as f64);
        metrics::gauge!("candlewick_ws_channels").set(self.hub.channel_count() as f64);
        metrics::gauge!("candlewick_window_candles").set(self.candles.candle_count() as f64);
        if self.last_prune.elapsed() > PRUNE_EVERY {
            self.last_prune = Instant::now();
            let pool = self.pool.clone();
            ctx.spawn(
                async move { journal::prune(&pool, JOURNAL_RETENTION).await }
                    .into_actor(self)
                    .map(|res, _, _| {
                        if let Err(e) = res {
                            tracing::warn!(error.cause_chain = ?e, "pruning the change journal");
                        }
                    }),
            );
        }
    }

    /// Answers the viewers that waited for the first read of the window.
    fn answer_waiting(&mut self) {
        self.loaded = true;
        for (msg, reply) in std::mem::take(&mut self.waiting) {
            let _ = reply.send(self.subscribe(msg));
        }
    }

    fn subscribe(&mut self, msg: Subscribe) -> Subscription {
        let candles = &self.candles;
        let mut sub = self.hub.subscribe(&msg.symbol, msg.interval, || {
            let series = candles.series(&msg.symbol, msg.interval);
            ServerMsg::Snapshot {
                symbol: &msg.symbol,
                interval: msg.interval,
                candles: &series,
            }
            .to_frame()
        });
        // Read together with the snapshot: a status sent before it is never missed, one sent
        // after it is in `updates`.
        sub.stale = self.stale_since.is_some();
        sub
    }

    fn on_failure(&mut self, e: anyhow::Error) {
        self.failures += 1;
        let backoff = (self.interval * 2u32.saturating_pow(self.failures.min(8))).min(MAX_BACKOFF);
        self.next_attempt = Instant::now() + backoff;
        self.health.set_poll_ok(false);
        metrics::counter!("candlewick_poll_failures_total").increment(1);
        if self.stale_since.is_none() {
            self.stale_since = Some(Instant::now());
            tracing::error!(error.cause_chain = ?e, "poll failed; viewers see stale data until the database is back");
            self.hub
                .send_all(&ServerMsg::Status { stale: true }.to_frame());
        } else {
            tracing::warn!(error = %e, retry_in = ?backoff, "poll failed again");
        }
        // Without a database, waiting viewers get what we have, marked stale.
        self.answer_waiting();
    }

    /// Replaces the window, telling viewers whatever differs from what they have.
    fn reload(&mut self, rows: Vec<(String, Candle)>) {
        let fresh = CandleWindow::from_candles(rows);
        let mut changed: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        let symbols: BTreeSet<String> = self
            .candles
            .symbols()
            .chain(fresh.symbols())
            .map(str::to_owned)
            .collect();
        for s in &symbols {
            let old = self.candles.minutes(s).cloned().unwrap_or_default();
            let new = fresh.minutes(s).cloned().unwrap_or_default();
            let keys: BTreeSet<i64> = old.keys().chain(new.keys()).copied().collect();
            let diff: BTreeSet<i64> = keys
                .into_iter()
                .filter(|t| old.get(t) != new.get(t))
                .collect();
            if !diff.is_empty() {
                changed.insert(s.clone(), diff);
            }
        }
        self.candles = fresh;
        self.broadcast(&changed);
    }

    fn apply(&mut self, changes: Changes, ctx: &mut Context<Self>) {
        if changes.reload {
            // Wholesale change (TRUNCATE): read the whole window again on the next tick.
            self.position = None;
            self.next_attempt = Instant::now();
        }
        let oldest = self.window_start().timestamp();
        let now = Utc::now().timestamp();
        let mut changed: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        let mut materialized: Option<(i64, i64)> = None;
        for m in changes.minutes {
            if m.t < now - MATERIALIZED_AFTER_SECS {
                materialized =
                    Some(materialized.map_or((m.t, m.t), |(a, b)| (a.min(m.t), b.max(m.t))));
            }
            if m.t < oldest {
                continue;
            }
            if self.candles.apply(&m.symbol, m.t, m.candle) {
                changed.entry(m.symbol).or_default().insert(m.t);
            }
        }
        self.broadcast(&changed);
        if let Some((from, to)) = materialized.filter(|_| self.flavour == Flavour::TimescaleDb) {
            let (from, to) = match self.refresh_pending {
                Some((a, b)) => (a.min(from), b.max(to + 60)),
                None => (from, to + 60),
            };
            self.refresh_pending = Some((from, to));
            self.refresh_materialized(ctx);
        }
    }

    /// On TimescaleDB, re-materializes edited old minutes so `one_min_candle` readers see them.
    /// One refresh at a time; ranges changed meanwhile are merged and refreshed next.
    fn refresh_materialized(&mut self, ctx: &mut Context<Self>) {
        if self.refreshing {
            return;
        }
        let Some((from, to)) = self.refresh_pending.take() else {
            return;
        };
        let (Some(from), Some(to)) = (
            chrono::DateTime::from_timestamp(from, 0),
            chrono::DateTime::from_timestamp(to, 0),
        ) else {
            return;
        };
        self.refreshing = true;
        let pool = self.pool.clone();
        let flavour = self.flavour;
        ctx.spawn(
            async move { flavour.after_changes(&pool, from, to).await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.refreshing = false;
                    if let Err(e) = res {
                        tracing::warn!(error.cause_chain = ?e, "refreshing one_min_candle");
                    }
                    act.refresh_materialized(ctx);
                }),
        );
    }

    /// One serialized update per watched (symbol, interval).
    fn broadcast(&mut self, changed: &BTreeMap<String, BTreeSet<i64>>) {
        for (symbol, minutes) in changed {
            for interval in self.hub.watched_intervals(symbol) {
                let d = self.candles.delta(symbol, interval, minutes);
                if d.is_empty() {
                    continue;
                }
                let frame = ServerMsg::Update {
                    symbol,
                    interval,
                    candles: &d.candles,
                    removed: &d.removed,
                }
                .to_frame();
                metrics::counter!("candlewick_updates_sent_total").increment(1);
                self.hub.send(symbol, interval, frame);
            }
        }
    }
}

enum Work {
    Reload(Vec<(String, Candle)>),
    Changes(Changes),
}

impl Actor for Poller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Viewers queue up behind a slow poll rather than being refused.
        ctx.set_mailbox_capacity(100_000);
        self.tick(ctx);
        ctx.run_interval(self.interval, |act, ctx| act.tick(ctx));
    }
}

/// A viewer asks for a symbol and interval: it gets the snapshot and the updates after it.
#[derive(Message)]
#[rtype(result = "Option<Subscription>")]
pub struct Subscribe {
    pub symbol: String,
    pub interval: Interval,
}

impl Handler<Subscribe> for Poller {
    type Result = ResponseFuture<Option<Subscription>>;

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) -> Self::Result {
        if self.loaded {
            let sub = self.subscribe(msg);
            return Box::pin(std::future::ready(Some(sub)));
        }
        let (reply, answer) = oneshot::channel();
        self.waiting.push((msg, reply));
        Box::pin(async move { answer.await.ok() })
    }
}
