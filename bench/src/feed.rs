//! `feed`: a realistic feed writing straight into the database while viewers watch. Writers
//! send one-row INSERTs (or small batches) across many symbols; each workload runs once into
//! `ticks` and once into the baseline in the same database — a bare table with the same primary
//! key on plain PostgreSQL, the tutorial's own schema (hypertable + continuous aggregate, no
//! triggers) on TimescaleDB. For each: rows per second, write latency in the first and the last
//! five seconds of the minute, the server's polls (its `/metrics` summary), the time from a
//! tick's INSERT to the update frame that shows it, and the server's RSS.
//!
//! Workloads: `one-row` (N writers, M symbols, writer 0 on one hot symbol), `batches` (the same
//! with several rows per INSERT) and `hot` (one writer, one symbol).

use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};

use crate::page::JoinArgs;
use crate::probe::{Latency, Probe, Via};
use crate::say;
use crate::server_metrics::{PollTimer, Polls};
use crate::setup::{Cluster, FlavourArgs, Scratch, Server, Workspace};
use crate::stats::{ratio, share};
use crate::tables::{self, Baseline};
use crate::viewers::{PeakRss, Probe as ServerProbe};
use crate::watchers::Watchers;
use crate::writers::{self, Load, Written};
use crate::{statements, system};

#[derive(Debug, Clone, Args)]
pub struct FeedArgs {
    /// Writer connections in the `one-row` and `batches` workloads.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Symbols they write (S000, S001, …; S000 is the hot one).
    #[arg(long, default_value_t = 200)]
    pub symbols: u32,
    /// Rows per INSERT in the `batches` workload.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// How long each workload writes into each table: a minute or more covers every second of
    /// the minute, and the server's poll summary (which keeps the last minute) only this phase.
    #[arg(long, default_value = "65s", value_parser = candlewick::config::parse_duration)]
    pub phase: Duration,
    /// The workloads, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "one-row,batches,hot"
    )]
    pub workloads: Vec<Workload>,
    /// Viewers watching (round-robin over the watched symbols).
    #[arg(long, default_value_t = 100)]
    pub viewers: usize,
    /// Symbols watched: S000 (the hot one) and the next ones.
    #[arg(long, default_value_t = 10)]
    pub watched: u32,
    /// How often the latency probe writes its tick.
    #[arg(long, default_value = "200ms", value_parser = candlewick::config::parse_duration)]
    pub probe_every: Duration,
    #[command(flatten)]
    pub join: JoinArgs,
    /// The baseline for the poll's cost on TimescaleDB: the poll recomputes every changed
    /// minute from `ticks`, as before migration 0012 (the live minutes are made to start
    /// after year 9999, so writers keep none and the poll reads none).
    #[arg(long)]
    pub recompute_minutes: bool,
    #[command(flatten)]
    pub flavours: FlavourArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// One row per INSERT, --writers writers over --symbols symbols, writer 0 on the hot one.
    OneRow,
    /// The same with --batch rows per INSERT.
    Batches,
    /// One writer, one symbol, one row per INSERT.
    Hot,
}

/// The symbol the probe writes and watches (no workload writes it).
const PROBE_SYMBOL: &str = "PROBE";
const SCRATCH: &str = "candlewick_bench_feed";

pub async fn run(args: FeedArgs) -> anyhow::Result<Value> {
    args.flavours
        .each(async |ws, cluster| flavour(ws, cluster, &args).await)
        .await
}

/// Every workload into `ticks` and into the baseline, on a scratch database of `cluster`.
async fn flavour(ws: &Workspace, cluster: Cluster, args: &FeedArgs) -> anyhow::Result<Value> {
    cluster
        .run_scratch(SCRATCH, async |cluster, db| {
            let storage = db.flavour.describe(&db.pool).await?;
            let baseline = Baseline::of(db.flavour);
            baseline.create(db).await?;
            if args.recompute_minutes {
                sqlx::query(
                    "UPDATE candlewick_meta SET value = '253402300800' \
                     WHERE key = 'live_minutes_from'",
                )
                .execute(&db.pool)
                .await
                .context("moving the live minutes' start past year 9999")?;
            }
            say!("{storage}: feed beside the {:?}", baseline);
            let server = ws.spawn_server(&db.url, "feed-server").await?;
            let phases = watched_phases(cluster, db, &server, baseline, args).await;
            server.stop().await;
            let phases = phases?;
            Ok(json!({
                "storage": storage,
                "baseline": baseline,
                "comparisons": compare(&phases),
                "phases": phases,
            }))
        })
        .await
}

/// The phases, with the viewers and the probe watching throughout.
async fn watched_phases(
    cluster: &Cluster,
    db: &Scratch,
    server: &Server,
    baseline: Baseline,
    args: &FeedArgs,
) -> anyhow::Result<Vec<Phase>> {
    let mut viewers = Watchers::default();
    for i in 0..args.viewers {
        let symbol = tables::symbol(i as u32 % args.watched.max(1));
        viewers.add(&server.ws(&args.join.query(&symbol))).await?;
    }
    let probe = Probe::start(
        Via::Database(&db.url),
        server,
        PROBE_SYMBOL,
        args.probe_every,
        &args.join,
    )
    .await?;
    let watch = Watch {
        cluster,
        db,
        server,
        viewers: &viewers,
        probe: &probe,
    };
    let mut phases = Vec::new();
    let result = async {
        for &workload in &args.workloads {
            for table in ["ticks", baseline.table()] {
                phases.push(watch.phase(workload, table, args).await?);
            }
        }
        anyhow::Ok(())
    }
    .await;
    probe.stop().await;
    viewers.stop().await;
    result?;
    Ok(phases)
}

/// What watches a phase.
struct Watch<'a> {
    cluster: &'a Cluster,
    db: &'a Scratch,
    server: &'a Server,
    viewers: &'a Watchers,
    probe: &'a Probe,
}

/// One workload into one table, and what the server did meanwhile.
#[derive(Debug, Serialize)]
struct Phase {
    workload: Workload,
    written: Written,
    /// Mean execution time of the workload's INSERT inside PostgreSQL (pg_stat_statements:
    /// triggers included, the round trip not).
    insert_exec_ms: Option<f64>,
    polls: Polls,
    /// Mean execution time of the poll inside PostgreSQL.
    poll_exec_ms: Option<f64>,
    probe: Latency,
    viewer_updates: u64,
    viewers_dropped: u64,
    server_rss_end_bytes: u64,
    server_rss_peak_bytes: u64,
    load_before: [f64; 3],
    load_after: [f64; 3],
}

impl Watch<'_> {
    async fn phase(
        &self,
        workload: Workload,
        table: &str,
        args: &FeedArgs,
    ) -> anyhow::Result<Phase> {
        let symbols: Vec<String> = match workload {
            Workload::Hot => vec![tables::symbol(0)],
            _ => (0..args.symbols).map(tables::symbol).collect(),
        };
        let load = Load {
            table: table.to_owned(),
            writers: if workload == Workload::Hot {
                1
            } else {
                args.writers
            },
            symbols,
            hot_writer: workload != Workload::Hot,
            batch: if workload == Workload::Batches {
                args.batch
            } else {
                1
            },
            rate: None,
            duration: args.phase,
        };
        say!("{workload:?} into {table} for {:?}", args.phase);
        let load_before = system::load_average();
        let server = ServerProbe::new(&[self.server.pid], &[]);
        let peak = PeakRss::watch(&server);
        statements::enable(self.cluster).await;
        let polls = PollTimer::start(&self.server.http()).await?;
        let updates_before = self.viewers.updates();
        let started = system::now_ns();
        let written = writers::write(&self.db.url, &load).await?;
        let ended = system::now_ns();
        let polls = polls.stop().await?;
        let viewer_updates = self.viewers.updates() - updates_before;
        // The probe's last ticks need a poll or two to show.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let probe = self.probe.latency(started, ended);
        let stats = statements::stats(self.cluster, &self.db.name).await?;
        let exec = |prefix: &str| {
            stats
                .iter()
                .find(|s| s.query.trim_start().starts_with(prefix))
                .map(|s| s.mean_exec_ms)
        };
        let phase = Phase {
            workload,
            insert_exec_ms: exec(&format!("INSERT INTO {table} ")),
            polls,
            poll_exec_ms: exec(statements::POLL_PREFIX),
            probe,
            viewer_updates,
            viewers_dropped: self.viewers.dropped(),
            server_rss_end_bytes: server.rss(),
            server_rss_peak_bytes: peak.stop(),
            load_before,
            load_after: system::load_average(),
            written,
        };
        say!(
            "{:.0} rows/s (first 5 s of the minute {:.0}/s, last 5 s {:.0}/s), latency p50 {:.2} ms p99 {:.2} ms; poll p99 {:?} ms; tick→update p50 {:.0} ms",
            phase.written.rows_per_sec,
            phase.written.first_5s.rows_per_sec,
            phase.written.last_5s.rows_per_sec,
            phase.written.latency.p50_ms,
            phase.written.latency.p99_ms,
            phase.polls.p99_ms,
            phase.probe.tick_to_update.p50_ms
        );
        Ok(phase)
    }
}

/// Each workload into `ticks` beside the baseline, measured in the phases just before.
fn compare(phases: &[Phase]) -> Vec<Value> {
    let mut out = Vec::new();
    for pair in phases.chunks(2) {
        let [ticks, base] = pair else { continue };
        out.push(json!({
            "workload": ticks.workload,
            "rows_per_sec": ticks.written.rows_per_sec,
            "baseline_rows_per_sec": base.written.rows_per_sec,
            "share_of_baseline": share(ticks.written.rows_per_sec, base.written.rows_per_sec),
            "latency_p99_ms": ticks.written.latency.p99_ms,
            "baseline_latency_p99_ms": base.written.latency.p99_ms,
            "last_over_first_5s": ticks.written.last_over_first,
            "baseline_last_over_first_5s": base.written.last_over_first,
            "poll_p99_ms": ticks.polls.p99_ms,
            "baseline_poll_p99_ms": base.polls.p99_ms,
            "tick_to_update_p99_ms": ticks.probe.tick_to_update.p99_ms,
            "baseline_tick_to_update_p99_ms": base.probe.tick_to_update.p99_ms,
            "insert_exec_over_baseline": ticks
                .insert_exec_ms
                .zip(base.insert_exec_ms)
                .map(|(t, b)| ratio(t, b)),
            "server_rss_peak_bytes": ticks.server_rss_peak_bytes,
            "baseline_server_rss_peak_bytes": base.server_rss_peak_bytes,
        }));
    }
    out
}
