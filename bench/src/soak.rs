//! `soak`: one server for a long while under a steady load: many viewers of one symbol (in the
//! viewer worker processes), a feed of INSERTs spread over many symbols including the watched
//! one, and nothing else. Reported: the server's RSS every `--sample-every` and its drift after
//! `--warm-up`, every update missed by any viewer (judged in back-to-back windows over the whole
//! run, as `viewers` judges one), whether the update numbers a viewer of our own saw kept rising, what the
//! feed wrote, and the warnings and errors in the server's log.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use candlewick::config::EmbeddedTimescaleDb;
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::page::JoinArgs;
use crate::say;
use crate::sequence::Sequence;
use crate::setup::{self, HistoryServer, Scratch, Server, WorkArgs};
use crate::system::{self, now_ns};
use crate::tables;
use crate::viewers::{self, Deliveries, Layout, Plan, Probe, Workers};
use crate::writers::{self, Load};

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// How long the feed writes and the viewers are judged.
    #[arg(long, default_value = "30m", value_parser = candlewick::config::parse_duration)]
    pub duration: Duration,
    /// Viewers of the watched symbol (BTC/USD).
    #[arg(long, default_value_t = 10_000)]
    pub viewers: usize,
    /// Connections per second while they join.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Ticks per second over all symbols.
    #[arg(long, default_value_t = 1_000.0)]
    pub ticks_per_sec: f64,
    /// Symbols the feed writes: BTC/USD and S001, S002, ….
    #[arg(long, default_value_t = 200)]
    pub symbols: u32,
    /// Writer connections of the feed.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Rows per INSERT.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// How often the server's RSS is sampled.
    #[arg(long, default_value = "10s", value_parser = candlewick::config::parse_duration)]
    pub sample_every: Duration,
    /// RSS drift is measured from this long into the run.
    #[arg(long, default_value = "5m", value_parser = candlewick::config::parse_duration)]
    pub warm_up: Duration,
    /// Each judging window (back to back over the whole run).
    #[arg(long, default_value = "60s", value_parser = candlewick::config::parse_duration)]
    pub window: Duration,
    #[command(flatten)]
    pub join: JoinArgs,
    /// How much BTC/USD history the database holds.
    #[arg(long, default_value = "7d", value_parser = candlewick::config::parse_duration)]
    pub history: Duration,
    /// Ticks per second in that history.
    #[arg(long, default_value_t = 0.2)]
    pub history_rate: f64,
    /// The embedded cluster: `auto` (TimescaleDB when installed, as the server starts by
    /// default) or `off` (plain PostgreSQL).
    #[arg(long, value_enum, default_value_t = EmbeddedTimescaleDb::Auto)]
    pub embedded_timescaledb: EmbeddedTimescaleDb,
    #[command(flatten)]
    pub work: WorkArgs,
}

const SERVER: &str = "soak-server";

pub async fn run(args: SoakArgs) -> anyhow::Result<Value> {
    let log = args.work.open()?.log_path(SERVER);
    let server = HistoryServer {
        database: "candlewick_bench_soak",
        server: SERVER,
        timescaledb: args.embedded_timescaledb,
        history: args.history,
        history_rate: args.history_rate,
        env: &[],
        baseline_bin: None,
    };
    let mut report = server
        .run(&args.work, async |db, server, _| {
            soak(db, server, &args).await
        })
        .await?;
    // Read once the server has stopped: its shutdown is in the log too.
    report["server_log"] = serde_json::to_value(LogFindings::read(&log)?)?;
    Ok(report)
}

/// Per judging window: what the viewers got.
#[derive(Debug, Serialize)]
struct WindowRow {
    /// Seconds from the first window's start.
    at_s: f64,
    frames: usize,
    missed: u64,
    held: usize,
    resyncs: usize,
}

async fn soak(db: &Scratch, server: &Server, args: &SoakArgs) -> anyhow::Result<Value> {
    let load_before = system::load_average();
    let url = server.ws(&args.join.query(setup::SYMBOL));
    let plan = Plan {
        urls: vec![url.clone()],
        upstreams: Vec::new(),
        count: args.viewers,
        rate: args.rate,
        processes: 0,
        duration: args.duration + args.window,
        settle: Duration::ZERO,
        source_ips: 0,
        server_pids: vec![server.pid],
        feed: None,
        feed_every: Duration::from_secs(1),
        rcvbuf: 32 * 1024,
    };
    let probe = Probe::new(&plan.server_pids, &[]);
    let rss_before = probe.rss();
    let mut workers = Workers::new();
    say!("{} viewers joining", args.viewers);
    let group = workers.spawn(&Layout::of(&plan)?.workers(&plan))?;
    let ramp = viewers::connect_all(&mut workers, group.clone(), &plan, &probe, rss_before).await?;
    let sequence = Sequence::watch(&url).await?;

    let mut symbols = vec![setup::SYMBOL.to_owned()];
    symbols.extend((1..args.symbols.max(1)).map(tables::symbol));
    let load = Load {
        table: "ticks".into(),
        writers: args.writers,
        symbols,
        hot_writer: false,
        batch: args.batch.max(1),
        rate: Some(args.ticks_per_sec),
        duration: args.duration,
    };
    say!(
        "soak: {:.0} ticks/s over {} symbols for {:?}",
        args.ticks_per_sec,
        args.symbols,
        args.duration
    );
    let started = Instant::now();
    let sampling = CancellationToken::new();
    let samples = tokio::spawn(sample_rss(
        probe.clone(),
        args.sample_every,
        sampling.clone(),
    ));
    let feed = tokio::spawn({
        let (url, load) = (db.url.clone(), load.clone());
        async move { writers::write(&url, &load).await }
    });

    // Back-to-back windows until the feed's end: each frame is judged in the window it was
    // first received in.
    let first_start = now_ns() + 500_000_000;
    let run_end = first_start + args.duration.as_nanos() as u64;
    let mut start = first_start;
    let mut rows = Vec::new();
    let mut all_results = Vec::new();
    let mut frames = 0;
    let mut last = Deliveries::default();
    while start < run_end {
        let end = (start + args.window.as_nanos() as u64).min(run_end);
        workers.open_window(group.clone(), start, end).await?;
        let (n, results) = workers.judge_window(group.clone(), start, end).await?;
        last = Deliveries::of(n, &results);
        say!(
            "{:.0} s: {n} frames, missed {}, held {}, RSS {} MB",
            (end - first_start) as f64 / 1e9,
            last.missed_updates,
            last.held,
            probe.rss() / 1_000_000
        );
        rows.push(WindowRow {
            at_s: (start - first_start) as f64 / 1e9,
            frames: n,
            missed: last.missed_updates,
            held: last.held,
            resyncs: last.resyncs,
        });
        frames += n;
        all_results.extend(results);
        start = end;
    }
    let written = feed.await.context("the feed task")??;
    sampling.cancel();
    let samples = samples.await.context("the RSS sampler")?;
    let seen = sequence.stop().await;
    workers.finish().await;
    let rss_after_close = viewers::after_close(&probe).await;

    // Totals over every window; who is held, dropped or resynced is a state, read at the end.
    let mut total = Deliveries::of(frames, &all_results);
    total.held = last.held;
    total.connect_failures = last.connect_failures;
    total.connect_retries = last.connect_retries;
    total.dropped = last.dropped;
    total.resyncs = last.resyncs;
    let expected = frames as u64 * total.held as u64;
    let drift = Drift::of(&samples, args.warm_up.as_secs_f64());
    say!(
        "soak: {} of {expected} deliveries missed; RSS {:.1} MB after warm-up → {:.1} MB at the end ({:+.2} %); {} updates numbered out of order",
        total.missed_updates,
        drift.rss_after_warm_up_bytes as f64 / 1e6,
        drift.rss_end_bytes as f64 / 1e6,
        drift.drift_pct,
        seen.out_of_order
    );
    Ok(json!({
        "seconds": started.elapsed().as_secs_f64(),
        "viewers": {
            "requested": args.viewers,
            "join": ramp.join,
            "rss_held_bytes": ramp.rss_held,
        },
        "feed": written,
        "deliveries": total,
        "expected_deliveries": expected,
        "missed_share": if expected > 0 { total.missed_updates as f64 / expected as f64 } else { 0.0 },
        "sequence": seen,
        "windows": rows,
        "rss": drift,
        "rss_samples": samples,
        "server_rss_before_bytes": rss_before,
        "server_rss_after_close_bytes": rss_after_close,
        "load_before": load_before,
        "load_after": system::load_average(),
    }))
}

/// (seconds since the start, server RSS) every `every` until `stop`.
async fn sample_rss(probe: Probe, every: Duration, stop: CancellationToken) -> Vec<(f64, u64)> {
    let started = Instant::now();
    let mut tick = tokio::time::interval(every);
    let mut samples = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => samples.push((started.elapsed().as_secs_f64(), probe.rss())),
        }
    }
    samples.push((started.elapsed().as_secs_f64(), probe.rss()));
    samples
}

/// The server's memory after the warm-up.
#[derive(Debug, Default, Serialize)]
struct Drift {
    /// The first sample at or after the warm-up, the last, and the highest after the warm-up.
    rss_after_warm_up_bytes: u64,
    rss_end_bytes: u64,
    rss_max_after_warm_up_bytes: u64,
    /// (end − after warm-up) ÷ after warm-up, in per cent.
    drift_pct: f64,
    /// (max after warm-up − after warm-up) ÷ after warm-up, in per cent.
    max_drift_pct: f64,
}

impl Drift {
    fn of(samples: &[(f64, u64)], warm_up_s: f64) -> Self {
        let after: Vec<u64> = samples
            .iter()
            .filter(|(t, _)| *t >= warm_up_s)
            .map(|(_, rss)| *rss)
            .collect();
        let (Some(&base), Some(&end)) = (after.first(), after.last()) else {
            return Self::default();
        };
        let max = after.iter().copied().max().unwrap_or(base);
        let pct = |x: u64| {
            if base == 0 {
                0.0
            } else {
                (x as f64 - base as f64) / base as f64 * 100.0
            }
        };
        Self {
            rss_after_warm_up_bytes: base,
            rss_end_bytes: end,
            rss_max_after_warm_up_bytes: max,
            drift_pct: pct(end),
            max_drift_pct: pct(max),
        }
    }
}

/// Warnings and errors in a server's JSON log.
#[derive(Debug, Default, Serialize)]
struct LogFindings {
    lines: usize,
    warnings: usize,
    errors: usize,
    /// The first few of them, as logged.
    first: Vec<String>,
}

impl LogFindings {
    fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Self::of(&text))
    }

    fn of(text: &str) -> Self {
        let mut found = Self::default();
        for line in text.lines() {
            found.lines += 1;
            let level = serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v["level"].as_str().map(str::to_owned));
            match level.as_deref() {
                Some("WARN") => found.warnings += 1,
                Some("ERROR") => found.errors += 1,
                Some(_) => continue,
                // Not one of the server's records (a panic message, say): counted as an error.
                None => found.errors += 1,
            }
            if found.first.len() < 10 {
                found.first.push(line.chars().take(400).collect());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_measured_from_the_first_sample_after_the_warm_up() {
        let samples = [(0.0, 50), (10.0, 90), (20.0, 100), (30.0, 110), (40.0, 104)];
        let d = Drift::of(&samples, 15.0);
        assert_eq!(d.rss_after_warm_up_bytes, 100);
        assert_eq!(d.rss_end_bytes, 104);
        assert_eq!(d.rss_max_after_warm_up_bytes, 110);
        assert!((d.drift_pct - 4.0).abs() < 1e-9, "{d:?}");
        assert!((d.max_drift_pct - 10.0).abs() < 1e-9, "{d:?}");
    }

    #[test]
    fn warnings_errors_and_stray_lines_in_the_log_are_counted() {
        let log = r#"{"level":"INFO","fields":{"message":"listening"}}
{"level":"WARN","fields":{"message":"slow poll"}}
{"level":"ERROR","fields":{"message":"poll failed"}}
thread 'main' panicked at src/main.rs
"#;
        let f = LogFindings::of(log);
        assert_eq!((f.lines, f.warnings, f.errors), (4, 1, 2));
        assert_eq!(f.first.len(), 3);
        assert!(f.first[0].contains("slow poll"));
    }
}
