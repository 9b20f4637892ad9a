//! What `viewers` reports, summed from the workers' results and what the parent sampled of
//! the servers and the machine.

use serde::Serialize;

use super::collect;
use super::protocol::WorkerResult;
use crate::say;
use crate::stats::{self, Summary};
use crate::system;
use crate::wsclient::Target;

/// What `viewers` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ViewersReport {
    pub requested: usize,
    pub servers: usize,
    pub processes: usize,
    pub source_ips: usize,
    /// Viewers connected (snapshot received) and still connected at the end of the window.
    pub held: usize,
    /// Viewers that never got a snapshot, after all their tries.
    pub connect_failures: usize,
    /// Attempts after a refused or timed-out one (as a browser reconnects).
    pub connect_retries: u64,
    pub dropped: usize,
    /// Snapshots sent again after a lag.
    pub resyncs: usize,
    pub connect_seconds: f64,
    pub window_seconds: f64,
    /// Distinct update frames whose first receipt fell in the window (summed over servers).
    pub frames_in_window: usize,
    pub deliveries: u64,
    pub missed_updates: u64,
    pub viewers_missing_updates: usize,
    pub max_missed_per_viewer: u64,
    /// Per update frame: time from its first receipt by any viewer to each other viewer's.
    pub spread: Summary,
    pub server_rss_before_bytes: u64,
    pub server_rss_held_bytes: u64,
    pub server_rss_end_bytes: u64,
    /// (RSS at the end of the window − RSS before) / viewers held.
    pub rss_per_viewer_bytes: f64,
    /// Least-squares slope of RSS over connected viewers, sampled while connecting.
    pub rss_slope_bytes_per_viewer: Option<f64>,
    /// CPU used during the window by the servers and by the viewer processes (all updates,
    /// pings and the feed included), and per update delivered.
    pub server_cpu_seconds: f64,
    pub client_cpu_seconds: f64,
    pub server_cpu_us_per_delivery: f64,
    pub client_cpu_us_per_delivery: f64,
    pub feed_ticks_posted: u64,
    pub errors: Vec<String>,
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
    /// Whatever was measured during the window by the caller (poll-cost's query counts).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub during: serde_json::Value,
}

/// The server processes whose memory and CPU are sampled.
pub struct Probe {
    pids: Vec<u32>,
}

impl Probe {
    /// `pids`, or (when none are given) whatever listens on the targets' ports.
    pub fn new(pids: &[u32], targets: &[Target]) -> Self {
        let pids: Vec<u32> = if pids.is_empty() {
            targets
                .iter()
                .filter_map(|t| system::pid_listening_on(t.addr.port()))
                .collect()
        } else {
            pids.to_vec()
        };
        if pids.is_empty() {
            say!("no server pid found: memory is not measured (pass --server-pid)");
        }
        Self { pids }
    }

    pub fn found(&self) -> bool {
        !self.pids.is_empty()
    }

    /// The servers' VmRSS together, in bytes.
    pub fn rss(&self) -> u64 {
        self.pids.iter().filter_map(|p| system::rss_bytes(*p)).sum()
    }

    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.pids)
    }
}

/// The CPU seconds `pids` have used together.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| system::cpu_seconds(*p)).sum()
}

/// Before the first viewer connects.
pub struct Start {
    pub requested: usize,
    pub servers: usize,
    pub processes: usize,
    pub source_ips: usize,
    pub rss: u64,
    pub load: [f64; 3],
}

/// The connect phase, up to the settled state just before the window.
pub struct Ramp {
    pub seconds: f64,
    pub rss_held: u64,
    /// (viewers connected, server RSS) while connecting.
    pub rss_samples: Vec<(f64, f64)>,
}

/// The measurement window.
pub struct Window {
    pub seconds: f64,
    pub frames: usize,
    pub rss_end: u64,
    pub server_cpu: f64,
    pub client_cpu: f64,
    pub feed_ticks_posted: u64,
    pub load_after: [f64; 3],
    pub during: serde_json::Value,
}

impl ViewersReport {
    pub fn new(start: Start, ramp: Ramp, window: Window, results: &[WorkerResult]) -> Self {
        let held: usize = results.iter().map(|r| r.held).sum();
        let deliveries: u64 = results.iter().map(|r| r.deliveries).sum();
        let per = |total: f64, n: f64| if n > 0.0 { total / n } else { 0.0 };
        Self {
            requested: start.requested,
            servers: start.servers,
            processes: start.processes,
            source_ips: start.source_ips,
            held,
            connect_failures: results.iter().map(|r| r.failed).sum(),
            connect_retries: results.iter().map(|r| r.retries).sum(),
            dropped: results.iter().map(|r| r.dropped).sum(),
            resyncs: results.iter().map(|r| r.resyncs).sum(),
            connect_seconds: ramp.seconds,
            window_seconds: window.seconds,
            frames_in_window: window.frames,
            deliveries,
            missed_updates: results.iter().map(|r| r.missed).sum(),
            viewers_missing_updates: results.iter().map(|r| r.viewers_missing).sum(),
            max_missed_per_viewer: results.iter().map(|r| r.max_missed).max().unwrap_or(0),
            spread: Summary::of_hist(&collect::spread(results)),
            server_rss_before_bytes: start.rss,
            server_rss_held_bytes: ramp.rss_held,
            server_rss_end_bytes: window.rss_end,
            rss_per_viewer_bytes: per(window.rss_end as f64 - start.rss as f64, held as f64),
            rss_slope_bytes_per_viewer: stats::slope(&ramp.rss_samples),
            server_cpu_seconds: window.server_cpu,
            client_cpu_seconds: window.client_cpu,
            server_cpu_us_per_delivery: per(window.server_cpu * 1e6, deliveries as f64),
            client_cpu_us_per_delivery: per(window.client_cpu * 1e6, deliveries as f64),
            feed_ticks_posted: window.feed_ticks_posted,
            errors: results
                .iter()
                .flat_map(|r| r.errors.iter().cloned())
                .take(10)
                .collect(),
            load_before: start.load,
            load_after: window.load_after,
            during: window.during,
        }
    }

    /// The headline, for the person running the bench.
    pub fn say(&self) {
        say!(
            "held {} / {}, failures {}, missed {}, frames {}, spread p50 {:.1} ms p99 {:.1} ms max {:.1} ms, {:.0} B/viewer",
            self.held,
            self.requested,
            self.connect_failures,
            self.missed_updates,
            self.frames_in_window,
            self.spread.p50_ms,
            self.spread.p99_ms,
            self.spread.max_ms,
            self.rss_per_viewer_bytes
        );
    }
}
