//! `startup`: a server starting on a database that already holds many symbols' history (one
//! tick a minute each, written in one `INSERT … SELECT`, whose rate is reported too). Reported:
//! the time from starting the process to `/readyz`, its first poll, its RSS with no viewer,
//! each cold symbol's snapshot as viewers join `--watched` symbols one after another, the RSS
//! with them watched, and the polls while a feed writes across all symbols.

use std::time::{Duration, Instant};

use candlewick::config::EmbeddedTimescaleDb;
use chrono::Utc;
use clap::Args;
use serde_json::{Value, json};

use crate::page::JoinArgs;
use crate::say;
use crate::server_metrics::{self, PollTimer};
use crate::setup::{self, Embedded, Scratch, WorkArgs, Workspace};
use crate::stats::Summary;
use crate::tables;
use crate::viewers::Probe;
use crate::watchers::Watchers;
use crate::writers::{self, Load};

#[derive(Debug, Clone, Args)]
pub struct StartupArgs {
    /// Symbols stored (S000, S001, …).
    #[arg(long, default_value_t = 303)]
    pub symbols: u32,
    /// History per symbol, one tick a minute.
    #[arg(long, default_value = "7d", value_parser = candlewick::config::parse_duration)]
    pub history: Duration,
    /// Symbols then watched, one viewer each, joined one after another.
    #[arg(long, default_value_t = 10)]
    pub watched: u32,
    /// Ticks per second over all symbols while the polls are timed (0: no feed).
    #[arg(long, default_value_t = 2_000.0)]
    pub feed_rate: f64,
    /// How long that feed writes (the server's poll quantiles cover its last minute).
    #[arg(long, default_value = "60s", value_parser = candlewick::config::parse_duration)]
    pub feed_for: Duration,
    #[command(flatten)]
    pub join: JoinArgs,
    /// The embedded cluster: `off` (plain PostgreSQL) or `auto` (TimescaleDB when installed).
    #[arg(long, value_enum, default_value_t = EmbeddedTimescaleDb::Off)]
    pub embedded_timescaledb: EmbeddedTimescaleDb,
    #[command(flatten)]
    pub work: WorkArgs,
}

pub async fn run(args: StartupArgs) -> anyhow::Result<Value> {
    let ws = args.work.open()?;
    let cluster = ws
        .cluster(Embedded {
            timescaledb: args.embedded_timescaledb,
            count_statements: false,
        })
        .await?;
    cluster
        .run_scratch("candlewick_bench_startup", async |_, db| {
            let minutes = (args.history.as_secs() / 60) as u32;
            let start = Utc::now() - chrono::Duration::minutes(i64::from(minutes));
            say!("storing {} symbols × {minutes} minutes", args.symbols);
            let (rows, seconds) = setup::load_quietly(db, async |pool| {
                let began = Instant::now();
                let rows =
                    tables::insert_minutely(pool, "ticks", 0..args.symbols, start, minutes).await?;
                Ok((rows, began.elapsed().as_secs_f64()))
            })
            .await?;
            say!("{rows} rows in {seconds:.1} s");
            let mut report = started(&ws, db, &args).await?;
            report["storage"] = db.flavour.describe(&db.pool).await?.into();
            report["stored"] = json!({
                "symbols": args.symbols,
                "rows": rows,
                // One statement through the product's triggers on plain PostgreSQL; on
                // TimescaleDB without the journal (see `setup::load_quietly`).
                "insert_select_seconds": seconds,
                "insert_select_rows_per_sec": rows as f64 / seconds,
            });
            Ok(report)
        })
        .await
}

async fn started(ws: &Workspace, db: &Scratch, args: &StartupArgs) -> anyhow::Result<Value> {
    let began = Instant::now();
    let server = ws.spawn_server(&db.url, "startup-server").await?;
    let to_ready = began.elapsed();
    let probe = Probe::new(&[server.pid], &[]);
    let rss_ready = probe.rss();
    let client = reqwest::Client::new();
    let first = server_metrics::read(&client, &server.http()).await?;
    say!(
        "/readyz after {:.2} s, RSS {:.1} MB",
        to_ready.as_secs_f64(),
        rss_ready as f64 / 1e6
    );
    let result = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss_idle = probe.rss();
        let mut viewers = Watchers::default();
        let mut cold = Vec::new();
        for i in 0..args.watched {
            let url = server.ws(&args.join.query(&tables::symbol(i)));
            cold.push(viewers.add(&url).await?);
        }
        let cold = Summary::of(&cold);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss_watched = probe.rss();
        say!(
            "{} cold snapshots p50 {:.1} ms max {:.1} ms; RSS idle {:.1} MB, watched {:.1} MB",
            cold.n,
            cold.p50_ms,
            cold.max_ms,
            rss_idle as f64 / 1e6,
            rss_watched as f64 / 1e6
        );
        let fed = feed(db, &server.http(), args).await?;
        let dropped = viewers.dropped();
        viewers.stop().await;
        anyhow::Ok(json!({
            "seconds_to_readyz": to_ready.as_secs_f64(),
            // The poll count and time spent polling when /readyz first answered: with one
            // poll, its duration.
            "polls_at_ready": first.count,
            "first_poll_ms": (first.count == 1).then_some(first.sum_seconds * 1e3),
            "server_rss_at_ready_bytes": rss_ready,
            "server_rss_idle_bytes": rss_idle,
            "cold_snapshot": cold,
            "server_rss_watched_bytes": rss_watched,
            "feed": fed,
            "viewers_dropped": dropped,
            "server_rss_end_bytes": probe.rss(),
        }))
    }
    .await;
    server.stop().await;
    result
}

/// `--feed-rate` ticks per second across every stored symbol for `--feed-for`, and the polls
/// meanwhile.
async fn feed(db: &Scratch, http: &str, args: &StartupArgs) -> anyhow::Result<Value> {
    if args.feed_rate <= 0.0 || args.feed_for.is_zero() {
        return Ok(Value::Null);
    }
    let load = Load {
        table: "ticks".into(),
        writers: 4,
        symbols: (0..args.symbols).map(tables::symbol).collect(),
        hot_writer: false,
        batch: 10,
        rate: Some(args.feed_rate),
        duration: args.feed_for,
    };
    say!(
        "feed: {} ticks/s over {} symbols for {:?}",
        args.feed_rate,
        args.symbols,
        args.feed_for
    );
    let timer = PollTimer::start(http).await?;
    let written = writers::write(&db.url, &load).await?;
    let polls = timer.stop().await?;
    say!(
        "{:.0} ticks/s written; polls p50 {:?} ms p99 {:?} ms",
        written.rows_per_sec,
        polls.p50_ms,
        polls.p99_ms
    );
    Ok(json!({ "written": written, "polls": polls }))
}
