//! The bench's own feed: one tick per interval through `POST /api/ticks`, so that every poll
//! has an update to fan out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::say;
use crate::setup::Walk;
use crate::system::now_ns;

/// A running feed.
pub struct Feed {
    stop: CancellationToken,
    posted: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
}

impl Feed {
    /// Posts to `target` (HTTP base URL, admin token) every `every`; with no target, posts nothing.
    pub fn start(target: Option<(String, String)>, every: Duration) -> Self {
        let stop = CancellationToken::new();
        let posted = Arc::new(AtomicU64::new(0));
        let task = target.map(|(base, token)| {
            tokio::spawn(post_ticks(base, token, every, stop.clone(), posted.clone()))
        });
        Self { stop, posted, task }
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Stops the feed and waits for it to end; returns the ticks it posted.
    pub async fn join(mut self) -> u64 {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.posted.load(Ordering::Relaxed)
    }
}

impl Drop for Feed {
    /// A run that fails part-way stops posting too.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Posts one tick to `{base}/api/ticks` every `every` until `stop`.
async fn post_ticks(
    base: String,
    token: String,
    every: Duration,
    stop: CancellationToken,
    posted: Arc<AtomicU64>,
) {
    let client = reqwest::Client::new();
    let mut walk = Walk::new(now_ns());
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let sent = client
            .post(format!("{base}/api/ticks"))
            .bearer_auth(&token)
            .json(&walk.tick(Utc::now()))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                posted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => say!("feed: {} from the server", r.status()),
            Err(e) => say!("feed: {e}"),
        }
    }
}
