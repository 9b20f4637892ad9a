//! The worker processes, from the parent's side: this binary re-run as `viewers-worker`, its
//! lines read into one channel.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use super::collect;
use super::protocol::{self, FromWorker, Receipt, ToWorker, WorkerConfig, WorkerResult};

pub struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    /// Every worker's messages, tagged with its index.
    rx: mpsc::Receiver<(usize, FromWorker)>,
}

impl Workers {
    pub fn spawn(configs: &[WorkerConfig]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating candlewick-bench")?;
        let (tx, rx) = mpsc::channel::<(usize, FromWorker)>(64);
        let mut workers = Self {
            children: Vec::new(),
            stdins: Vec::new(),
            rx,
        };
        for (w, cfg) in configs.iter().enumerate() {
            let mut child = tokio::process::Command::new(&exe)
                .arg("viewers-worker")
                .arg(serde_json::to_string(cfg)?)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a viewers worker")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            workers
                .stdins
                .push(child.stdin.take().context("worker stdin")?);
            workers.children.push(child);
            tokio::spawn(forward_lines(w, stdout, tx.clone()));
        }
        Ok(workers)
    }

    pub fn len(&self) -> usize {
        self.children.len()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(Child::id).collect()
    }

    pub async fn send_all(&mut self, msg: &ToWorker) -> anyhow::Result<()> {
        for stdin in &mut self.stdins {
            protocol::send_line(stdin, msg).await?;
        }
        Ok(())
    }

    /// The next message from any worker; `waiting_for` names it in the error when they are gone.
    pub async fn recv(&mut self, waiting_for: &str) -> anyhow::Result<(usize, FromWorker)> {
        match self.rx.recv().await {
            Some(m) => Ok(m),
            None => bail!("the viewers workers exited before {waiting_for}"),
        }
    }

    /// Every worker's frames, merged: each frame with its first receipt over all of them.
    pub async fn first_receipts(&mut self) -> anyhow::Result<HashMap<(u16, u64), u64>> {
        let mut first = HashMap::new();
        for _ in 0..self.len() {
            match self.recv("reporting frames").await? {
                (_, FromWorker::Frames { frames }) => collect::keep_first(&mut first, frames),
                (w, other) => bail!("worker {w} sent {other:?} instead of its frames"),
            }
        }
        Ok(first)
    }

    /// Sends the frames to judge; returns every worker's result.
    pub async fn judge(&mut self, frames: Vec<Receipt>) -> anyhow::Result<Vec<WorkerResult>> {
        self.send_all(&ToWorker::Judge { frames }).await?;
        let mut results = Vec::new();
        while results.len() < self.len() {
            match self.recv("reporting results").await? {
                (_, FromWorker::Result(r)) => results.push(r),
                (w, other) => bail!("worker {w} sent {other:?} instead of its result"),
            }
        }
        Ok(results)
    }

    /// Closes their stdin (they exit when done) and waits for them, 30 s at most each.
    pub async fn finish(self) {
        drop(self.stdins);
        for mut c in self.children {
            let _ = tokio::time::timeout(Duration::from_secs(30), c.wait()).await;
        }
    }
}

async fn forward_lines(
    w: usize,
    stdout: tokio::process::ChildStdout,
    tx: mpsc::Sender<(usize, FromWorker)>,
) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<FromWorker>(&line) {
            Ok(msg) => {
                if tx.send((w, msg)).await.is_err() {
                    break;
                }
            }
            Err(e) => eprintln!("[bench] worker {w}: unreadable line ({e}): {line:.200}"),
        }
    }
}
