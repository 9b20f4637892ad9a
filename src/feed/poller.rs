//! The poller: exactly one per server. One task owns the candle window and the broadcast
//! channels; viewers talk to it by messages through a [`Feed`] handle. Each poll reads only what
//! changed since the last one (see `db::journal`), so its database cost follows the changes,
//! not the window or the number of viewers.
//!
//! A plain tokio task with a `select!` loop rather than an actix actor: the loop shows in one
//! place everything the poller reacts to (a viewer, the poll timer, a finished poll, refresh or
//! prune), and its database work runs as spawned tasks whose results come back to the loop, so
//! the state is never shared and never locked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::hub::{Hub, ServerMsg, Subscription};
use super::window::CandleWindow;
use crate::db::Flavour;
use crate::db::flavour::Refresher;
use crate::db::journal::{self, Changes, Position};
use crate::domain::{Candle, Interval};
use crate::health::Health;

/// How long the journal keeps changes; a poller away for longer reloads its window instead.
pub const JOURNAL_RETENTION: Duration = Duration::from_secs(3600);
/// How often old journal entries are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(300);
/// The longest wait between retries while the database is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A poll that takes longer than this (a connection hanging on a dead network) counts as
/// failed, so viewers learn the data is stale and the next poll can start.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);
/// Subscriptions queued for the poller before viewers wait to hand theirs in.
const REQUEST_QUEUE: usize = 10_000;

/// What the poller needs to know about its job.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    pub flavour: Flavour,
    pub poll_interval: Duration,
    pub window: Duration,
}

/// The handle viewers use to reach the poller.
#[derive(Clone)]
pub struct Feed {
    requests: mpsc::Sender<Subscribe>,
}

impl Feed {
    /// Starts the poller on the current runtime; it stops when `shutdown` is cancelled.
    pub fn start(
        pool: PgPool,
        settings: FeedSettings,
        health: Arc<Health>,
        shutdown: CancellationToken,
    ) -> Self {
        let (requests, inbox) = mpsc::channel(REQUEST_QUEUE);
        let poller = Poller::new(pool, settings, health);
        tokio::spawn(poller.run(inbox, shutdown));
        Self { requests }
    }

    /// The snapshot of `symbol` at `interval` and the updates after it; `None` once the poller
    /// has stopped (the server is shutting down).
    pub async fn subscribe(&self, symbol: &str, interval: Interval) -> Option<Subscription> {
        let (reply, answer) = oneshot::channel();
        let request = Subscribe {
            symbol: symbol.to_owned(),
            interval,
            reply,
        };
        self.requests.send(request).await.ok()?;
        answer.await.ok()
    }
}

/// A viewer asks for a symbol and interval: it gets the snapshot and the updates after it.
struct Subscribe {
    symbol: String,
    interval: Interval,
    reply: oneshot::Sender<Subscription>,
}

/// Database work the loop spawned, as it comes back.
enum Done {
    Poll {
        started: Instant,
        result: anyhow::Result<(Position, Work)>,
    },
    Refresh(anyhow::Result<()>),
    Prune(anyhow::Result<u64>),
}

enum Work {
    Reload(Vec<(String, Candle)>),
    Changes(Changes),
}

struct Poller {
    pool: PgPool,
    settings: FeedSettings,
    health: Arc<Health>,
    candles: CandleWindow,
    hub: Hub,
    refresher: Refresher,
    position: Option<Position>,
    polling: bool,
    failures: u32,
    next_attempt: Instant,
    stale_since: Option<Instant>,
    last_prune: Instant,
    /// The window has been read once (or the database was unreachable trying).
    loaded: bool,
    /// Viewers that came before the window was read: a snapshot must hold the whole window.
    waiting: Vec<Subscribe>,
}

impl Poller {
    fn new(pool: PgPool, settings: FeedSettings, health: Arc<Health>) -> Self {
        Self {
            pool,
            refresher: settings.flavour.refresher(),
            settings,
            health,
            candles: CandleWindow::default(),
            hub: Hub::default(),
            position: None,
            polling: false,
            failures: 0,
            next_attempt: Instant::now(),
            stale_since: None,
            last_prune: Instant::now(),
            loaded: false,
            waiting: Vec::new(),
        }
    }

    async fn run(mut self, mut inbox: mpsc::Receiver<Subscribe>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.settings.poll_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut tasks: JoinSet<Done> = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(request) = inbox.recv() => self.on_subscribe(request),
                _ = ticker.tick() => self.start_poll(&mut tasks),
                Some(done) = tasks.join_next() => match done {
                    Ok(done) => self.on_done(done, &mut tasks),
                    Err(e) => tracing::error!(error = %e, "a poller task failed"),
                },
            }
        }
        // Dropping the channels tells every viewer the server is going away.
        tasks.abort_all();
    }

    fn window_start(&self) -> chrono::DateTime<Utc> {
        Utc::now()
            - chrono::Duration::from_std(self.settings.window).unwrap_or(chrono::Duration::days(7))
    }

    fn start_poll(&mut self, tasks: &mut JoinSet<Done>) {
        if self.polling || Instant::now() < self.next_attempt {
            return; // the previous poll is still running, or we are backing off: skip this tick
        }
        self.polling = true;
        let pool = self.pool.clone();
        let started = Instant::now();
        // Reload from scratch at start, after a TRUNCATE, or after an outage longer than the journal keeps.
        let reload_from = match &self.position {
            Some(p) if !self.stale_too_long() => Err(p.clone()),
            _ => Ok(self.window_start()),
        };
        tasks.spawn(async move {
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
            let result = tokio::time::timeout(POLL_TIMEOUT, read)
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "the poll took longer than {POLL_TIMEOUT:?}"
                    ))
                });
            Done::Poll { started, result }
        });
    }

    fn on_done(&mut self, done: Done, tasks: &mut JoinSet<Done>) {
        match done {
            Done::Poll { started, result } => {
                self.polling = false;
                metrics::histogram!("candlewick_poll_seconds")
                    .record(started.elapsed().as_secs_f64());
                match result {
                    Ok((position, work)) => self.on_success(position, work, tasks),
                    Err(e) => self.on_failure(e),
                }
            }
            Done::Refresh(result) => {
                self.refresher.done();
                if let Err(e) = result {
                    tracing::warn!(error.cause_chain = ?e, "refreshing one_min_candle");
                }
                self.start_refresh(tasks);
            }
            Done::Prune(result) => {
                if let Err(e) = result {
                    tracing::warn!(error.cause_chain = ?e, "pruning the change journal");
                }
            }
        }
    }

    fn stale_too_long(&self) -> bool {
        self.stale_since
            .is_some_and(|s| s.elapsed() > JOURNAL_RETENTION - Duration::from_secs(300))
    }

    fn on_success(&mut self, position: Position, work: Work, tasks: &mut JoinSet<Done>) {
        self.position = Some(position);
        self.failures = 0;
        self.next_attempt = Instant::now();
        let now = Utc::now().timestamp();
        match work {
            Work::Reload(rows) => {
                self.reload(rows);
                // Edits made while no poller watched (before start, or a TRUNCATE) may sit in
                // materialized minutes.
                self.refresher.everything(now);
            }
            Work::Changes(changes) => {
                self.refresher
                    .changed(changes.minutes.iter().map(|m| m.t), now);
                self.apply(changes);
            }
        }
        self.start_refresh(tasks);
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
            tasks.spawn(async move { Done::Prune(journal::prune(&pool, JOURNAL_RETENTION).await) });
        }
    }

    fn start_refresh(&mut self, tasks: &mut JoinSet<Done>) {
        if let Some(refresh) = self.refresher.next_refresh() {
            let pool = self.pool.clone();
            tasks.spawn(async move { Done::Refresh(refresh.run(&pool).await) });
        }
    }

    fn on_subscribe(&mut self, request: Subscribe) {
        if self.loaded {
            let sub = self.subscribe(&request.symbol, request.interval);
            let _ = request.reply.send(sub);
        } else {
            self.waiting.push(request);
        }
    }

    /// Answers the viewers that waited for the first read of the window.
    fn answer_waiting(&mut self) {
        self.loaded = true;
        for request in std::mem::take(&mut self.waiting) {
            let sub = self.subscribe(&request.symbol, request.interval);
            let _ = request.reply.send(sub);
        }
    }

    fn subscribe(&mut self, symbol: &str, interval: Interval) -> Subscription {
        let candles = &self.candles;
        let mut sub = self.hub.subscribe(symbol, interval, || {
            let series = candles.series(symbol, interval);
            ServerMsg::Snapshot {
                symbol,
                interval,
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
        let backoff = (self.settings.poll_interval * 2u32.saturating_pow(self.failures.min(8)))
            .min(MAX_BACKOFF);
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

    fn apply(&mut self, changes: Changes) {
        if changes.reload {
            // Wholesale change (TRUNCATE): read the whole window again on the next tick.
            self.position = None;
            self.next_attempt = Instant::now();
        }
        let oldest = self.window_start().timestamp();
        let mut changed: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        for m in changes.minutes {
            if m.t < oldest {
                continue;
            }
            if self.candles.apply(&m.symbol, m.t, m.candle) {
                changed.entry(m.symbol).or_default().insert(m.t);
            }
        }
        self.broadcast(&changed);
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
