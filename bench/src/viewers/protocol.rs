//! What the parent and its worker processes say to each other: one JSON document a line, the
//! parent on the workers' stdin, the workers on their stdout.

use std::net::Ipv4Addr;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// An update frame as the viewers saw it: (server index, hash of its bytes, receipt time in
/// CLOCK_MONOTONIC nanoseconds).
pub type Receipt = (u16, u64, u64);

/// A worker's share of the viewers; given on its command line.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerConfig {
    pub urls: Vec<String>,
    /// Behind a proxy: the servers it proxies to (`host:port`, as it names them).
    pub upstreams: Vec<String>,
    pub count: usize,
    /// Global index of this worker's first viewer (spreads servers and sources evenly).
    pub offset: usize,
    pub rate: f64,
    pub sources: Vec<Ipv4Addr>,
    pub rcvbuf: u32,
    /// The worker exits by itself after this long, whatever happens to the parent.
    pub max_seconds: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum FromWorker {
    Progress {
        connected: usize,
        failed: usize,
    },
    /// Every viewer has its snapshot or has given up.
    Ready {
        connected: usize,
        failed: usize,
        join: JoinSummary,
    },
    /// The first receipt in this worker of every frame it saw.
    Frames {
        frames: Vec<Receipt>,
    },
    Result(WorkerResult),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum ToWorker {
    Window {
        start: u64,
        end: u64,
    },
    /// The frames to judge, each with its first receipt over all workers.
    Judge {
        frames: Vec<Receipt>,
    },
}

/// How a worker's viewers joined: from each one's first connection attempt to its snapshot.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct JoinSummary {
    /// Viewers that got their snapshot.
    pub joined: usize,
    /// The earliest first attempt and the latest snapshot (CLOCK_MONOTONIC nanoseconds; 0: none).
    pub first_attempt_ns: u64,
    pub last_snapshot_ns: u64,
    /// Bytes read by the joined viewers up to their snapshot, the upgrade response included.
    pub bytes: u64,
    /// (microseconds, count) pairs of the time from first attempt to snapshot.
    pub join_us: Vec<(u64, u64)>,
}

/// One worker's viewers, summed up.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    pub held: usize,
    pub failed: usize,
    pub retries: u64,
    pub dropped: usize,
    pub resyncs: usize,
    pub deliveries: u64,
    pub missed: u64,
    pub viewers_missing: usize,
    pub max_missed: u64,
    /// (microseconds, count) pairs of the spread histogram.
    pub spread_us: Vec<(u64, u64)>,
    /// (microseconds, count) pairs of the histogram of each viewer's own p99.
    pub viewer_p99_us: Vec<(u64, u64)>,
    pub errors: Vec<String>,
}

/// A worker's line to the parent.
pub fn emit(msg: &FromWorker) {
    use std::io::Write;
    if let Ok(line) = serde_json::to_string(msg) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The parent's line to a worker.
pub async fn send_line(
    stdin: &mut tokio::process::ChildStdin,
    msg: &ToWorker,
) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(msg)?;
    line.push(b'\n');
    stdin
        .write_all(&line)
        .await
        .context("writing to a worker")?;
    stdin.flush().await?;
    Ok(())
}

/// The parent's lines, read by a plain thread: stdin is read rarely, and a closed stdin (the
/// parent gone) ends the channel.
pub fn parent_lines() -> mpsc::Receiver<String> {
    let (line_tx, lines) = mpsc::channel::<String>(4);
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::stdin().lock()) {
            let Ok(l) = line else { break };
            if line_tx.blocking_send(l).is_err() {
                break;
            }
        }
    });
    lines
}

/// The parent's next message; `None` when it is gone.
pub async fn next_msg(lines: &mut mpsc::Receiver<String>) -> anyhow::Result<Option<ToWorker>> {
    match lines.recv().await {
        Some(l) => Ok(Some(
            serde_json::from_str(&l).context("reading a message from the parent")?,
        )),
        None => Ok(None),
    }
}
