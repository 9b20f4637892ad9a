//! Years of history at every interval: the session settings of candlewick's connections,
//! statistics after bulk loads, and the hour and day rollups, which must always equal
//! aggregating the ticks, on both flavours.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use candlewick::db::Flavour;
use candlewick::db::audit::Author;
use candlewick::db::candles::{CandleRange, CandleRow, fetch_candles};
use candlewick::domain::Interval;
use candlewick::ingest::import::import_path;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

use crate::helpers::{TOKEN, TestApp, eventually, spawn_app};
use crate::timescale::{TsDatabase, server_url};

#[actix_web::test]
async fn candlewicks_connections_never_jit_compile() {
    // The test app's pool is built from a URL, as with DATABASE_URL.
    let app = spawn_app().await;
    let jit: String = sqlx::query_scalar("SHOW jit")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jit, "off", "JIT costs seconds per query on wide plans");
}

// ---------------------------------------------------------------------------------------------
// The rollups equal the ticks.

/// Every row of `one_hour_candle` and `one_day_candle` equals aggregating the ticks of its
/// bucket, and every bucket with ticks has its row; returns how many hours and days there are.
pub async fn assert_rollups_match_ticks(pool: &PgPool, context: &str) -> (i64, i64) {
    assert_relations_match_ticks(pool, context, "one_hour_candle", "one_day_candle").await
}

/// Plain flavour, once the rollups are folded: the stored hour and day rows themselves (not
/// only the views, which fold what is pending at read time) equal the ticks.
async fn assert_stored_rollups_match_ticks(pool: &PgPool, context: &str) {
    assert_relations_match_ticks(
        pool,
        context,
        "candlewick_hour_candles",
        "candlewick_day_candles",
    )
    .await;
}

async fn assert_relations_match_ticks(
    pool: &PgPool,
    context: &str,
    hours: &str,
    days: &str,
) -> (i64, i64) {
    (
        assert_relation_matches_ticks(pool, context, hours, "1 hour").await,
        assert_relation_matches_ticks(pool, context, days, "24 hours").await,
    )
}

/// Every row of `relation` equals aggregating the ticks of its bucket (`width` wide), NULL
/// prices and volumes included, and every bucket with ticks has its row; returns the buckets.
async fn assert_relation_matches_ticks(
    pool: &PgPool,
    context: &str,
    relation: &str,
    width: &str,
) -> i64 {
    let sql = format!(
        r#"
        WITH want AS (
            SELECT
                date_bin('{width}', time, 'epoch') AS bucket,
                symbol,
                (array_agg(price ORDER BY time))[1] AS open,
                max(price) AS high,
                min(price) AS low,
                (array_agg(price ORDER BY time DESC))[1] AS close,
                sum(volume) AS volume,
                count(*) AS trades
            FROM ticks
            GROUP BY 1, 2
        ),
        got AS (
            SELECT bucket, symbol, open, high, low, close, volume, trades FROM {relation}
        )
        SELECT
            (SELECT count(*) FROM want),
            ARRAY(
                SELECT format('%s %s: want %s, got %s', coalesce(w.symbol, g.symbol),
                              coalesce(w.bucket, g.bucket), w, g)
                FROM want w
                FULL JOIN got g ON g.symbol = w.symbol AND g.bucket = w.bucket
                WHERE (w.open, w.high, w.low, w.close, w.volume, w.trades)
                      IS DISTINCT FROM (g.open, g.high, g.low, g.close, g.volume, g.trades)
                ORDER BY 1
                LIMIT 10
            )
        "#
    );
    let (n, diff): (i64, Vec<String>) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{context}: comparing {relation} with the ticks: {e}"));
    assert!(
        diff.is_empty(),
        "{context}: {relation} differs from aggregating the ticks:\n{}",
        diff.join("\n")
    );
    n
}

/// The server's reads of hours and days (which take plain PostgreSQL's views apart, stored and
/// pending rows) give what the views hold: every bar, and the newest few, of each symbol.
async fn assert_pages_match_views(pool: &PgPool, context: &str, symbols: &[&str]) {
    for symbol in symbols {
        for (interval, view) in [
            (Interval::H1, "one_hour_candle"),
            (Interval::D1, "one_day_candle"),
        ] {
            let sql = format!(
                "SELECT bucket, open, high, low, close, volume FROM {view}
                 WHERE symbol = $1 ORDER BY bucket DESC"
            );
            let want: Vec<CandleRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(symbol)
                .fetch_all(pool)
                .await
                .unwrap();
            for limit in [3, 100_000] {
                let range = CandleRange {
                    symbol: (*symbol).to_owned(),
                    interval,
                    from: None,
                    to: None,
                    limit,
                };
                let got = fetch_candles(pool, &range).await.unwrap();
                let n = want.len().min(usize::try_from(limit).unwrap());
                assert_eq!(got, want[..n], "{context}: {symbol} {view}, limit {limit}");
            }
        }
    }
}

const SYMBOLS: [&str; 3] = ["R/A", "R/B", "R/C"];
/// 2024-01-01T00:00:00Z
const BASE: i64 = 1_704_067_200;

fn seed() -> u64 {
    std::env::var("CANDLEWICK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0011_2233)
}

/// A time for a new tick of operation `op`: mostly within a few days of `head` (seconds),
/// some late by up to a year; the microseconds are the operation's, so that no two
/// operations write the same (time, symbol).
fn tick_time(rng: &mut StdRng, head: i64, op: u32) -> i64 {
    let back = match rng.random_range(0..10) {
        0 => rng.random_range(0..365 * 86_400),
        1..3 => rng.random_range(0..3 * 86_400),
        _ => rng.random_range(0..6 * 3_600),
    };
    (head - back) * 1_000_000 + i64::from(op % 1_000_000)
}

fn time_sql(micros: i64) -> String {
    candlewick::domain::time::rfc3339(DateTime::from_timestamp_micros(micros).unwrap())
}

/// `n` new ticks of operation `op` as (micros, symbol, price, volume), distinct keys.
fn new_ticks(rng: &mut StdRng, head: i64, op: u32, n: usize) -> Vec<(i64, String, f64, f64)> {
    let mut keys = BTreeSet::new();
    let mut out = Vec::new();
    while out.len() < n {
        let t = tick_time(rng, head, op);
        let s = SYMBOLS[rng.random_range(0..SYMBOLS.len())];
        if keys.insert((t, s)) {
            // Volumes are multiples of 1/16: every order of summation gives the same total.
            let v = f64::from(rng.random_range(0..512)) / 16.0;
            out.push((t, s.to_owned(), rng.random_range(10.0..1_000.0), v));
        }
    }
    out
}

async fn sql(pool: &PgPool, statement: &str) {
    sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// Inserts, late ticks, updates, time shifts, deletes, TRUNCATE and imports, drawn from a
/// seeded generator; after every few operations each rollup must equal the ticks (on
/// TimescaleDB after the refresh the poll would run).
async fn random_writes_keep_rollups_exact(app: &TestApp, flavour: Flavour, ops: u32) {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut head = BASE + 400 * 86_400;
    let (mut most_hours, mut most_days) = (0, 0);
    let mut kinds = std::collections::BTreeMap::<&str, u32>::new();
    for op in 1..=ops {
        head += rng.random_range(0..1_800);
        let ctx = format!("seed {seed} op {op}");
        let (lo, hi) = {
            let a = head - rng.random_range(0..400 * 86_400);
            let b = a + rng.random_range(60..6 * 3_600);
            (time_sql(a * 1_000_000), time_sql(b * 1_000_000))
        };
        let symbol = SYMBOLS[rng.random_range(0..SYMBOLS.len())];
        let kind = match rng.random_range(0..100) {
            0..30 => {
                let n = rng.random_range(1..200);
                let rows: Vec<String> = new_ticks(&mut rng, head, op, n)
                    .into_iter()
                    .map(|(t, s, p, v)| format!("('{}', '{s}', {p}, {v})", time_sql(t)))
                    .collect();
                sql(
                    &app.pool,
                    &format!("INSERT INTO ticks VALUES {}", rows.join(",")),
                )
                .await;
                "insert"
            }
            30..40 => {
                let n = rng.random_range(1..5);
                for (t, s, p, v) in new_ticks(&mut rng, head, op, n) {
                    let r = app
                        .post_ticks_json(&serde_json::json!({
                            "time": time_sql(t), "symbol": s, "price": p, "volume": v
                        }))
                        .await;
                    assert_eq!(r.status(), 201, "{ctx}");
                }
                "api single ticks"
            }
            40..50 => {
                let dp = rng.random_range(-5.0..5.0_f64);
                sql(
                    &app.pool,
                    &format!(
                        "UPDATE ticks SET price = abs(price + {dp}) + 1, volume = volume + 0.5 \
                         WHERE symbol = '{symbol}' AND time >= '{lo}' AND time < '{hi}'"
                    ),
                )
                .await;
                "update"
            }
            50..56 => {
                // Moves ticks to other minutes, hours and days (late ticks of a kind).
                let shift = rng.random_range(-90_000..90_000);
                sql(
                    &app.pool,
                    &format!(
                        "UPDATE ticks SET time = time + make_interval(secs => {shift}) \
                         WHERE symbol = '{symbol}' AND time >= '{lo}' AND time < '{hi}' \
                         AND NOT EXISTS (SELECT FROM ticks o WHERE o.symbol = ticks.symbol \
                         AND o.time = ticks.time + make_interval(secs => {shift}))"
                    ),
                )
                .await;
                "shift"
            }
            56..68 => {
                sql(
                    &app.pool,
                    &format!(
                        "DELETE FROM ticks WHERE symbol = '{symbol}' AND time >= '{lo}' AND time < '{hi}'"
                    ),
                )
                .await;
                "delete"
            }
            68..72 => {
                sql(
                    &app.pool,
                    "DELETE FROM ticks WHERE ctid IN (SELECT ctid FROM ticks ORDER BY random() LIMIT 20)",
                )
                .await;
                "delete scattered"
            }
            72..74 => {
                sql(&app.pool, "TRUNCATE ticks").await;
                "truncate"
            }
            _ => {
                let n = rng.random_range(50..1_500);
                let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
                writeln!(file, "time,symbol,price,volume").unwrap();
                for (t, s, p, v) in new_ticks(&mut rng, head, op, n) {
                    writeln!(file, "{},{s},{p},{v}", time_sql(t)).unwrap();
                }
                file.flush().unwrap();
                let rows = import_path(&app.pool, file.path(), Author::CliImport, Arc::default())
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: import: {e}"));
                assert_eq!(rows, n as u64, "{ctx}");
                "import"
            }
        };
        *kinds.entry(kind).or_default() += 1;
        if std::env::var_os("ROLLUP_TRACE").is_some() {
            eprintln!("op {op}: {kind} head {}", time_sql(head * 1_000_000));
        }
        let every = std::env::var("ROLLUP_CHECK_EVERY")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10);
        if op % every == 0 || op == ops {
            if flavour == Flavour::Postgres {
                // Whatever the server's poller has folded so far: the views are exact.
                assert_rollups_match_ticks(&app.pool, &format!("{ctx} after {kind}, unfolded"))
                    .await;
            }
            let to = DateTime::from_timestamp(head + 3_600, 0).unwrap();
            flavour
                .refresh(&app.pool, DateTime::<Utc>::UNIX_EPOCH, to)
                .await
                .unwrap();
            if flavour == Flavour::Postgres {
                assert_stored_rollups_match_ticks(
                    &app.pool,
                    &format!("{ctx} after {kind}, folded"),
                )
                .await;
            }
            let (hours, days) =
                assert_rollups_match_ticks(&app.pool, &format!("{ctx} after {kind}")).await;
            most_hours = most_hours.max(hours);
            most_days = most_days.max(days);
        }
    }
    assert!(
        most_hours >= 300 && most_days >= 100,
        "seed {seed}: at most {most_hours} hours and {most_days} days; the test lost its teeth"
    );
    eprintln!(
        "seed {seed}, {flavour:?}: {ops} ops {kinds:?}, up to {most_hours} hours, {most_days} days"
    );
}

#[actix_web::test]
async fn random_writes_of_every_kind_keep_the_hour_and_day_rollups_equal_to_the_ticks() {
    let app = spawn_app().await;
    random_writes_keep_rollups_exact(&app, Flavour::Postgres, 300).await;
}

#[actix_web::test]
async fn on_timescaledb_random_writes_keep_the_hour_and_day_rollups_equal_to_the_ticks() {
    let Some(server) = server_url() else { return };
    let ts = TsDatabase::create(&server).await;
    let app = ts.app().await;
    random_writes_keep_rollups_exact(&app, Flavour::TimescaleDb, 200).await;
    ts.drop(Some(app)).await;
}

// ---------------------------------------------------------------------------------------------
// Bulk loads.

/// A CSV of one tick a minute for `days` days from 2024-01-01 for one symbol.
fn minutes_csv(symbol: &str, days: i64) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    let mut out = std::io::BufWriter::new(file.as_file_mut());
    writeln!(out, "time,symbol,price,volume").unwrap();
    for m in 0..days * 1_440 {
        let t = DateTime::from_timestamp(BASE + m * 60, 0).unwrap();
        writeln!(
            out,
            "{},{symbol},{},1",
            time_sql(t.timestamp_micros()),
            100 + m % 37
        )
        .unwrap();
    }
    out.flush().unwrap();
    drop(out);
    file
}

/// The tables whose statistics the load must leave fresh: (relation, last_analyze set,
/// changes since the last ANALYZE).
async fn analyze_state(pool: &PgPool, relations: &[String]) -> Vec<(String, bool, i64)> {
    sqlx::query_as(
        r#"
        SELECT format('%I.%I', schemaname, relname), last_analyze IS NOT NULL, n_mod_since_analyze
        FROM pg_stat_user_tables
        WHERE format('%I.%I', schemaname, relname) = ANY($1)
        ORDER BY 1
        "#,
    )
    .bind(relations)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn an_import_leaves_fresh_statistics(app: &TestApp, flavour: Flavour) {
    let file = minutes_csv("LOAD/USD", 20);
    let rows = import_path(&app.pool, file.path(), Author::CliImport, Arc::default())
        .await
        .unwrap();
    assert_eq!(rows, 20 * 1_440);
    let relations: Vec<String> = match flavour {
        Flavour::Postgres => [
            "ticks",
            "candlewick_candles",
            "candlewick_hour_candles",
            "candlewick_day_candles",
        ]
        .iter()
        .map(|r| format!("public.{r}"))
        .collect(),
        Flavour::TimescaleDb => sqlx::query_scalar(
            r#"
            SELECT format('%I.%I', chunk_schema, chunk_name)
            FROM timescaledb_information.chunks
            WHERE hypertable_name = 'ticks'
               OR hypertable_name IN (
                   SELECT materialization_hypertable_name
                   FROM timescaledb_information.continuous_aggregates)
            "#,
        )
        .fetch_all(&app.pool)
        .await
        .unwrap(),
    };
    assert!(relations.len() >= 4, "{relations:?}");
    let state = analyze_state(&app.pool, &relations).await;
    assert_eq!(state.len(), relations.len(), "{state:?}");
    for (relation, analyzed, changed) in &state {
        assert!(analyzed, "{relation} was never analyzed: {state:?}");
        assert_eq!(
            *changed, 0,
            "{relation} changed since its ANALYZE: {state:?}"
        );
    }
    if flavour == Flavour::TimescaleDb {
        // Materialized: every aggregate's watermark is past the load's end (whole buckets).
        let end = BASE + 20 * 86_400;
        for view in ["one_min_candle", "one_hour_candle", "one_day_candle"] {
            let watermark: DateTime<Utc> = sqlx::query_scalar(
                r#"
                SELECT _timescaledb_functions.to_timestamp(
                           _timescaledb_functions.cagg_watermark(mat_hypertable_id))
                FROM _timescaledb_catalog.continuous_agg
                WHERE user_view_name = $1
                "#,
            )
            .bind(view)
            .fetch_one(&app.pool)
            .await
            .unwrap();
            assert!(
                watermark.timestamp() >= end,
                "{view} is materialized up to {watermark} only"
            );
        }
        let materialized: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM one_day_candle WHERE symbol = 'LOAD/USD' AND trades = 1440",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(materialized, 20);
        // Vacuumed: every heap page of the aggregates' chunks is marked all-visible, so a
        // page of candles is read from the aggregate's covering index alone (migration 0013).
        let chunks: Vec<(String, i32, i32)> = sqlx::query_as(
            r#"
            SELECT format('%I.%I', ch.chunk_schema, ch.chunk_name), k.relpages, k.relallvisible
            FROM timescaledb_information.continuous_aggregates c
            JOIN timescaledb_information.chunks ch
              ON ch.hypertable_name = c.materialization_hypertable_name
            JOIN pg_class k ON k.oid = format('%I.%I', ch.chunk_schema, ch.chunk_name)::regclass
            "#,
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        assert!(chunks.len() >= 3, "{chunks:?}");
        for (chunk, pages, visible) in &chunks {
            assert!(*pages > 0 && visible == pages, "{chunk}: {chunks:?}");
        }
        let covering: Vec<String> = sqlx::query_scalar(
            "SELECT indexname::text FROM pg_indexes WHERE indexname LIKE 'one_%_candle_page' \
             ORDER BY 1",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        assert_eq!(
            covering,
            [
                "one_day_candle_page",
                "one_hour_candle_page",
                "one_min_candle_page"
            ]
        );
    }
    assert_rollups_match_ticks(&app.pool, "after the import").await;
}

#[actix_web::test]
async fn an_import_leaves_the_planner_statistics_fresh() {
    let app = spawn_app().await;
    an_import_leaves_fresh_statistics(&app, Flavour::Postgres).await;
}

#[actix_web::test]
async fn on_timescaledb_an_import_leaves_statistics_fresh_and_the_aggregates_materialized() {
    let Some(server) = server_url() else { return };
    let ts = TsDatabase::create(&server).await;
    let app = ts.app().await;
    an_import_leaves_fresh_statistics(&app, Flavour::TimescaleDb).await;
    ts.drop(Some(app)).await;
}

// ---------------------------------------------------------------------------------------------
// Old edits show in their day.

/// Ticks every 10 minutes for the last 420 days; then an edit of the tick 400 days old shows
/// in its day's candle from `/api/candles?interval=1d` within two polls.
async fn an_old_edit_shows_in_its_day(app: &TestApp) {
    let now = Utc::now().timestamp().div_euclid(600) * 600;
    let mut csv = String::from("time,symbol,price,volume\n");
    for k in 1..=420 * 144 {
        let t = now - k * 600;
        csv.push_str(&format!("{},OLD/USD,100,1\n", time_sql(t * 1_000_000)));
    }
    let r = app.post_ticks_raw("text/csv", csv).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let old = now - 400 * 86_400;
    let day = old.div_euclid(86_400) * 86_400;
    let path = format!(
        "/api/candles?symbol=OLD%2FUSD&interval=1d&from={}&to={}",
        time_sql(day * 1_000_000).replace('+', "%2B"),
        time_sql((day + 86_400) * 1_000_000).replace('+', "%2B")
    );
    let page = app.get_json(&path).await;
    assert_eq!(page[0]["high"], 100.0, "{page}");
    let r = app
        .client
        .put(app.url(&format!(
            "/api/ticks?time={}&symbol=OLD%2FUSD",
            time_sql(old * 1_000_000).replace('+', "%2B")
        )))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"price": 250.0, "volume": 3.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    // Two polls of 200 ms, with room for a loaded machine.
    eventually(
        Duration::from_secs(5),
        "the edit in its day candle",
        || async {
            let page = app.get_json(&path).await;
            (page[0]["high"] == 250.0 && page[0]["volume"] == 146.0).then_some(())
        },
    )
    .await;
}

#[actix_web::test]
async fn an_edit_to_a_tick_400_days_old_shows_in_its_day_candle() {
    let app = spawn_app().await;
    an_old_edit_shows_in_its_day(&app).await;
}

#[actix_web::test]
async fn on_timescaledb_an_edit_to_a_tick_400_days_old_shows_in_its_day_candle() {
    let Some(server) = server_url() else { return };
    let ts = TsDatabase::create(&server).await;
    let app = ts.app().await;
    an_old_edit_shows_in_its_day(&app).await;
    ts.drop(Some(app)).await;
}

// ---------------------------------------------------------------------------------------------
// Writers of one hot symbol, and edits after an import.

async fn count_stored_hours(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM candlewick_hour_candles")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Three transactions write one symbol's same hour (two of them) and same day, all open at
/// once: none waits for another (each gives up after a second of waiting), and once they
/// committed, in another order than they began, every rollup equals the ticks, before and
/// after the rollups are folded.
async fn same_hour_writers_never_wait(pool: &PgPool, flavour: Flavour) {
    const S: &str = "HOT/USD";
    let hour = BASE + 30 * 86_400 + 5 * 3_600;
    let times = [hour + 65, hour + 1_810, hour + 4 * 3_600 + 7];
    if flavour == Flavour::TimescaleDb {
        // The first insert into a chunk creates it, and other transactions inserting into
        // its range wait for it to commit: have the chunk exist beforehand.
        sql(
            pool,
            &format!(
                "INSERT INTO ticks VALUES ('{}', 'SETUP', 1, 1)",
                time_sql(hour * 1_000_000)
            ),
        )
        .await;
        sql(pool, "DELETE FROM ticks WHERE symbol = 'SETUP'").await;
    }
    // Stored, folded rows for the hour and day beforehand: the writers change them.
    sql(
        pool,
        &format!(
            "INSERT INTO ticks VALUES ('{}', '{S}', 50, 1)",
            time_sql((hour + 5) * 1_000_000)
        ),
    )
    .await;
    let to = DateTime::from_timestamp(hour + 86_400, 0).unwrap();
    flavour
        .refresh(pool, DateTime::<Utc>::UNIX_EPOCH, to)
        .await
        .unwrap();
    let mut open = Vec::new();
    for (i, t) in times.iter().enumerate() {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SET LOCAL lock_timeout = '1s'")
            .execute(&mut *tx)
            .await
            .unwrap();
        let price = 100.0 + i as f64;
        sqlx::query("INSERT INTO ticks (time, symbol, price, volume) VALUES ($1, $2, $3, 2)")
            .bind(DateTime::from_timestamp(*t, 0).unwrap())
            .bind(S)
            .bind(price)
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("writer {i} of the same hour waited: {e}"));
        open.push(tx);
    }
    // On TimescaleDB an edit below the watermark shows after the refresh the poll runs;
    // on plain PostgreSQL reads are exact as soon as a write commits.
    let exact_at_once = flavour == Flavour::Postgres;
    if exact_at_once {
        assert_rollups_match_ticks(pool, "writers open").await;
    }
    let third = open.pop().unwrap();
    let second = open.pop().unwrap();
    let first = open.pop().unwrap();
    second.commit().await.unwrap();
    if exact_at_once {
        assert_rollups_match_ticks(pool, "the second writer committed").await;
    }
    third.commit().await.unwrap();
    first.commit().await.unwrap();
    if !exact_at_once {
        flavour
            .refresh(pool, DateTime::<Utc>::UNIX_EPOCH, to)
            .await
            .unwrap();
    }
    let (hours, days) = assert_rollups_match_ticks(pool, "every writer committed").await;
    assert_eq!((hours, days), (2, 1));
    let day: (f64, f64, f64, f64, i64) = sqlx::query_as(
        "SELECT open, high, close, volume, trades FROM one_day_candle WHERE symbol = $1",
    )
    .bind(S)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(day, (50.0, 102.0, 102.0, 7.0, 4));
    flavour
        .refresh(pool, DateTime::<Utc>::UNIX_EPOCH, to)
        .await
        .unwrap();
    assert_rollups_match_ticks(pool, "folded").await;
    if flavour == Flavour::Postgres {
        assert_stored_rollups_match_ticks(pool, "folded").await;
    }
}

#[actix_web::test]
async fn writers_of_one_symbols_hour_never_wait_for_each_other_and_the_rollups_stay_exact() {
    // No server: nothing folds but the test, so the views fold the pending hours themselves.
    let (_, url) = crate::helpers::fresh_database().await;
    let pool = candlewick::db::build_pool(candlewick::db::connect_options(&url).expect("URL"));
    same_hour_writers_never_wait(&pool, Flavour::Postgres).await;
}

#[actix_web::test]
async fn on_timescaledb_writers_of_one_symbols_hour_never_wait_for_each_other() {
    let Some(server) = server_url() else { return };
    let ts = TsDatabase::create(&server).await;
    let app = ts.app().await;
    same_hour_writers_never_wait(&app.pool, Flavour::TimescaleDb).await;
    ts.drop(Some(app)).await;
}

/// Three days of minutes for two symbols imported, then edits of every kind inside the
/// imported range: every rollup equals the ticks after each, and (plain flavour) the views
/// are exact before any fold.
async fn an_import_then_edits_keeps_rollups_exact(pool: &PgPool, flavour: Flavour) {
    let a = minutes_csv("IMP/A", 3);
    let b = minutes_csv("IMP/B", 3);
    for file in [&a, &b] {
        import_path(pool, file.path(), Author::CliImport, Arc::default())
            .await
            .unwrap();
    }
    if flavour == Flavour::Postgres {
        assert_stored_rollups_match_ticks(pool, "after the import").await;
    }
    assert_rollups_match_ticks(pool, "after the import").await;
    let at = |secs: i64| time_sql((BASE + secs) * 1_000_000);
    let edits = [
        format!(
            "UPDATE ticks SET price = 500 WHERE symbol = 'IMP/A' AND time = '{}'",
            at(3_600 + 600)
        ),
        format!(
            "DELETE FROM ticks WHERE symbol = 'IMP/B' AND time >= '{}' AND time < '{}'",
            at(86_400),
            at(86_400 + 3_600)
        ),
        format!(
            "INSERT INTO ticks VALUES ('{}', 'IMP/A', 1, 4), ('{}', 'IMP/B', 900, 4)",
            at(2 * 86_400 + 30),
            at(7_200 + 59)
        ),
        format!(
            "UPDATE ticks SET time = time + interval '1 day' WHERE symbol = 'IMP/A' \
             AND time >= '{}' AND time < '{}' AND time + interval '1 day' >= '{}'",
            at(86_400 + 10 * 3_600),
            at(86_400 + 11 * 3_600),
            at(3 * 86_400)
        ),
        format!(
            "DELETE FROM ticks WHERE symbol = 'IMP/A' AND time < '{}'",
            at(86_400)
        ),
    ];
    let to = DateTime::from_timestamp(BASE + 10 * 86_400, 0).unwrap();
    for (i, edit) in edits.iter().enumerate() {
        sql(pool, edit).await;
        let ctx = format!("edit {i}: {edit}");
        if flavour == Flavour::Postgres {
            assert_rollups_match_ticks(pool, &ctx).await;
            assert_pages_match_views(pool, &ctx, &["IMP/A", "IMP/B"]).await;
        }
        flavour
            .refresh(pool, DateTime::<Utc>::UNIX_EPOCH, to)
            .await
            .unwrap();
        assert_rollups_match_ticks(pool, &format!("{ctx}, refreshed")).await;
        if flavour == Flavour::Postgres {
            assert_stored_rollups_match_ticks(pool, &format!("{ctx}, folded")).await;
        }
    }
    if flavour == Flavour::Postgres {
        assert!(count_stored_hours(pool).await > 100);
    }
}

#[actix_web::test]
async fn an_import_followed_by_edits_keeps_the_rollups_equal_to_the_ticks() {
    let (_, url) = crate::helpers::fresh_database().await;
    let pool = candlewick::db::build_pool(candlewick::db::connect_options(&url).expect("URL"));
    an_import_then_edits_keeps_rollups_exact(&pool, Flavour::Postgres).await;
}

#[actix_web::test]
async fn on_timescaledb_an_import_followed_by_edits_keeps_the_rollups_equal_to_the_ticks() {
    let Some(server) = server_url() else { return };
    let ts = TsDatabase::create(&server).await;
    let app = ts.app().await;
    an_import_then_edits_keeps_rollups_exact(&app.pool, Flavour::TimescaleDb).await;
    ts.drop(Some(app)).await;
}

#[actix_web::test]
async fn a_bulk_statement_is_journaled_by_its_hours_and_the_rollups_stay_exact() {
    // Plain flavour: more minutes in one statement than a poll lists are journaled as their
    // hours and one wholesale entry, not a row per minute; the views fold those hours before
    // the fold does, and the fold takes them in.
    let (_, url) = crate::helpers::fresh_database().await;
    let pool = candlewick::db::build_pool(candlewick::db::connect_options(&url).expect("URL"));
    bulk_statement_keeps_rollups_exact(&pool, Flavour::Postgres).await;
}

#[actix_web::test]
async fn on_timescaledb_a_bulk_statement_is_journaled_as_one_wholesale_entry() {
    let Some(server) = server_url() else { return };
    let ts = TsDatabase::create(&server).await;
    let app = ts.app().await;
    bulk_statement_keeps_rollups_exact(&app.pool, Flavour::TimescaleDb).await;
    ts.drop(Some(app)).await;
}

/// One INSERT of more minutes than a poll lists: the journal holds one wholesale entry (and,
/// on plain PostgreSQL, the changed hours, which the fold needs) instead of a row per minute;
/// the rollups equal the ticks before and after they catch up, and after an edit.
async fn bulk_statement_keeps_rollups_exact(pool: &PgPool, flavour: Flavour) {
    let minutes = candlewick::db::journal::MAX_CHANGES_PER_POLL + 500;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM candle_changes")
        .fetch_one(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO ticks (time, symbol, price, volume) \
         SELECT to_timestamp($1) + m * interval '1 minute' + interval '7 seconds', 'BULK/USD', \
                100 + m % 97, 1 + m % 5 \
         FROM generate_series(0, $2 - 1) AS m",
    )
    .bind(BASE as f64)
    .bind(minutes)
    .execute(pool)
    .await
    .unwrap();
    let (entries, wholesale): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE symbol IS NULL) FROM candle_changes",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let hours = match flavour {
        Flavour::Postgres => (minutes + 59) / 60,
        Flavour::TimescaleDb => 0,
    };
    assert_eq!(wholesale, 1, "one wholesale entry");
    assert_eq!(
        entries - before,
        hours + 1,
        "the wholesale entry (and the changed hours on plain PostgreSQL), not {minutes} minutes"
    );
    if flavour == Flavour::Postgres {
        assert_rollups_match_ticks(pool, "before a fold").await;
    }
    let to = DateTime::from_timestamp(BASE + 100 * 86_400, 0).unwrap();
    flavour
        .refresh(pool, DateTime::<Utc>::UNIX_EPOCH, to)
        .await
        .unwrap();
    assert_rollups_match_ticks(pool, "caught up").await;
    if flavour == Flavour::Postgres {
        assert_stored_rollups_match_ticks(pool, "folded").await;
    }
    sql(
        pool,
        &format!(
            "UPDATE ticks SET price = 5000 WHERE symbol = 'BULK/USD' AND time = '{}'",
            time_sql((BASE + 40 * 86_400 + 7) * 1_000_000)
        ),
    )
    .await;
    flavour
        .refresh(pool, DateTime::<Utc>::UNIX_EPOCH, to)
        .await
        .unwrap();
    assert_rollups_match_ticks(pool, "an edit after the bulk statement").await;
}

/// Three symbols × `minutes` minutes × four ticks a minute, from `start` plus `second` seconds,
/// as one INSERT in scrambled order, with some NULL prices and volumes: 12 rows a minute
/// across the symbols, so 1,000 minutes make a bulk statement (at least 10,000 rows).
async fn insert_scrambled_minutes(pool: &PgPool, start: i64, minutes: i32, second: i32) {
    sqlx::query(
        "INSERT INTO ticks (time, symbol, price, volume) \
         SELECT to_timestamp($1) + m * interval '1 minute' + ($3 + s * 13) * interval '1 second', \
                'RACE/' || k, \
                CASE WHEN (m + s) % 11 = 0 THEN NULL ELSE 100 + (m * 7 + s * 3 + k + $3) % 50 END, \
                CASE WHEN (m + s + k) % 13 = 0 THEN NULL ELSE 1 + s END \
         FROM generate_series(0, $2 - 1) AS m, generate_series(0, 3) AS s, \
              generate_series(0, 2) AS k \
         ORDER BY md5(m::text || '/' || s::text || '/' || k::text)",
    )
    .bind(start as f64)
    .bind(minutes)
    .bind(second)
    .execute(pool)
    .await
    .unwrap();
}

async fn assert_minutes_match_ticks(pool: &PgPool, context: &str) -> i64 {
    assert_relation_matches_ticks(pool, context, "candlewick_candles", "1 minute").await
}

#[actix_web::test]
async fn bulk_inserts_of_new_minutes_stay_exact_beside_stored_candles_and_a_racing_writer() {
    // Plain flavour (migration 0014): a bulk INSERT whose minutes hold no candle inserts them
    // rather than merging; beside stored candles it merges; when another writer's candle
    // appears in one of its minutes meanwhile, the insert fails on the key and the merge
    // takes over. Every way, each minute equals its ticks.
    let (_, url) = crate::helpers::fresh_database().await;
    let pool = candlewick::db::build_pool(candlewick::db::connect_options(&url).expect("URL"));
    insert_scrambled_minutes(&pool, BASE, 1_000, 1).await;
    assert_eq!(
        assert_minutes_match_ticks(&pool, "new minutes").await,
        3_000
    );
    insert_scrambled_minutes(&pool, BASE, 1_000, 8).await;
    assert_minutes_match_ticks(&pool, "the same minutes again, other seconds").await;

    // Another writer's tick in the last minute of RACE/1, not committed yet: its candle is
    // invisible to the bulk statement's check, and the statement's insert waits for it.
    let later = BASE + 10 * 86_400;
    let mut writer = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO ticks (time, symbol, price, volume) VALUES ($1, 'RACE/1', 7, 1)")
        .bind(DateTime::from_timestamp(later + 999 * 60 + 59, 0).unwrap())
        .execute(&mut *writer)
        .await
        .unwrap();
    let bulk = tokio::spawn({
        let pool = pool.clone();
        async move { insert_scrambled_minutes(&pool, later, 1_000, 1).await }
    });
    eventually(
        Duration::from_secs(30),
        "the bulk INSERT to wait for the writer",
        || {
            let pool = pool.clone();
            async move {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO ticks%SELECT%'",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                (waiting > 0).then_some(())
            }
        },
    )
    .await;
    writer.commit().await.unwrap();
    bulk.await
        .expect("the bulk INSERT succeeds once the writer committed");
    assert_minutes_match_ticks(&pool, "a bulk INSERT beside a racing writer").await;
    let trades: i64 = sqlx::query_scalar(
        "SELECT trades FROM candlewick_candles WHERE symbol = 'RACE/1' AND bucket = $1",
    )
    .bind(DateTime::from_timestamp(later + 999 * 60, 0).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(trades, 5, "the writer's tick and the bulk statement's four");
    let to = DateTime::from_timestamp(later + 2 * 86_400, 0).unwrap();
    Flavour::Postgres
        .refresh(&pool, DateTime::<Utc>::UNIX_EPOCH, to)
        .await
        .unwrap();
    assert_stored_rollups_match_ticks(&pool, "folded").await;
}
