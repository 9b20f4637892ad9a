//! `join-storm`: what happens to the viewers already in when many more join at once, as when a
//! server restarts and every open chart reconnects. Residents join and settle; a window opens
//! on them; two seconds in, the newcomers join at `--rate`; the window stays open past the
//! storm. Reported: whether every newcomer got its snapshot and when the last one did, the
//! bytes per join, the residents' per-update spread and missed updates throughout, and the
//! server's peak RSS. Then, `--settle` after the last snapshot, a steady window over everyone:
//! spread, and server memory per viewer while they stay connected.

use std::time::Duration;

use candlewick::config::EmbeddedTimescaleDb;
use clap::Args;
use serde_json::{Value, json};

use crate::page::JoinArgs;
use crate::say;
use crate::setup::{self, HistoryServer, Server, WorkArgs};
use crate::system::{self, now_ns, sleep_until_ns};
use crate::viewers::{self, Deliveries, Feed, Layout, PeakRss, Plan, Probe, Workers};

#[derive(Debug, Clone, Args)]
pub struct JoinStormArgs {
    /// Viewers connected before the storm.
    #[arg(long, default_value_t = 1_000)]
    pub residents: usize,
    /// Connections per second while the residents join.
    #[arg(long, default_value_t = 1_000.0)]
    pub resident_rate: f64,
    /// Viewers joining in the storm.
    #[arg(long, default_value_t = 10_000)]
    pub joiners: usize,
    /// Connections per second in the storm.
    #[arg(long, default_value_t = 5_000.0)]
    pub rate: f64,
    /// The residents' window: it opens two seconds before the storm.
    #[arg(long, default_value = "30s", value_parser = candlewick::config::parse_duration)]
    pub storm_window: Duration,
    /// From the storm's last snapshot to the steady window.
    #[arg(long, default_value = "20s", value_parser = candlewick::config::parse_duration)]
    pub settle: Duration,
    /// The steady window over everyone (memory per viewer is read at its end).
    #[arg(long, default_value = "20s", value_parser = candlewick::config::parse_duration)]
    pub steady: Duration,
    #[command(flatten)]
    pub join: JoinArgs,
    /// How much BTC/USD history the database holds.
    #[arg(long, default_value = "7d", value_parser = candlewick::config::parse_duration)]
    pub history: Duration,
    /// Ticks per second in that history.
    #[arg(long, default_value_t = 0.2)]
    pub history_rate: f64,
    /// The embedded cluster: `off` (plain PostgreSQL) or `auto` (TimescaleDB when installed).
    #[arg(long, value_enum, default_value_t = EmbeddedTimescaleDb::Off)]
    pub embedded_timescaledb: EmbeddedTimescaleDb,
    #[command(flatten)]
    pub work: WorkArgs,
}

/// The residents' lead-in before the storm starts.
const LEAD_IN: Duration = Duration::from_secs(2);

pub async fn run(args: JoinStormArgs) -> anyhow::Result<Value> {
    let server = HistoryServer {
        database: "candlewick_bench_storm",
        server: "storm-server",
        timescaledb: args.embedded_timescaledb,
        history: args.history,
        history_rate: args.history_rate,
        env: &[],
        baseline_bin: None,
    };
    server
        .run(&args.work, async |_, server, _| storm(server, &args).await)
        .await
}

/// A plan for `count` viewers of the server joining at `rate`.
fn plan(server: &Server, args: &JoinStormArgs, count: usize, rate: f64) -> Plan {
    Plan {
        urls: vec![server.ws(&args.join.query(setup::SYMBOL))],
        upstreams: Vec::new(),
        count,
        rate,
        processes: 0,
        duration: args.storm_window + args.settle + args.steady,
        settle: Duration::ZERO,
        source_ips: 0,
        server_pids: vec![server.pid],
        feed: None,
        feed_every: Duration::from_secs(1),
        rcvbuf: 32 * 1024,
    }
}

async fn storm(server: &Server, args: &JoinStormArgs) -> anyhow::Result<Value> {
    let load_before = system::load_average();
    let residents = plan(server, args, args.residents, args.resident_rate);
    let joiners = plan(server, args, args.joiners, args.rate);
    let probe = Probe::new(&residents.server_pids, &[]);
    let rss_before = probe.rss();
    let peak = PeakRss::watch(&probe);
    let feed = Feed::start(
        Some((server.http(), setup::TOKEN.to_owned())),
        Duration::from_secs(1),
    );
    let mut workers = Workers::new();

    say!("{} residents joining", args.residents);
    let r = workers.spawn(&Layout::of(&residents)?.workers(&residents))?;
    let resident_ramp =
        viewers::connect_all(&mut workers, r.clone(), &residents, &probe, rss_before).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_residents = probe.rss();

    // The residents' window; the storm starts LEAD_IN into it.
    let start = now_ns() + 500_000_000;
    let end = start + args.storm_window.as_nanos() as u64;
    workers.open_window(r.clone(), start, end).await?;
    sleep_until_ns(start + LEAD_IN.as_nanos() as u64).await;
    say!("storm: {} viewers at {}/s", args.joiners, args.rate);
    let j = workers.spawn(&Layout::of(&joiners)?.workers(&joiners))?;
    let storm_ramp =
        viewers::connect_all(&mut workers, j.clone(), &joiners, &probe, rss_residents).await?;
    let (held, failed) = workers.progress(j.clone());
    say!(
        "storm: {held} joined, {failed} failed; the last snapshot {:.2} s after the first attempt",
        storm_ramp.join.seconds_to_last_snapshot
    );
    if now_ns() > end {
        say!("the storm outlasted the residents' window: raise --storm-window");
    }
    sleep_until_ns(end).await;
    let peak_in_storm = peak.get();
    let (frames, results) = workers.judge_window(r, start, end).await?;
    let during_storm = Deliveries::of(frames, &results);
    say!(
        "residents during the storm: {} frames, missed {}, spread p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
        during_storm.frames,
        during_storm.missed_updates,
        during_storm.spread.p50_ms,
        during_storm.spread.p99_ms,
        during_storm.spread.max_ms
    );

    say!("steady window {:?} after the storm", args.settle);
    let everyone = 0..j.end;
    let steady_start = (now_ns() + 500_000_000)
        .max(storm_ramp.join.last_snapshot_ns + args.settle.as_nanos() as u64);
    let steady_end = steady_start + args.steady.as_nanos() as u64;
    let (window, results) = viewers::measure(
        &mut workers,
        everyone,
        &probe,
        (steady_start, steady_end),
        |_| async { Value::Null },
    )
    .await?;
    let steady = Deliveries::of(window.frames, &results);
    feed.stop();
    let feed_ticks = feed.join().await;
    workers.finish().await;
    let rss_after_close = viewers::after_close(&probe).await;
    let per_viewer = (window.rss_end as f64 - rss_before as f64) / steady.held.max(1) as f64;
    say!(
        "steady: held {}, missed {}, spread p99 {:.1} ms; {:.0} B of server RSS per viewer",
        steady.held,
        steady.missed_updates,
        steady.spread.p99_ms,
        per_viewer
    );
    Ok(json!({
        "join": args.join,
        "residents": {
            "requested": args.residents,
            "join": resident_ramp.join,
            "rss_held_bytes": rss_residents,
        },
        "storm": {
            "requested": args.joiners,
            "rate": args.rate,
            "snapshots_delivered": storm_ramp.join.joined,
            "failed": failed,
            "seconds_to_last_snapshot": storm_ramp.join.seconds_to_last_snapshot,
            "time_to_snapshot": storm_ramp.join.time_to_snapshot,
            "bytes_per_join": storm_ramp.join.bytes_per_join,
            "residents_window_seconds": args.storm_window.as_secs_f64(),
            "residents": during_storm,
            "server_rss_peak_bytes": peak_in_storm,
        },
        "steady": {
            "seconds_after_storm": args.settle.as_secs_f64(),
            "window_seconds": window.seconds,
            "deliveries": steady,
            "server_rss_end_bytes": window.rss_end,
            "server_rss_per_viewer_bytes": per_viewer,
            "server_cpu_us_per_delivery": window.server_cpu * 1e6 / steady.deliveries.max(1) as f64,
        },
        "server_rss_before_bytes": rss_before,
        "server_rss_peak_bytes": peak.stop(),
        "server_rss_after_close_bytes": rss_after_close,
        "feed_ticks_posted": feed_ticks,
        "load_before": load_before,
        "load_after": system::load_average(),
    }))
}
