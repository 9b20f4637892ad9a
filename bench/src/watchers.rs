//! A few viewers in the bench's own process, for scenarios whose subject is not the fan-out:
//! each joins (the time to its snapshot is returned) and then counts the updates it gets.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::wsclient::{Kind, Target, Viewer};

#[derive(Default)]
pub struct Watchers {
    updates: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Watchers {
    /// Joins one viewer of `url` (a `ws://` URL) and returns the time from connecting to its
    /// snapshot; it then counts updates until [`Watchers::stop`].
    pub async fn add(&mut self, url: &str) -> anyhow::Result<Duration> {
        let target = Target::parse(url)?;
        let started = Instant::now();
        let mut v = tokio::time::timeout(Duration::from_secs(60), async {
            let mut v = Viewer::connect(&target, Ipv4Addr::LOCALHOST, 32 * 1024).await?;
            loop {
                match v.next().await? {
                    Some(m) if m.kind == Kind::Snapshot => return anyhow::Ok(v),
                    Some(_) => {}
                    None => bail!("closed before the snapshot"),
                }
            }
        })
        .await
        .with_context(|| format!("no snapshot from {url} within 60 s"))??;
        let took = started.elapsed();
        let (updates, dropped, stop) = (
            self.updates.clone(),
            self.dropped.clone(),
            self.stop.clone(),
        );
        self.tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    m = v.next() => match m {
                        Ok(Some(m)) if m.kind == Kind::Update => {
                            updates.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Some(_)) => {}
                        _ => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }
        }));
        Ok(took)
    }

    /// Updates received so far, over all viewers.
    pub fn updates(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }

    /// Viewers whose connection ended before [`Watchers::stop`].
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
