//! Snapshots are serialized (and gzipped) by the viewer that needs one, on a blocking thread,
//! never on the poller: the poller only hands out the bars. Uncached builds in flight are
//! bounded server-wide and per client address, so a storm of subscribes costs at most a share
//! of the CPU and never delays the broadcasts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OnceCell, Semaphore};

use super::wire::{Format, Frame, ServerMsg};
use crate::domain::{Candle, Interval};

/// Uncached snapshot builds one client address may have in flight.
const BUILDS_PER_CLIENT: usize = 1;
/// Client addresses remembered before those with no build in flight are forgotten.
const CLIENTS_KEPT: usize = 1024;

/// What a snapshot holds, until it is built.
#[derive(Debug)]
pub struct Recipe {
    pub symbol: String,
    pub interval: Interval,
    /// The bars, ascending.
    pub candles: Vec<Candle>,
    pub seq: u64,
    pub epoch: String,
    pub format: Format,
}

impl Recipe {
    fn build(&self) -> Frame {
        ServerMsg::Snapshot {
            symbol: &self.symbol,
            interval: self.interval,
            candles: &self.candles,
            seq: self.seq,
            epoch: &self.epoch,
        }
        .to_frame(self.format)
    }
}

/// One snapshot of a channel, built once (by the first viewer that needs it) and shared by every
/// viewer that asks for the same limit and format until the channel changes.
#[derive(Debug)]
pub struct Snapshot {
    built: OnceCell<Frame>,
    /// Dropped once built.
    recipe: Mutex<Option<Arc<Recipe>>>,
}

impl Snapshot {
    pub fn new(recipe: Recipe) -> Arc<Self> {
        Arc::new(Self {
            built: OnceCell::new(),
            recipe: Mutex::new(Some(Arc::new(recipe))),
        })
    }

    /// The frame: the built one, or built now within `limits` for `client`.
    pub async fn frame(&self, limits: &BuildLimits, client: Option<IpAddr>) -> Frame {
        if let Some(frame) = self.built.get() {
            return frame.clone();
        }
        let _permits = limits.acquire(client).await;
        let frame = self
            .built
            .get_or_init(|| async {
                let Some(recipe) = self.recipe() else {
                    return error_frame();
                };
                metrics::counter!("candlewick_snapshot_builds_total").increment(1);
                tokio::task::spawn_blocking(move || recipe.build())
                    .await
                    .unwrap_or_else(|_| error_frame())
            })
            .await
            .clone();
        self.forget_recipe();
        frame
    }

    /// The frame, built on this thread if need be (tests).
    pub fn frame_now(&self) -> Frame {
        match self.built.get() {
            Some(frame) => frame.clone(),
            None => self.recipe().map_or_else(error_frame, |r| r.build()),
        }
    }

    fn recipe(&self) -> Option<Arc<Recipe>> {
        self.recipe.lock().ok().and_then(|r| r.clone())
    }

    fn forget_recipe(&self) {
        if let Ok(mut recipe) = self.recipe.lock() {
            *recipe = None;
        }
    }
}

fn error_frame() -> Frame {
    Frame::Text(
        ServerMsg::Error {
            error: "the snapshot could not be built; subscribe again",
        }
        .to_text(),
    )
}

/// How many uncached snapshots are built at once: server-wide, and per client address.
#[derive(Debug)]
pub struct BuildLimits {
    server: Arc<Semaphore>,
    clients: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

impl Default for BuildLimits {
    /// One build at a time per client; server-wide, one less than the cores (at least one), so
    /// a core stays for the poller and the connections.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cores.saturating_sub(1).max(1))
    }
}

/// The permits of one build: held while it runs.
pub struct Permits {
    _client: Option<tokio::sync::OwnedSemaphorePermit>,
    _server: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl BuildLimits {
    pub fn new(server_wide: usize) -> Self {
        Self {
            server: Arc::new(Semaphore::new(server_wide)),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a build slot of `client`, then one of the server.
    pub async fn acquire(&self, client: Option<IpAddr>) -> Permits {
        let per_client = client.and_then(|ip| self.client_semaphore(ip));
        let client = match per_client {
            Some(s) => s.acquire_owned().await.ok(),
            None => None,
        };
        let server = self.server.clone().acquire_owned().await.ok();
        Permits {
            _client: client,
            _server: server,
        }
    }

    fn client_semaphore(&self, ip: IpAddr) -> Option<Arc<Semaphore>> {
        let mut clients = self.clients.lock().ok()?;
        if clients.len() >= CLIENTS_KEPT {
            // Only the map holds those without a build in flight.
            clients.retain(|_, s| Arc::strong_count(s) > 1);
        }
        Some(
            clients
                .entry(ip)
                .or_insert_with(|| Arc::new(Semaphore::new(BUILDS_PER_CLIENT)))
                .clone(),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_client_builds_one_snapshot_at_a_time_and_others_are_not_held_up() {
        let limits = BuildLimits::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limits.acquire(Some(a)).await;
        let second = tokio::time::timeout(Duration::from_millis(50), limits.acquire(Some(a))).await;
        assert!(second.is_err(), "the same client waits");
        let other = tokio::time::timeout(Duration::from_millis(50), limits.acquire(Some(b))).await;
        assert!(other.is_ok(), "another client does not");
        drop(first);
        let again = tokio::time::timeout(Duration::from_millis(50), limits.acquire(Some(a))).await;
        assert!(again.is_ok());
    }

    #[tokio::test]
    async fn a_snapshot_is_built_once_and_shared() {
        let snapshot = Snapshot::new(Recipe {
            symbol: "A".into(),
            interval: Interval::M1,
            candles: Vec::new(),
            seq: 3,
            epoch: "e".into(),
            format: Format::Json,
        });
        let limits = BuildLimits::new(1);
        let one = snapshot.frame(&limits, None).await;
        let two = snapshot.frame(&limits, None).await;
        assert_eq!(one, two);
        assert!(
            snapshot.recipe().is_none(),
            "the bars are let go once built"
        );
        let Frame::Text(text) = one else {
            panic!("a text frame")
        };
        assert!(text.contains(r#""seq":3"#), "{text}");
    }
}
