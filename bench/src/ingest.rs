//! `ingest`: ticks per second through the write paths users have — one INSERT per row (the
//! tutorial's `executemany`), one `INSERT … SELECT` of many symbols' history, our JSON API in
//! batches, and the bulk path (COPY) — each with the change journal and candle maintenance on,
//! with the journal only, and with no triggers; the two SQL paths also into a bare table.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use candlewick::db::{Flavour, ticks};
use candlewick::domain::Tick;
use chrono::Utc;
use clap::Args;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::say;
use crate::setup::{self, Embedded, Scratch, Server, Walk, WorkArgs};
use crate::stats::ratio;
use crate::system;
use crate::tables::{self, Baseline};

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// Rows for the single-row INSERT path.
    #[arg(long, default_value_t = 20_000)]
    pub single_rows: usize,
    /// Symbols for the `INSERT … SELECT` path (one tick per minute each).
    #[arg(long, default_value_t = 100)]
    pub select_symbols: u32,
    /// Minutes for the `INSERT … SELECT` path (10,080: a week).
    #[arg(long, default_value_t = 10_080)]
    pub select_minutes: u32,
    /// Ticks for the JSON API path.
    #[arg(long, default_value_t = 200_000)]
    pub api_ticks: usize,
    /// Ticks per POST /api/ticks.
    #[arg(long, default_value_t = 5_000)]
    pub api_batch: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 2)]
    pub api_concurrency: usize,
    /// Ticks for the COPY path.
    #[arg(long, default_value_t = 1_000_000)]
    pub bulk_ticks: usize,
    /// Ticks per COPY transaction.
    #[arg(long, default_value_t = 200_000)]
    pub bulk_batch: usize,
    /// Time between consecutive ticks (10 ticks/s by default, as in poll-cost).
    #[arg(long, default_value = "100ms", value_parser = candlewick::config::parse_duration)]
    pub tick_gap: Duration,
    /// The run's place; a --database-url cluster must be plain PostgreSQL, like the embedded
    /// one here: the trigger costs compared are those of the plain flavour.
    #[command(flatten)]
    pub work: WorkArgs,
}

/// Every write path under every trigger setting, then the SQL paths into the bare table; the
/// product's trigger function is put back however the runs end.
async fn every_path(
    db: &Scratch,
    server: &Server,
    args: &IngestArgs,
) -> anyhow::Result<Vec<PathResult>> {
    let pool = &db.pool;
    let product = trigger_function(pool).await?;
    Baseline::BareTable.create(db).await?;
    let results = async {
        let mut results = Vec::new();
        for triggers in [Triggers::Full, Triggers::None, Triggers::JournalOnly] {
            set_triggers(pool, triggers, &product).await?;
            results.push(single_rows(pool, args, triggers).await?);
            results.push(insert_select(pool, args, triggers).await?);
            results.push(api(pool, server, args, triggers).await?);
            results.push(bulk(pool, args, triggers).await?);
        }
        set_triggers(pool, Triggers::Full, &product).await?;
        results.push(single_rows(pool, args, Triggers::BareTable).await?);
        results.push(insert_select(pool, args, Triggers::BareTable).await?);
        anyhow::Ok(results)
    }
    .await;
    set_triggers(pool, Triggers::Full, &product).await?;
    results
}

/// Which triggers run on `ticks`, or where the rows go instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Triggers {
    /// Journal and candle maintenance (what the product runs).
    Full,
    /// The change journal only: the trigger function replaced by one that only journals.
    JournalOnly,
    /// `ALTER TABLE ticks DISABLE TRIGGER USER` (the `(symbol, time)` index stays).
    None,
    /// Into `bare_ticks`: the same primary key, no other index, no trigger.
    BareTable,
}

impl Triggers {
    fn table(self) -> &'static str {
        match self {
            Self::BareTable => Baseline::BareTable.table(),
            _ => "ticks",
        }
    }
}

#[derive(Debug, Serialize)]
struct PathResult {
    path: &'static str,
    triggers: Triggers,
    ticks: usize,
    seconds: f64,
    ticks_per_sec: f64,
}

pub async fn run(args: IngestArgs) -> anyhow::Result<Value> {
    let ws = args.work.open()?;
    let cluster = ws.cluster(Embedded::PLAIN).await?;
    let load_before = system::load_average();
    let (storage, results) = cluster
        .run_scratch("candlewick_bench_ingest", async |_, db| {
            if db.flavour != Flavour::Postgres {
                bail!(
                    "ingest compares trigger costs on plain PostgreSQL; this cluster has TimescaleDB"
                );
            }
            let storage = db.flavour.describe(&db.pool).await?;
            let server = ws.spawn_server(&db.url, "ingest-server").await?;
            let results = every_path(db, &server, &args).await;
            server.stop().await;
            anyhow::Ok((storage, results?))
        })
        .await?;

    let rate = |path: &str, t: Triggers| {
        results
            .iter()
            .find(|r| r.path == path && r.triggers == t)
            .map(|r| r.ticks_per_sec)
            .unwrap_or(0.0)
    };
    let mut comparisons = Vec::new();
    for path in ["single_row_insert", "insert_select", "json_api", "copy"] {
        let full = rate(path, Triggers::Full);
        let bare = rate(path, Triggers::BareTable);
        comparisons.push(json!({
            "path": path,
            "ticks_per_sec": full,
            "over_single_row_insert": ratio(full, rate("single_row_insert", Triggers::Full)),
            "journal_and_candles_slowdown": ratio(rate(path, Triggers::None), full),
            "journal_only_slowdown": ratio(rate(path, Triggers::None), rate(path, Triggers::JournalOnly)),
            "share_of_bare_table": (bare > 0.0).then(|| (full / bare * 1000.0).round() / 1000.0),
        }));
    }
    Ok(json!({
        "storage": storage,
        "load_before": load_before,
        "load_after": system::load_average(),
        "runs": results,
        "comparisons": comparisons,
    }))
}

/// The product's trigger function as PostgreSQL holds it (a `CREATE OR REPLACE` statement).
async fn trigger_function(pool: &PgPool) -> anyhow::Result<String> {
    sqlx::query_scalar("SELECT pg_get_functiondef('candlewick_ticks_changed'::regproc)")
        .fetch_one(pool)
        .await
        .context("reading the trigger function")
}

/// The trigger function for "journal only": what the product journals, no candle maintenance.
const JOURNAL_ONLY: &str = r#"
CREATE OR REPLACE FUNCTION candlewick_ticks_changed() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM candlewick_candles;
        INSERT INTO candle_changes (symbol, bucket) VALUES (NULL, NULL);
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO candle_changes (symbol, bucket)
        SELECT DISTINCT symbol, date_bin('1 minute', time, 'epoch') FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO candle_changes (symbol, bucket)
        SELECT DISTINCT symbol, date_bin('1 minute', time, 'epoch') FROM old_rows;
    ELSE
        INSERT INTO candle_changes (symbol, bucket)
        SELECT symbol, date_bin('1 minute', time, 'epoch') FROM old_rows
        UNION
        SELECT symbol, date_bin('1 minute', time, 'epoch') FROM new_rows;
    END IF;
    RETURN NULL;
END
$fn$
"#;

/// Puts the trigger function for `triggers` in place (`product`: the product's own) and
/// enables or disables the triggers.
async fn set_triggers(pool: &PgPool, triggers: Triggers, product: &str) -> anyhow::Result<()> {
    let function = match triggers {
        Triggers::JournalOnly => JOURNAL_ONLY,
        _ => product,
    };
    sqlx::query(sqlx::AssertSqlSafe(function.to_owned()))
        .execute(pool)
        .await
        .context("replacing the trigger function")?;
    let switch = match triggers {
        Triggers::None => "ALTER TABLE ticks DISABLE TRIGGER USER",
        _ => "ALTER TABLE ticks ENABLE TRIGGER USER",
    };
    sqlx::query(switch)
        .execute(pool)
        .await
        .context("switching triggers")?;
    Ok(())
}

/// Empties the tables between runs (the candles too: with triggers disabled the TRUNCATE
/// trigger does not). The server's poller reads them meanwhile; `ticks` comes first, the order
/// in which the poll takes its locks, so the two cannot deadlock (a failed attempt is still
/// tried again).
async fn reset(pool: &PgPool) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        let done = sqlx::query(
            "TRUNCATE ticks, candle_changes, audit_log, candlewick_candles, bare_ticks",
        )
        .execute(pool)
        .await;
        match done {
            Ok(_) => break,
            Err(e) if attempt < 5 => {
                attempt += 1;
                say!("emptying the tables: {e}; again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("emptying the tables"),
        }
    }
    for table in ["ticks", "bare_ticks"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {table}")))
            .execute(pool)
            .await
            .context("vacuuming")?;
    }
    Ok(())
}

/// Ticks ending now, `gap` apart.
fn ticks_ending_now(n: usize, gap: Duration) -> Vec<Tick> {
    let span = chrono::Duration::from_std(gap * n as u32).unwrap_or(chrono::Duration::days(1));
    Walk::new(n as u64).ticks(Utc::now() - span, gap, n)
}

fn result(path: &'static str, triggers: Triggers, ticks: usize, elapsed: Duration) -> PathResult {
    let seconds = elapsed.as_secs_f64();
    say!(
        "{path} ({triggers:?}): {ticks} ticks in {seconds:.2} s = {:.0} ticks/s",
        ticks as f64 / seconds
    );
    PathResult {
        path,
        triggers,
        ticks,
        seconds,
        ticks_per_sec: ticks as f64 / seconds,
    }
}

/// The tutorial's `executemany`: one INSERT statement (and round trip) per row, one commit.
async fn single_rows(
    pool: &PgPool,
    args: &IngestArgs,
    triggers: Triggers,
) -> anyhow::Result<PathResult> {
    reset(pool).await?;
    let rows = ticks_ending_now(args.single_rows, args.tick_gap);
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    let insert = format!(
        "INSERT INTO {} (time, symbol, price, volume) VALUES ($1, $2, $3, $4)",
        triggers.table()
    );
    for t in &rows {
        sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
            .bind(t.time)
            .bind(t.symbol.as_str())
            .bind(t.price.get())
            .bind(t.volume.get())
            .execute(&mut *tx)
            .await
            .context("a single-row INSERT")?;
    }
    tx.commit().await?;
    Ok(result(
        "single_row_insert",
        triggers,
        rows.len(),
        started.elapsed(),
    ))
}

/// One statement writing a week (by default) of one tick per minute for many symbols.
async fn insert_select(
    pool: &PgPool,
    args: &IngestArgs,
    triggers: Triggers,
) -> anyhow::Result<PathResult> {
    reset(pool).await?;
    let span = chrono::Duration::minutes(i64::from(args.select_minutes));
    let started = Instant::now();
    let rows = tables::insert_minutely(
        pool,
        triggers.table(),
        0..args.select_symbols,
        Utc::now() - span,
        args.select_minutes,
    )
    .await?;
    Ok(result(
        "insert_select",
        triggers,
        rows as usize,
        started.elapsed(),
    ))
}

/// POST /api/ticks with JSON arrays, `api_concurrency` requests in flight.
async fn api(
    pool: &PgPool,
    server: &Server,
    args: &IngestArgs,
    triggers: Triggers,
) -> anyhow::Result<PathResult> {
    reset(pool).await?;
    let rows = ticks_ending_now(args.api_ticks, args.tick_gap);
    // Bodies are built before the clock starts: the server's work is what is measured.
    let bodies: Vec<Vec<u8>> = rows
        .chunks(args.api_batch.max(1))
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()?;
    let client = reqwest::Client::new();
    let url = format!("{}/api/ticks", server.http());
    let started = Instant::now();
    let statuses: Vec<Result<reqwest::StatusCode, reqwest::Error>> =
        futures_util::stream::iter(bodies)
            .map(|body| {
                let req = client
                    .post(&url)
                    .bearer_auth(setup::TOKEN)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .timeout(Duration::from_secs(120));
                async move { req.send().await.map(|r| r.status()) }
            })
            .buffer_unordered(args.api_concurrency.max(1))
            .collect()
            .await;
    let elapsed = started.elapsed();
    for s in statuses {
        let s = s.context("POST /api/ticks")?;
        if s != reqwest::StatusCode::CREATED {
            bail!("POST /api/ticks answered {s}");
        }
    }
    Ok(result("json_api", triggers, rows.len(), elapsed))
}

/// The bulk path (what `insert_ticks` does above 10,000 rows and `candlewick import` streams):
/// COPY, one transaction per batch.
async fn bulk(pool: &PgPool, args: &IngestArgs, triggers: Triggers) -> anyhow::Result<PathResult> {
    reset(pool).await?;
    let rows = ticks_ending_now(args.bulk_ticks, args.tick_gap);
    let started = Instant::now();
    for chunk in rows.chunks(args.bulk_batch.max(1)) {
        let mut tx = pool.begin().await?;
        ticks::copy_all(&mut tx, chunk).await.context("COPY")?;
        tx.commit().await?;
    }
    Ok(result("copy", triggers, rows.len(), started.elapsed()))
}
