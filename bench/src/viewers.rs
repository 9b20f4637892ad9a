//! `viewers`: N WebSocket viewers over several source addresses and worker processes.
//!
//! The parent re-runs this binary as `viewers-worker` processes (one process holds at most its
//! open-file limit of sockets) and talks to them in JSON lines: workers report progress and
//! `ready`; the parent opens a measurement window (CLOCK_MONOTONIC times, one clock for the
//! whole box); workers report, per update frame (server, hash), when they first saw it; the
//! parent finds each frame's first receipt over all workers and sends it back; workers answer
//! with the spread of every viewer's receipt from that first one, and the frames each viewer missed.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Args;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::say;
use crate::setup::{self, Cluster, Server};
use crate::statements;
use crate::stats::{self, Summary};
use crate::system::{self, now_ns};
use crate::wsclient::{Kind, Target, Viewer};

/// Sockets one worker keeps below its open-file limit (stdio, the runtime's own fds).
const FD_MARGIN: u64 = 100;
/// Viewers per source address: below the ~28,000 ephemeral ports of one address.
const PER_SOURCE_IP: usize = 20_000;
/// After the window closes, how long late deliveries are still recorded.
const GRACE: Duration = Duration::from_secs(3);
/// Tries per viewer, and the pause before the n-th retry (n × this).
const CONNECT_ATTEMPTS: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_secs(2);
/// How long a connect plus handshake plus snapshot may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Args)]
pub struct ViewersArgs {
    /// WebSocket URL of a server (repeat for replicas; viewers go round-robin), e.g.
    /// ws://127.0.0.1:8080/ws?symbol=BTC/USD
    #[arg(long = "url")]
    pub urls: Vec<String>,
    /// Instead of --url: start this many candlewick servers sharing one database (our embedded
    /// cluster, or --database-url) that holds --history of ticks.
    #[arg(long, default_value_t = 0)]
    pub spawn_servers: usize,
    /// Viewers to open.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Connections opened per second (all processes together).
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Worker processes (0: as few as the open-file limit allows).
    #[arg(long, default_value_t = 0)]
    pub processes: usize,
    /// How long to measure once every viewer is connected.
    #[arg(long, default_value = "30s", value_parser = candlewick::config::parse_duration)]
    pub duration: Duration,
    /// Source addresses 127.0.0.2, 127.0.0.3, ... (0: one per 20,000 viewers).
    #[arg(long, default_value_t = 0)]
    pub source_ips: usize,
    /// Server processes whose VmRSS to sample (default: those listening on the URLs' ports).
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Admin token of the server(s): the bench then posts one tick every --feed-every to the
    /// first one, so that updates flow (without it, updates come from the server's own feed).
    #[arg(long, env = "CANDLEWICK_ADMIN_TOKEN", hide_env_values = true)]
    pub feed_token: Option<String>,
    #[arg(long, default_value = "1s", value_parser = candlewick::config::parse_duration)]
    pub feed_every: Duration,
    /// SO_RCVBUF of each viewer socket, in bytes.
    #[arg(long, default_value_t = 32 * 1024)]
    pub rcvbuf: u32,
    /// The candlewick binary for --spawn-servers (default: next to this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Where --spawn-servers keeps its cluster and logs.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// With --spawn-servers: a database to use instead of the embedded cluster.
    #[arg(long, hide_env_values = true)]
    pub database_url: Option<secrecy::SecretString>,
    /// With --spawn-servers: how much history the database holds.
    #[arg(long, default_value = "7d", value_parser = candlewick::config::parse_duration)]
    pub history: Duration,
    /// With --spawn-servers: ticks per second in that history.
    #[arg(long, default_value_t = 0.2)]
    pub history_rate: f64,
}

/// What `viewers` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ViewersReport {
    pub requested: usize,
    pub servers: usize,
    pub processes: usize,
    pub source_ips: usize,
    /// Viewers connected (snapshot received) and still connected at the end of the window.
    pub held: usize,
    /// Viewers that never got a snapshot, after CONNECT_ATTEMPTS tries each.
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

/// How a run is set up once the servers exist.
#[derive(Debug, Clone)]
pub struct Plan {
    pub urls: Vec<String>,
    pub count: usize,
    pub rate: f64,
    pub processes: usize,
    pub duration: Duration,
    pub source_ips: usize,
    pub server_pids: Vec<u32>,
    /// (HTTP base URL, token) to post ticks to.
    pub feed: Option<(String, String)>,
    pub feed_every: Duration,
    pub rcvbuf: u32,
}

pub async fn run_cli(args: ViewersArgs) -> anyhow::Result<serde_json::Value> {
    if args.spawn_servers == 0 && args.urls.is_empty() {
        bail!("give --url (one per server) or --spawn-servers N");
    }
    let mut plan = Plan {
        urls: args.urls.clone(),
        count: args.count,
        rate: args.rate,
        processes: args.processes,
        duration: args.duration,
        source_ips: args.source_ips,
        server_pids: args.server_pids.clone(),
        feed: None,
        feed_every: args.feed_every,
        rcvbuf: args.rcvbuf,
    };
    if args.spawn_servers == 0 {
        if let Some(token) = &args.feed_token {
            let first = Target::parse(&plan.urls[0])?;
            plan.feed = Some((format!("http://{}", first.host), token.clone()));
        }
        let report = run(&plan, |_| async { serde_json::Value::Null }).await?;
        return Ok(serde_json::to_value(report)?);
    }

    // pg_stat_statements preloaded: the servers' statements are counted during the window.
    let (work, bin, cluster) = setup::workspace(
        args.work_dir.as_deref(),
        args.server_bin.as_deref(),
        args.database_url.as_ref(),
        true,
    )
    .await?;
    let db_name = "candlewick_bench_viewers";
    let (db_url, pool, _) = cluster.scratch(db_name).await?;
    say!(
        "loading {:?} of history at {}/s",
        args.history,
        args.history_rate
    );
    setup::load_history(&pool, Utc::now(), args.history, args.history_rate).await?;
    pool.close().await;
    let mut servers = Vec::new();
    for i in 0..args.spawn_servers {
        say!("starting server {}", i + 1);
        servers.push(Server::spawn(&bin, &db_url, &work, &format!("server-{i}"), &[]).await?);
    }
    plan.urls = servers.iter().map(|s| s.ws("symbol=BTC/USD")).collect();
    plan.server_pids = servers.iter().map(|s| s.pid).collect();
    plan.feed = Some((servers[0].http(), setup::TOKEN.to_owned()));
    let counting = statements::enable(&cluster).await;
    let servers_n = servers.len();
    let cluster_ref = &cluster;
    let report = run(&plan, |dur| async move {
        if !counting {
            return serde_json::Value::Null;
        }
        count_statements(cluster_ref, db_name, servers_n, dur)
            .await
            .unwrap_or_else(|e| serde_json::json!({ "error": format!("{e:#}") }))
    })
    .await;
    for s in servers {
        s.stop().await;
    }
    cluster.drop_database(db_name).await;
    cluster.stop().await;
    Ok(serde_json::to_value(report?)?)
}

/// What the servers ran in the database during `dur`: every statement, the polls among them,
/// and the writes (the bench's feed of one tick per second through the API).
async fn count_statements(
    cluster: &Cluster,
    db: &str,
    servers: usize,
    dur: Duration,
) -> anyhow::Result<serde_json::Value> {
    let before = statements::calls(cluster, db).await?;
    let started = Instant::now();
    tokio::time::sleep(dur).await;
    let after = statements::calls(cluster, db).await?;
    let seconds = started.elapsed().as_secs_f64();
    let ran = statements::calls_between(before, after, |_| false);
    let total: i64 = ran.iter().map(|(_, n)| n).sum();
    let polls: i64 = ran
        .iter()
        .filter(|(q, _)| q.trim_start().starts_with(statements::POLL_PREFIX))
        .map(|(_, n)| n)
        .sum();
    let by_statement: Vec<(String, f64)> = ran
        .iter()
        .take(8)
        .map(|(q, n)| (statements::one_line(q, 70), *n as f64 / seconds))
        .collect();
    Ok(serde_json::json!({
        "seconds": seconds,
        "statements_per_sec": total as f64 / seconds,
        "polls_per_sec": polls as f64 / seconds,
        "polls_per_server_per_sec": polls as f64 / seconds / servers.max(1) as f64,
        "other_statements_per_sec": (total - polls) as f64 / seconds,
        "by_statement": by_statement,
    }))
}

/// Runs the viewers; `during(window)` runs while the window is open and its value is reported.
pub async fn run<F, Fut>(plan: &Plan, during: F) -> anyhow::Result<ViewersReport>
where
    F: FnOnce(Duration) -> Fut,
    Fut: std::future::Future<Output = serde_json::Value>,
{
    let targets: Vec<Target> = plan
        .urls
        .iter()
        .map(|u| Target::parse(u))
        .collect::<Result<_, _>>()?;
    if plan.count == 0 {
        bail!("--count must be at least 1");
    }
    let per_process = (system::open_file_limit().saturating_sub(FD_MARGIN)).max(1) as usize;
    let processes = match plan.processes {
        0 => plan.count.div_ceil(per_process),
        p => p,
    }
    .clamp(1, plan.count);
    if plan.count.div_ceil(processes) > per_process {
        bail!(
            "{} viewers in {processes} processes exceed {per_process} sockets per process: use more --processes",
            plan.count
        );
    }
    let source_ips = match plan.source_ips {
        0 => plan.count.div_ceil(PER_SOURCE_IP).max(1),
        n => n,
    }
    .min(250);
    let sources: Vec<Ipv4Addr> = (0..source_ips)
        .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i as u8))
        .collect();
    let pids: Vec<u32> = if plan.server_pids.is_empty() {
        targets
            .iter()
            .filter_map(|t| system::pid_listening_on(t.addr.port()))
            .collect()
    } else {
        plan.server_pids.clone()
    };
    if pids.is_empty() {
        say!("no server pid found: memory is not measured (pass --server-pid)");
    }
    let rss = || {
        pids.iter()
            .filter_map(|p| system::rss_bytes(*p))
            .sum::<u64>()
    };
    let load_before = system::load_average();
    let rss_before = rss();
    say!(
        "{} viewers → {} server(s), {processes} process(es), {source_ips} source address(es), {}/s",
        plan.count,
        targets.len(),
        plan.rate
    );

    // Workers.
    let exe = std::env::current_exe().context("locating candlewick-bench")?;
    let (tx, mut rx) = mpsc::channel::<(usize, FromWorker)>(64);
    let mut stdins = Vec::new();
    let mut children = Vec::new();
    let mut offset = 0;
    for w in 0..processes {
        let count = plan.count / processes + usize::from(w < plan.count % processes);
        let cfg = WorkerConfig {
            urls: plan.urls.clone(),
            count,
            offset,
            rate: plan.rate / processes as f64,
            sources: sources.clone(),
            rcvbuf: plan.rcvbuf,
            max_seconds: (plan.count as f64 / plan.rate + plan.duration.as_secs_f64() + 300.0)
                as u64,
        };
        offset += count;
        let mut child = tokio::process::Command::new(&exe)
            .arg("viewers-worker")
            .arg(serde_json::to_string(&cfg)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a viewers worker")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        stdins.push(child.stdin.take().context("worker stdin")?);
        children.push(child);
        let tx = tx.clone();
        tokio::spawn(async move {
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
        });
    }
    drop(tx);

    let feed_stop = CancellationToken::new();
    let feed_posted = Arc::new(AtomicU64::new(0));
    let feed_task = plan.feed.clone().map(|(base, token)| {
        tokio::spawn(feed(
            base,
            token,
            plan.feed_every,
            feed_stop.clone(),
            feed_posted.clone(),
        ))
    });

    // Connecting: sample RSS against connected viewers.
    let ramp_started = Instant::now();
    let mut progress = vec![(0usize, 0usize); processes];
    let mut ready = vec![false; processes];
    let mut samples: Vec<(f64, f64)> = vec![(0.0, rss_before as f64)];
    let mut sample_every = tokio::time::interval(Duration::from_millis(500));
    let ramp_deadline =
        ramp_started + Duration::from_secs_f64(plan.count as f64 / plan.rate) + CONNECT_TIMEOUT * 2;
    let mut last_said = Instant::now();
    while !ready.iter().all(|r| *r) {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some((w, FromWorker::Progress { connected, failed })) => progress[w] = (connected, failed),
                Some((w, FromWorker::Ready { connected, failed })) => {
                    progress[w] = (connected, failed);
                    ready[w] = true;
                }
                Some((w, other)) => bail!("worker {w} sent {other:?} before the window"),
                None => bail!("the viewers workers exited while connecting"),
            },
            _ = sample_every.tick() => {
                let connected: usize = progress.iter().map(|p| p.0).sum();
                if !pids.is_empty() {
                    samples.push((connected as f64, rss() as f64));
                }
                if last_said.elapsed() > Duration::from_secs(5) {
                    last_said = Instant::now();
                    let failed: usize = progress.iter().map(|p| p.1).sum();
                    say!("connected {connected}, failed {failed}");
                }
            }
            _ = tokio::time::sleep_until(ramp_deadline.into()) => bail!("viewers did not finish connecting in time"),
        }
    }
    let connect_seconds = ramp_started.elapsed().as_secs_f64();
    let connected: usize = progress.iter().map(|p| p.0).sum();
    say!("{connected} viewers connected in {connect_seconds:.1} s; settling");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_held = rss();
    samples.push((connected as f64, rss_held as f64));

    // The window.
    let start = now_ns() + 500_000_000;
    let end = start + plan.duration.as_nanos() as u64;
    let worker_pids: Vec<u32> = children.iter().filter_map(|c| c.id()).collect();
    let cpu = |pids: &[u32]| {
        pids.iter()
            .filter_map(|p| system::cpu_seconds(*p))
            .sum::<f64>()
    };
    let (server_cpu0, client_cpu0) = (cpu(&pids), cpu(&worker_pids));
    for stdin in &mut stdins {
        send_line(stdin, &ToWorker::Window { start, end }).await?;
    }
    say!("measuring for {:?}", plan.duration);
    let during_value = during(plan.duration + Duration::from_millis(500)).await;
    let now = now_ns();
    if now < end {
        tokio::time::sleep(Duration::from_nanos(end - now)).await;
    }
    let rss_end = rss();
    let (server_cpu, client_cpu) = (cpu(&pids) - server_cpu0, cpu(&worker_pids) - client_cpu0);
    let load_after = system::load_average();

    // First receipts over all workers.
    let mut first: HashMap<(u16, u64), u64> = HashMap::new();
    let mut got = 0;
    while got < processes {
        match rx.recv().await {
            Some((_, FromWorker::Frames { frames })) => {
                for (server, hash, t) in frames {
                    let e = first.entry((server, hash)).or_insert(t);
                    *e = (*e).min(t);
                }
                got += 1;
            }
            Some((w, other)) => bail!("worker {w} sent {other:?} instead of its frames"),
            None => bail!("the viewers workers exited before reporting frames"),
        }
    }
    feed_stop.cancel();
    let judged: Vec<(u16, u64, u64)> = first
        .iter()
        .filter(|(_, t)| **t >= start && **t <= end)
        .map(|((s, h), t)| (*s, *h, *t))
        .collect();
    for stdin in &mut stdins {
        send_line(
            stdin,
            &ToWorker::Judge {
                frames: judged.clone(),
            },
        )
        .await?;
    }
    let mut results = Vec::new();
    while results.len() < processes {
        match rx.recv().await {
            Some((_, FromWorker::Result(r))) => results.push(r),
            Some((w, other)) => bail!("worker {w} sent {other:?} instead of its result"),
            None => bail!("the viewers workers exited before reporting results"),
        }
    }
    drop(stdins);
    for mut c in children {
        let _ = tokio::time::timeout(Duration::from_secs(30), c.wait()).await;
    }
    if let Some(t) = feed_task {
        let _ = t.await;
    }

    let mut hist = new_hist();
    for r in &results {
        for (v, n) in &r.spread_us {
            hist.record_n(*v, *n).ok();
        }
    }
    let held: usize = results.iter().map(|r| r.held).sum();
    let deliveries: u64 = results.iter().map(|r| r.deliveries).sum();
    let report = ViewersReport {
        requested: plan.count,
        servers: targets.len(),
        processes,
        source_ips,
        held,
        connect_failures: results.iter().map(|r| r.failed).sum(),
        connect_retries: results.iter().map(|r| r.retries).sum(),
        dropped: results.iter().map(|r| r.dropped).sum(),
        resyncs: results.iter().map(|r| r.resyncs).sum(),
        connect_seconds,
        window_seconds: plan.duration.as_secs_f64(),
        frames_in_window: judged.len(),
        deliveries,
        missed_updates: results.iter().map(|r| r.missed).sum(),
        viewers_missing_updates: results.iter().map(|r| r.viewers_missing).sum(),
        max_missed_per_viewer: results.iter().map(|r| r.max_missed).max().unwrap_or(0),
        spread: Summary::of_hist(&hist),
        server_rss_before_bytes: rss_before,
        server_rss_held_bytes: rss_held,
        server_rss_end_bytes: rss_end,
        rss_per_viewer_bytes: if held > 0 {
            (rss_end as f64 - rss_before as f64) / held as f64
        } else {
            0.0
        },
        rss_slope_bytes_per_viewer: stats::slope(&samples),
        server_cpu_seconds: server_cpu,
        client_cpu_seconds: client_cpu,
        server_cpu_us_per_delivery: if deliveries > 0 {
            server_cpu * 1e6 / deliveries as f64
        } else {
            0.0
        },
        client_cpu_us_per_delivery: if deliveries > 0 {
            client_cpu * 1e6 / deliveries as f64
        } else {
            0.0
        },
        feed_ticks_posted: feed_posted.load(Ordering::Relaxed),
        errors: results
            .iter()
            .flat_map(|r| r.errors.iter().cloned())
            .take(10)
            .collect(),
        load_before,
        load_after,
        during: during_value,
    };
    say!(
        "held {} / {}, failures {}, missed {}, frames {}, spread p50 {:.1} ms p99 {:.1} ms max {:.1} ms, {:.0} B/viewer",
        report.held,
        report.requested,
        report.connect_failures,
        report.missed_updates,
        report.frames_in_window,
        report.spread.p50_ms,
        report.spread.p99_ms,
        report.spread.max_ms,
        report.rss_per_viewer_bytes
    );
    Ok(report)
}

/// Posts one tick to `{base}/api/ticks` every `every` until `stop`.
async fn feed(
    base: String,
    token: String,
    every: Duration,
    stop: CancellationToken,
    posted: Arc<AtomicU64>,
) {
    let client = reqwest::Client::new();
    let mut walk = setup::Walk::new(now_ns());
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let t = walk.tick(Utc::now());
        let body = serde_json::json!({
            "time": candlewick::domain::time::rfc3339(t.time),
            "symbol": setup::SYMBOL,
            "price": t.price.get(),
            "volume": t.volume.get(),
        });
        let sent = client
            .post(format!("{base}/api/ticks"))
            .bearer_auth(&token)
            .json(&body)
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

async fn send_line<T: Serialize>(
    stdin: &mut tokio::process::ChildStdin,
    msg: &T,
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

fn new_hist() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures are valid")
}

#[derive(Debug, Serialize, Deserialize)]
struct WorkerConfig {
    urls: Vec<String>,
    count: usize,
    /// Global index of this worker's first viewer (spreads servers and sources evenly).
    offset: usize,
    rate: f64,
    sources: Vec<Ipv4Addr>,
    rcvbuf: u32,
    /// The worker exits by itself after this long, whatever happens to the parent.
    max_seconds: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum FromWorker {
    Progress {
        connected: usize,
        failed: usize,
    },
    Ready {
        connected: usize,
        failed: usize,
    },
    /// (server, hash, first receipt in this worker).
    Frames {
        frames: Vec<(u16, u64, u64)>,
    },
    Result(WorkerResult),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum ToWorker {
    Window {
        start: u64,
        end: u64,
    },
    /// (server, hash, first receipt over all workers) of the frames to judge.
    Judge {
        frames: Vec<(u16, u64, u64)>,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct WorkerResult {
    held: usize,
    failed: usize,
    retries: u64,
    dropped: usize,
    resyncs: usize,
    deliveries: u64,
    missed: u64,
    viewers_missing: usize,
    max_missed: u64,
    /// (microseconds, count) pairs of the spread histogram.
    spread_us: Vec<(u64, u64)>,
    errors: Vec<String>,
}

/// One viewer's record.
#[derive(Debug, Default)]
struct Log {
    server: u16,
    connected: bool,
    /// Why the connection ended before the bench closed it.
    dropped: Option<String>,
    failed: Option<String>,
    /// Connection attempts after the first, and why the last one before them failed.
    retries: u32,
    retry_reason: Option<String>,
    snapshots: usize,
    /// (hash, receipt) of update frames received since the recording started.
    frames: Vec<(u64, u64)>,
}

struct Shared {
    connected: AtomicUsize,
    failed: AtomicUsize,
    record_from: AtomicU64,
    stop: CancellationToken,
}

fn emit(msg: &FromWorker) {
    use std::io::Write;
    if let Ok(line) = serde_json::to_string(msg) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

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
    let targets: Vec<Arc<Target>> = cfg
        .urls
        .iter()
        .map(|u| Target::parse(u).map(Arc::new))
        .collect::<Result<_, _>>()?;
    let shared = Arc::new(Shared {
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        record_from: AtomicU64::new(u64::MAX),
        stop: CancellationToken::new(),
    });
    let (line_tx, mut lines) = mpsc::channel::<String>(4);
    // A plain thread: stdin is read rarely, and a closed stdin (the parent gone) ends the channel.
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::stdin().lock()) {
            let Ok(l) = line else { break };
            if line_tx.blocking_send(l).is_err() {
                break;
            }
        }
    });

    // Connect at the given rate, reporting progress.
    let started = tokio::time::Instant::now();
    let gap = Duration::from_secs_f64(1.0 / cfg.rate.max(0.001));
    let mut handles = Vec::with_capacity(cfg.count);
    let mut last_report = Instant::now();
    for i in 0..cfg.count {
        tokio::time::sleep_until(started + gap * i as u32).await;
        let g = cfg.offset + i;
        let server = g % targets.len();
        let source = cfg.sources[(g / targets.len()) % cfg.sources.len()];
        handles.push(tokio::spawn(viewer(
            targets[server].clone(),
            server as u16,
            source,
            cfg.rcvbuf,
            shared.clone(),
        )));
        if last_report.elapsed() > Duration::from_millis(500) {
            last_report = Instant::now();
            emit(&FromWorker::Progress {
                connected: shared.connected.load(Ordering::Relaxed),
                failed: shared.failed.load(Ordering::Relaxed),
            });
        }
    }
    loop {
        let (c, f) = (
            shared.connected.load(Ordering::Relaxed),
            shared.failed.load(Ordering::Relaxed),
        );
        if c + f >= cfg.count {
            emit(&FromWorker::Ready {
                connected: c,
                failed: f,
            });
            break;
        }
        emit(&FromWorker::Progress {
            connected: c,
            failed: f,
        });
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let Some(ToWorker::Window { start, end }) = next_msg(&mut lines).await? else {
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

    let mut first: HashMap<(u16, u64), u64> = HashMap::new();
    for log in &logs {
        for (hash, t) in &log.frames {
            let e = first.entry((log.server, *hash)).or_insert(*t);
            *e = (*e).min(*t);
        }
    }
    emit(&FromWorker::Frames {
        frames: first.into_iter().map(|((s, h), t)| (s, h, t)).collect(),
    });

    let Some(ToWorker::Judge { frames }) = next_msg(&mut lines).await? else {
        bail!("expected the frames to judge");
    };
    let mut judged: HashMap<(u16, u64), u64> = HashMap::new();
    let mut per_server: HashMap<u16, u64> = HashMap::new();
    for (s, h, t) in frames {
        judged.insert((s, h), t);
        *per_server.entry(s).or_default() += 1;
    }
    let mut result = WorkerResult::default();
    let mut hist = new_hist();
    for log in &logs {
        result.retries += u64::from(log.retries);
        if let Some(why) = log.retry_reason.as_ref().map(|w| format!("(retried) {w}"))
            && result.errors.len() < 10
            && !result.errors.contains(&why)
        {
            result.errors.push(why);
        }
        if let Some(e) = &log.failed {
            result.failed += 1;
            if result.errors.len() < 10 && !result.errors.contains(e) {
                result.errors.push(e.clone());
            }
            continue;
        }
        if let Some(why) = &log.dropped {
            result.dropped += 1;
            if result.errors.len() < 10 && !result.errors.contains(why) {
                result.errors.push(why.clone());
            }
        } else if log.connected {
            result.held += 1;
        }
        result.resyncs += log.snapshots.saturating_sub(1);
        let mut seen = std::collections::HashSet::new();
        for (hash, t) in &log.frames {
            if let Some(first) = judged.get(&(log.server, *hash))
                && seen.insert(*hash)
            {
                hist.record(t.saturating_sub(*first) / 1_000).ok();
            }
        }
        result.deliveries += seen.len() as u64;
        let missed = per_server
            .get(&log.server)
            .copied()
            .unwrap_or(0)
            .saturating_sub(seen.len() as u64);
        result.missed += missed;
        result.max_missed = result.max_missed.max(missed);
        if missed > 0 {
            result.viewers_missing += 1;
        }
    }
    result.spread_us = hist
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    emit(&FromWorker::Result(result));
    Ok(())
}

async fn next_msg(lines: &mut mpsc::Receiver<String>) -> anyhow::Result<Option<ToWorker>> {
    match lines.recv().await {
        Some(l) => Ok(Some(
            serde_json::from_str(&l).context("reading a message from the parent")?,
        )),
        None => Ok(None),
    }
}

/// One viewer: connect, take the snapshot, then record updates until told to stop.
async fn viewer(
    target: Arc<Target>,
    server: u16,
    source: Ipv4Addr,
    rcvbuf: u32,
    shared: Arc<Shared>,
) -> Log {
    let mut log = Log {
        server,
        ..Log::default()
    };
    let connect_once = || async {
        let mut v = Viewer::connect(&target, source, rcvbuf).await?;
        loop {
            match v.next().await? {
                Some(m) if m.kind == Kind::Snapshot => return Ok(v),
                Some(_) => {}
                None => bail!("closed before the snapshot"),
            }
        }
    };
    // Like the chart page, a refused or timed-out viewer tries again after a pause.
    let mut attempt = 0;
    let mut v = loop {
        let outcome = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, connect_once()) => match r {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err("timed out connecting".to_owned()),
            },
            _ = shared.stop.cancelled() => {
                log.failed = Some("still connecting at the end".into());
                return log;
            }
        };
        match outcome {
            Ok(v) => break v,
            Err(e) if attempt < CONNECT_ATTEMPTS - 1 => {
                attempt += 1;
                log.retries += 1;
                log.retry_reason = Some(e);
                tokio::time::sleep(RETRY_PAUSE * attempt).await;
            }
            Err(e) => {
                log.failed = Some(e);
                shared.failed.fetch_add(1, Ordering::Relaxed);
                return log;
            }
        }
    };
    log.connected = true;
    log.snapshots = 1;
    shared.connected.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            m = v.next() => match m {
                Ok(Some(m)) => {
                    let t = now_ns();
                    match m.kind {
                        Kind::Update if t >= shared.record_from.load(Ordering::Relaxed) => log.frames.push((m.hash, t)),
                        Kind::Snapshot => log.snapshots += 1,
                        _ => {}
                    }
                }
                Ok(None) => {
                    log.dropped = Some("the connection ended without a close frame".into());
                    return log;
                }
                Err(e) => {
                    log.dropped = Some(format!("{e:#}"));
                    return log;
                }
            },
            _ = shared.stop.cancelled() => return log,
        }
    }
}
