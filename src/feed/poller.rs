//! The poller: exactly one per server. One task owns the bars of the watched channels and the
//! broadcast channels; viewers talk to it by messages through a [`Feed`] handle. Each poll reads
//! only what changed since the last one (see `db::journal`) and reads the changed bars again at
//! each watched interval, so its database cost follows the changes, not the history or the
//! number of viewers. A channel's bars (its newest bars, up to [`MAX_LIMIT`] or the window's
//! worth) are read from the database when its first viewer comes, by the poll itself after its
//! journal read, so no change falls between; they are dropped some minutes after the last
//! viewer leaves.
//!
//! A plain tokio task with a `select!` loop rather than an actix actor: the loop shows in one
//! place everything the poller reacts to (a viewer, the poll timer, a finished poll, refresh or
//! prune), and its database work runs as spawned tasks whose results come back to the loop, so
//! the state is never shared and never locked. Snapshots are built by the viewers that need
//! them, off this loop (see `snapshot`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::bars::{Bars, Delta};
use super::hub::{Hub, Subscription};
use super::poll::{self, ChannelKey, Held, Loaded, PollOutcome, PollPlan, ReadRange};
use super::snapshot::BuildLimits;
use super::wire::{Frame, MAX_LIMIT, Want};
use crate::db::Flavour;
use crate::db::flavour::Refresher;
use crate::db::journal::{self, MinuteChange, Position, ResumeFrom};
use crate::domain::Interval;
use crate::feed::health::Health;

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
    /// A channel nobody watches is kept for resuming viewers this long (see [`Hub::new`]).
    pub resume_grace: Duration,
    /// A symbol's window is dropped this long after its channel is gone (the resume grace
    /// after its last viewer left).
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
    /// Plain PostgreSQL: folds the changed hours and days into the stored rollups.
    Fold,
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
    builds: Arc<BuildLimits>,
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
        let builds = Arc::new(BuildLimits::default());
        (Self { requests, builds }, handle)
    }

    /// The first frames of `sub` for `client`: its snapshot built (within the limits on
    /// uncached builds) unless a viewer before built it, or the resume and missed updates.
    pub async fn first_frames(&self, sub: &Subscription, client: Option<IpAddr>) -> Vec<Frame> {
        match &sub.snapshot {
            Some(snapshot) => vec![snapshot.frame(&self.builds, client).await],
            None => sub.first.clone(),
        }
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
    fn channel(&self) -> ChannelKey {
        (self.want.symbol.as_str().to_owned(), self.want.interval)
    }
}

/// Database work the loop spawned, as it comes back.
enum Done {
    Poll {
        started: Instant,
        /// The channels this poll loads.
        loading: Vec<ChannelKey>,
        /// The minutes it read again after a refresh (to read again if it failed).
        reread: Option<(i64, i64)>,
        result: anyhow::Result<Box<PollOutcome>>,
    },
    Refresh(anyhow::Result<()>),
    Prune(anyhow::Result<u64>),
    Fold(anyhow::Result<u64>),
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

/// Minute ranges (Unix seconds, `[from, to)`) whose bars must be read again once TimescaleDB has
/// refreshed them: an edit to a materialized minute shows in `one_min_candle` (and what is
/// rolled up from it) only after a refresh.
#[derive(Debug, Default)]
struct AfterRefresh {
    /// Seen by polls; the next refresh covers them.
    waiting: Option<(i64, i64)>,
    /// Covered by the refresh running now.
    refreshing: Option<(i64, i64)>,
    /// Refreshed: the next poll reads them again.
    ready: Option<(i64, i64)>,
}

fn span(a: Option<(i64, i64)>, b: Option<(i64, i64)>) -> Option<(i64, i64)> {
    match (a, b) {
        (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
        (a, b) => a.or(b),
    }
}

struct Poller {
    pool: PgPool,
    settings: FeedSettings,
    health: Arc<Health>,
    /// The bars of each channel held, kept as the database has them.
    bars: HashMap<ChannelKey, Bars>,
    hub: Hub,
    refresher: Refresher,
    after_refresh: AfterRefresh,
    /// `None` at start, after a TRUNCATE and after an outage longer than the journal keeps.
    position: Option<Position>,
    polling: bool,
    failures: u32,
    next_attempt: Instant,
    stale_since: Option<Instant>,
    last_prune: Instant,
    /// A fold of the rollups is running.
    folding: bool,
    /// Channels the next poll must load, with the viewers waiting for them.
    to_load: HashMap<ChannelKey, Vec<Subscribe>>,
    /// Reconnecting viewers whose token the hub's kept updates do not cover: the next poll
    /// reads what they missed from the journal.
    to_resume: Vec<Subscribe>,
    /// Those the running poll reads for.
    resuming: Vec<Subscribe>,
    /// The database's epoch, once read.
    epoch: Option<String>,
    /// Held channels nobody watches, since when.
    unwatched_since: HashMap<ChannelKey, Instant>,
}

impl Poller {
    fn new(pool: PgPool, settings: FeedSettings, health: Arc<Health>) -> Self {
        Self {
            pool,
            refresher: settings.flavour.refresher(),
            // Bars are kept while their channels are: for reconnects, up to a minute.
            hub: Hub::new(settings.resume_grace),
            settings,
            health,
            bars: HashMap::new(),
            after_refresh: AfterRefresh::default(),
            position: None,
            polling: false,
            failures: 0,
            next_attempt: Instant::now(),
            stale_since: None,
            last_prune: Instant::now(),
            folding: false,
            to_load: HashMap::new(),
            to_resume: Vec::new(),
            resuming: Vec::new(),
            epoch: None,
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
                    Err(task) => self.on_panic(task),
                },
            }
        }
        // Dropping the channels tells every viewer the server is going away.
        tasks.set.abort_all();
    }

    /// A spawned task panicked (logged by [`Tasks::join_next`]): its state is reset as if it
    /// had failed, so the work starts again.
    fn on_panic(&mut self, task: Task) {
        match task {
            Task::Poll => {
                self.polling = false;
                self.on_failure(anyhow::anyhow!("the poll task panicked"));
            }
            Task::Refresh => {
                self.refresher.done();
                // The range it was refreshing is unknown now: refresh everything, from the
                // next poll on (not at once: a refresh that always panics must not spin).
                self.refresher.everything(Utc::now().timestamp());
                let lost = self.after_refresh.refreshing.take();
                self.after_refresh.waiting = span(self.after_refresh.waiting, lost);
            }
            Task::Fold => self.folding = false,
            Task::Prune | Task::Poller => {}
        }
    }

    fn window_start(&self) -> DateTime<Utc> {
        Utc::now()
            - chrono::Duration::from_std(self.settings.window).unwrap_or(chrono::Duration::days(7))
    }

    /// How many of its newest bars a channel at `interval` holds: enough for the largest
    /// `limit` and for the whole window.
    fn depth(&self, interval: Interval) -> usize {
        let window = self.settings.window.as_secs() as i64 / interval.seconds() + 1;
        MAX_LIMIT.max(usize::try_from(window).unwrap_or(MAX_LIMIT))
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
        let since = self.window_start();
        let old_before = self
            .refresher
            .cutoff(Utc::now().timestamp())
            .and_then(|t| DateTime::from_timestamp(t, 0))
            .unwrap_or(since);
        let held = self
            .bars
            .iter()
            .filter(|(key, _)| !self.to_load.contains_key(*key))
            .map(|(key, bars)| Held {
                key: key.clone(),
                from: bars.from(),
            })
            .collect();
        let loading: Vec<ChannelKey> = self.to_load.keys().cloned().collect();
        let reread = self.after_refresh.ready.take();
        self.resuming = std::mem::take(&mut self.to_resume);
        let resumes: BTreeSet<ResumeFrom> = self
            .resuming
            .iter()
            .filter_map(|r| {
                Some(ResumeFrom {
                    symbol: r.want.symbol.as_str().to_owned(),
                    since: r.want.resume.as_ref()?.seq,
                })
            })
            .collect();
        let plan = PollPlan {
            from: self.position.clone(),
            since,
            old_before,
            held,
            reread,
            load: loading
                .iter()
                .map(|key| (key.clone(), self.depth(key.1)))
                .collect(),
            resumes: resumes.into_iter().collect(),
        };
        let (pool, flavour, started) = (self.pool.clone(), self.settings.flavour, Instant::now());
        tasks.spawn(Task::Poll, &self.settings.faults, async move {
            let result = tokio::time::timeout(POLL_TIMEOUT, poll::run(&pool, flavour, &plan))
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "the poll took longer than {POLL_TIMEOUT:?}"
                    ))
                })
                .map(Box::new);
            Done::Poll {
                started,
                loading,
                reread,
                result,
            }
        });
    }

    fn on_done(&mut self, done: Done, tasks: &mut Tasks) {
        match done {
            Done::Poll {
                started,
                loading,
                reread,
                result,
            } => {
                self.polling = false;
                metrics::histogram!("candlewick_poll_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("candlewick_polls_total").increment(1);
                match result {
                    Ok(outcome) => self.on_success(*outcome, &loading, tasks),
                    Err(e) => {
                        self.after_refresh.ready = span(self.after_refresh.ready, reread);
                        self.on_failure(e);
                    }
                }
                if (!self.to_load.is_empty() || !self.to_resume.is_empty()) && self.failures == 0 {
                    // Viewers wait for these channels: read them now, not at the next tick.
                    self.start_poll(tasks);
                }
            }
            Done::Refresh(result) => {
                self.refresher.done();
                let refreshed = self.after_refresh.refreshing.take();
                match result {
                    Ok(()) => self.after_refresh.ready = span(self.after_refresh.ready, refreshed),
                    Err(e) => {
                        tracing::warn!(error.cause_chain = ?e, "refreshing one_min_candle");
                        self.after_refresh.waiting = span(self.after_refresh.waiting, refreshed);
                    }
                }
                self.start_refresh(tasks);
            }
            Done::Prune(result) => {
                if let Err(e) = result {
                    tracing::warn!(error.cause_chain = ?e, "pruning the change journal");
                }
            }
            Done::Fold(result) => {
                self.folding = false;
                if let Err(e) = result {
                    tracing::warn!(error.cause_chain = ?e, "folding the hour and day rollups");
                }
            }
        }
    }

    fn stale_too_long(&self) -> bool {
        self.stale_since
            .is_some_and(|s| s.elapsed() > JOURNAL_RETENTION - Duration::from_secs(300))
    }

    /// Reads every held channel again at the next poll: changes may have been missed (a
    /// TRUNCATE, or an outage longer than the journal keeps).
    fn forget_position(&mut self) {
        self.position = None;
        for key in self.bars.keys() {
            self.to_load.entry(key.clone()).or_default();
        }
    }

    fn on_success(&mut self, outcome: PollOutcome, loading: &[ChannelKey], tasks: &mut Tasks) {
        let PollOutcome {
            journal: read,
            reread,
            loaded,
        } = outcome;
        if self.position.is_none() {
            // Edits made while no poller watched (before start, or a TRUNCATE) may sit in
            // materialized minutes.
            self.refresher.everything(Utc::now().timestamp());
        }
        if let Some(epoch) = read.epoch {
            self.epoch = Some(epoch);
        }
        // The hub numbers what it sends from here on as of the new position.
        match (&self.position, &read.position, &self.epoch) {
            (None, Some(p), Some(epoch)) => self.hub.restart_at(epoch.clone(), p.seq(), p.upto()),
            (_, Some(p), _) => self.hub.set_position(p.seq(), p.upto()),
            _ => {}
        }
        self.position = read.position;
        self.failures = 0;
        self.next_attempt = Instant::now();
        self.refresher.periodic(Utc::now().timestamp());
        let changes = read.changes;
        let missed: HashMap<ResumeFrom, Option<Vec<i64>>> = read
            .resumed
            .into_iter()
            .map(|r| (r.from, r.minutes))
            .collect();
        if let Some((first, last)) = changes.old {
            self.refresher.changed(first, last);
            // Where minutes get materialized, their bars are right only after the refresh.
            if self.refresher.cutoff(0).is_some() {
                self.after_refresh.waiting =
                    span(self.after_refresh.waiting, Some((first, last + 60)));
            }
        }
        let mut deltas = self.apply_minutes(changes.minutes);
        self.apply_rereads(reread, &mut deltas);
        self.apply_loads(loaded, &mut deltas);
        self.broadcast(deltas);
        for key in loading {
            // Loaded: answer its viewers (a channel asked for again meanwhile stays queued).
            if let Some(waiting) = self.to_load.remove(key) {
                for request in waiting {
                    self.answer(request);
                }
            }
        }
        for request in std::mem::take(&mut self.resuming) {
            let minutes = request.want.resume.as_ref().and_then(|r| {
                let from = ResumeFrom {
                    symbol: request.want.symbol.as_str().to_owned(),
                    since: r.seq,
                };
                missed.get(&from).cloned().flatten()
            });
            self.answer_resumed(request, minutes);
        }
        if changes.reload {
            // Wholesale change (TRUNCATE): read every channel again, at once.
            self.forget_position();
        }
        self.start_refresh(tasks);
        self.hub.forget_unwatched();
        self.drop_unwatched();
        if self.stale_since.take().is_some() {
            tracing::info!("database reachable again; viewers are up to date");
            self.hub.send_status(false);
        }
        self.health.set_poll_ok(true);
        self.record_gauges();
        self.start_fold(tasks);
        if self.last_prune.elapsed() > PRUNE_EVERY {
            self.last_prune = Instant::now();
            let pool = self.pool.clone();
            tasks.spawn(Task::Prune, &self.settings.faults, async move {
                Done::Prune(journal::prune(&pool, JOURNAL_RETENTION).await)
            });
        }
    }

    /// The journal's changed minutes into the held 1m channels; returns what changed.
    fn apply_minutes(&mut self, minutes: Vec<MinuteChange>) -> BTreeMap<ChannelKey, Delta> {
        let mut deltas: BTreeMap<ChannelKey, Delta> = BTreeMap::new();
        for m in minutes {
            let key = (m.symbol, Interval::M1);
            if let Some(bars) = self.bars.get_mut(&key)
                && bars.set(m.t, m.candle)
            {
                let delta = deltas.entry(key).or_default();
                match m.candle {
                    Some(c) => delta.candles.push(c),
                    None => delta.removed.push(m.t),
                }
            }
        }
        deltas
    }

    /// Bars read again into their channels, adding what changed to `deltas`.
    fn apply_rereads(&mut self, reread: Vec<ReadRange>, deltas: &mut BTreeMap<ChannelKey, Delta>) {
        for range in reread {
            if let Some(bars) = self.bars.get_mut(&range.key) {
                let d = bars.replace_range(range.start, range.end, &range.candles);
                let delta = deltas.entry(range.key).or_default();
                delta.candles.extend(d.candles);
                delta.removed.extend(d.removed);
            }
        }
    }

    /// Channels loaded (or loaded again): held from now on; viewers who had older bars get
    /// the difference in `deltas`.
    fn apply_loads(&mut self, loaded: Vec<Loaded>, deltas: &mut BTreeMap<ChannelKey, Delta>) {
        for load in loaded {
            let fresh = Bars::loaded(load.candles, load.asked);
            let (symbol, interval) = (&load.key.0, load.key.1);
            if self.hub.has_channel(symbol, interval) {
                // Its viewers have older bars (or, after an outage, none): send the difference.
                let old = self.bars.get(&load.key).cloned().unwrap_or_default();
                deltas.insert(load.key.clone(), fresh.delta_from(&old));
            }
            self.hub.invalidate(symbol, interval);
            self.bars.insert(load.key, fresh);
        }
    }

    fn record_gauges(&self) {
        metrics::gauge!("candlewick_viewers").set(self.hub.viewers() as f64);
        metrics::gauge!("candlewick_ws_channels").set(self.hub.channel_count() as f64);
        let held: usize = self.bars.values().map(Bars::len).sum();
        metrics::gauge!("candlewick_window_candles").set(held as f64);
    }

    /// After each successful poll (plain PostgreSQL), unless one runs: the hours and days
    /// changed since the last fold go into the stored rollups, so that reads of
    /// `one_hour_candle` / `one_day_candle` fold only about a poll's worth of changes.
    fn start_fold(&mut self, tasks: &mut Tasks) {
        if self.folding || self.settings.flavour != Flavour::Postgres {
            return;
        }
        self.folding = true;
        let pool = self.pool.clone();
        tasks.spawn(Task::Fold, &self.settings.faults, async move {
            Done::Fold(crate::db::flavour::fold_rollups(&pool).await)
        });
    }

    fn start_refresh(&mut self, tasks: &mut Tasks) {
        if let Some(refresh) = self.refresher.next_refresh() {
            self.after_refresh.refreshing = self.after_refresh.waiting.take();
            let pool = self.pool.clone();
            tasks.spawn(Task::Refresh, &self.settings.faults, async move {
                Done::Refresh(refresh.run(&pool).await)
            });
        }
    }

    fn on_subscribe(&mut self, request: Subscribe, tasks: &mut Tasks) {
        let key = request.channel();
        if self.resumes_from_journal(&request.want) {
            if !self.bars.contains_key(&key) {
                self.to_load.entry(key).or_default();
            }
            self.to_resume.push(request);
            self.start_poll(tasks);
            return;
        }
        let loading = self.to_load.contains_key(&key);
        if !loading && self.servable(&request.want) {
            self.answer(request);
            return;
        }
        if self.stale_since.is_some() {
            // Without a database, a viewer gets what we have, marked stale; its bars are read
            // (and the difference sent as an update) once the database is back.
            self.to_load.entry(key).or_default();
            self.answer(request);
            return;
        }
        self.to_load.entry(key).or_default().push(request);
        self.start_poll(tasks);
    }

    /// Whether `want` resumes, from a token of this database (or perhaps: its epoch is not
    /// read yet) that the hub's kept updates do not cover. Not while the database is away:
    /// the viewer then gets what we have, marked stale.
    fn resumes_from_journal(&self, want: &Want) -> bool {
        let Some(resume) = &want.resume else {
            return false;
        };
        self.stale_since.is_none()
            && self.epoch.as_ref().is_none_or(|e| *e == resume.epoch)
            && !self.hub.can_resume(want)
    }

    /// Answers a viewer whose missed minutes the poll read: a resume and one update of the
    /// held bars of those minutes' buckets. A snapshot instead when the journal no longer
    /// holds them (`None`), the token is from another database, or the bars do not reach back.
    fn answer_resumed(&mut self, request: Subscribe, minutes: Option<Vec<i64>>) {
        let key = request.channel();
        let epoch_matches = matches!(
            (&self.epoch, &request.want.resume),
            (Some(e), Some(r)) if *e == r.epoch
        );
        let held = self
            .bars
            .get(&key)
            .filter(|_| !self.to_load.contains_key(&key));
        let interval = key.1;
        let delta = minutes.zip(held).and_then(|(minutes, bars)| {
            let buckets: BTreeSet<i64> = minutes.iter().map(|m| interval.bucket_of(*m)).collect();
            bars.at(buckets)
        });
        let since = request.want.resume.as_ref().map(|r| r.seq);
        let Subscribe { mut want, reply } = request;
        match (delta, since) {
            (Some(delta), Some(since)) if epoch_matches => {
                let mut sub =
                    self.hub
                        .subscribe_resumed(&want, since, &delta.candles, &delta.removed);
                sub.stale = self.stale_since.is_some();
                self.unwatched_since.remove(&key);
                metrics::counter!("candlewick_journal_resumes_total").increment(1);
                let _ = reply.send(sub);
            }
            _ => {
                want.resume = None;
                let request = Subscribe { want, reply };
                if self.to_load.contains_key(&key) || !self.servable(&request.want) {
                    self.to_load.entry(key).or_default().push(request);
                } else {
                    self.answer(request);
                }
            }
        }
    }

    /// Whether the held bars hold the snapshot `want` asks for.
    fn servable(&self, want: &Want) -> bool {
        let key = (want.symbol.as_str().to_owned(), want.interval);
        let start = want.interval.bucket_of(self.window_start().timestamp());
        self.bars
            .get(&key)
            .is_some_and(|bars| bars.newest(want.limit, start).is_some())
    }

    fn answer(&mut self, request: Subscribe) {
        let Subscribe { want, reply } = request;
        let key = (want.symbol.as_str().to_owned(), want.interval);
        let start = want.interval.bucket_of(self.window_start().timestamp());
        let bars = self.bars.get(&key);
        let mut sub = self.hub.subscribe(&want, || {
            // Not held in full (no database): what is held.
            bars.map(|b| {
                b.newest(want.limit, start)
                    .unwrap_or_else(|| b.newest(Some(b.len()), start).unwrap_or_default())
            })
            .unwrap_or_default()
        });
        // Read together with the snapshot: a status sent before it is never missed, one sent
        // after it is in `updates`.
        sub.stale = self.stale_since.is_some();
        self.unwatched_since.remove(&key);
        let _ = reply.send(sub);
    }

    /// Drops the bars of channels nobody has watched for `keep_unwatched`; they are read again
    /// for their next viewer.
    fn drop_unwatched(&mut self) {
        let now = Instant::now();
        let keys: Vec<ChannelKey> = self.bars.keys().cloned().collect();
        for key in keys {
            if self.hub.has_channel(&key.0, key.1) || self.to_load.contains_key(&key) {
                self.unwatched_since.remove(&key);
                continue;
            }
            let since = *self.unwatched_since.entry(key.clone()).or_insert(now);
            if now.duration_since(since) >= self.settings.keep_unwatched {
                self.bars.remove(&key);
                self.unwatched_since.remove(&key);
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
        let resuming = std::mem::take(&mut self.resuming)
            .into_iter()
            .chain(std::mem::take(&mut self.to_resume))
            .map(|Subscribe { mut want, reply }| {
                want.resume = None;
                Subscribe { want, reply }
            });
        let waiting: Vec<Subscribe> = self
            .to_load
            .values_mut()
            .flat_map(std::mem::take)
            .chain(resuming)
            .collect();
        for request in waiting {
            self.answer(request);
        }
    }

    /// One serialized update per changed channel; the held bars stay within their depth.
    fn broadcast(&mut self, deltas: BTreeMap<ChannelKey, Delta>) {
        for ((symbol, interval), mut delta) in deltas {
            let depth = self.depth(interval);
            if let Some(bars) = self.bars.get_mut(&(symbol.clone(), interval)) {
                bars.trim(depth);
            }
            if delta.is_empty() {
                continue;
            }
            delta.candles.sort_by_key(|c| c.t);
            delta.candles.dedup_by_key(|c| c.t);
            delta.removed.sort_unstable();
            delta.removed.dedup();
            metrics::counter!("candlewick_updates_sent_total").increment(1);
            self.hub
                .send_update(&symbol, interval, &delta.candles, &delta.removed);
        }
    }
}
