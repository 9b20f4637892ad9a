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
use crate::db::journal::{self, Changes, PollRequest, PollResult, Position, ResumeFrom};
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
    /// A symbol's window is dropped this long after its last viewer left.
    pub keep_unwatched: Duration,
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
    /// Reconnecting viewers whose token the hub's kept updates do not cover: the next poll
    /// reads what they missed from the journal.
    to_resume: Vec<Subscribe>,
    /// Those the running poll reads for.
    resuming: Vec<Subscribe>,
    /// The database's epoch, once read.
    epoch: Option<String>,
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
            to_resume: Vec::new(),
            resuming: Vec::new(),
            epoch: None,
            unwatched_since: HashMap::new(),
        }
    }

    async fn run(mut self, mut inbox: mpsc::Receiver<Subscribe>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.settings.poll_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut tasks: JoinSet<Done> = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(request) = inbox.recv() => self.on_subscribe(request, &mut tasks),
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
        self.resuming = std::mem::take(&mut self.to_resume);
        let resumes: Vec<ResumeFrom> = self
            .resuming
            .iter()
            .filter_map(|r| {
                Some(ResumeFrom {
                    symbol: r.symbol().to_owned(),
                    since: r.want.resume.as_ref()?.seq,
                })
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        tasks.spawn(async move {
            let request = PollRequest {
                from: from.as_ref(),
                symbols: Some(&watched),
                load: &load,
                since,
                old_before,
            };
            let poll = journal::poll_resuming(&pool, flavour, &request, &resumes);
            let result = tokio::time::timeout(POLL_TIMEOUT, poll)
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

    fn on_done(&mut self, done: Done, tasks: &mut JoinSet<Done>) {
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
                if (!self.to_load.is_empty() || !self.to_resume.is_empty()) && self.failures == 0 {
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

    fn on_success(&mut self, poll: PollResult, loaded: &[String], tasks: &mut JoinSet<Done>) {
        if self.position.is_none() {
            // Edits made while no poller watched (before start, or a TRUNCATE) may sit in
            // materialized minutes.
            self.refresher.everything(Utc::now().timestamp());
        }
        if let Some(epoch) = poll.epoch {
            self.epoch = Some(epoch);
        }
        match (&self.position, &poll.position, &self.epoch) {
            (None, Some(p), Some(epoch)) => self.hub.restart_at(epoch.clone(), p.seq(), p.upto()),
            (_, Some(p), _) => self.hub.set_position(p.seq(), p.upto()),
            _ => {}
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
        let missed: HashMap<ResumeFrom, Option<Vec<i64>>> = poll
            .resumed
            .into_iter()
            .map(|r| (r.from, r.minutes))
            .collect();
        for request in std::mem::take(&mut self.resuming) {
            let from = request.want.resume.as_ref().map(|r| ResumeFrom {
                symbol: request.symbol().to_owned(),
                since: r.seq,
            });
            let minutes = from.and_then(|f| missed.get(&f).cloned().flatten());
            self.answer_resumed(request, minutes);
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
            tasks.spawn(async move { Done::Prune(journal::prune(&pool, JOURNAL_RETENTION).await) });
        }
    }

    fn start_refresh(&mut self, tasks: &mut JoinSet<Done>) {
        if let Some(refresh) = self.refresher.next_refresh() {
            let pool = self.pool.clone();
            tasks.spawn(async move { Done::Refresh(refresh.run(&pool).await) });
        }
    }

    fn on_subscribe(&mut self, request: Subscribe, tasks: &mut JoinSet<Done>) {
        if self.resumes_from_journal(&request.want) {
            if !self.candles.is_loaded(request.symbol()) {
                self.to_load.entry(request.symbol().to_owned()).or_default();
            }
            self.to_resume.push(request);
            self.start_poll(tasks);
            return;
        }
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

    /// Answers a viewer whose missed minutes the poll read (`None`: a snapshot, as the
    /// journal no longer holds them, the token is from another database, or the poll failed).
    fn answer_resumed(&mut self, request: Subscribe, minutes: Option<Vec<i64>>) {
        let epoch_matches = matches!(
            (&self.epoch, &request.want.resume),
            (Some(e), Some(r)) if *e == r.epoch
        );
        let loaded = self.candles.is_loaded(request.symbol())
            && !self.to_load.contains_key(request.symbol());
        let since = request.want.resume.as_ref().map(|r| r.seq);
        match (minutes, since) {
            (Some(minutes), Some(since)) if epoch_matches && loaded => {
                let Subscribe { want, reply } = request;
                let minutes: BTreeSet<i64> = minutes.into_iter().collect();
                let d = self
                    .candles
                    .delta(want.symbol.as_str(), want.interval, &minutes);
                let mut sub = self
                    .hub
                    .subscribe_resumed(&want, since, &d.candles, &d.removed);
                sub.stale = self.stale_since.is_some();
                self.unwatched_since.remove(want.symbol.as_str());
                metrics::counter!("candlewick_journal_resumes_total").increment(1);
                let _ = reply.send(sub);
            }
            _ => {
                let Subscribe { mut want, reply } = request;
                want.resume = None;
                self.on_loaded_or_queue(Subscribe { want, reply });
            }
        }
    }

    /// A viewer for a snapshot: answered now when its window is here, else once it is read.
    fn on_loaded_or_queue(&mut self, request: Subscribe) {
        if self.candles.is_loaded(request.symbol()) && !self.to_load.contains_key(request.symbol())
            || self.stale_since.is_some()
        {
            self.answer(request);
        } else {
            self.to_load
                .entry(request.symbol().to_owned())
                .or_default()
                .push(request);
        }
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
            // Says which: an unreachable database, or a statement the database refused (the
            // cause chain names it), so the log does not blame an outage that is none.
            let why = if crate::error::unreachable(&e) {
                "the database is unreachable"
            } else {
                "the database refused the poll's query"
            };
            tracing::error!(error.cause_chain = ?e, "poll failed ({why}); viewers see stale data until a poll succeeds");
            self.hub.send_status(true);
        } else {
            tracing::warn!(error = %e, retry_in = ?backoff, "poll failed again");
        }
        // Without a database, waiting viewers get what we have, marked stale.
        let resuming: Vec<Subscribe> = std::mem::take(&mut self.resuming)
            .into_iter()
            .chain(std::mem::take(&mut self.to_resume))
            .map(|Subscribe { mut want, reply }| {
                want.resume = None;
                Subscribe { want, reply }
            })
            .collect();
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
