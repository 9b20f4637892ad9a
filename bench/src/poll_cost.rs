//! `poll-cost`: what one poll of the change journal costs with a week of ticks stored, against
//! the tutorial's full-week candle query and against aggregating raw ticks on the fly; and how
//! many database statements a running server issues per second with 0 … N viewers, against
//! what per-viewer polling would issue.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use candlewick::config::EmbeddedTimescaleDb;
use candlewick::db::audit::Author;
use candlewick::db::{Flavour, journal, ticks};
use candlewick::embedded;
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::page::JoinArgs;
use crate::say;
use crate::setup::{self, Cluster, Embedded, FlavourArgs, Scratch, Walk, Workspace};
use crate::stats::{Summary, ratio};
use crate::viewers::{self, Plan};
use crate::{statements, system};

/// The tutorial's query, verbatim, run by every viewer every second.
const TUTORIAL_QUERY: &str = "SELECT bucket, open, high, low, close FROM one_min_candle WHERE symbol = 'BTC/USD' AND bucket >= NOW() - INTERVAL '1 week' ORDER BY bucket DESC";
/// Candles computed from raw ticks on each request (no candle table at all).
const RAW_QUERY: &str = r#"
SELECT date_bin('1 minute', time, 'epoch') AS bucket,
       (array_agg(price ORDER BY time))[1] AS open,
       max(price) AS high,
       min(price) AS low,
       (array_agg(price ORDER BY time DESC))[1] AS close,
       sum(volume) AS volume
FROM ticks
WHERE symbol = 'BTC/USD' AND time >= NOW() - INTERVAL '1 week'
GROUP BY bucket
ORDER BY bucket DESC
"#;
/// The scratch database poll-cost measures in, on each cluster.
const SCRATCH: &str = "candlewick_bench_poll";
/// The bench's own writes during the statement count: recognisable in pg_stat_statements.
const FEED_INSERT: &str = "INSERT INTO ticks (time, symbol, price, volume) VALUES ($1, $2, $3, $4)";

#[derive(Debug, Clone, Args)]
pub struct PollCostArgs {
    /// Ticks per second of stored history.
    #[arg(long, default_value_t = 10.0)]
    pub ticks_per_sec: f64,
    /// How much history.
    #[arg(long, default_value = "7d", value_parser = candlewick::config::parse_duration)]
    pub span: Duration,
    /// Polls to time (each after a second's worth of new ticks).
    #[arg(long, default_value_t = 300)]
    pub polls: usize,
    /// Runs of the tutorial's query.
    #[arg(long, default_value_t = 30)]
    pub tutorial_runs: usize,
    /// Runs of the raw aggregation.
    #[arg(long, default_value_t = 5)]
    pub raw_runs: usize,
    /// Viewer counts at which to count the server's statements per second.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,10000")]
    pub viewers: Vec<usize>,
    /// How long to count at each viewer count.
    #[arg(long, default_value = "20s", value_parser = candlewick::config::parse_duration)]
    pub qps_window: Duration,
    /// Connections per second while opening viewers.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    #[command(flatten)]
    pub flavours: FlavourArgs,
}

#[derive(Debug, Serialize)]
struct QueryCosts {
    storage: String,
    ticks: u64,
    load_seconds: f64,
    load_ticks_per_sec: f64,
    candles_in_week: usize,
    changed_minutes_per_poll: f64,
    poll: Summary,
    tutorial_query: Summary,
    raw_aggregation: Summary,
    /// tutorial p50 / poll p50, and the same at p99.
    /// Mean execution time inside PostgreSQL (pg_stat_statements; no planning, no round trip).
    poll_exec_ms: Option<f64>,
    tutorial_exec_ms: Option<f64>,
    raw_exec_ms: Option<f64>,
    tutorial_over_poll_exec: Option<f64>,
    tutorial_over_poll_p50: f64,
    tutorial_over_poll_p99: f64,
    raw_over_poll_p50: f64,
}

pub async fn run(args: PollCostArgs) -> anyhow::Result<Value> {
    let timescaledb = args.flavours.embedded_timescaledb == EmbeddedTimescaleDb::Auto;
    if args.flavours.no_plain && !timescaledb && args.flavours.work.database_url.is_none() {
        bail!(
            "--no-plain with --embedded-timescaledb off and no --database-url leaves nothing to measure"
        );
    }
    let ws = args.flavours.work.open()?;
    let mut report = serde_json::Map::new();
    report.insert("load_before".into(), json!(system::load_average()));
    if !args.flavours.no_plain {
        let cluster = ws
            .embedded_cluster(Embedded {
                count_statements: true,
                ..Embedded::PLAIN
            })
            .await?;
        let (costs, qps) = cluster
            .run_scratch(SCRATCH, async |cluster, db| {
                let costs = query_costs(db, &args, Some(cluster)).await?;
                let qps = statements_per_second(cluster, db, &args, &ws).await?;
                anyhow::Ok((costs, qps))
            })
            .await?;
        report.insert("postgresql".into(), serde_json::to_value(costs)?);
        report.insert("statements".into(), qps);
    }
    if let Some(url) = &args.flavours.work.database_url {
        let costs = Cluster::external(url.clone())
            .run_scratch(SCRATCH, async |_, db| query_costs(db, &args, None).await)
            .await?;
        report.insert("external".into(), serde_json::to_value(costs)?);
    } else if timescaledb {
        report.insert("timescaledb".into(), timescaledb_costs(&ws, &args).await?);
    }
    report.insert("load_after".into(), json!(system::load_average()));
    Ok(Value::Object(report))
}

/// The query costs on the embedded cluster with TimescaleDB preloaded (and pg_stat_statements,
/// for execution times), or why there are none.
async fn timescaledb_costs(ws: &Workspace, args: &PollCostArgs) -> anyhow::Result<Value> {
    let bindir = embedded::find_bindir()?;
    if !embedded::timescaledb_installed(&bindir) {
        let why = format!("TimescaleDB is not installed for {}", bindir.display());
        say!("{why}: measuring plain PostgreSQL only");
        return Ok(json!({ "skipped": why }));
    }
    let cluster = ws
        .embedded_cluster(Embedded {
            timescaledb: EmbeddedTimescaleDb::Auto,
            count_statements: true,
        })
        .await?;
    let costs = cluster
        .run_scratch(SCRATCH, async |cluster, db| {
            if db.flavour != Flavour::TimescaleDb {
                bail!("TimescaleDB is installed, but the scratch database was made without it");
            }
            query_costs(db, args, Some(cluster)).await
        })
        .await?;
    Ok(serde_json::to_value(costs)?)
}

/// Mean server-side execution time (ms) of the statements starting with each prefix, from
/// pg_stat_statements (planning and the round trip excluded).
async fn exec_times(
    cluster: &Cluster,
    db: &str,
    prefixes: &[&str],
) -> anyhow::Result<Vec<Option<f64>>> {
    let rows = statements::stats(cluster, db).await?;
    Ok(prefixes
        .iter()
        .map(|p| {
            rows.iter()
                .find(|s| s.query.trim_start().starts_with(p))
                .map(|s| s.mean_exec_ms)
        })
        .collect())
}

/// Times our poll, the tutorial's query and the raw aggregation on `db` once it holds the
/// history; with `stats_of`, also their execution times inside the server.
async fn query_costs(
    db: &Scratch,
    args: &PollCostArgs,
    stats_of: Option<&Cluster>,
) -> anyhow::Result<QueryCosts> {
    let pool = &db.pool;
    let storage = db.flavour.describe(pool).await?;
    say!(
        "{storage}: loading {:?} at {} ticks/s",
        args.span,
        args.ticks_per_sec
    );
    let end = Utc::now();
    let started = Instant::now();
    let ticks = setup::load_history(db, end, args.span, args.ticks_per_sec).await?;
    let load_seconds = started.elapsed().as_secs_f64();
    say!("loaded {ticks} ticks in {load_seconds:.1} s");

    let stat_statements = match stats_of {
        Some(cluster) => statements::enable(cluster).await,
        None => false,
    };
    // Our poll: a second of new ticks, then one poll of the watched symbol (what the server's
    // poller runs each second while someone watches BTC/USD).
    let watched = [setup::SYMBOL.to_owned()];
    let since = end - chrono::Duration::days(7);
    let start = journal::PollRequest {
        from: None,
        symbols: Some(&watched),
        load: &watched,
        since,
        old_before: None,
    };
    let mut position = journal::poll(pool, db.flavour, &start)
        .await?
        .position
        .context("a start position")?;
    let per_poll = args.ticks_per_sec.round().max(1.0) as usize;
    let gap = Duration::from_secs_f64(1.0 / args.ticks_per_sec);
    let mut walk = Walk::new(11);
    let mut next: DateTime<Utc> = end;
    let mut polls = Vec::with_capacity(args.polls);
    let mut changed = 0usize;
    for _ in 0..args.polls {
        let batch = walk.ticks(next, gap, per_poll);
        next = batch.last().map(|t| t.time).unwrap_or(next) + chrono::Duration::from_std(gap)?;
        ticks::insert_ticks(pool, &batch, Author::ApiToken)
            .await
            .map_err(|e| anyhow::anyhow!("writing ticks: {e}"))?;
        let t = Instant::now();
        let request = journal::PollRequest {
            from: Some(&position),
            symbols: Some(&watched),
            load: &[],
            since,
            old_before: None,
        };
        let polled = journal::poll(pool, db.flavour, &request).await?;
        polls.push(t.elapsed());
        if polled.changes.minutes.is_empty() {
            bail!("a poll after new ticks found no change");
        }
        changed += polled.changes.minutes.len();
        position = polled.position.context("a poll's position")?;
    }
    let poll = Summary::of(&polls);
    say!("poll: p50 {:.3} ms p99 {:.3} ms", poll.p50_ms, poll.p99_ms);

    let mut candles = 0;
    let mut tutorial = Vec::new();
    for _ in 0..args.tutorial_runs {
        let t = Instant::now();
        let rows = sqlx::query(TUTORIAL_QUERY)
            .fetch_all(pool)
            .await
            .context("the tutorial's query")?;
        tutorial.push(t.elapsed());
        candles = rows.len();
    }
    let tutorial = Summary::of(&tutorial);
    say!(
        "tutorial query ({candles} candles): p50 {:.1} ms p99 {:.1} ms",
        tutorial.p50_ms,
        tutorial.p99_ms
    );
    let mut raw = Vec::new();
    for _ in 0..args.raw_runs {
        let t = Instant::now();
        sqlx::query(RAW_QUERY)
            .fetch_all(pool)
            .await
            .context("the raw aggregation")?;
        raw.push(t.elapsed());
    }
    let raw = Summary::of(&raw);
    say!(
        "raw aggregation: p50 {:.1} ms p99 {:.1} ms",
        raw.p50_ms,
        raw.p99_ms
    );
    let exec = match stats_of {
        Some(cluster) if stat_statements => {
            exec_times(
                cluster,
                &db.name,
                &[
                    statements::POLL_PREFIX,
                    "SELECT bucket, open",
                    "SELECT date_bin",
                ],
            )
            .await?
        }
        _ => vec![None, None, None],
    };
    Ok(QueryCosts {
        poll_exec_ms: exec[0],
        tutorial_exec_ms: exec[1],
        raw_exec_ms: exec[2],
        tutorial_over_poll_exec: exec[0].zip(exec[1]).map(|(p, t)| ratio(t, p)),
        storage,
        ticks,
        load_seconds,
        load_ticks_per_sec: ticks as f64 / load_seconds,
        candles_in_week: candles,
        changed_minutes_per_poll: changed as f64 / args.polls.max(1) as f64,
        tutorial_over_poll_p50: ratio(tutorial.p50_ms, poll.p50_ms),
        tutorial_over_poll_p99: ratio(tutorial.p99_ms, poll.p99_ms),
        raw_over_poll_p50: ratio(raw.p50_ms, poll.p50_ms),
        poll,
        tutorial_query: tutorial,
        raw_aggregation: raw,
    })
}

/// Counters of the scratch database, read from the maintenance database (so reading them is
/// not counted): committed transactions, and statements by query when pg_stat_statements is on.
async fn counters(
    cluster: &Cluster,
    db: &str,
    stat_statements: bool,
) -> anyhow::Result<(i64, Vec<(String, i64)>)> {
    let mut conn = cluster.admin().await?;
    let xacts: i64 =
        sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
            .bind(db)
            .fetch_one(&mut conn)
            .await
            .context("reading pg_stat_database")?;
    conn.close().await.ok();
    let statements = if stat_statements {
        statements::calls(cluster, db).await?
    } else {
        Vec::new()
    };
    Ok((xacts, statements))
}

/// Statements per second of a server on `db` at each viewer count.
async fn statements_per_second(
    cluster: &Cluster,
    db: &Scratch,
    args: &PollCostArgs,
    ws: &Workspace,
) -> anyhow::Result<Value> {
    // The view lives where we read it from (the maintenance database); it shows every database.
    let stat_statements = statements::enable(cluster).await;
    if !stat_statements {
        say!("pg_stat_statements is not available: counting committed transactions only");
    }
    let server = ws.spawn_server(&db.url, "poll-cost-server").await?;
    let mut rows = Vec::new();
    let result = async {
        for &n in &args.viewers {
            say!("statements per second with {n} viewers");
            let window = args.qps_window;
            let measure = |dur: Duration| count_during(cluster, db, stat_statements, dur);
            let (counted, viewers_report) = if n == 0 {
                (measure(window).await?, None)
            } else {
                let plan = Plan {
                    urls: vec![server.ws(&JoinArgs::default().query(setup::SYMBOL))],
                    upstreams: Vec::new(),
                    count: n,
                    rate: args.rate,
                    processes: 0,
                    duration: window,
                    settle: Duration::from_secs(2),
                    source_ips: 0,
                    server_pids: vec![server.pid],
                    feed: None,
                    feed_every: Duration::from_secs(1),
                    rcvbuf: 32 * 1024,
                };
                let report = viewers::run(&plan, |dur| async move {
                    match measure(dur).await {
                        Ok(v) => serde_json::to_value(v).unwrap_or(Value::Null),
                        Err(e) => json!({ "error": format!("{e:#}") }),
                    }
                })
                .await?;
                let counted: Counted =
                    serde_json::from_value(report.during.clone()).map_err(|_| {
                        anyhow::anyhow!("counting statements failed: {}", report.during)
                    })?;
                (counted, Some(report))
            };
            let per_viewer_tutorial = n as f64;
            let per_viewer_grafana = n as f64 / 5.0;
            rows.push(json!({
                "viewers": n,
                "viewers_held": viewers_report.as_ref().map(|r| r.held).unwrap_or(0),
                "server_statements_per_sec": counted.server_statements_per_sec,
                "server_transactions_per_sec": counted.server_transactions_per_sec,
                "by_statement": counted.by_statement,
                "tutorial_script_per_viewer_per_sec": per_viewer_tutorial,
                "grafana_5s_panel_per_viewer_per_sec": per_viewer_grafana,
                "tutorial_over_ours": ratio(per_viewer_tutorial, counted.server_statements_per_sec),
                "grafana_over_ours": ratio(per_viewer_grafana, counted.server_statements_per_sec),
                "updates_missed": viewers_report.as_ref().map(|r| r.missed_updates),
            }));
        }
        anyhow::Ok(())
    }
    .await;
    server.stop().await;
    result?;
    Ok(json!({ "pg_stat_statements": stat_statements, "rows": rows }))
}

#[derive(Debug, Serialize, serde::Deserialize)]
struct Counted {
    seconds: f64,
    server_statements_per_sec: f64,
    /// Only without pg_stat_statements: committed transactions, as PostgreSQL's cumulative
    /// statistics show them (backends flush those at most once a second, idle ones within 10 s).
    server_transactions_per_sec: Option<f64>,
    feed_ticks: u64,
    by_statement: Vec<(String, f64)>,
}

/// Writes a tick a second (so every poll has a change) and counts what the server ran meanwhile.
async fn count_during(
    cluster: &Cluster,
    db: &Scratch,
    stat_statements: bool,
    dur: Duration,
) -> anyhow::Result<Counted> {
    let mut feed =
        sqlx::PgConnection::connect_with(&candlewick::db::connect_options(&db.url)?).await?;
    let (x0, s0) = counters(cluster, &db.name, stat_statements).await?;
    let started = Instant::now();
    let mut walk = Walk::new(5);
    let mut fed = 0u64;
    let mut every = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < dur {
        every.tick().await;
        let t = walk.tick(Utc::now());
        sqlx::query(FEED_INSERT)
            .bind(t.time)
            .bind(t.symbol.as_str())
            .bind(t.price.get())
            .bind(t.volume.get())
            .execute(&mut feed)
            .await
            .context("the bench's feed")?;
        fed += 1;
    }
    let (x1, s1) = counters(cluster, &db.name, stat_statements).await?;
    let seconds = started.elapsed().as_secs_f64();
    feed.close().await.ok();
    let ran = statements::calls_between(s0, s1, |q| q.starts_with(FEED_INSERT));
    let total: i64 = ran.iter().map(|(_, n)| n).sum();
    let by_statement: Vec<(String, f64)> = ran
        .iter()
        .map(|(q, n)| (statements::one_line(q, 90), *n as f64 / seconds))
        .collect();
    // The feed commits one transaction per tick.
    let server_xacts = (x1 - x0 - fed as i64).max(0);
    Ok(Counted {
        seconds,
        server_statements_per_sec: if stat_statements {
            total as f64 / seconds
        } else {
            server_xacts as f64 / seconds
        },
        server_transactions_per_sec: (!stat_statements).then(|| server_xacts as f64 / seconds),
        feed_ticks: fed,
        by_statement,
    })
}
