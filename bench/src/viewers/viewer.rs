//! One viewer: connect (retrying as the chart page does), take the snapshot, then record the
//! receipt of every update until told to stop, in a log its worker reads between windows.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use tokio_util::sync::CancellationToken;

use crate::system::now_ns;
use crate::wsclient::{Kind, Target, Viewer};

/// Tries per viewer, and the pause before the n-th retry (n × this).
const CONNECT_ATTEMPTS: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_secs(2);
/// How long a connect plus handshake plus snapshot may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// One viewer's record.
#[derive(Debug, Default, Clone)]
pub struct Log {
    pub server: u16,
    pub connected: bool,
    /// Why the connection ended before the bench closed it.
    pub dropped: Option<String>,
    pub failed: Option<String>,
    /// Connection attempts after the first, and why the last one before them failed.
    pub retries: u32,
    pub retry_reason: Option<String>,
    pub snapshots: usize,
    /// (hash, receipt) of update frames received since the recording started.
    pub frames: Vec<(u64, u64)>,
    /// How the first snapshot came, once it has.
    pub join: Option<Join>,
}

/// A viewer's way in: its first connection attempt, its snapshot's receipt (CLOCK_MONOTONIC
/// nanoseconds) and the bytes read until then.
#[derive(Debug, Clone, Copy)]
pub struct Join {
    pub first_attempt_ns: u64,
    pub snapshot_ns: u64,
    pub bytes: u64,
}

/// A viewer's log, written by the viewer and read by its worker (one thread: never contended).
pub type SharedLog = Arc<Mutex<Log>>;

/// Locks a log; a viewer task that panicked leaves its log as it was.
pub fn lock(log: &SharedLog) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a worker's viewers share.
pub struct Shared {
    pub connected: AtomicUsize,
    pub failed: AtomicUsize,
    /// Updates received before this CLOCK_MONOTONIC time are not recorded.
    pub record_from: AtomicU64,
    pub stop: CancellationToken,
}

impl Shared {
    pub fn new() -> Self {
        Self {
            connected: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            record_from: AtomicU64::new(u64::MAX),
            stop: CancellationToken::new(),
        }
    }

    /// Viewers connected so far, and viewers that gave up.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.connected.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Where one viewer connects, and from where.
pub struct Route {
    pub target: Arc<Target>,
    pub server: u16,
    /// Behind a proxy: the servers it proxies to. A viewer's server is then the one the proxy
    /// named in the upgrade response (its place in this list).
    pub upstreams: Arc<[String]>,
    pub source: Ipv4Addr,
    pub rcvbuf: u32,
}

/// Runs one viewer until the connection ends or `shared.stop`, writing into `log`.
pub async fn viewer(route: Route, shared: Arc<Shared>, log: SharedLog) {
    lock(&log).server = route.server;
    let first_attempt_ns = now_ns();
    let Some(mut v) = connect(&route, &shared, &log).await else {
        return;
    };
    {
        let mut log = lock(&log);
        if !route.upstreams.is_empty() {
            // A frame is judged against the other viewers of the server that sent it.
            log.server = v
                .upstream()
                .and_then(|u| route.upstreams.iter().position(|s| s == u))
                .map_or(u16::MAX, |i| i as u16);
        }
        log.connected = true;
        log.snapshots = 1;
        log.join = Some(Join {
            first_attempt_ns,
            snapshot_ns: now_ns(),
            bytes: v.bytes_read(),
        });
    }
    shared.connected.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            m = v.next() => {
                let ended = match m {
                    Ok(Some(m)) => {
                        let t = now_ns();
                        let mut log = lock(&log);
                        match m.kind {
                            Kind::Update if t >= shared.record_from.load(Ordering::Relaxed) => log.frames.push((m.hash, t)),
                            Kind::Snapshot => log.snapshots += 1,
                            _ => {}
                        }
                        None
                    }
                    Ok(None) => Some("the connection ended without a close frame".to_owned()),
                    Err(e) => Some(format!("{e:#}{}", heartbeat_note(&v))),
                };
                if let Some(why) = ended {
                    lock(&log).dropped = Some(why);
                    return;
                }
            },
            _ = shared.stop.cancelled() => return,
        }
    }
}

/// Connects and waits for the snapshot; like the chart page, a refused or timed-out viewer
/// tries again after a pause. `None` (with the reason in `log`) when it never got one.
async fn connect(route: &Route, shared: &Shared, log: &SharedLog) -> Option<Viewer> {
    let mut attempt = 0;
    loop {
        let outcome = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, snapshot_taken(route)) => match r {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err("timed out connecting".to_owned()),
            },
            _ = shared.stop.cancelled() => {
                lock(log).failed = Some("still connecting at the end".into());
                return None;
            }
        };
        match outcome {
            Ok(v) => return Some(v),
            Err(e) if attempt < CONNECT_ATTEMPTS - 1 => {
                attempt += 1;
                {
                    let mut log = lock(log);
                    log.retries += 1;
                    log.retry_reason = Some(e);
                }
                tokio::time::sleep(RETRY_PAUSE * attempt).await;
            }
            Err(e) => {
                lock(log).failed = Some(e);
                shared.failed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
    }
}

/// One connection attempt, up to the snapshot.
async fn snapshot_taken(route: &Route) -> anyhow::Result<Viewer> {
    let mut v = Viewer::connect(&route.target, route.source, route.rcvbuf).await?;
    loop {
        match v.next().await? {
            Some(m) if m.kind == Kind::Snapshot => return Ok(v),
            Some(_) => {}
            None => bail!("closed before the snapshot"),
        }
    }
}

/// After a close, how long ago (whole seconds) the last ping came and its pong went: with a
/// close for missed heartbeats, it tells whether pings stopped coming or pongs were not taken.
fn heartbeat_note(v: &Viewer) -> String {
    let now = now_ns();
    let ago = |t: u64| match t {
        0 => "never".to_owned(),
        t => format!("{} s ago", now.saturating_sub(t) / 1_000_000_000),
    };
    let (ping, pong) = v.heartbeat();
    format!(
        " (last ping {}, last pong written {})",
        ago(ping),
        ago(pong)
    )
}
