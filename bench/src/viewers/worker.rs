//! The `viewers-worker` process: opens its share of the viewers at its rate, records receipts
//! through the window the parent opens, and judges its viewers against the frames the parent
//! sends back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::collect;
use super::protocol::{self, FromWorker, ToWorker, WorkerConfig, emit};
use super::viewer::{self, Log, Route, Shared};
use crate::system::now_ns;
use crate::wsclient::Target;

/// After the window closes, how long late deliveries are still recorded.
const GRACE: Duration = Duration::from_secs(3);

/// The `viewers-worker` process.
pub fn worker_main(config: &str) -> anyhow::Result<()> {
    let cfg: WorkerConfig =
        serde_json::from_str(config).context("reading the worker configuration")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let max = Duration::from_secs(cfg.max_seconds);
    rt.block_on(async move {
        match tokio::time::timeout(max, worker(cfg)).await {
            Ok(r) => r,
            Err(_) => bail!("the worker ran out of time"),
        }
    })
}

async fn worker(cfg: WorkerConfig) -> anyhow::Result<()> {
    let shared = Arc::new(Shared::new());
    let mut lines = protocol::parent_lines();
    let handles = open_viewers(&cfg, &shared).await?;
    wait_until_settled(cfg.count, &shared).await;
    let logs = record_window(&mut lines, &shared, handles).await?;
    emit(&FromWorker::Frames {
        frames: collect::first_receipts(&logs),
    });
    let Some(ToWorker::Judge { frames }) = protocol::next_msg(&mut lines).await? else {
        bail!("expected the frames to judge");
    };
    emit(&FromWorker::Result(collect::judge(&logs, frames)));
    Ok(())
}

/// Starts the viewers at the configured rate, round-robin over servers and then source
/// addresses by their global index, reporting progress every half second.
async fn open_viewers(
    cfg: &WorkerConfig,
    shared: &Arc<Shared>,
) -> anyhow::Result<Vec<JoinHandle<Log>>> {
    let targets: Vec<Arc<Target>> = cfg
        .urls
        .iter()
        .map(|u| Target::parse(u).map(Arc::new))
        .collect::<Result<_, _>>()?;
    let started = tokio::time::Instant::now();
    let gap = Duration::from_secs_f64(1.0 / cfg.rate.max(0.001));
    let mut handles = Vec::with_capacity(cfg.count);
    let mut last_report = Instant::now();
    for i in 0..cfg.count {
        tokio::time::sleep_until(started + gap * i as u32).await;
        let g = cfg.offset + i;
        let server = g % targets.len();
        let route = Route {
            target: targets[server].clone(),
            server: server as u16,
            source: cfg.sources[(g / targets.len()) % cfg.sources.len()],
            rcvbuf: cfg.rcvbuf,
        };
        handles.push(tokio::spawn(viewer::viewer(route, shared.clone())));
        if last_report.elapsed() > Duration::from_millis(500) {
            last_report = Instant::now();
            let (connected, failed) = shared.counts();
            emit(&FromWorker::Progress { connected, failed });
        }
    }
    Ok(handles)
}

/// Reports progress until every viewer has its snapshot or has given up, then `ready`.
async fn wait_until_settled(count: usize, shared: &Shared) {
    loop {
        let (connected, failed) = shared.counts();
        if connected + failed >= count {
            emit(&FromWorker::Ready { connected, failed });
            return;
        }
        emit(&FromWorker::Progress { connected, failed });
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Records from a second before the window the parent opens until [`GRACE`] after it, then
/// stops every viewer and returns their logs.
async fn record_window(
    lines: &mut mpsc::Receiver<String>,
    shared: &Shared,
    handles: Vec<JoinHandle<Log>>,
) -> anyhow::Result<Vec<Log>> {
    let Some(ToWorker::Window { start, end }) = protocol::next_msg(lines).await? else {
        bail!("expected the window");
    };
    shared
        .record_from
        .store(start.saturating_sub(1_000_000_000), Ordering::Relaxed);
    let stop_at = end + GRACE.as_nanos() as u64;
    let now = now_ns();
    if stop_at > now {
        tokio::time::sleep(Duration::from_nanos(stop_at - now)).await;
    }
    shared.stop.cancel();
    let mut logs = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(log) = h.await {
            logs.push(log);
        }
    }
    Ok(logs)
}
