//! The poller: exactly one per server. One task owns the candle windows and the broadcast
//! channels; viewers talk to it by messages through a [`Feed`] handle. Each poll reads only what
//! changed since the last one (see `db::journal`), so its database cost follows the changes,
//! not the window or the number of viewers; and it holds only the windows of symbols someone
//! watches: a symbol's window is read when its first viewer comes (in the same snapshot as the
//! poll, so no change falls between) and dropped some minutes after its last viewer leaves.
//!
//! A plain tokio task with a `select!` loop rather than an actix actor: the loop shows in one
//! place everything the poller reacts to (a viewer, the poll timer, a finished poll, refresh or
//! prune), and its database work runs as spawned tasks whose results come back to the loop, so
//! the state is never shared and never locked.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::hub::{Hub, Subscription};
use super::window::CandleWindow;
use super::wire::Want;
use crate::db::Flavour;
use crate::db::flavour::Refresher;
use crate::db::journal::{self, Changes, PollRequest, PollResult, Position};
use crate::health::Health;

/// How long the journal keeps changes; a poller away for longer reloads its windows instead.
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
    /// A symbol's window is dropped this long after its last viewer left.
    pub keep_unwatched: Duration,
    /// Tests only: faults to inject (no flag or variable sets it).
    pub faults: Faults,
}

/// The poller's own loop and the kinds of work it spawns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    /// The poller's loop itself (checked before each poll starts).
    Poller,
    Poll,
    Refresh,
    Prune,
}

/// Fault injection for tests: a hook called as each [`Task`] starts; a panic in it is a panic
/// of that task. Empty in every real run.
#[derive(Clone, Default)]
pub struct Faults(Option<Arc<dyn Fn(Task) + Send + Sync>>);

impl Faults {
    /// Calls `hook` as each task starts.
    pub fn new(hook: impl Fn(Task) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(hook)))
    }

    fn inject(&self, task: Task) {
        if let Some(hook) = &self.0 {
            hook(task);
        }
    }
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Faults(set)"
        } else {
            "Faults(none)"
        })
    }
}

/// The handle viewers use to reach the poller.
#[derive(Clone)]
pub struct Feed {
    requests: mpsc::Sender<Subscribe>,
}

impl Feed {
    /// Starts the poller on the current runtime; it stops when `shutdown` is cancelled. The
    /// handle ends when the poller does: before `shutdown` only if it died (a panic), which the
    /// server must not outlive (viewers would loop through reconnects).
    pub fn start(
        pool: PgPool,
        settings: FeedSettings,
        health: Arc<Health>,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (requests, inbox) = mpsc::channel(REQUEST_QUEUE);
        let poller = Poller::new(pool, settings, health);
        let handle = tokio::spawn(poller.run(inbox, shutdown));
        (Self { requests }, handle)
    }

    /// The first frames of the channel `want` names (a snapshot, or what a resuming viewer
    /// missed) and the updates after them; `None` once the poller has stopped (the server is
    /// shutting down).
    pub async fn subscribe(&self, want: Want) -> Option<Subscription> {
        let (reply, answer) = oneshot::channel();
        let request = Subscribe { want, reply };
        self.requests.send(request).await.ok()?;
        answer.await.ok()
    }
}

/// A viewer asks for a channel: it gets the first frames and the updates after them.
struct Subscribe {
    want: Want,
    reply: oneshot::Sender<Subscription>,
}

impl Subscribe {
    fn symbol(&self) -> &str {
        self.want.symbol.as_str()
    }
}

/// Database work the loop spawned, as it comes back.
enum Done {
    Poll {
        started: Instant,
        /// The symbols whose windows this poll read.
        loaded: Vec<String>,
        result: anyhow::Result<PollResult>,
    },
    Refresh(anyhow::Result<()>),
    Prune(anyhow::Result<u64>),
}

/// The loop's spawned work: each task's kind is kept, so that one that panics is known and its
/// state reset.
#[derive(Default)]
struct Tasks {
    set: JoinSet<Done>,
    kinds: HashMap<tokio::task::Id, Task>,
}

impl Tasks {
    fn spawn(
        &mut self,
        kind: Task,
        faults: &Faults,
        work: impl std::future::Future<Output = Done> + Send + 'static,
    ) {
        let faults = faults.clone();
        let handle = self.set.spawn(async move {
            faults.inject(kind);
            work.await
        });
        self.kinds.insert(handle.id(), kind);
    }

    /// The next task to end: what it returned, or its kind when it panicked (logged here).
    async fn join_next(&mut self) -> Option<Result<Done, Task>> {
        let ended = self.set.join_next_with_id().await?;
        Some(match ended {
            Ok((id, done)) => {
                self.kinds.remove(&id);
                Ok(done)
            }
            Err(e) => {
                let kind = self.kinds.remove(&e.id()).unwrap_or(Task::Prune);
                tracing::error!(error = %e, task = ?kind, "a poller task panicked; starting it again");
                metrics::counter!("candlewick_poller_task_panics_total").increment(1);
                Err(kind)
            }
        })
    }
}

/// Marks the server not ready when the poller's loop ends.
struct NotReadyOnDrop(Arc<Health>);

impl Drop for NotReadyOnDrop {
    fn drop(&mut self) {
        self.0.set_poll_ok(false);
    }
}

struct Poller {
    pool: PgPool,
    settings: FeedSettings,
    health: Arc<Health>,
    candles: CandleWindow,
    hub: Hub,
    refresher: Refresher,
    /// `None` at start, after a TRUNCATE and after an outage longer than the journal keeps.
    position: Option<Position>,
    polling: bool,
    failures: u32,
    next_attempt: Instant,
    stale_since: Option<Instant>,
    last_prune: Instant,
    /// Symbols whose window must be read by the next poll, with the viewers waiting for it.
    to_load: HashMap<String, Vec<Subscribe>>,
    /// Loaded symbols nobody watches, since when.
    unwatched_since: HashMap<String, Instant>,
}

impl Poller {
    fn new(pool: PgPool, settings: FeedSettings, health: Arc<Health>) -> Self {
        Self {
            pool,
            refresher: settings.flavour.refresher(),
            // A window is kept while its channels are: for reconnects, up to a minute.
            hub: Hub::new(settings.keep_unwatched),
            settings,
            health,
            candles: CandleWindow::default(),
            position: None,
            polling: false,
            failures: 0,
            next_attempt: Instant::now(),
            stale_since: None,
            last_prune: Instant::now(),
            to_load: HashMap::new(),
            unwatched_since: HashMap::new(),
        }
    }

    async fn run(mut self, mut inbox: mpsc::Receiver<Subscribe>, shutdown: CancellationToken) {
        // Not ready from the moment the loop ends, however it ends (a panic too).
        let _not_ready = NotReadyOnDrop(self.health.clone());
        let mut ticker = tokio::time::interval(self.settings.poll_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut tasks = Tasks::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(request) = inbox.recv() => self.on_subscribe(request, &mut tasks),
                _ = ticker.tick() => self.start_poll(&mut tasks),
                Some(ended) = tasks.join_next() => match ended {
                    Ok(done) => self.on_done(done, &mut tasks),
                    Err(task) => self.on_panic(task, &mut tasks),
                },
            }
        }
        // Dropping the channels tells every viewer the server is going away.
        tasks.set.abort_all();
    }

    /// A spawned task panicked (logged by [`Tasks::join_next`]): its state is reset as if it
    /// had failed, so the work starts again.
    fn on_panic(&mut self, task: Task, tasks: &mut Tasks) {
        match task {
            Task::Poll => {
                self.polling = false;
                self.on_failure(anyhow::anyhow!("the poll task panicked"));
            }
            Task::Refresh => {
                self.refresher.done();
                // The range it was refreshing is unknown now: refresh everything once.
                self.refresher.everything(Utc::now().timestamp());
                self.start_refresh(tasks);
            }
            Task::Prune | Task::Poller => {}
        }
    }

    fn window_start(&self) -> chrono::DateTime<Utc> {
        Utc::now()
            - chrono::Duration::from_std(self.settings.window).unwrap_or(chrono::Duration::days(7))
    }

    fn start_poll(&mut self, tasks: &mut Tasks) {
        if self.polling || Instant::now() < self.next_attempt {
            return; // the previous poll is still running, or we are backing off: skip this tick
        }
        self.settings.faults.inject(Task::Poller);
        if self.stale_too_long() {
            self.forget_position();
        }
        self.polling = true;
        let pool = self.pool.clone();
        let flavour = self.settings.flavour;
        let started = Instant::now();
        let from = self.position.clone();
        let watched: Vec<String> = self
            .candles
            .symbols()
            .filter(|s| !self.to_load.contains_key(*s))
            .map(str::to_owned)
            .collect();
        let loaded: Vec<String> = self.to_load.keys().cloned().collect();
        let since = self.window_start();
        let old_before = self
            .refresher
            .cutoff(Utc::now().timestamp())
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0));
        let load = loaded.clone();
        tasks.spawn(Task::Poll, &self.settings.faults, async move {
            let request = PollRequest {
                from: from.as_ref(),
                symbols: Some(&watched),
                load: &load,
                since,
                old_before,
            };
            let result =
                tokio::time::timeout(POLL_TIMEOUT, journal::poll(&pool, flavour, &request))
                    .await
                    .unwrap_or_else(|_| {
                        Err(anyhow::anyhow!(
                            "the poll took longer than {POLL_TIMEOUT:?}"
                        ))
                    });
            Done::Poll {
                started,
                loaded,
                result,
            }
        });
    }

    fn on_done(&mut self, done: Done, tasks: &mut Tasks) {
        match done {
            Done::Poll {
                started,
                loaded,
                result,
            } => {
                self.polling = false;
                metrics::histogram!("candlewick_poll_seconds")
                    .record(started.elapsed().as_secs_f64());
                match result {
                    Ok(poll) => self.on_success(poll, &loaded, tasks),
                    Err(e) => self.on_failure(e),
                }
                if !self.to_load.is_empty() && self.failures == 0 {
                    // Viewers wait for these windows: read them now, not at the next tick.
                    self.start_poll(tasks);
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

    /// Reads every loaded window again at the next poll: changes may have been missed (a
    /// TRUNCATE, or an outage longer than the journal keeps).
    fn forget_position(&mut self) {
        self.position = None;
        for symbol in self.candles.symbols() {
            self.to_load.entry(symbol.to_owned()).or_default();
        }
    }

    fn on_success(&mut self, poll: PollResult, loaded: &[String], tasks: &mut Tasks) {
        if self.position.is_none() {
            // Edits made while no poller watched (before start, or a TRUNCATE) may sit in
            // materialized minutes.
            self.refresher.everything(Utc::now().timestamp());
        }
        self.position = poll.position;
        self.failures = 0;
        self.next_attempt = Instant::now();
        self.refresher.periodic(Utc::now().timestamp());
        self.apply(poll.changes);
        for (symbol, candles) in poll.windows {
            let changed = self.candles.load(&symbol, candles);
            self.broadcast(&BTreeMap::from([(symbol, changed)]));
        }
        for symbol in loaded {
            // Loaded: answer its viewers (a symbol asked for again meanwhile stays queued).
            if let Some(waiting) = self.to_load.remove(symbol) {
                for request in waiting {
                    self.answer(request);
                }
            }
        }
        self.start_refresh(tasks);
        for symbol in self.candles.trim(self.window_start().timestamp()) {
            self.hub.invalidate(&symbol);
        }
        self.hub.forget_unwatched();
        self.drop_unwatched();
        if self.stale_since.take().is_some() {
            tracing::info!("database reachable again; viewers are up to date");
            self.hub.send_status(false);
        }
        self.health.set_poll_ok(true);
        metrics::gauge!("candlewick_viewers").set(self.hub.viewers() as f64);
        metrics::gauge!("candlewick_ws_channels").set(self.hub.channel_count() as f64);
        metrics::gauge!("candlewick_window_candles").set(self.candles.candle_count() as f64);
        if self.last_prune.elapsed() > PRUNE_EVERY {
            self.last_prune = Instant::now();
            let pool = self.pool.clone();
            tasks.spawn(Task::Prune, &self.settings.faults, async move {
                Done::Prune(journal::prune(&pool, JOURNAL_RETENTION).await)
            });
        }
    }

    fn start_refresh(&mut self, tasks: &mut Tasks) {
        if let Some(refresh) = self.refresher.next_refresh() {
            let pool = self.pool.clone();
            tasks.spawn(Task::Refresh, &self.settings.faults, async move {
                Done::Refresh(refresh.run(&pool).await)
            });
        }
    }

    fn on_subscribe(&mut self, request: Subscribe, tasks: &mut Tasks) {
        let loading = self.to_load.contains_key(request.symbol());
        if self.candles.is_loaded(request.symbol()) && !loading {
            self.answer(request);
            return;
        }
        if self.stale_since.is_some() {
            // Without a database, a viewer gets what we have, marked stale; its window is read
            // (and sent as an update) once the database is back.
            self.to_load.entry(request.symbol().to_owned()).or_default();
            self.answer(request);
            return;
        }
        self.to_load
            .entry(request.symbol().to_owned())
            .or_default()
            .push(request);
        self.start_poll(tasks);
    }

    fn answer(&mut self, request: Subscribe) {
        let Subscribe { want, reply } = request;
        let candles = &self.candles;
        let mut sub = self.hub.subscribe(&want, || {
            candles.series(want.symbol.as_str(), want.interval)
        });
        // Read together with the snapshot: a status sent before it is never missed, one sent
        // after it is in `updates`.
        sub.stale = self.stale_since.is_some();
        self.unwatched_since.remove(want.symbol.as_str());
        let _ = reply.send(sub);
    }

    /// Drops the windows nobody has watched for `keep_unwatched`; their changes are picked up
    /// when they are read again.
    fn drop_unwatched(&mut self) {
        let now = Instant::now();
        let symbols: Vec<String> = self.candles.symbols().map(str::to_owned).collect();
        for symbol in symbols {
            if self.hub.is_watched(&symbol) || self.to_load.contains_key(&symbol) {
                self.unwatched_since.remove(&symbol);
                continue;
            }
            let since = *self.unwatched_since.entry(symbol.clone()).or_insert(now);
            if now.duration_since(since) >= self.settings.keep_unwatched {
                self.candles.unload(&symbol);
                self.hub.invalidate(&symbol);
                self.unwatched_since.remove(&symbol);
            }
        }
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
            self.hub.send_status(true);
        } else {
            tracing::warn!(error = %e, retry_in = ?backoff, "poll failed again");
        }
        // Without a database, waiting viewers get what we have, marked stale.
        let waiting: Vec<Subscribe> = self.to_load.values_mut().flat_map(std::mem::take).collect();
        for request in waiting {
            self.answer(request);
        }
    }

    fn apply(&mut self, changes: Changes) {
        if let Some((first, last)) = changes.old {
            self.refresher.changed(first, last);
        }
        let mut changed: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        for m in changes.minutes {
            if self.candles.apply(&m.symbol, m.t, m.candle) {
                changed.entry(m.symbol).or_default().insert(m.t);
            }
        }
        self.broadcast(&changed);
        if changes.reload {
            // Wholesale change (TRUNCATE): read every window again, at once.
            self.forget_position();
        }
    }

    /// One serialized update per watched (symbol, interval).
    fn broadcast(&mut self, changed: &BTreeMap<String, BTreeSet<i64>>) {
        for (symbol, minutes) in changed {
            if minutes.is_empty() {
                continue;
            }
            for interval in self.hub.watched_intervals(symbol) {
                let d = self.candles.delta(symbol, interval, minutes);
                if d.is_empty() {
                    continue;
                }
                metrics::counter!("candlewick_updates_sent_total").increment(1);
                self.hub
                    .send_update(symbol, interval, &d.candles, &d.removed);
            }
        }
    }
}
