//! The `viewers-worker` process: opens its share of the viewers at its rate, reports when they
//! have all joined, then for each window the parent opens records receipts, reports each
//! frame's first receipt and judges its viewers against the frames the parent sends back. It
//! stops its viewers and exits when the parent closes its stdin.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::task::JoinHandle;

use super::collect;
use super::protocol::{self, FromWorker, ToWorker, WorkerConfig, emit};
use super::viewer::{self, Route, Shared, SharedLog, lock};
use crate::system;
use crate::wsclient::Target;

/// After a window closes, how long late deliveries are still waited for.
const GRACE: Duration = Duration::from_secs(3);
/// Receipts this long before a window are kept: a frame first received just before the window
/// is then known as such, and not judged (see `collect::in_window`).
const LOOK_BACK: Duration = Duration::from_secs(1);
/// How long the viewers get to close when the worker ends.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

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
    let (logs, handles) = open_viewers(&cfg, &shared).await?;
    wait_until_settled(cfg.count, &shared, &logs).await;
    while let Some(msg) = protocol::next_msg(&mut lines).await? {
        let ToWorker::Window { start, end } = msg else {
            bail!("expected a window, got {msg:?}");
        };
        record_window(&shared, &logs, start, end).await;
        let guards: Vec<_> = logs.iter().map(lock).collect();
        let frames = collect::first_receipts(guards.iter().map(|g| &**g));
        drop(guards);
        emit(&FromWorker::Frames { frames });
        let Some(ToWorker::Judge { frames }) = protocol::next_msg(&mut lines).await? else {
            bail!("expected the frames to judge");
        };
        let guards: Vec<_> = logs.iter().map(lock).collect();
        let result = collect::judge(guards.iter().map(|g| &**g), frames);
        drop(guards);
        emit(&FromWorker::Result(result));
    }
    shared.stop.cancel();
    let _ = tokio::time::timeout(STOP_TIMEOUT, futures_util::future::join_all(handles)).await;
    Ok(())
}

/// Starts the viewers at the configured rate, round-robin over servers and then source
/// addresses by their global index, reporting progress every half second.
async fn open_viewers(
    cfg: &WorkerConfig,
    shared: &Arc<Shared>,
) -> anyhow::Result<(Vec<SharedLog>, Vec<JoinHandle<()>>)> {
    let targets: Vec<Arc<Target>> = cfg
        .urls
        .iter()
        .map(|u| Target::parse(u).map(Arc::new))
        .collect::<Result<_, _>>()?;
    let upstreams: Arc<[String]> = cfg.upstreams.clone().into();
    let started = tokio::time::Instant::now();
    let gap = Duration::from_secs_f64(1.0 / cfg.rate.max(0.001));
    let mut logs = Vec::with_capacity(cfg.count);
    let mut handles = Vec::with_capacity(cfg.count);
    let mut last_report = Instant::now();
    for i in 0..cfg.count {
        tokio::time::sleep_until(started + gap * i as u32).await;
        let g = cfg.offset + i;
        let server = g % targets.len();
        let route = Route {
            target: targets[server].clone(),
            server: server as u16,
            upstreams: upstreams.clone(),
            source: cfg.sources[(g / targets.len()) % cfg.sources.len()],
            rcvbuf: cfg.rcvbuf,
        };
        let log = SharedLog::default();
        logs.push(log.clone());
        handles.push(tokio::spawn(viewer::viewer(route, shared.clone(), log)));
        if last_report.elapsed() > Duration::from_millis(500) {
            last_report = Instant::now();
            let (connected, failed) = shared.counts();
            emit(&FromWorker::Progress { connected, failed });
        }
    }
    Ok((logs, handles))
}

/// Reports progress until every viewer has its snapshot or has given up, then `ready` with how
/// they joined.
async fn wait_until_settled(count: usize, shared: &Shared, logs: &[SharedLog]) {
    loop {
        let (connected, failed) = shared.counts();
        if connected + failed >= count {
            let joins: Vec<_> = logs.iter().filter_map(|l| lock(l).join).collect();
            emit(&FromWorker::Ready {
                connected,
                failed,
                join: collect::join_summary(&joins),
            });
            return;
        }
        emit(&FromWorker::Progress { connected, failed });
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Records from [`LOOK_BACK`] before the window until [`GRACE`] after it; receipts older than
/// that are forgotten.
async fn record_window(shared: &Shared, logs: &[SharedLog], start: u64, end: u64) {
    let from = start.saturating_sub(LOOK_BACK.as_nanos() as u64);
    shared.record_from.store(from, Ordering::Relaxed);
    for log in logs {
        lock(log).frames.retain(|(_, t)| *t >= from);
    }
    system::sleep_until_ns(end + GRACE.as_nanos() as u64).await;
}
