//! `latency`: a tick's way from the API's answer to every viewer's screen, with many viewers
//! connected and a feed loading the database, at several poll intervals, on both flavours.
//!
//! Per flavour one scratch database; per poll interval one server started with it
//! (`CANDLEWICK_POLL_INTERVAL`) and two phases of `--duration`:
//! 1. **alone**: the writers (one-row INSERTs at `--write-rate` over `--symbols` symbols,
//!    straight into `ticks` as a feed handler would) and the probe, with no other viewer: the
//!    writers' own rate and latency, and the probe's tick → update on an idle fan-out.
//! 2. **watched**: the same with `--viewers` viewers of the probe's symbol, joined as the chart
//!    page does. The probe posts a tick through `POST /api/ticks` every `--probe-every`; its own
//!    viewer names the update frame that first shows each tick, and every viewer is judged on
//!    those frames: each delivery's time from the tick's acknowledgement, each viewer's own p99,
//!    the frames it missed; and the writers beside phase 1.
//!
//! Beside them: the server's polls (its `/metrics`), what the database ran per second
//! (pg_stat_statements), and the server's CPU per delivered update and RSS per viewer.

use std::time::Duration;

use candlewick::config::parse_duration;
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};

use crate::page::JoinArgs;
use crate::probe::{Latency, Probe, Via};
use crate::say;
use crate::server_metrics::{PollTimer, Polls};
use crate::setup::{Cluster, FlavourArgs, Scratch, Server, Workspace};
use crate::statements;
use crate::stats::{Summary, share};
use crate::system::{self, now_ns};
use crate::tables;
use crate::viewers::{self, Deliveries, Layout, Plan, Probe as ServerProbe, Workers};
use crate::writers::{self, Load, Written};

#[derive(Debug, Clone, Args)]
pub struct LatencyArgs {
    /// Viewers of the probe's symbol in the watched phase.
    #[arg(long, default_value_t = 10_000)]
    pub viewers: usize,
    /// The servers' poll intervals, one server (and both phases) each.
    #[arg(long, value_delimiter = ',', default_value = "1s,250ms,100ms", value_parser = parse_duration)]
    pub poll_intervals: Vec<Duration>,
    /// One-row INSERTs per second over all writers.
    #[arg(long, default_value_t = 2_000.0)]
    pub write_rate: f64,
    /// Writer connections.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Symbols they write (S000, S001, …), none of them the probe's.
    #[arg(long, default_value_t = 50)]
    pub symbols: u32,
    /// How often the probe posts its tick.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub probe_every: Duration,
    /// How long each phase writes (and the watched phase's window lasts).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// From every viewer joined to the watched window's start.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Viewers connected per second.
    #[arg(long, default_value_t = 1_000.0)]
    pub join_rate: f64,
    /// Viewer processes (0: as few as the open-file limit allows).
    #[arg(long, default_value_t = 0)]
    pub processes: usize,
    #[command(flatten)]
    pub join: JoinArgs,
    #[command(flatten)]
    pub flavours: FlavourArgs,
}

/// The symbol the probe writes and every viewer watches (no writer writes it).
const PROBE_SYMBOL: &str = "PROBE";
const SCRATCH: &str = "candlewick_bench_latency";
/// Viewers' receive buffer: as `viewers` sets it.
const RCVBUF: u32 = 32 * 1024;

pub async fn run(args: LatencyArgs) -> anyhow::Result<Value> {
    if args.poll_intervals.is_empty() {
        anyhow::bail!("give at least one --poll-intervals");
    }
    args.flavours
        .each(async |ws, cluster| flavour(ws, cluster, &args).await)
        .await
}

/// Every poll interval on a scratch database of `cluster`.
async fn flavour(ws: &Workspace, cluster: Cluster, args: &LatencyArgs) -> anyhow::Result<Value> {
    cluster
        .run_scratch(SCRATCH, async |cluster, db| {
            let storage = db.flavour.describe(&db.pool).await?;
            let mut runs = Vec::new();
            for &every in &args.poll_intervals {
                say!("{storage}: poll interval {every:?}");
                let setting = format!("{}ms", every.as_millis());
                let server = ws
                    .spawn_server_with(
                        &db.url,
                        &format!("latency-{setting}"),
                        &[("CANDLEWICK_POLL_INTERVAL", &setting)],
                    )
                    .await?;
                let run = Run {
                    cluster,
                    db,
                    server: &server,
                    args,
                }
                .both_phases(every)
                .await;
                server.stop().await;
                runs.push(run?);
            }
            Ok(json!({ "storage": storage, "runs": runs }))
        })
        .await
}

/// One server at one poll interval.
struct Run<'a> {
    cluster: &'a Cluster,
    db: &'a Scratch,
    server: &'a Server,
    args: &'a LatencyArgs,
}

/// What the writers and the database did in one phase.
#[derive(Debug, Serialize)]
struct Phase {
    written: Written,
    polls: Polls,
    database: Value,
    /// The probe's own viewer: from each tick's acknowledgement to the first frame showing it.
    probe: Latency,
    load_before: [f64; 3],
    load_after: [f64; 3],
}

/// What the viewers of the watched phase got.
#[derive(Debug, Serialize)]
struct Watched {
    requested: usize,
    held: usize,
    connect_failures: usize,
    dropped: usize,
    join_seconds: f64,
    /// Distinct update frames that first showed a probe tick acknowledged in the window.
    frames: usize,
    deliveries: u64,
    missed_updates: u64,
    viewers_missing_updates: usize,
    /// From a tick's acknowledgement to its frame at each viewer, over every delivery.
    tick_to_update: Summary,
    /// Each viewer's own p99 of that; its max is the worst viewer's.
    viewer_p99: Summary,
    server_cpu_us_per_delivery: f64,
    client_cpu_us_per_delivery: f64,
    /// (RSS at the window's end − before the first viewer) / viewers held.
    server_rss_per_viewer_bytes: f64,
    errors: Vec<String>,
}

impl Run<'_> {
    async fn both_phases(&self, every: Duration) -> anyhow::Result<Value> {
        let probe = Probe::start(
            Via::Api,
            self.server,
            PROBE_SYMBOL,
            self.args.probe_every,
            &self.args.join,
        )
        .await?;
        let result = async {
            say!("writers and the probe alone for {:?}", self.args.duration);
            let alone = self.phase(&probe, now_ns()).await?;
            say_phase("alone", &alone);
            let (watched, with) = self.watched(&probe).await?;
            say_phase("watched", &with);
            say!(
                "{} viewers held of {}: tick → update p50 {:.0} ms p99 {:.0} ms, worst viewer's p99 {:.0} ms, missed {}, {:.1} µs of server CPU per delivery",
                watched.held,
                watched.requested,
                watched.tick_to_update.p50_ms,
                watched.tick_to_update.p99_ms,
                watched.viewer_p99.max_ms,
                watched.missed_updates,
                watched.server_cpu_us_per_delivery
            );
            anyhow::Ok(json!({
                "poll_interval_ms": every.as_millis(),
                "writers_watched_over_alone": share(with.written.rows_per_sec, alone.written.rows_per_sec),
                "viewers": watched,
                "alone": alone,
                "watched": with,
            }))
        }
        .await;
        probe.stop().await;
        result
    }

    /// The writers for `--duration` from `start` (CLOCK_MONOTONIC ns, now or soon), with the
    /// polls and the database's statements counted meanwhile.
    async fn phase(&self, probe: &Probe, start: u64) -> anyhow::Result<Phase> {
        let load = Load {
            table: "ticks".into(),
            writers: self.args.writers,
            symbols: (0..self.args.symbols).map(tables::symbol).collect(),
            hot_writer: false,
            batch: 1,
            rate: Some(self.args.write_rate),
            duration: self.args.duration,
        };
        system::sleep_until_ns(start).await;
        let load_before = system::load_average();
        statements::enable(self.cluster).await;
        let polls = PollTimer::start(&self.server.http()).await?;
        let from = now_ns();
        let written = writers::write(&self.db.url, &load).await?;
        let to = now_ns();
        let polls = polls.stop().await?;
        let database = self.statements((to - from) as f64 / 1e9).await;
        // The last ticks need a poll or two to show.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(Phase {
            written,
            polls,
            database,
            probe: probe.latency(from, to),
            load_before,
            load_after: system::load_average(),
        })
    }

    /// The statements of the scratch database per second over `seconds`: the polls, their
    /// execution, and the busiest statements.
    async fn statements(&self, seconds: f64) -> Value {
        let stats = match statements::stats(self.cluster, &self.db.name).await {
            Ok(s) => s,
            Err(e) => return json!({ "error": format!("{e:#}") }),
        };
        let poll = stats
            .iter()
            .find(|s| s.query.trim_start().starts_with(statements::POLL_PREFIX));
        let per_sec = |calls: i64| calls as f64 / seconds.max(1e-9);
        json!({
            "statements_per_sec": per_sec(stats.iter().map(|s| s.calls).sum()),
            "polls_per_sec": poll.map(|p| per_sec(p.calls)),
            "poll_mean_exec_ms": poll.map(|p| p.mean_exec_ms),
            "poll_exec_ms_per_sec": poll.map(|p| per_sec(p.calls) * p.mean_exec_ms),
            "by_statement": stats
                .iter()
                .take(6)
                .map(|s| json!({
                    "query": statements::one_line(&s.query, 70),
                    "per_sec": per_sec(s.calls),
                    "mean_exec_ms": s.mean_exec_ms,
                }))
                .collect::<Vec<_>>(),
        })
    }

    /// The viewers join, then the writers run during their window; every viewer is judged on
    /// the frames that first showed a probe tick acknowledged in it.
    async fn watched(&self, probe: &Probe) -> anyhow::Result<(Watched, Phase)> {
        let plan = Plan {
            urls: vec![self.server.ws(&self.args.join.query(PROBE_SYMBOL))],
            upstreams: Vec::new(),
            count: self.args.viewers,
            rate: self.args.join_rate,
            processes: self.args.processes,
            duration: self.args.duration,
            settle: self.args.settle,
            source_ips: 0,
            server_pids: vec![self.server.pid],
            feed: None,
            feed_every: Duration::from_secs(1),
            rcvbuf: RCVBUF,
        };
        let layout = Layout::of(&plan)?;
        let server = ServerProbe::new(&plan.server_pids, &layout.targets);
        let rss_before = server.rss();
        let mut workers = Workers::new();
        let group = workers.spawn(&layout.workers(&plan))?;
        let watched = async {
            let ramp =
                viewers::connect_all(&mut workers, group.clone(), &plan, &server, rss_before)
                    .await?;
            tokio::time::sleep(plan.settle).await;
            let start = now_ns() + 500_000_000;
            let end = start + plan.duration.as_nanos() as u64;
            let worker_pids = workers.pids(group.clone());
            let (server_cpu0, client_cpu0) =
                (server.cpu_seconds(), viewers::cpu_seconds(&worker_pids));
            workers.open_window(group.clone(), start, end).await?;
            say!(
                "{} viewers watching; writers for {:?}",
                plan.count,
                plan.duration
            );
            let mut phase = self.phase(probe, start).await?;
            system::sleep_until_ns(end).await;
            let rss_end = server.rss();
            let server_cpu = server.cpu_seconds() - server_cpu0;
            let client_cpu = viewers::cpu_seconds(&worker_pids) - client_cpu0;
            // The workers report once their grace after `end` has passed: by then the probe's
            // viewer has every frame of the window's ticks too.
            let (frames, results) = workers
                .judge_with(group.clone(), |_| {
                    let (latency, references) = probe.references(0, start, end);
                    // The probe's own figures over the same window as the viewers'.
                    phase.probe = latency;
                    references
                })
                .await?;
            let d = Deliveries::of(frames, &results);
            let per = |total: f64, n: f64| if n > 0.0 { total / n } else { 0.0 };
            let watched = Watched {
                requested: plan.count,
                held: d.held,
                connect_failures: d.connect_failures,
                dropped: d.dropped,
                join_seconds: ramp.seconds,
                frames: d.frames,
                deliveries: d.deliveries,
                missed_updates: d.missed_updates,
                viewers_missing_updates: d.viewers_missing_updates,
                tick_to_update: d.spread,
                viewer_p99: d.viewer_p99,
                server_cpu_us_per_delivery: per(server_cpu * 1e6, d.deliveries as f64),
                client_cpu_us_per_delivery: per(client_cpu * 1e6, d.deliveries as f64),
                server_rss_per_viewer_bytes: per(rss_end as f64 - rss_before as f64, d.held as f64),
                errors: d.errors,
            };
            anyhow::Ok((watched, phase))
        }
        .await;
        workers.finish().await;
        watched
    }
}

fn say_phase(name: &str, p: &Phase) {
    say!(
        "{name}: {:.0} rows/s, write p99 {:.2} ms; polls p50 {:?} p99 {:?} ms; probe tick → update p50 {:.0} ms p99 {:.0} ms, unseen {}",
        p.written.rows_per_sec,
        p.written.latency.p99_ms,
        p.polls.p50_ms,
        p.polls.p99_ms,
        p.probe.tick_to_update.p50_ms,
        p.probe.tick_to_update.p99_ms,
        p.probe.unseen
    );
}
