//! The broadcast channel per (symbol, interval): updates serialized once and numbered, the last
//! few kept for viewers that reconnect, and snapshots cached per (limit, format) until the next
//! change, so a join costs one copy of shared bytes, not a serialization per viewer (the first
//! viewer that needs a snapshot builds it, off the poller: see `snapshot`).
//!
//! Numbers are the database's, not this process's: a frame's `seq` is the xmin of the journal
//! position its candles are as of (see `db::journal::Position`), and the epoch names the
//! database. A viewer with the token `seq` has seen every transaction below it. One that comes
//! back with a token this hub's kept updates cover resumes from them; any other token of the
//! same database is resumed by the poller from the journal.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use rand::distr::{Alphanumeric, SampleString};
use tokio::sync::broadcast;

use super::snapshot::{Recipe, Snapshot};
use super::wire::{Format, Frame, ServerMsg, Want};
use crate::domain::{Candle, Interval};

/// Messages buffered per channel before a slow viewer counts as lagging (and gets a snapshot).
pub const CHANNEL_CAPACITY: usize = 64;
/// Updates kept per channel for viewers that reconnect and resume.
pub const RESUME_BUFFER: usize = 64;
/// Snapshots (by limit and format) cached per channel; the page asks for a few limit classes.
const SNAPSHOTS_KEPT: usize = 4;
/// A channel whose last viewer left keeps numbering and keeping updates this long by default
/// (`--resume-grace`), so a chart that reconnects after a network blip resumes instead of
/// loading a snapshot.
pub const RESUME_GRACE: Duration = Duration::from_secs(60);

/// An update as it goes out on a channel: its number and its serialized text.
#[derive(Debug, Clone)]
pub struct Update {
    pub seq: u64,
    /// The xmax of the position it was read at: it holds only transactions below this.
    pub upto: u64,
    pub frame: ByteString,
}

/// What a viewer gets when it subscribes: the first frames (a snapshot, or a resume and the
/// updates it missed) and, with no gap between, the updates after them.
#[derive(Debug)]
pub struct Subscription {
    /// A resume and the updates missed (empty when a snapshot comes instead).
    pub first: Vec<Frame>,
    /// The snapshot to send first, built by whoever needs it first.
    pub snapshot: Option<Arc<Snapshot>>,
    pub updates: broadcast::Receiver<Update>,
    /// Whether the data is stale right now (the status frames before this were not seen).
    pub stale: bool,
}

/// What tells snapshots of one channel apart: their limit and format.
type SnapshotKey = (Option<usize>, Format);

#[derive(Debug)]
struct Channel {
    tx: broadcast::Sender<Update>,
    /// The xmax of the position this channel was made at (or its candles were read afresh
    /// at): its kept updates cover the tokens that saw every transaction below it.
    born: u64,
    /// The last update sent here (`born` before any).
    last_seq: u64,
    /// The newest updates, for resuming viewers; `evicted` is the newest `upto` dropped.
    recent: VecDeque<Update>,
    evicted: u64,
    /// Snapshots by (limit, format), newest last, reused until the next change.
    snapshots: Vec<(SnapshotKey, Arc<Snapshot>)>,
    /// Since when nobody listens (`None` while someone does).
    unwatched_since: Option<Instant>,
}

impl Channel {
    /// Someone listens, or did within `grace` (`now` updates the bookkeeping).
    fn alive(&mut self, now: Instant, grace: Duration) -> bool {
        if self.tx.receiver_count() > 0 {
            self.unwatched_since = None;
            return true;
        }
        let since = *self.unwatched_since.get_or_insert(now);
        now.duration_since(since) < grace
    }

    /// The updates a viewer with the token `seq` (it has seen every transaction below it) may
    /// lack, when this channel still has all of them: those holding transactions from `seq` on.
    fn since(&self, seq: u64) -> Option<Vec<Frame>> {
        if self.born > seq || self.evicted > seq {
            return None;
        }
        Some(
            self.recent
                .iter()
                .filter(|u| u.upto > seq)
                .map(|u| Frame::Text(u.frame.clone()))
                .collect(),
        )
    }

    /// The snapshot `want` asks for, as of `position`: the cached one of its limit and format,
    /// else one made (and cached) of `bars`, the channel's newest candles ascending.
    fn snapshot(
        &mut self,
        want: &Want,
        position: u64,
        epoch: &str,
        bars: impl FnOnce() -> Vec<Candle>,
    ) -> Arc<Snapshot> {
        let key = (want.limit, want.format);
        if let Some((_, cached)) = self.snapshots.iter().find(|(k, _)| *k == key) {
            return cached.clone();
        }
        let mut candles = bars();
        let from = want.limit.map_or(0, |n| candles.len().saturating_sub(n));
        candles.drain(..from);
        let snapshot = Snapshot::new(Recipe {
            symbol: want.symbol.as_str().to_owned(),
            interval: want.interval,
            candles,
            seq: position,
            epoch: epoch.to_owned(),
            format: want.format,
        });
        if self.snapshots.len() == SNAPSHOTS_KEPT {
            self.snapshots.remove(0);
        }
        self.snapshots.push((key, snapshot.clone()));
        snapshot
    }
}

/// A resuming viewer's first frames: the resume (the token `seq` it came back with), then the
/// updates it `missed`.
fn resume_frames(
    want: &Want,
    seq: u64,
    epoch: &str,
    missed: impl IntoIterator<Item = Frame>,
) -> Vec<Frame> {
    let resume = ServerMsg::Resume {
        symbol: want.symbol.as_str(),
        interval: want.interval,
        seq,
        epoch,
    };
    std::iter::once(resume.to_frame(Format::Json))
        .chain(missed)
        .collect()
}

/// The broadcast channels, keyed by symbol and interval. Owned by the poller.
#[derive(Debug)]
pub struct Hub {
    /// The database (random until the poller has read it): numbers mean nothing elsewhere.
    epoch: String,
    /// The poller's position (its xmin): what snapshots and updates made now are as of.
    position: u64,
    /// The position's xmax: no transaction from here on is in the candles.
    upto: u64,
    /// How long a channel nobody listens to is kept for reconnecting viewers.
    grace: Duration,
    channels: HashMap<(String, Interval), Channel>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(RESUME_GRACE)
    }
}

impl Hub {
    /// A hub keeping channels nobody listens to for `grace`.
    pub fn new(grace: Duration) -> Self {
        Self {
            epoch: Alphanumeric.sample_string(&mut rand::rng(), 12),
            position: 0,
            upto: 0,
            grace,
            channels: HashMap::new(),
        }
    }

    /// The database's epoch (a random one until the poller has read it).
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The poller has a position again after having none (at start, after a TRUNCATE or a long
    /// outage): numbers from here on are as of `position` in the database `epoch`; the kept
    /// updates no longer tell what a viewer missed (the candles were read afresh).
    pub fn restart_at(&mut self, epoch: String, position: u64, upto: u64) {
        self.epoch = epoch;
        self.position = position;
        self.upto = upto;
        for ch in self.channels.values_mut() {
            ch.born = upto;
            ch.recent.clear();
            ch.evicted = 0;
        }
    }

    /// The poller moved to a later position (before it sends the updates it read there).
    pub fn set_position(&mut self, position: u64, upto: u64) {
        self.position = self.position.max(position);
        self.upto = self.upto.max(upto);
    }

    /// Whether the updates kept here answer `want`'s resume token (else the journal must).
    pub fn can_resume(&self, want: &Want) -> bool {
        want.resume.as_ref().is_some_and(|r| {
            r.epoch == self.epoch
                && self
                    .channels
                    .get(&(want.symbol.as_str().to_owned(), want.interval))
                    .is_some_and(|ch| ch.since(r.seq).is_some())
        })
    }

    /// A resumed viewer's first frames from the journal: the resume, then one update of the
    /// candles it missed (`candles`, and the buckets `removed`) unless there are none.
    pub fn subscribe_resumed(
        &mut self,
        want: &Want,
        since: u64,
        candles: &[Candle],
        removed: &[i64],
    ) -> Subscription {
        let missed = (!candles.is_empty() || !removed.is_empty()).then(|| {
            ServerMsg::Update {
                symbol: want.symbol.as_str(),
                interval: want.interval,
                candles,
                removed,
                seq: self.position,
            }
            .to_frame(Format::Json)
        });
        let first = resume_frames(want, since, &self.epoch, missed);
        let ch = self.channel(want.symbol.as_str(), want.interval);
        Subscription {
            first,
            snapshot: None,
            updates: ch.tx.subscribe(),
            stale: false,
        }
    }

    /// The channel of (`symbol`, `interval`), made if new; someone listens from now.
    fn channel(&mut self, symbol: &str, interval: Interval) -> &mut Channel {
        let (position, upto) = (self.position, self.upto);
        let ch = self
            .channels
            .entry((symbol.to_owned(), interval))
            .or_insert_with(|| Channel {
                tx: broadcast::channel(CHANNEL_CAPACITY).0,
                born: upto,
                last_seq: position,
                recent: VecDeque::new(),
                evicted: 0,
                snapshots: Vec::new(),
                unwatched_since: None,
            });
        ch.unwatched_since = None;
        ch
    }

    /// A receiver for the channel `want` names and its first frames: what the viewer missed if
    /// it can resume, else the snapshot (of `bars`, the newest candles of the channel
    /// ascending, when no cached one fits).
    pub fn subscribe(&mut self, want: &Want, bars: impl FnOnce() -> Vec<Candle>) -> Subscription {
        let (position, epoch) = (self.position, self.epoch.clone());
        let ch = self.channel(want.symbol.as_str(), want.interval);
        let resumed = want
            .resume
            .as_ref()
            .filter(|r| r.epoch == epoch)
            .and_then(|r| Some((r.seq, ch.since(r.seq)?)));
        let (first, snapshot) = match resumed {
            Some((seq, missed)) => (resume_frames(want, seq, &epoch, missed), None),
            None => (Vec::new(), Some(ch.snapshot(want, position, &epoch, bars))),
        };
        Subscription {
            first,
            snapshot,
            updates: ch.tx.subscribe(),
            stale: false,
        }
    }

    /// Forgets the cached snapshots of a channel (its bars changed without an update).
    pub fn invalidate(&mut self, symbol: &str, interval: Interval) {
        if let Some(ch) = self.channels.get_mut(&(symbol.to_owned(), interval)) {
            ch.snapshots.clear();
        }
    }

    /// Drops the channels nobody has listened to for the grace. Without this, viewers asking
    /// for symbols that never change would leave a channel and its snapshots behind.
    pub fn forget_unwatched(&mut self) {
        let (now, grace) = (Instant::now(), self.grace);
        self.channels.retain(|_, ch| ch.alive(now, grace));
    }

    /// Whether the channel of `symbol` at `interval` is kept (someone listens, or did a
    /// moment ago: within the grace).
    pub fn has_channel(&self, symbol: &str, interval: Interval) -> bool {
        self.channels.contains_key(&(symbol.to_owned(), interval))
    }

    /// Open channels (for metrics and tests).
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Numbers, serializes and sends an update on one channel (and keeps it for resuming
    /// viewers); its cached snapshots are out of date from now on.
    pub fn send_update(
        &mut self,
        symbol: &str,
        interval: Interval,
        candles: &[Candle],
        removed: &[i64],
    ) {
        let Some(ch) = self.channels.get_mut(&(symbol.to_owned(), interval)) else {
            return;
        };
        let seq = self.position;
        let update = Update {
            seq,
            upto: self.upto,
            frame: ServerMsg::Update {
                symbol,
                interval,
                candles,
                removed,
                seq,
            }
            .to_text(),
        };
        ch.last_seq = seq;
        ch.snapshots.clear();
        if ch.recent.len() == RESUME_BUFFER
            && let Some(old) = ch.recent.pop_front()
        {
            ch.evicted = old.upto;
        }
        ch.recent.push_back(update.clone());
        // No receivers is normal.
        let _ = ch.tx.send(update);
    }

    /// Sends a status frame to every viewer of every channel (not numbered: a resuming viewer
    /// is told the status afresh).
    pub fn send_status(&self, stale: bool) {
        let frame = ServerMsg::Status { stale }.to_text();
        for ch in self.channels.values() {
            let _ = ch.tx.send(Update {
                seq: ch.last_seq,
                upto: 0,
                frame: frame.clone(),
            });
        }
    }

    /// Viewers across all channels.
    pub fn viewers(&self) -> usize {
        self.channels.values().map(|c| c.tx.receiver_count()).sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use crate::domain::Symbol;
    use crate::feed::wire::Resume;

    fn want(symbol: &str, limit: Option<usize>) -> Want {
        Want {
            symbol: Symbol::parse(symbol).unwrap(),
            interval: Interval::M1,
            limit,
            format: Format::Json,
            resume: None,
        }
    }

    fn candles(n: i64) -> Vec<Candle> {
        (0..n)
            .map(|i| Candle {
                t: i * 60,
                open: 1.0,
                high: 1.0,
                low: 1.0,
                close: 1.0,
                volume: 1.0,
            })
            .collect()
    }

    /// The first frame a subscription sends.
    fn first(sub: &Subscription) -> Frame {
        match &sub.snapshot {
            Some(snapshot) => snapshot.frame_now(),
            None => sub.first[0].clone(),
        }
    }

    fn text(frame: &Frame) -> serde_json::Value {
        match frame {
            Frame::Text(t) => serde_json::from_str(t).unwrap(),
            Frame::Binary(_) => panic!("a text frame"),
        }
    }

    #[test]
    fn channels_without_viewers_are_forgotten_after_the_grace() {
        let mut hub = Hub::default();
        let kept = hub.subscribe(&want("A", None), Vec::new);
        let gone = hub.subscribe(&want("NEVER/CHANGES", None), Vec::new);
        drop(gone);
        hub.forget_unwatched();
        assert_eq!(hub.channel_count(), 2, "kept for a reconnect");
        if let Some(ch) = hub
            .channels
            .get_mut(&("NEVER/CHANGES".to_owned(), Interval::M1))
        {
            ch.unwatched_since = Some(Instant::now() - RESUME_GRACE);
        }
        hub.forget_unwatched();
        assert_eq!(hub.channel_count(), 1);
        assert_eq!(hub.viewers(), 1);
        drop(kept);
    }

    #[test]
    fn a_channel_is_kept_for_the_grace_the_hub_was_given() {
        let grace = RESUME_GRACE * 2;
        let mut hub = Hub::new(grace);
        drop(hub.subscribe(&want("A", None), Vec::new));
        let left = |hub: &mut Hub, ago: Duration| {
            if let Some(ch) = hub.channels.get_mut(&("A".to_owned(), Interval::M1)) {
                ch.unwatched_since = Some(Instant::now() - ago);
            }
            hub.forget_unwatched();
            hub.channel_count()
        };
        assert_eq!(left(&mut hub, RESUME_GRACE), 1, "longer than the default");
        assert_eq!(left(&mut hub, grace), 0);
    }

    #[test]
    fn a_snapshot_holds_the_newest_limit_candles_and_is_reused_until_a_change() {
        let mut hub = Hub::default();
        let a = hub.subscribe(&want("A", Some(2)), || candles(5));
        let snapshot = text(&first(&a));
        assert_eq!(snapshot["candles"].as_array().unwrap().len(), 2);
        assert_eq!(snapshot["candles"][0][0], 180);
        let again = hub.subscribe(&want("A", Some(2)), || panic!("served from the cache"));
        assert!(Arc::ptr_eq(
            again.snapshot.as_ref().unwrap(),
            a.snapshot.as_ref().unwrap()
        ));
        hub.send_update("A", Interval::M1, &candles(1), &[]);
        let fresh = hub.subscribe(&want("A", Some(2)), || candles(3));
        assert_eq!(text(&first(&fresh))["candles"][0][0], 60);
    }

    #[test]
    fn a_reconnect_resumes_with_the_updates_it_missed_or_gets_a_snapshot() {
        let mut hub = Hub::default();
        hub.restart_at("db".into(), 10, 10);
        let earlier = hub.subscribe(&want("A", None), || candles(1));
        let snapshot = text(&first(&earlier));
        assert_eq!(snapshot["epoch"], "db");
        assert_eq!(snapshot["seq"], 10);
        hub.set_position(11, 11);
        hub.send_update("A", Interval::M1, &candles(1), &[]);
        hub.set_position(12, 12);
        hub.send_update("A", Interval::M1, &candles(2), &[]);
        let mut back = want("A", None);
        let resume = |epoch: &str, seq| {
            Some(Resume {
                epoch: epoch.into(),
                seq,
            })
        };
        back.resume = resume("db", 10);
        assert!(hub.can_resume(&back));
        let resumed = hub.subscribe(&back, || panic!("no snapshot on resume"));
        assert_eq!(text(&resumed.first[0])["type"], "resume");
        assert_eq!(resumed.first.len(), 3, "the resume and both updates");
        back.resume = resume("db", 11);
        assert_eq!(
            hub.subscribe(&back, Vec::new).first.len(),
            2,
            "the resume and the one update with transactions from 11 on"
        );
        back.resume = resume("db", 12);
        assert_eq!(
            hub.subscribe(&back, Vec::new).first.len(),
            1,
            "nothing missed"
        );

        back.resume = resume("another database", 12);
        assert!(!hub.can_resume(&back));
        let fresh = hub.subscribe(&back, || candles(1));
        assert_eq!(text(&first(&fresh))["type"], "snapshot");
        assert_eq!(text(&first(&fresh))["seq"], 12);

        for i in 0..RESUME_BUFFER as u64 {
            hub.set_position(13 + i, 13 + i);
            hub.send_update("A", Interval::M1, &candles(1), &[]);
        }
        back.resume = resume("db", 11);
        assert!(
            !hub.can_resume(&back),
            "the missed updates are no longer kept"
        );
        let too_late = hub.subscribe(&back, || candles(1));
        assert_eq!(text(&first(&too_late))["type"], "snapshot");

        hub.restart_at("db".into(), 100, 105);
        back.resume = resume("db", 100);
        assert!(
            !hub.can_resume(&back),
            "candles read afresh at a position that saw transactions from 100 on: the journal \
             tells whether the viewer has them"
        );
        drop(earlier);
    }

    #[test]
    fn a_resume_from_the_journal_sends_the_missed_candles_as_one_update() {
        let mut hub = Hub::default();
        hub.restart_at("db".into(), 50, 52);
        let mut back = want("A", None);
        back.resume = Some(Resume {
            epoch: "db".into(),
            seq: 40,
        });
        let sub = hub.subscribe_resumed(&back, 40, &candles(2), &[600]);
        assert_eq!(text(&sub.first[0])["type"], "resume");
        let update = text(&sub.first[1]);
        assert_eq!(update["type"], "update");
        assert_eq!(update["seq"], 50);
        assert_eq!(update["candles"].as_array().unwrap().len(), 2);
        assert_eq!(update["removed"], serde_json::json!([600]));
        let nothing = hub.subscribe_resumed(&back, 40, &[], &[]);
        assert_eq!(nothing.first.len(), 1, "only the resume");
    }
}
