//! What `viewers` reports, summed from the workers' results and what the parent sampled of
//! the servers and the machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::collect;
use super::protocol::{JoinSummary, WorkerResult};
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
    /// How the viewers joined: time to snapshot, bytes.
    pub join: JoinReport,
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
    /// The highest RSS sampled (every 100 ms) from before the first viewer to the end.
    pub server_rss_peak_bytes: u64,
    /// Three seconds after every viewer has gone.
    pub server_rss_after_close_bytes: u64,
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
#[derive(Clone)]
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
        rss_bytes(&self.pids)
    }

    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.pids)
    }
}

/// The VmRSS of `pids` together, in bytes.
pub fn rss_bytes(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| system::rss_bytes(*p)).sum()
}

/// The CPU seconds `pids` have used together.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| system::cpu_seconds(*p)).sum()
}

/// How a set of viewers joined.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JoinReport {
    pub joined: usize,
    /// From the first viewer's first attempt to the last viewer's snapshot.
    pub seconds_to_last_snapshot: f64,
    /// Each viewer's time from its first attempt to its snapshot.
    pub time_to_snapshot: Summary,
    /// Bytes read per viewer up to its snapshot, the upgrade response included.
    pub bytes_per_join: f64,
    /// When the last snapshot came (CLOCK_MONOTONIC nanoseconds).
    #[serde(skip)]
    pub last_snapshot_ns: u64,
}

impl JoinReport {
    pub fn of(joins: Vec<&JoinSummary>) -> Self {
        let (all, hist) = collect::merge_joins(joins);
        let per = if all.joined > 0 {
            all.bytes as f64 / all.joined as f64
        } else {
            0.0
        };
        Self {
            joined: all.joined,
            seconds_to_last_snapshot: all.last_snapshot_ns.saturating_sub(all.first_attempt_ns)
                as f64
                / 1e9,
            time_to_snapshot: Summary::of_hist(&hist),
            bytes_per_join: per,
            last_snapshot_ns: all.last_snapshot_ns,
        }
    }
}

/// The highest RSS of the servers, sampled every 100 ms until stopped.
pub struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl PeakRss {
    pub fn watch(probe: &Probe) -> Self {
        let peak = Arc::new(AtomicU64::new(probe.rss()));
        let stop = CancellationToken::new();
        let pids = probe.pids.clone();
        let (p, s) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = s.cancelled() => return,
                    _ = every.tick() => {
                        let rss = pids.iter().filter_map(|p| system::rss_bytes(*p)).sum();
                        p.fetch_max(rss, Ordering::Relaxed);
                    }
                }
            }
        });
        Self { peak, stop }
    }

    /// The peak so far.
    pub fn get(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Stops sampling; the peak.
    pub fn stop(self) -> u64 {
        self.stop.cancel();
        self.get()
    }
}

/// What the viewers of a window got, summed over the workers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Deliveries {
    /// Viewers connected at the end of the window.
    pub held: usize,
    /// Viewers that never got a snapshot, after all their tries.
    pub connect_failures: usize,
    /// Attempts after a refused or timed-out one (as a browser reconnects).
    pub connect_retries: u64,
    pub dropped: usize,
    /// Snapshots sent again after a lag.
    pub resyncs: usize,
    /// Distinct update frames whose first receipt fell in the window (summed over servers).
    pub frames: usize,
    pub deliveries: u64,
    pub missed_updates: u64,
    pub viewers_missing_updates: usize,
    pub max_missed_per_viewer: u64,
    /// Per update frame: time from its first receipt by any viewer to each other viewer's.
    pub spread: Summary,
    /// Each viewer's own p99 of the above, summed up over the viewers (its max: the worst).
    pub viewer_p99: Summary,
    pub errors: Vec<String>,
}

impl Deliveries {
    pub fn of(frames: usize, results: &[WorkerResult]) -> Self {
        Self {
            held: results.iter().map(|r| r.held).sum(),
            connect_failures: results.iter().map(|r| r.failed).sum(),
            connect_retries: results.iter().map(|r| r.retries).sum(),
            dropped: results.iter().map(|r| r.dropped).sum(),
            resyncs: results.iter().map(|r| r.resyncs).sum(),
            frames,
            deliveries: results.iter().map(|r| r.deliveries).sum(),
            missed_updates: results.iter().map(|r| r.missed).sum(),
            viewers_missing_updates: results.iter().map(|r| r.viewers_missing).sum(),
            max_missed_per_viewer: results.iter().map(|r| r.max_missed).max().unwrap_or(0),
            spread: Summary::of_hist(&collect::spread(results)),
            viewer_p99: Summary::of_hist(&collect::viewer_p99(results)),
            errors: results
                .iter()
                .flat_map(|r| r.errors.iter().cloned())
                .take(10)
                .collect(),
        }
    }
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
    pub join: JoinReport,
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
    pub fn new(
        start: Start,
        ramp: Ramp,
        window: Window,
        results: &[WorkerResult],
        rss_peak: u64,
        rss_after_close: u64,
    ) -> Self {
        let d = Deliveries::of(window.frames, results);
        let per = |total: f64, n: f64| if n > 0.0 { total / n } else { 0.0 };
        Self {
            requested: start.requested,
            servers: start.servers,
            processes: start.processes,
            source_ips: start.source_ips,
            held: d.held,
            connect_failures: d.connect_failures,
            connect_retries: d.connect_retries,
            dropped: d.dropped,
            resyncs: d.resyncs,
            connect_seconds: ramp.seconds,
            join: ramp.join,
            window_seconds: window.seconds,
            frames_in_window: window.frames,
            deliveries: d.deliveries,
            missed_updates: d.missed_updates,
            viewers_missing_updates: d.viewers_missing_updates,
            max_missed_per_viewer: d.max_missed_per_viewer,
            spread: d.spread,
            server_rss_before_bytes: start.rss,
            server_rss_held_bytes: ramp.rss_held,
            server_rss_end_bytes: window.rss_end,
            server_rss_peak_bytes: rss_peak.max(window.rss_end),
            server_rss_after_close_bytes: rss_after_close,
            rss_per_viewer_bytes: per(window.rss_end as f64 - start.rss as f64, d.held as f64),
            rss_slope_bytes_per_viewer: stats::slope(&ramp.rss_samples),
            server_cpu_seconds: window.server_cpu,
            client_cpu_seconds: window.client_cpu,
            server_cpu_us_per_delivery: per(window.server_cpu * 1e6, d.deliveries as f64),
            client_cpu_us_per_delivery: per(window.client_cpu * 1e6, d.deliveries as f64),
            feed_ticks_posted: window.feed_ticks_posted,
            errors: d.errors,
            load_before: start.load,
            load_after: window.load_after,
            during: window.during,
        }
    }

    /// The headline, for the person running the bench.
    pub fn say(&self) {
        say!(
            "held {} / {}, joined in {:.1} s ({:.0} B each), failures {}, missed {}, frames {}, spread p50 {:.1} ms p99 {:.1} ms max {:.1} ms, {:.0} B/viewer",
            self.held,
            self.requested,
            self.join.seconds_to_last_snapshot,
            self.join.bytes_per_join,
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
