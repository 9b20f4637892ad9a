//! Wire messages and the per-(symbol, interval) broadcast channels they go out on.

use std::collections::HashMap;

use bytestring::ByteString;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::domain::{Candle, Interval};

/// Messages buffered per channel before a slow viewer counts as lagging (and gets a snapshot).
pub const CHANNEL_CAPACITY: usize = 64;

/// Server → viewer messages (the WebSocket protocol in README.md, "Using it").
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    Snapshot {
        symbol: &'a str,
        interval: Interval,
        candles: &'a [Candle],
    },
    Update {
        symbol: &'a str,
        interval: Interval,
        candles: &'a [Candle],
        removed: &'a [i64],
    },
    Status {
        stale: bool,
    },
}

impl ServerMsg<'_> {
    /// Serialized once; the same bytes go to every viewer.
    pub fn to_frame(&self) -> ByteString {
        // unwrap: these types always serialize (finite floats are checked at the edges; a
        // non-finite one becomes `null` in serde_json).
        serde_json::to_string(self)
            .map(ByteString::from)
            .unwrap_or_else(|_| ByteString::from_static("{}"))
    }
}

/// What a viewer gets when it subscribes: the snapshot and, with no gap between, the updates.
#[derive(Debug)]
pub struct Subscription {
    pub snapshot: ByteString,
    pub updates: broadcast::Receiver<ByteString>,
    /// Whether the data is stale right now (the status frames before this were not seen).
    pub stale: bool,
}

#[derive(Debug)]
struct Channel {
    tx: broadcast::Sender<ByteString>,
    /// The serialized snapshot, reused by every viewer until the next change.
    snapshot: Option<ByteString>,
}

/// The broadcast channels, keyed by symbol and interval. Owned by the poller actor.
#[derive(Debug, Default)]
pub struct Hub {
    channels: HashMap<(String, Interval), Channel>,
}

impl Hub {
    /// A receiver for the channel and its cached snapshot (built by `make_snapshot` when absent).
    pub fn subscribe(
        &mut self,
        symbol: &str,
        interval: Interval,
        make_snapshot: impl FnOnce() -> ByteString,
    ) -> Subscription {
        let ch = self
            .channels
            .entry((symbol.to_owned(), interval))
            .or_insert_with(|| Channel {
                tx: broadcast::channel(CHANNEL_CAPACITY).0,
                snapshot: None,
            });
        let snapshot = ch.snapshot.get_or_insert_with(make_snapshot).clone();
        Subscription {
            snapshot,
            updates: ch.tx.subscribe(),
            stale: false,
        }
    }

    /// Forgets the cached snapshots of `symbol` (its candles changed without an update).
    pub fn invalidate(&mut self, symbol: &str) {
        for ((s, _), ch) in &mut self.channels {
            if s == symbol {
                ch.snapshot = None;
            }
        }
    }

    /// Drops the channels nobody listens to any more. Without this, viewers asking for
    /// symbols that never change would leave a channel and its snapshot behind for good.
    pub fn forget_unwatched(&mut self) {
        self.channels.retain(|_, ch| ch.tx.receiver_count() > 0);
    }

    /// Whether anyone listens to a channel of `symbol`.
    pub fn is_watched(&self, symbol: &str) -> bool {
        self.channels
            .iter()
            .any(|((s, _), ch)| s == symbol && ch.tx.receiver_count() > 0)
    }

    /// Open channels (for metrics and tests).
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Channels of `symbol` that someone listens to; drops the others' cached snapshots and
    /// forgets channels nobody has listened to since.
    pub fn watched_intervals(&mut self, symbol: &str) -> Vec<Interval> {
        let mut watched = Vec::new();
        self.channels.retain(|(s, i), ch| {
            if s != symbol {
                return true;
            }
            ch.snapshot = None;
            let listened = ch.tx.receiver_count() > 0;
            if listened {
                watched.push(*i);
            }
            listened
        });
        watched.sort();
        watched
    }

    /// Sends `frame` on one channel. No receivers is normal.
    pub fn send(&self, symbol: &str, interval: Interval, frame: ByteString) {
        if let Some(ch) = self.channels.get(&(symbol.to_owned(), interval)) {
            let _ = ch.tx.send(frame);
        }
    }

    /// Sends `frame` to every viewer of every channel.
    pub fn send_all(&self, frame: &ByteString) {
        for ch in self.channels.values() {
            let _ = ch.tx.send(frame.clone());
        }
    }

    /// Viewers across all channels.
    pub fn viewers(&self) -> usize {
        self.channels.values().map(|c| c.tx.receiver_count()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_without_viewers_are_forgotten() {
        let mut hub = Hub::default();
        let kept = hub.subscribe("A", Interval::M1, || ByteString::from_static("a"));
        let gone = hub.subscribe("NEVER/CHANGES", Interval::M5, || {
            ByteString::from_static("b")
        });
        drop(gone);
        hub.forget_unwatched();
        assert_eq!(hub.channel_count(), 1);
        assert_eq!(hub.viewers(), 1);
        drop(kept);
    }

    #[test]
    fn an_invalidated_snapshot_is_rebuilt() {
        let mut hub = Hub::default();
        let _a = hub.subscribe("A", Interval::M1, || ByteString::from_static("old"));
        assert_eq!(
            hub.subscribe("A", Interval::M1, || ByteString::from_static("new"))
                .snapshot,
            "old"
        );
        hub.invalidate("A");
        assert_eq!(
            hub.subscribe("A", Interval::M1, || ByteString::from_static("new"))
                .snapshot,
            "new"
        );
    }
}
