//! The worker processes, from the parent's side: this binary re-run as `viewers-worker`, its
//! lines read into one channel. Progress and readiness are kept per worker as they come; other
//! messages wait in the worker's queue until asked for. Workers can be added while others run
//! (a join storm starts its newcomers after the residents), and addressed by index range.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use super::collect;
use super::protocol::{
    self, FromWorker, JoinSummary, Receipt, ToWorker, WorkerConfig, WorkerResult,
};

/// Some of the workers, by index.
pub type Group = Range<usize>;

/// What is known of one worker.
#[derive(Debug, Default)]
struct State {
    connected: usize,
    failed: usize,
    /// How its viewers joined, once all have.
    ready: Option<JoinSummary>,
    /// Frames and results not yet asked for.
    queue: VecDeque<FromWorker>,
    /// Its stdout has ended.
    exited: bool,
}

pub struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    states: Vec<State>,
    /// Every worker's messages, tagged with its index; `None` when its stdout ended.
    tx: mpsc::Sender<(usize, Option<FromWorker>)>,
    rx: mpsc::Receiver<(usize, Option<FromWorker>)>,
}

impl Workers {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(256);
        Self {
            children: Vec::new(),
            stdins: Vec::new(),
            states: Vec::new(),
            tx,
            rx,
        }
    }

    /// Starts one worker per configuration; returns their indices.
    pub fn spawn(&mut self, configs: &[WorkerConfig]) -> anyhow::Result<Group> {
        let exe = std::env::current_exe().context("locating candlewick-bench")?;
        let first = self.children.len();
        for cfg in configs {
            let w = self.children.len();
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
            self.stdins
                .push(child.stdin.take().context("worker stdin")?);
            self.children.push(child);
            self.states.push(State::default());
            tokio::spawn(forward_lines(w, stdout, self.tx.clone()));
        }
        Ok(first..self.children.len())
    }

    pub fn pids(&self, group: Group) -> Vec<u32> {
        self.children[group].iter().filter_map(Child::id).collect()
    }

    /// Viewers connected and given up so far in `group`.
    pub fn progress(&self, group: Group) -> (usize, usize) {
        self.states[group]
            .iter()
            .fold((0, 0), |(c, f), s| (c + s.connected, f + s.failed))
    }

    /// How `group`'s viewers joined, once every one of its workers is ready; an error when
    /// one of them exited before it was.
    pub fn joins(&self, group: Group) -> anyhow::Result<Option<Vec<&JoinSummary>>> {
        if let Some(w) = group
            .clone()
            .find(|w| self.states[*w].exited && self.states[*w].ready.is_none())
        {
            bail!("viewers worker {w} exited before its viewers had joined");
        }
        Ok(self.states[group]
            .iter()
            .map(|s| s.ready.as_ref())
            .collect())
    }

    pub async fn send(&mut self, group: Group, msg: &ToWorker) -> anyhow::Result<()> {
        for stdin in &mut self.stdins[group] {
            protocol::send_line(stdin, msg).await?;
        }
        Ok(())
    }

    /// Takes the next message from any worker and files it.
    pub async fn next_event(&mut self) {
        // The sender kept in `self` keeps the channel open.
        let Some((w, msg)) = self.rx.recv().await else {
            return;
        };
        let state = &mut self.states[w];
        let Some(msg) = msg else {
            state.exited = true;
            return;
        };
        match msg {
            FromWorker::Progress { connected, failed } => {
                (state.connected, state.failed) = (connected, failed);
            }
            FromWorker::Ready {
                connected,
                failed,
                join,
            } => {
                (state.connected, state.failed) = (connected, failed);
                state.ready = Some(join);
            }
            other => state.queue.push_back(other),
        }
    }

    /// Worker `w`'s next frames or result.
    async fn next_from(&mut self, w: usize, waiting_for: &str) -> anyhow::Result<FromWorker> {
        loop {
            if let Some(msg) = self.states[w].queue.pop_front() {
                return Ok(msg);
            }
            if self.states[w].exited {
                bail!("viewers worker {w} exited before {waiting_for}");
            }
            self.next_event().await;
        }
    }

    /// `group`'s frames, merged: each frame with its first receipt over all of them.
    async fn first_receipts(&mut self, group: Group) -> anyhow::Result<HashMap<(u16, u64), u64>> {
        let mut first = HashMap::new();
        for w in group {
            match self.next_from(w, "reporting frames").await? {
                FromWorker::Frames { frames } => collect::keep_first(&mut first, frames),
                other => bail!("worker {w} sent {other:?} instead of its frames"),
            }
        }
        Ok(first)
    }

    /// Opens the window `[start, end]` (CLOCK_MONOTONIC nanoseconds) on `group`.
    pub async fn open_window(&mut self, group: Group, start: u64, end: u64) -> anyhow::Result<()> {
        self.send(group, &ToWorker::Window { start, end }).await
    }

    /// After the window `[start, end]` closed on `group`: the frames first received inside it,
    /// over all of `group`'s viewers, and each worker's viewers judged against them.
    pub async fn judge_window(
        &mut self,
        group: Group,
        start: u64,
        end: u64,
    ) -> anyhow::Result<(usize, Vec<WorkerResult>)> {
        self.judge_with(group, |first| collect::in_window(first, start, end))
            .await
    }

    /// Has `group` judged against the frames `pick` chooses (with their reference times) from
    /// every frame's first receipt over all workers; the distinct frames judged, and the results.
    pub async fn judge_with(
        &mut self,
        group: Group,
        pick: impl FnOnce(&HashMap<(u16, u64), u64>) -> Vec<Receipt>,
    ) -> anyhow::Result<(usize, Vec<WorkerResult>)> {
        let first = self.first_receipts(group.clone()).await?;
        let judged = pick(&first);
        let frames = judged
            .iter()
            .map(|(s, h, _)| (*s, *h))
            .collect::<HashSet<_>>()
            .len();
        Ok((frames, self.judge(group, judged).await?))
    }

    /// Sends `group` the frames to judge; returns each worker's result.
    async fn judge(
        &mut self,
        group: Group,
        frames: Vec<Receipt>,
    ) -> anyhow::Result<Vec<WorkerResult>> {
        self.send(group.clone(), &ToWorker::Judge { frames })
            .await?;
        let mut results = Vec::new();
        for w in group {
            match self.next_from(w, "reporting results").await? {
                FromWorker::Result(r) => results.push(r),
                other => bail!("worker {w} sent {other:?} instead of its result"),
            }
        }
        Ok(results)
    }

    /// Closes their stdin (they stop their viewers and exit) and waits for them, 30 s at most each.
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
    tx: mpsc::Sender<(usize, Option<FromWorker>)>,
) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<FromWorker>(&line) {
            Ok(msg) => {
                if tx.send((w, Some(msg))).await.is_err() {
                    return;
                }
            }
            Err(e) => eprintln!("[bench] worker {w}: unreadable line ({e}): {line:.200}"),
        }
    }
    let _ = tx.send((w, None)).await;
}
