//! Sub-second polling stays exact: with `--poll-interval 100ms`, viewers of several symbols at
//! 1m and 5m end up with exactly the candles recomputed from `ticks` after concurrent writers
//! inserted (one row and batches), updated and deleted ticks in the live minutes and the ones
//! just before them, on both storage flavours.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::candles::{Ohlcv, at_micros, compute_candles, raw_ticks};
use crate::helpers::{TestApp, eventually_ok, spawn_app_with};

const SYMBOLS: [&str; 3] = ["LIVE/A", "LIVE/B", "LIVE/C"];
const WRITERS: i64 = 4;
const STATEMENTS: usize = 80;
const MINUTE: i64 = 60_000_000;

/// A viewer's chart: its candles by `t` as the frames left them, and frames seen.
type Chart = Arc<Mutex<(BTreeMap<i64, Ohlcv>, usize)>>;

/// Opens a viewer of `symbol` at `interval` and applies every frame it gets to its chart.
async fn watch(app: &TestApp, symbol: &str, interval: &str) -> Chart {
    let url = app.ws_url(&format!("symbol={symbol}&interval={interval}"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("WebSocket handshake for {symbol} {interval}: {e}"));
    let chart: Chart = Arc::default();
    let into = chart.clone();
    let what = format!("{symbol} {interval}");
    tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            let frame: Value = serde_json::from_str(&text).expect("a JSON frame");
            let mut chart = into.lock().expect("chart lock");
            chart.1 += 1;
            let candle = |c: &Value| {
                let f = |i: usize| c[i].as_f64().expect("a number");
                let t = c[0].as_i64().expect("t");
                let ohlcv = Ohlcv {
                    open: f(1),
                    high: f(2),
                    low: f(3),
                    close: f(4),
                    volume: f(5),
                };
                (t, ohlcv)
            };
            match frame["type"].as_str() {
                Some("snapshot") => {
                    chart.0 = frame["candles"]
                        .as_array()
                        .expect("candles")
                        .iter()
                        .map(candle)
                        .collect();
                }
                Some("update") => {
                    for c in frame["candles"].as_array().expect("candles") {
                        let (t, v) = candle(c);
                        chart.0.insert(t, v);
                    }
                    for t in frame["removed"].as_array().expect("removed") {
                        chart.0.remove(&t.as_i64().expect("a removed t"));
                    }
                }
                Some("status") => {}
                _ => panic!("{what}: unexpected frame {frame}"),
            }
        }
    });
    chart
}

/// Four writers for 80 statements each: one-row INSERTs, batches of ten, UPDATEs and DELETEs
/// of the minutes around now, each its own transaction, all at once.
async fn write_concurrently(app: &TestApp) -> usize {
    let base = (Utc::now().timestamp_micros().div_euclid(MINUTE) - 2) * MINUTE;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let pool = app.pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(0x5eed ^ (w as u64 + 1));
            let mut done = 0;
            let mut rows = 0;
            while done < STATEMENTS {
                let minute = rng.random_range(0..4i64);
                let symbol = *SYMBOLS.choose(&mut rng).expect("symbols");
                // Times are distinct per writer (micros ≡ w mod WRITERS): no key races.
                let time = |rng: &mut StdRng| {
                    at_micros(
                        base + minute * MINUTE
                            + rng.random_range(0..MINUTE / WRITERS) * WRITERS
                            + w,
                    )
                };
                let from = at_micros(base + minute * MINUTE);
                let to = at_micros(base + (minute + 1) * MINUTE);
                let q = match rng.random_range(0..10) {
                    0..5 => sqlx::query(
                        "INSERT INTO ticks VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(time(&mut rng))
                    .bind(symbol)
                    .bind(rng.random_range(1.0..100.0f64))
                    .bind(rng.random_range(0..64) as f64 / 8.0),
                    5..7 => {
                        let times: Vec<_> = (0..10).map(|_| time(&mut rng)).collect();
                        let prices: Vec<f64> =
                            (0..10).map(|_| rng.random_range(1.0..100.0f64)).collect();
                        let volumes: Vec<f64> = (0..10)
                            .map(|_| rng.random_range(0..64) as f64 / 8.0)
                            .collect();
                        sqlx::query(
                            "INSERT INTO ticks SELECT t, $2, p, v \
                             FROM unnest($1::timestamptz[], $3::float8[], $4::float8[]) AS r(t, p, v) \
                             ON CONFLICT DO NOTHING",
                        )
                        .bind(times)
                        .bind(symbol)
                        .bind(prices)
                        .bind(volumes)
                    }
                    7..9 => sqlx::query(
                        "UPDATE ticks SET price = $4 \
                         WHERE symbol = $1 AND time >= $2 AND time < $3 AND price > $5",
                    )
                    .bind(symbol)
                    .bind(from)
                    .bind(to)
                    .bind(rng.random_range(1.0..100.0f64))
                    .bind(rng.random_range(50.0..100.0f64)),
                    _ => sqlx::query(
                        "DELETE FROM ticks WHERE symbol = $1 AND time >= $2 AND time < $3 AND price < $4",
                    )
                    .bind(symbol)
                    .bind(from)
                    .bind(to)
                    .bind(rng.random_range(1.0..20.0f64)),
                };
                match q.execute(&pool).await {
                    Ok(r) => {
                        done += 1;
                        rows += r.rows_affected() as usize;
                    }
                    // Multi-row statements may lock rows in different orders; PostgreSQL
                    // breaks the cycle and the client retries, as any client would.
                    Err(sqlx::Error::Database(e))
                        if matches!(e.code().as_deref(), Some("40P01" | "40001")) => {}
                    Err(e) => panic!("writer {w}: {e}"),
                }
            }
            rows
        }));
    }
    let mut rows = 0;
    for t in tasks {
        rows += tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("a writer to finish")
            .expect("writer task");
    }
    rows
}

/// The body, for either flavour: viewers watch, writers write, and every chart ends equal to
/// the candles recomputed from `SELECT * FROM ticks`.
pub async fn viewers_stay_exact_under_concurrent_writers(app: &TestApp) {
    let mut charts = Vec::new();
    for symbol in SYMBOLS {
        for (interval, width) in [("1m", 60), ("5m", 300)] {
            charts.push((symbol, interval, width, watch(app, symbol, interval).await));
        }
    }
    let rows = write_concurrently(app).await;
    assert!(
        rows >= 300,
        "only {rows} rows written: the test lost its teeth"
    );
    let ticks = raw_ticks(&app.pool).await;
    for (symbol, interval, width, chart) in &charts {
        let want: BTreeMap<i64, Ohlcv> = compute_candles(&ticks, *width)
            .into_iter()
            .filter(|((s, _), _)| s == symbol)
            .map(|((_, t), c)| (t, c.ohlcv))
            .collect();
        assert!(!want.is_empty(), "{symbol} has candles");
        let what = format!("the {symbol} {interval} viewer to show the ticks' candles");
        eventually_ok(Duration::from_secs(20), &what, || async {
            let chart = chart.lock().expect("chart lock");
            let diff = crate::candles::differences(&want, &chart.0);
            if diff.is_empty() {
                Ok(())
            } else {
                Err((chart.1, diff))
            }
        })
        .await;
    }
}

/// On TimescaleDB the poll reads the live minutes (migration 0012): from their start on, they
/// hold exactly the candles recomputed from the ticks, one row per minute with usable ticks.
async fn assert_live_minutes_match_ticks(app: &TestApp) -> usize {
    let live_from: i64 = sqlx::query_scalar(
        "SELECT value::bigint FROM candlewick_meta WHERE key = 'live_minutes_from'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("the live minutes' start");
    #[derive(sqlx::FromRow)]
    struct Row {
        symbol: String,
        t: i64,
        open: f64,
        high: f64,
        low: f64,
        close: f64,
        volume: f64,
        trades: i64,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT symbol, extract(epoch FROM bucket)::bigint AS t, open, high, low, close, volume, \
         trades FROM candlewick_live_minutes",
    )
    .fetch_all(&app.pool)
    .await
    .expect("reading the live minutes");
    let got: BTreeMap<(String, i64), (Ohlcv, i64)> = rows
        .into_iter()
        .map(|r| {
            let ohlcv = Ohlcv {
                open: r.open,
                high: r.high,
                low: r.low,
                close: r.close,
                volume: r.volume,
            };
            ((r.symbol, r.t), (ohlcv, r.trades))
        })
        .collect();
    let want: BTreeMap<(String, i64), (Ohlcv, i64)> =
        compute_candles(&raw_ticks(&app.pool).await, 60)
            .into_iter()
            .filter(|((_, t), _)| *t >= live_from)
            .map(|(k, c)| (k, (c.ohlcv, c.trades)))
            .collect();
    let diff = crate::candles::differences(&want, &got);
    assert!(
        diff.is_empty(),
        "the live minutes differ from the ticks:\n{}",
        diff.join("\n")
    );
    want.len()
}

#[actix_web::test]
async fn at_a_100ms_poll_viewers_stay_exact_under_concurrent_writers_on_postgresql() {
    let app = spawn_app_with(&["--poll-interval", "100ms"]).await;
    viewers_stay_exact_under_concurrent_writers(&app).await;
}

#[actix_web::test]
async fn at_a_100ms_poll_viewers_stay_exact_under_concurrent_writers_on_timescaledb() {
    let Some(server) = crate::timescale::server_url() else {
        return;
    };
    let ts = crate::timescale::TsDatabase::create(&server).await;
    let app = ts.app_with_args(&["--poll-interval", "100ms"]).await;
    viewers_stay_exact_under_concurrent_writers(&app).await;
    let minutes = assert_live_minutes_match_ticks(&app).await;
    assert!(minutes >= 2, "only {minutes} live minutes written");
    ts.drop(Some(app)).await;
}

/// The journal prune moves the live minutes' start to what the journal keeps and drops the
/// rows before it; a write before the start then leaves the table alone (the poll recomputes
/// such a minute), one after it is merged as before.
#[actix_web::test]
async fn on_timescaledb_the_prune_moves_the_live_minutes_forward() {
    let Some(server) = crate::timescale::server_url() else {
        return;
    };
    let ts = crate::timescale::TsDatabase::create(&server).await;
    let app = ts.app_with_args(&[]).await;
    let pool = &app.pool;
    // A start two hours back, as a database migrated then would have, with a row there.
    let now = Utc::now().timestamp();
    let old = now.div_euclid(60) * 60 - 7_200;
    sqlx::query("UPDATE candlewick_meta SET value = $1 WHERE key = 'live_minutes_from'")
        .bind(old.to_string())
        .execute(pool)
        .await
        .expect("moving the start back");
    let insert = "INSERT INTO ticks VALUES (to_timestamp($1), 'PRUNE/A', 10, 1)";
    let minute = now.div_euclid(60) * 60;
    for t in [old + 5, minute + 10] {
        sqlx::query(insert)
            .bind(t as f64)
            .execute(pool)
            .await
            .expect("a tick");
    }
    let live = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT extract(epoch FROM bucket)::bigint FROM candlewick_live_minutes ORDER BY 1",
        )
        .fetch_all(pool)
        .await
        .expect("the live minutes")
    };
    assert_eq!(live().await, [old, minute]);

    candlewick::db::journal::prune(pool, Duration::from_secs(3_600))
        .await
        .expect("pruning");
    let start: i64 = sqlx::query_scalar(
        "SELECT value::bigint FROM candlewick_meta WHERE key = 'live_minutes_from'",
    )
    .fetch_one(pool)
    .await
    .expect("the start");
    assert!(
        (now - 3_660..=now - 3_540).contains(&start),
        "the start {start} is an hour before {now}"
    );
    assert_eq!(live().await, [minute], "the old row is dropped");
    sqlx::query(insert)
        .bind((old + 6) as f64)
        .execute(pool)
        .await
        .expect("a tick before the start");
    sqlx::query(insert)
        .bind((minute + 20) as f64)
        .execute(pool)
        .await
        .expect("a tick after the start");
    assert_eq!(live().await, [minute]);
    assert_eq!(assert_live_minutes_match_ticks(&app).await, 1);
    ts.drop(Some(app)).await;
}
