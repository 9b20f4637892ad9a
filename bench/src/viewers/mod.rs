//! `viewers`: N WebSocket viewers over several source addresses and worker processes.
//!
//! The parent re-runs this binary as `viewers-worker` processes (one process holds at most its
//! open-file limit of sockets) and talks to them in JSON lines: workers report progress and
//! `ready` (with how their viewers joined); the parent opens measurement windows
//! (CLOCK_MONOTONIC times, one clock for the whole box); after each, workers report, per update
//! frame (server, hash), when they first saw it; the parent finds each frame's first receipt
//! over all workers and sends it back; workers answer with the spread of every viewer's receipt
//! from that first one, and the frames each viewer missed. Viewers stay connected from one
//! window to the next until the parent lets the workers go.
//!
//! Here: the options and the parent's phases, which `join_storm` and `soak` reuse. `plan` lays
//! the run out over processes and source addresses, `processes` and `protocol` carry the
//! messages, `worker` and `viewer` are the worker process, `collect` turns receipts into spread
//! and missed updates, `report` sums up, and `feed` posts the ticks that make updates flow.

mod collect;
mod feed;
mod plan;
mod processes;
mod protocol;
mod proxy;
mod report;
mod viewer;
mod worker;

use std::time::{Duration, Instant};

use anyhow::bail;
use candlewick::config::EmbeddedTimescaleDb;
use chrono::Utc;
use clap::Args;

pub use feed::Feed;
pub use plan::{Layout, Plan};
pub use processes::{Group, Workers};
pub use protocol::Receipt;
pub use report::{
    Deliveries, JoinReport, PeakRss, Probe, Ramp, ViewersReport, Window, cpu_seconds,
};
pub use worker::worker_main;

use protocol::WorkerResult;
use proxy::{Nginx, ProxyReport};
use report::Start;

use crate::page::JoinArgs;
use crate::say;
use crate::setup::{self, Cluster, Embedded, WorkArgs};
use crate::statements;
use crate::system::{self, now_ns};
use crate::wsclient::Target;

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
    /// How long after every viewer has joined the window opens.
    #[arg(long, default_value = "2s", value_parser = candlewick::config::parse_duration)]
    pub settle: Duration,
    #[command(flatten)]
    pub join: JoinArgs,
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
    /// With --spawn-servers: where they run.
    #[command(flatten)]
    pub work: WorkArgs,
    /// With --spawn-servers, the embedded cluster: `off` keeps to plain PostgreSQL (as
    /// BENCHMARKS.md measured), `auto` preloads TimescaleDB when it is installed.
    #[arg(long, value_enum, default_value_t = EmbeddedTimescaleDb::Off)]
    pub embedded_timescaledb: EmbeddedTimescaleDb,
    /// With --spawn-servers: how much history the database holds.
    #[arg(long, default_value = "7d", value_parser = candlewick::config::parse_duration)]
    pub history: Duration,
    /// With --spawn-servers: ticks per second in that history.
    #[arg(long, default_value_t = 0.2)]
    pub history_rate: f64,
    /// With --spawn-servers: `nginx` puts the servers behind nginx running the shipped
    /// deploy/nginx.conf and the viewers connect through it; the report gains what nginx
    /// cost (`proxy`). Run once with and once without to compare.
    #[arg(long, value_enum, default_value_t = ProxyKind::None)]
    pub proxy: ProxyKind,
}

/// What stands between the viewers and the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyKind {
    /// Viewers connect to the servers directly, round-robin.
    None,
    /// Through nginx with the shipped configuration (round-robin there).
    Nginx,
}

pub async fn run_cli(args: ViewersArgs) -> anyhow::Result<serde_json::Value> {
    let plan = Plan {
        urls: args.urls.iter().map(|u| args.join.apply_to(u)).collect(),
        upstreams: Vec::new(),
        count: args.count,
        rate: args.rate,
        processes: args.processes,
        duration: args.duration,
        settle: args.settle,
        source_ips: args.source_ips,
        server_pids: args.server_pids.clone(),
        feed: None,
        feed_every: args.feed_every,
        rcvbuf: args.rcvbuf,
    };
    if args.proxy != ProxyKind::None && args.spawn_servers == 0 {
        bail!("--proxy needs --spawn-servers");
    }
    let (report, proxy) = match (args.spawn_servers, &args.urls[..]) {
        (0, []) => bail!("give --url (one per server) or --spawn-servers N"),
        (0, [first, ..]) => {
            let feed = match &args.feed_token {
                Some(token) => Some((
                    format!("http://{}", Target::parse(first)?.host),
                    token.clone(),
                )),
                None => None,
            };
            let report = run(&Plan { feed, ..plan }, |_| async {
                serde_json::Value::Null
            })
            .await?;
            (report, None)
        }
        _ => run_on_spawned_servers(&args, plan).await?,
    };
    let mut value = serde_json::to_value(report)?;
    if let Some(proxy) = proxy {
        value["proxy"] = serde_json::to_value(proxy)?;
    }
    Ok(value)
}

/// Starts the servers on a scratch database holding the history (behind nginx with
/// `--proxy nginx`), feeds them a tick a second, and counts the statements they run during the
/// window.
async fn run_on_spawned_servers(
    args: &ViewersArgs,
    plan: Plan,
) -> anyhow::Result<(ViewersReport, Option<ProxyReport>)> {
    let ws = args.work.open()?;
    // pg_stat_statements preloaded: the servers' statements are counted during the window.
    let cluster = ws
        .cluster(Embedded {
            timescaledb: args.embedded_timescaledb,
            count_statements: true,
        })
        .await?;
    cluster
        .run_scratch("candlewick_bench_viewers", async |cluster, db| {
            say!(
                "loading {:?} of history at {}/s",
                args.history,
                args.history_rate
            );
            setup::load_history(db, Utc::now(), args.history, args.history_rate).await?;
            db.pool.close().await;
            let mut servers = Vec::new();
            for i in 0..args.spawn_servers {
                say!("starting server {}", i + 1);
                servers.push(ws.spawn_server(&db.url, &format!("server-{i}")).await?);
            }
            let query = args.join.query(setup::SYMBOL);
            let proxy = match args.proxy {
                ProxyKind::None => None,
                ProxyKind::Nginx => {
                    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
                    let nginx = Nginx::start(&ws.dir().join("nginx"), &ports, args.count).await?;
                    say!("nginx in front, {} worker(s)", nginx.workers);
                    Some(nginx)
                }
            };
            let plan = Plan {
                urls: match &proxy {
                    Some(nginx) => vec![nginx.ws(&query)],
                    None => servers.iter().map(|s| s.ws(&query)).collect(),
                },
                upstreams: match &proxy {
                    Some(_) => servers
                        .iter()
                        .map(|s| format!("127.0.0.1:{}", s.port))
                        .collect(),
                    None => Vec::new(),
                },
                server_pids: servers.iter().map(|s| s.pid).collect(),
                feed: Some((servers[0].http(), setup::TOKEN.to_owned())),
                ..plan
            };
            let counting = statements::enable(cluster).await;
            let servers_n = servers.len();
            let proxy_pids = proxy.as_ref().map(Nginx::pids).unwrap_or_default();
            let proxy_rss_before = report::rss_bytes(&proxy_pids);
            let proxy_window = std::sync::Mutex::new(None);
            let (pids, window) = (&proxy_pids, &proxy_window);
            let report = run(&plan, |dur| async move {
                let (cpu0, rss_held) = (report::cpu_seconds(pids), report::rss_bytes(pids));
                let statements = async {
                    if !counting {
                        return serde_json::Value::Null;
                    }
                    count_statements(cluster, &db.name, servers_n, dur)
                        .await
                        .unwrap_or_else(|e| serde_json::json!({ "error": format!("{e:#}") }))
                };
                let (statements, ()) = tokio::join!(statements, tokio::time::sleep(dur));
                let cpu = report::cpu_seconds(pids) - cpu0;
                *window.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((cpu, rss_held, report::rss_bytes(pids)));
                statements
            })
            .await;
            if let Some(nginx) = proxy {
                nginx.stop().await;
            }
            for s in servers {
                s.stop().await;
            }
            let report = report?;
            let proxy = match (args.proxy, proxy_window.into_inner().unwrap_or_default()) {
                (ProxyKind::Nginx, Some((cpu, held, end))) => Some(ProxyReport::of(
                    &report,
                    proxy_pids.len() - 1,
                    proxy_rss_before,
                    held,
                    end,
                    cpu,
                )),
                _ => None,
            };
            Ok((report, proxy))
        })
        .await
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
    let layout = Layout::of(plan)?;
    let probe = Probe::new(&plan.server_pids, &layout.targets);
    let start = Start {
        requested: plan.count,
        servers: layout.targets.len().max(plan.upstreams.len()),
        processes: layout.processes,
        source_ips: layout.sources.len(),
        rss: probe.rss(),
        load: system::load_average(),
    };
    say!(
        "{} viewers → {} server(s), {} process(es), {} source address(es), {}/s",
        plan.count,
        start.servers,
        start.processes,
        start.source_ips,
        plan.rate
    );
    let peak = PeakRss::watch(&probe);
    let mut workers = Workers::new();
    let group = workers.spawn(&layout.workers(plan))?;
    let feed = Feed::start(plan.feed.clone(), plan.feed_every);
    let ramp = connect_all(&mut workers, group.clone(), plan, &probe, start.rss).await?;
    say!("settling for {:?}", plan.settle);
    tokio::time::sleep(plan.settle).await;
    let window_start = now_ns() + 500_000_000;
    let window_end = window_start + plan.duration.as_nanos() as u64;
    let (mut window, results) = measure(
        &mut workers,
        group,
        &probe,
        (window_start, window_end),
        during,
    )
    .await?;
    feed.stop();
    window.feed_ticks_posted = feed.join().await;
    workers.finish().await;
    let rss_after_close = after_close(&probe).await;
    let report = ViewersReport::new(start, ramp, window, &results, peak.stop(), rss_after_close);
    report.say();
    Ok(report)
}

/// The servers' RSS a few seconds after every viewer has gone.
pub async fn after_close(probe: &Probe) -> u64 {
    tokio::time::sleep(Duration::from_secs(3)).await;
    probe.rss()
}

/// Waits until every worker of `group` is ready (each viewer connected or given up), sampling
/// the servers' memory against connected viewers.
pub async fn connect_all(
    workers: &mut Workers,
    group: Group,
    plan: &Plan,
    probe: &Probe,
    rss_before: u64,
) -> anyhow::Result<Ramp> {
    let started = Instant::now();
    let mut samples: Vec<(f64, f64)> = vec![(0.0, rss_before as f64)];
    let mut sample_every = tokio::time::interval(Duration::from_millis(500));
    let deadline = started
        + Duration::from_secs_f64(plan.count as f64 / plan.rate)
        + viewer::CONNECT_TIMEOUT * 2;
    let mut last_said = Instant::now();
    while workers.joins(group.clone())?.is_none() {
        tokio::select! {
            () = workers.next_event() => {}
            _ = sample_every.tick() => {
                let (connected, failed) = workers.progress(group.clone());
                if probe.found() {
                    samples.push((connected as f64, probe.rss() as f64));
                }
                if last_said.elapsed() > Duration::from_secs(5) {
                    last_said = Instant::now();
                    say!("connected {connected}, failed {failed}");
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => bail!("viewers did not finish connecting in time"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (connected, _) = workers.progress(group.clone());
    say!("{connected} viewers connected in {seconds:.1} s");
    let join = JoinReport::of(workers.joins(group)?.unwrap_or_default());
    let rss_held = probe.rss();
    samples.push((connected as f64, rss_held as f64));
    Ok(Ramp {
        seconds,
        rss_held,
        rss_samples: samples,
        join,
    })
}

/// Opens the window `(start, end)` on `group`, runs `during` meanwhile, samples the servers and
/// the viewers around it, then has the workers judge the frames first received inside it.
pub async fn measure<F, Fut>(
    workers: &mut Workers,
    group: Group,
    probe: &Probe,
    (start, end): (u64, u64),
    during: F,
) -> anyhow::Result<(Window, Vec<WorkerResult>)>
where
    F: FnOnce(Duration) -> Fut,
    Fut: std::future::Future<Output = serde_json::Value>,
{
    let worker_pids = workers.pids(group.clone());
    let (server_cpu0, client_cpu0) = (probe.cpu_seconds(), report::cpu_seconds(&worker_pids));
    workers.open_window(group.clone(), start, end).await?;
    let seconds = Duration::from_nanos(end.saturating_sub(start));
    say!("measuring for {seconds:?}");
    let during = during(Duration::from_nanos(end.saturating_sub(now_ns()))).await;
    system::sleep_until_ns(end).await;
    let rss_end = probe.rss();
    let server_cpu = probe.cpu_seconds() - server_cpu0;
    let client_cpu = report::cpu_seconds(&worker_pids) - client_cpu0;
    let load_after = system::load_average();

    let (frames, results) = workers.judge_window(group, start, end).await?;
    let window = Window {
        seconds: seconds.as_secs_f64(),
        frames,
        rss_end,
        server_cpu,
        client_cpu,
        feed_ticks_posted: 0,
        load_after,
        during,
    };
    Ok((window, results))
}
