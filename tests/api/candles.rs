//! `one_min_candle` equals candles recomputed in Rust from `SELECT * FROM ticks`, whatever wrote
//! the ticks (API JSON/CSV, pool statements, psql), in whatever order, and however concurrently.
//!
//! The random test is seeded; a failure names its seed, and `CANDLEWICK_TEST_SEED=<n>` replays it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use candlewick::db::Flavour;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use sqlx::postgres::types::PgInterval;

use crate::helpers::{TOKEN, TestApp, eventually, spawn_app};

/// (symbol, bucket start in Unix seconds).
pub type Key = (String, i64);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ohlcv {
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
}

/// A candle with its trade count, as `one_min_candle` holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stored {
    pub ohlcv: Ohlcv,
    pub trades: i64,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RawTick {
    pub time: DateTime<Utc>,
    pub symbol: String,
    pub price: Option<f64>,
    pub volume: Option<f64>,
}

pub fn at_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).expect("a representable instant")
}

pub fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("a test timestamp")
        .with_timezone(&Utc)
}

/// Every row of `ticks`, read the way any client would.
pub async fn raw_ticks(pool: &PgPool) -> Vec<RawTick> {
    sqlx::query_as("SELECT * FROM ticks")
        .fetch_all(pool)
        .await
        .expect("SELECT * FROM ticks")
}

/// Candles of width `width` seconds recomputed from raw ticks: open/close = price of the
/// earliest/latest tick, high/low = max/min price, volume = sum, trades = count.
pub fn compute_candles(ticks: &[RawTick], width: i64) -> BTreeMap<Key, Stored> {
    let mut sorted: Vec<&RawTick> = ticks.iter().collect();
    sorted.sort_by(|a, b| (&a.symbol, a.time).cmp(&(&b.symbol, b.time)));
    let mut out: BTreeMap<Key, Stored> = BTreeMap::new();
    for t in sorted {
        let price = t.price.expect("the tests never store a NULL price");
        let volume = t.volume.expect("the tests never store a NULL volume");
        let bucket = t.time.timestamp().div_euclid(width) * width;
        out.entry((t.symbol.clone(), bucket))
            .and_modify(|c| {
                c.ohlcv.high = c.ohlcv.high.max(price);
                c.ohlcv.low = c.ohlcv.low.min(price);
                c.ohlcv.close = price;
                c.ohlcv.volume += volume;
                c.trades += 1;
            })
            .or_insert(Stored {
                ohlcv: Ohlcv {
                    open: price,
                    high: price,
                    low: price,
                    close: price,
                    volume,
                },
                trades: 1,
            });
    }
    out
}

/// `SELECT * FROM one_min_candle`, asserting no (symbol, bucket) appears twice.
pub async fn stored_candles(pool: &PgPool) -> BTreeMap<Key, Stored> {
    #[derive(sqlx::FromRow)]
    struct Row {
        bucket: DateTime<Utc>,
        symbol: String,
        open: Option<f64>,
        high: Option<f64>,
        low: Option<f64>,
        close: Option<f64>,
        volume: Option<f64>,
        trades: i64,
    }
    let rows: Vec<Row> = sqlx::query_as("SELECT * FROM one_min_candle")
        .fetch_all(pool)
        .await
        .expect("SELECT * FROM one_min_candle");
    let mut out = BTreeMap::new();
    for r in rows {
        let key = (r.symbol.clone(), r.bucket.timestamp());
        let value = Stored {
            ohlcv: Ohlcv {
                open: r.open.expect("open"),
                high: r.high.expect("high"),
                low: r.low.expect("low"),
                close: r.close.expect("close"),
                volume: r.volume.expect("volume"),
            },
            trades: r.trades,
        };
        assert!(
            out.insert(key.clone(), value).is_none(),
            "one_min_candle holds {key:?} twice"
        );
    }
    out
}

/// Up to 12 differences between two maps: missing, extra and differing keys.
pub fn differences<K: Ord + Debug, V: PartialEq + Debug>(
    want: &BTreeMap<K, V>,
    got: &BTreeMap<K, V>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            None => out.push(format!("missing {k:?} (want {w:?})")),
            Some(g) if g != w => out.push(format!("{k:?}: want {w:?}, got {g:?}")),
            Some(_) => {}
        }
    }
    for (k, g) in got {
        if !want.contains_key(k) {
            out.push(format!("extra {k:?} = {g:?}"));
        }
    }
    let n = out.len();
    out.truncate(12);
    if n > out.len() {
        out.push(format!("... {} more", n - out.len()));
    }
    out
}

/// Asserts `one_min_candle` equals the recomputation from raw ticks, exactly and as a set.
pub async fn assert_candles_match_ticks(pool: &PgPool, context: &str) -> usize {
    let want = compute_candles(&raw_ticks(pool).await, 60);
    let got = stored_candles(pool).await;
    let diff = differences(&want, &got);
    assert!(
        diff.is_empty(),
        "{context}: one_min_candle differs from the candles recomputed from ticks:\n{}",
        diff.join("\n")
    );
    want.len()
}

/// `GET /api/candles` for one symbol and interval, as bucket → candle; checks newest-first order.
pub async fn api_candles(app: &TestApp, symbol: &str, interval: &str) -> BTreeMap<i64, Ohlcv> {
    let r = app
        .client
        .get(app.url("/api/candles"))
        .query(&[("symbol", symbol), ("interval", interval)])
        .send()
        .await
        .expect("GET /api/candles");
    assert_eq!(
        r.status(),
        200,
        "GET /api/candles?symbol={symbol}&interval={interval}"
    );
    let rows: Vec<serde_json::Value> = r.json().await.expect("a JSON array of candles");
    let num = |row: &serde_json::Value, k: &str| {
        row[k]
            .as_f64()
            .unwrap_or_else(|| panic!("candle field {k} in {row}"))
    };
    let mut out = BTreeMap::new();
    let mut last: Option<i64> = None;
    for row in &rows {
        let bucket = at(row["bucket"].as_str().expect("bucket is a string")).timestamp();
        assert!(
            last.is_none_or(|l| l > bucket),
            "GET /api/candles is not strictly newest first at {row}"
        );
        last = Some(bucket);
        let c = Ohlcv {
            open: num(row, "open"),
            high: num(row, "high"),
            low: num(row, "low"),
            close: num(row, "close"),
            volume: num(row, "volume"),
        };
        out.insert(bucket, c);
    }
    out
}

/// The API's 1m and 5m candles of every symbol equal the recomputation from raw ticks.
pub async fn assert_api_matches_ticks(app: &TestApp, symbols: &[&str], context: &str) {
    let ticks = raw_ticks(&app.pool).await;
    for (interval, width) in [("1m", 60), ("5m", 300)] {
        let all = compute_candles(&ticks, width);
        for &symbol in symbols {
            let want: BTreeMap<i64, Ohlcv> = all
                .iter()
                .filter(|((s, _), _)| s == symbol)
                .map(|((_, b), c)| (*b, c.ohlcv))
                .collect();
            let got = api_candles(app, symbol, interval).await;
            let diff = differences(&want, &got);
            assert!(
                diff.is_empty(),
                "{context}: GET /api/candles?symbol={symbol}&interval={interval} differs:\n{}",
                diff.join("\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Random writes.

const SYMBOLS: [&str; 3] = ["BTC/USD", "ETH/USD", "XAU_EUR"];
/// 2024-07-01T00:00:00Z, in minutes since the epoch; all ticks fall within a few days after it.
const BASE_MINUTE: i64 = 1_719_792_000 / 60;
const MINUTE: i64 = 60_000_000;

/// The default seed; `CANDLEWICK_TEST_SEED` overrides it to replay a failure or explore.
fn seed() -> u64 {
    std::env::var("CANDLEWICK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00C4_D1E5)
}

/// What the test believes `ticks` holds, keyed by (symbol, Unix microseconds).
type Model = BTreeMap<(String, i64), (f64, f64)>;

struct World<'a> {
    app: &'a TestApp,
    rng: StdRng,
    model: Model,
    /// The "current" minute (relative to BASE_MINUTE); it drifts forward as the run goes on.
    head: i64,
    seed: u64,
    op: usize,
    rows_written: usize,
    counts: BTreeMap<&'static str, usize>,
}

fn time_text(micros: i64) -> String {
    candlewick::domain::time::rfc3339(at_micros(micros))
}

impl<'a> World<'a> {
    fn new(app: &'a TestApp, seed: u64) -> Self {
        Self {
            app,
            rng: StdRng::seed_from_u64(seed),
            model: Model::new(),
            head: 3000,
            seed,
            op: 0,
            rows_written: 0,
            counts: BTreeMap::new(),
        }
    }

    fn ctx(&self) -> String {
        format!("seed {} op {}", self.seed, self.op)
    }

    fn symbol(&mut self) -> String {
        (*SYMBOLS.choose(&mut self.rng).expect("symbols")).to_owned()
    }

    /// A minute for a new tick: mostly around the head, some late into old minutes (up to two
    /// days back), some exactly on minutes that already hold ticks (ties).
    fn minute(&mut self) -> i64 {
        let roll = self.rng.random_range(0..100);
        if roll >= 90 && !self.model.is_empty() {
            let (_, micros) = self.existing().expect("non-empty");
            return micros.div_euclid(MINUTE) - BASE_MINUTE;
        }
        match roll {
            0..70 => self.head - self.rng.random_range(0..3),
            70..82 => self.head - self.rng.random_range(3..120),
            _ => self.head - self.rng.random_range(120..2 * 1440),
        }
    }

    /// Microseconds within a minute, including both edges of the minute.
    fn within(&mut self) -> i64 {
        match self.rng.random_range(0..10) {
            0 => 0,
            1 => MINUTE - 1,
            2 => self.rng.random_range(0..60) * 1_000_000,
            3 => self.rng.random_range(0..60_000) * 1_000,
            _ => self.rng.random_range(0..MINUTE),
        }
    }

    /// A (symbol, time) that is neither stored nor in `taken`.
    fn fresh_key(
        &mut self,
        symbol: &str,
        minute: i64,
        taken: &BTreeSet<(String, i64)>,
    ) -> (String, i64) {
        loop {
            let micros = (BASE_MINUTE + minute) * MINUTE + self.within();
            let key = (symbol.to_owned(), micros);
            if !self.model.contains_key(&key) && !taken.contains(&key) {
                return key;
            }
        }
    }

    fn price(&mut self) -> f64 {
        self.rng.random_range(50.0..70_000.0)
    }

    /// Multiples of 1/16 below 64: any order of summation gives the same, exact total.
    fn volume(&mut self) -> f64 {
        self.rng.random_range(0..1024) as f64 / 16.0
    }

    /// New ticks: several per minute, minutes shared across symbols, in shuffled order.
    fn new_ticks(&mut self, n: usize) -> Vec<(String, i64, f64, f64)> {
        let mut taken = BTreeSet::new();
        let mut out = Vec::with_capacity(n);
        let mut minute = self.minute();
        for _ in 0..n {
            if self.rng.random_bool(0.3) {
                minute = self.minute();
            }
            let symbol = self.symbol();
            let key = self.fresh_key(&symbol, minute, &taken);
            taken.insert(key.clone());
            let (p, v) = (self.price(), self.volume());
            out.push((key.0, key.1, p, v));
        }
        out.shuffle(&mut self.rng);
        out
    }

    fn existing(&mut self) -> Option<(String, i64)> {
        if self.model.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.model.len());
        self.model.keys().nth(i).cloned()
    }

    /// A time range around an existing tick: part of a minute, or one to five whole minutes.
    fn range_around(&mut self, micros: i64) -> (i64, i64) {
        if self.rng.random_bool(0.3) {
            let half = self.rng.random_range(1..30) * 1_000_000;
            (micros - half, micros + half)
        } else {
            let start = micros.div_euclid(MINUTE) * MINUTE - self.rng.random_range(0..3) * MINUTE;
            (start, start + self.rng.random_range(1..=5) * MINUTE)
        }
    }

    fn keys_in(&self, symbol: Option<&str>, from: i64, to: i64) -> Vec<(String, i64)> {
        self.model
            .keys()
            .filter(|(s, t)| symbol.is_none_or(|x| x == s) && *t >= from && *t < to)
            .cloned()
            .collect()
    }

    fn insert_model(&mut self, ticks: &[(String, i64, f64, f64)]) {
        for (s, t, p, v) in ticks {
            assert!(
                self.model.insert((s.clone(), *t), (*p, *v)).is_none(),
                "{}: the test generated a duplicate",
                self.ctx()
            );
        }
        self.rows_written += ticks.len();
    }

    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    async fn step(&mut self) {
        self.op += 1;
        if self.rng.random_bool(0.06) {
            self.head += 1;
        }
        match self.rng.random_range(0..100) {
            0..14 => self.api_single().await,
            14..24 => self.api_batch_json().await,
            24..30 => self.api_csv().await,
            30..42 => self.api_put().await,
            42..50 => self.api_delete().await,
            50..58 => self.sql_insert().await,
            58..64 => self.sql_update_range().await,
            64..68 => self.sql_shift_time().await,
            68..71 => self.sql_change_symbol().await,
            71..76 => self.sql_delete_range().await,
            76..80 => self.sql_delete_keys().await,
            80..86 => self.psql_script().await,
            86..91 => self.sql_transaction(true).await,
            91..93 => self.sql_transaction(false).await,
            93..96 => self.sql_update_all_symbols().await,
            _ => self.api_put_then_delete_same_minute().await,
        }
    }

    fn tick_json(s: &str, t: i64, p: f64, v: f64) -> serde_json::Value {
        serde_json::json!({ "time": time_text(t), "symbol": s, "price": p, "volume": v })
    }

    async fn expect_status(&self, r: reqwest::Response, want: u16, what: &str) {
        let status = r.status().as_u16();
        if status != want {
            let body = r.text().await.unwrap_or_default();
            panic!(
                "{}: {what} answered {status}, expected {want}: {body}",
                self.ctx()
            );
        }
    }

    async fn api_single(&mut self) {
        self.count("api single");
        let t = self.new_ticks(1);
        let r = self
            .app
            .post_ticks_json(&Self::tick_json(&t[0].0, t[0].1, t[0].2, t[0].3))
            .await;
        self.expect_status(r, 201, "POST /api/ticks (one)").await;
        self.insert_model(&t);
    }

    async fn api_batch_json(&mut self) {
        self.count("api JSON batch");
        let n = self.rng.random_range(2..=40);
        let t = self.new_ticks(n);
        let body = serde_json::Value::Array(
            t.iter()
                .map(|(s, t, p, v)| Self::tick_json(s, *t, *p, *v))
                .collect(),
        );
        let r = self.app.post_ticks_json(&body).await;
        self.expect_status(r, 201, "POST /api/ticks (JSON batch)")
            .await;
        self.insert_model(&t);
    }

    async fn api_csv(&mut self) {
        self.count("api CSV batch");
        let n = self.rng.random_range(2..=40);
        let t = self.new_ticks(n);
        let mut body = String::from("time,symbol,price,volume\n");
        for (s, time, p, v) in &t {
            body.push_str(&format!("{},{s},{p},{v}\n", time_text(*time)));
        }
        let r = self.app.post_ticks_raw("text/csv", body).await;
        self.expect_status(r, 201, "POST /api/ticks (CSV)").await;
        self.insert_model(&t);
    }

    async fn put(&mut self, key: &(String, i64)) {
        let (p, v) = (self.price(), self.volume());
        let r = self
            .app
            .client
            .put(self.app.url("/api/ticks"))
            .query(&[("time", time_text(key.1)), ("symbol", key.0.clone())])
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "price": p, "volume": v }))
            .send()
            .await
            .expect("PUT /api/ticks");
        self.expect_status(r, 200, "PUT /api/ticks").await;
        self.model.insert(key.clone(), (p, v));
        self.rows_written += 1;
    }

    async fn delete(&mut self, key: &(String, i64)) {
        let r = self
            .app
            .client
            .delete(self.app.url("/api/ticks"))
            .query(&[("time", time_text(key.1)), ("symbol", key.0.clone())])
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("DELETE /api/ticks");
        self.expect_status(r, 200, "DELETE /api/ticks").await;
        self.model.remove(key);
        self.rows_written += 1;
    }

    async fn api_put(&mut self) {
        let Some(key) = self.existing() else {
            return self.api_single().await;
        };
        self.count("api PUT");
        self.put(&key).await;
    }

    async fn api_delete(&mut self) {
        let Some(key) = self.existing() else {
            return self.api_single().await;
        };
        self.count("api DELETE");
        self.delete(&key).await;
    }

    /// Edits and deletes within one minute, newest tick first (non-chronological).
    async fn api_put_then_delete_same_minute(&mut self) {
        let Some((symbol, micros)) = self.existing() else {
            return self.api_single().await;
        };
        self.count("api PUT+DELETE in one minute");
        let start = micros.div_euclid(MINUTE) * MINUTE;
        let mut keys = self.keys_in(Some(&symbol), start, start + MINUTE);
        keys.reverse();
        for (i, key) in keys.iter().enumerate() {
            if i % 3 == 2 {
                self.delete(key).await
            } else {
                self.put(key).await
            }
        }
    }

    async fn sql_insert(&mut self) {
        self.count("SQL insert (UNNEST)");
        let n = self.rng.random_range(1..=20);
        let t = self.new_ticks(n);
        let times: Vec<DateTime<Utc>> = t.iter().map(|x| at_micros(x.1)).collect();
        let symbols: Vec<&str> = t.iter().map(|x| x.0.as_str()).collect();
        let prices: Vec<f64> = t.iter().map(|x| x.2).collect();
        let volumes: Vec<f64> = t.iter().map(|x| x.3).collect();
        sqlx::query("INSERT INTO ticks SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::float8[], $4::float8[])")
            .bind(&times)
            .bind(&symbols)
            .bind(&prices)
            .bind(&volumes)
            .execute(&self.app.pool)
            .await
            .unwrap_or_else(|e| panic!("{}: SQL insert: {e}", self.ctx()));
        self.insert_model(&t);
    }

    async fn sql_update_range(&mut self) {
        let Some((symbol, micros)) = self.existing() else {
            return self.sql_insert().await;
        };
        self.count("SQL multi-row UPDATE");
        let (from, to) = self.range_around(micros);
        let (p, dv) = (self.price(), self.volume());
        let done = sqlx::query(
            "UPDATE ticks SET price = $4, volume = volume + $5 WHERE symbol = $1 AND time >= $2 AND time < $3",
        )
        .bind(&symbol)
        .bind(at_micros(from))
        .bind(at_micros(to))
        .bind(p)
        .bind(dv)
        .execute(&self.app.pool)
        .await
        .unwrap_or_else(|e| panic!("{}: SQL update: {e}", self.ctx()));
        let keys = self.keys_in(Some(&symbol), from, to);
        assert_eq!(
            done.rows_affected(),
            keys.len() as u64,
            "{}: rows updated",
            self.ctx()
        );
        for k in keys {
            let e = self.model.get_mut(&k).expect("in the model");
            *e = (p, e.1 + dv);
            self.rows_written += 1;
        }
    }

    /// Moves ticks in time (across minute boundaries) when no moved tick lands on a stored one.
    async fn sql_shift_time(&mut self) {
        let Some((symbol, micros)) = self.existing() else {
            return self.sql_insert().await;
        };
        let (from, to) = self.range_around(micros);
        let sign = if self.rng.random_bool(0.5) { 1 } else { -1 };
        let delta = sign * self.rng.random_range(1..150_000_000i64);
        let keys = self.keys_in(Some(&symbol), from, to);
        if keys
            .iter()
            .any(|(s, t)| self.model.contains_key(&(s.clone(), t + delta)))
        {
            return;
        }
        self.count("SQL UPDATE of time");
        let done = sqlx::query(
            "UPDATE ticks SET time = time + $4 WHERE symbol = $1 AND time >= $2 AND time < $3",
        )
        .bind(&symbol)
        .bind(at_micros(from))
        .bind(at_micros(to))
        .bind(PgInterval {
            months: 0,
            days: 0,
            microseconds: delta,
        })
        .execute(&self.app.pool)
        .await
        .unwrap_or_else(|e| panic!("{}: SQL time shift: {e}", self.ctx()));
        assert_eq!(
            done.rows_affected(),
            keys.len() as u64,
            "{}: rows moved",
            self.ctx()
        );
        let moved: Vec<_> = keys
            .iter()
            .map(|k| (k.clone(), self.model.remove(k).expect("in the model")))
            .collect();
        for ((s, t), v) in moved {
            self.model.insert((s, t + delta), v);
            self.rows_written += 1;
        }
    }

    /// Renames the symbol of a range of ticks (two symbols' candles change in one statement).
    async fn sql_change_symbol(&mut self) {
        let Some((symbol, micros)) = self.existing() else {
            return self.sql_insert().await;
        };
        let to_symbol = loop {
            let s = self.symbol();
            if s != symbol {
                break s;
            }
        };
        let (from, to) = self.range_around(micros);
        let keys = self.keys_in(Some(&symbol), from, to);
        if keys
            .iter()
            .any(|(_, t)| self.model.contains_key(&(to_symbol.clone(), *t)))
        {
            return;
        }
        self.count("SQL UPDATE of symbol");
        sqlx::query("UPDATE ticks SET symbol = $4 WHERE symbol = $1 AND time >= $2 AND time < $3")
            .bind(&symbol)
            .bind(at_micros(from))
            .bind(at_micros(to))
            .bind(&to_symbol)
            .execute(&self.app.pool)
            .await
            .unwrap_or_else(|e| panic!("{}: SQL symbol change: {e}", self.ctx()));
        for k in keys {
            let v = self.model.remove(&k).expect("in the model");
            self.model.insert((to_symbol.clone(), k.1), v);
            self.rows_written += 1;
        }
    }

    async fn sql_delete_range(&mut self) {
        let Some((symbol, micros)) = self.existing() else {
            return self.sql_insert().await;
        };
        self.count("SQL multi-row DELETE (range)");
        let (from, to) = self.range_around(micros);
        let done = sqlx::query("DELETE FROM ticks WHERE symbol = $1 AND time >= $2 AND time < $3")
            .bind(&symbol)
            .bind(at_micros(from))
            .bind(at_micros(to))
            .execute(&self.app.pool)
            .await
            .unwrap_or_else(|e| panic!("{}: SQL delete: {e}", self.ctx()));
        let keys = self.keys_in(Some(&symbol), from, to);
        assert_eq!(
            done.rows_affected(),
            keys.len() as u64,
            "{}: rows deleted",
            self.ctx()
        );
        for k in keys {
            self.model.remove(&k);
            self.rows_written += 1;
        }
    }

    async fn sql_delete_keys(&mut self) {
        if self.model.is_empty() {
            return self.sql_insert().await;
        }
        self.count("SQL multi-row DELETE (keys)");
        let n = self.rng.random_range(1..=8);
        let mut keys = BTreeSet::new();
        for _ in 0..n {
            if let Some(k) = self.existing() {
                keys.insert(k);
            }
        }
        let times: Vec<DateTime<Utc>> = keys.iter().map(|k| at_micros(k.1)).collect();
        let symbols: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        let done = sqlx::query(
            "DELETE FROM ticks WHERE (time, symbol) IN (SELECT * FROM UNNEST($1::timestamptz[], $2::text[]))",
        )
        .bind(&times)
        .bind(&symbols)
        .execute(&self.app.pool)
        .await
        .unwrap_or_else(|e| panic!("{}: SQL delete by keys: {e}", self.ctx()));
        assert_eq!(
            done.rows_affected(),
            keys.len() as u64,
            "{}: rows deleted",
            self.ctx()
        );
        for k in keys {
            self.model.remove(&k);
            self.rows_written += 1;
        }
    }

    /// Volume bumps across every symbol in a range of minutes.
    async fn sql_update_all_symbols(&mut self) {
        let Some((_, micros)) = self.existing() else {
            return self.sql_insert().await;
        };
        self.count("SQL UPDATE across symbols");
        let (from, to) = self.range_around(micros);
        let dv = self.volume();
        sqlx::query("UPDATE ticks SET volume = volume + $3 WHERE time >= $1 AND time < $2")
            .bind(at_micros(from))
            .bind(at_micros(to))
            .bind(dv)
            .execute(&self.app.pool)
            .await
            .unwrap_or_else(|e| panic!("{}: SQL update across symbols: {e}", self.ctx()));
        for k in self.keys_in(None, from, to) {
            self.model.get_mut(&k).expect("in the model").1 += dv;
            self.rows_written += 1;
        }
    }

    /// Several statements in one transaction, all in one minute; committed or rolled back.
    async fn sql_transaction(&mut self, commit: bool) {
        self.count(if commit {
            "SQL transaction"
        } else {
            "SQL transaction rolled back"
        });
        let mut model = self.model.clone();
        let mut rows = 0;
        let minute = self.minute();
        let symbol = self.symbol();
        let mut tx = self.app.pool.begin().await.expect("BEGIN");
        let n = self.rng.random_range(1..=5);
        let mut taken = BTreeSet::new();
        for _ in 0..n {
            let (s, t) = self.fresh_key(&symbol, minute, &taken);
            taken.insert((s.clone(), t));
            let (p, v) = (self.price(), self.volume());
            sqlx::query("INSERT INTO ticks (time, symbol, price, volume) VALUES ($1, $2, $3, $4)")
                .bind(at_micros(t))
                .bind(&s)
                .bind(p)
                .bind(v)
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("{}: insert in a transaction: {e}", self.ctx()));
            model.insert((s, t), (p, v));
            rows += 1;
        }
        let start = (BASE_MINUTE + minute) * MINUTE;
        let in_minute: Vec<(String, i64)> = model
            .keys()
            .filter(|(s, t)| *s == symbol && *t >= start && *t < start + MINUTE)
            .cloned()
            .collect();
        // Update the latest tick of the minute, then delete the earliest (if it is another one).
        if let (Some(last), Some(first)) = (in_minute.last().cloned(), in_minute.first().cloned()) {
            let p = self.price();
            sqlx::query("UPDATE ticks SET price = $3 WHERE time = $1 AND symbol = $2")
                .bind(at_micros(last.1))
                .bind(&last.0)
                .bind(p)
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("{}: update in a transaction: {e}", self.ctx()));
            model.get_mut(&last).expect("in the model").0 = p;
            rows += 1;
            if first != last {
                sqlx::query("DELETE FROM ticks WHERE time = $1 AND symbol = $2")
                    .bind(at_micros(first.1))
                    .bind(&first.0)
                    .execute(&mut *tx)
                    .await
                    .unwrap_or_else(|e| panic!("{}: delete in a transaction: {e}", self.ctx()));
                model.remove(&first);
                rows += 1;
            }
        }
        if commit {
            tx.commit().await.expect("COMMIT");
            self.model = model;
            self.rows_written += rows;
        } else {
            tx.rollback().await.expect("ROLLBACK");
        }
    }

    /// A multi-statement script through the real psql binary: one implicit transaction.
    async fn psql_script(&mut self) {
        self.count("psql script");
        let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let mut sql = String::new();
        let n = self.rng.random_range(1..=10);
        let t = self.new_ticks(n);
        let values: Vec<String> = t
            .iter()
            .map(|(s, time, p, v)| {
                format!("({}, {}, {p:?}, {v:?})", lit(&time_text(*time)), lit(s))
            })
            .collect();
        sql.push_str(&format!(
            "INSERT INTO ticks (time, symbol, price, volume) VALUES {};\n",
            values.join(", ")
        ));
        self.insert_model(&t);
        if let Some((symbol, micros)) = self.existing() {
            let (from, to) = self.range_around(micros);
            let p = self.price();
            sql.push_str(&format!(
                "UPDATE ticks SET price = {p:?} WHERE symbol = {} AND time >= {} AND time < {};\n",
                lit(&symbol),
                lit(&time_text(from)),
                lit(&time_text(to))
            ));
            for k in self.keys_in(Some(&symbol), from, to) {
                self.model.get_mut(&k).expect("in the model").0 = p;
                self.rows_written += 1;
            }
        }
        if let Some((symbol, micros)) = self.existing() {
            let (from, to) = self.range_around(micros);
            sql.push_str(&format!(
                "DELETE FROM ticks WHERE symbol = {} AND time >= {} AND time < {};\n",
                lit(&symbol),
                lit(&time_text(from)),
                lit(&time_text(to))
            ));
            for k in self.keys_in(Some(&symbol), from, to) {
                self.model.remove(&k);
                self.rows_written += 1;
            }
        }
        let url = self.app.db_url.clone();
        tokio::task::spawn_blocking(move || crate::helpers::psql(&url, &sql))
            .await
            .expect("psql task");
    }

    /// The model equals `ticks`, and `one_min_candle` equals the recomputation (after a refresh
    /// of every touched minute on TimescaleDB, where edits to materialized minutes need one).
    async fn check(&mut self, flavour: Flavour) -> usize {
        let ctx = self.ctx();
        let stored: Model = raw_ticks(&self.app.pool)
            .await
            .into_iter()
            .map(|t| {
                (
                    (t.symbol, t.time.timestamp_micros()),
                    (t.price.expect("price"), t.volume.expect("volume")),
                )
            })
            .collect();
        let diff = differences(&self.model, &stored);
        assert!(
            diff.is_empty(),
            "{ctx}: ticks differ from what was written:\n{}",
            diff.join("\n")
        );
        let from = at_micros((BASE_MINUTE + self.head - 3 * 1440) * MINUTE);
        let to = at_micros((BASE_MINUTE + self.head + 60) * MINUTE);
        flavour
            .refresh(&self.app.pool, from, to)
            .await
            .expect("refreshing the changed minutes");
        assert_candles_match_ticks(&self.app.pool, &ctx).await
    }
}

/// The shared body of the random test, for either storage flavour.
pub async fn random_writes_keep_candles_exact(app: &TestApp, flavour: Flavour, ops: usize) {
    let seed = seed();
    let mut world = World::new(app, seed);
    let mut checks = 0;
    let mut candles = 0;
    while world.op < ops {
        world.step().await;
        if world.op.is_multiple_of(100) {
            candles = world.check(flavour).await;
            checks += 1;
        }
    }
    candles = candles.max(world.check(flavour).await);
    assert_api_matches_ticks(app, &SYMBOLS, &world.ctx()).await;
    assert!(
        world.rows_written >= 2_000,
        "seed {seed}: only {} rows written; the test lost its teeth",
        world.rows_written
    );
    assert!(
        candles >= 100,
        "seed {seed}: only {candles} candles; the test lost its teeth"
    );
    eprintln!(
        "seed {seed}, {flavour:?}: {} ops, {} row writes, {} ticks, {candles} candles, {} checks; {:?}",
        world.op,
        world.rows_written,
        world.model.len(),
        checks + 1,
        world.counts
    );
}

#[actix_web::test]
async fn random_writes_of_every_kind_keep_one_min_candle_equal_to_the_ticks() {
    let app = spawn_app().await;
    let flavour = Flavour::detect(&app.pool).await.expect("flavour");
    random_writes_keep_candles_exact(&app, flavour, 700).await;
}

// ---------------------------------------------------------------------------------------------
// Concurrent writers of one minute.

async fn insert_tick(
    conn: &mut sqlx::PgConnection,
    time: &str,
    symbol: &str,
    price: f64,
    volume: f64,
) {
    sqlx::query("INSERT INTO ticks (time, symbol, price, volume) VALUES ($1, $2, $3, $4)")
        .bind(at(time))
        .bind(symbol)
        .bind(price)
        .bind(volume)
        .execute(conn)
        .await
        .expect("INSERT INTO ticks");
}

/// Waits until some session of this database waits for a lock (the minute's candle row).
async fn a_writer_waits_for_the_minute_lock(pool: &PgPool) {
    eventually(
        Duration::from_secs(10),
        "the second writer to wait for the minute's lock",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                r#"
            SELECT count(*)
            FROM pg_locks l
            JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE NOT l.granted AND a.datname = current_database()
            "#,
            )
            .fetch_one(pool)
            .await
            .expect("reading pg_locks");
            (waiting > 0).then_some(())
        },
    )
    .await;
}

/// Commits T1, which holds its minutes, then waits for T2. On plain PostgreSQL T2 must be
/// waiting for T1's minute lock until then (`held` names what T1 holds).
async fn commit_t1_then_t2(
    pool: &PgPool,
    flavour: Flavour,
    t1: sqlx::Transaction<'_, sqlx::Postgres>,
    t2: tokio::task::JoinHandle<()>,
    held: &str,
) {
    if flavour == Flavour::Postgres {
        a_writer_waits_for_the_minute_lock(pool).await;
        assert!(!t2.is_finished(), "T2 finished while T1 still held {held}");
    }
    t1.commit().await.expect("COMMIT T1");
    tokio::time::timeout(Duration::from_secs(30), t2)
        .await
        .expect("T2 to finish")
        .expect("T2 task");
    // On TimescaleDB, what readers see once the edited minutes are refreshed (as the poller
    // does): a refresh that ran meanwhile may have materialized the minute half-way.
    flavour
        .refresh(pool, at("2024-07-03T06:00:00Z"), at("2024-07-03T07:00:00Z"))
        .await
        .expect("refreshing");
}

/// Asserts the stored candle of `symbol` for the minute starting at `minute`.
fn assert_stored(
    got: &BTreeMap<Key, Stored>,
    symbol: &str,
    minute: &str,
    ohlcv: Ohlcv,
    trades: i64,
    context: &str,
) {
    assert_eq!(
        got.get(&(symbol.to_owned(), at(minute).timestamp())),
        Some(&Stored { ohlcv, trades }),
        "{context}"
    );
}

/// T1 writes minute M and holds its transaction open; T2 writes the same minute (on plain
/// PostgreSQL it waits for T1's lock); T1 commits, then T2. The candle counts both.
pub async fn concurrent_writers_of_one_minute(pool: &PgPool, flavour: Flavour) {
    const S: &str = "CON/USD";
    let mut t1 = pool.begin().await.expect("BEGIN T1");
    insert_tick(&mut t1, "2024-07-03T06:25:30Z", S, 10.0, 1.0).await;

    let pool2 = pool.clone();
    let t2 = tokio::spawn(async move {
        let mut t2 = pool2.begin().await.expect("BEGIN T2");
        // Earlier than T1's tick: this one is the open.
        insert_tick(&mut t2, "2024-07-03T06:25:10Z", S, 20.0, 2.0).await;
        t2.commit().await.expect("COMMIT T2");
    });
    commit_t1_then_t2(pool, flavour, t1, t2, "the minute").await;

    let want = Ohlcv {
        open: 20.0,
        high: 20.0,
        low: 10.0,
        close: 10.0,
        volume: 3.0,
    };
    let got = stored_candles(pool).await;
    assert_stored(
        &got,
        S,
        "2024-07-03T06:25:00Z",
        want,
        2,
        "after T1 then T2 committed",
    );
    assert_candles_match_ticks(pool, "after T1 then T2 committed").await;

    // Round two: T1 deletes the open and updates the close, T2 adds a later tick, in the
    // same minute; and both touch a second minute in opposite orders (no deadlock).
    let mut t1 = pool.begin().await.expect("BEGIN T1");
    sqlx::query("DELETE FROM ticks WHERE symbol = $1 AND time = $2")
        .bind(S)
        .bind(at("2024-07-03T06:25:10Z"))
        .execute(&mut *t1)
        .await
        .expect("DELETE in T1");
    sqlx::query("UPDATE ticks SET price = 11.5 WHERE symbol = $1 AND time = $2")
        .bind(S)
        .bind(at("2024-07-03T06:25:30Z"))
        .execute(&mut *t1)
        .await
        .expect("UPDATE in T1");
    insert_tick(&mut t1, "2024-07-03T06:26:05Z", S, 30.0, 0.5).await;
    let pool2 = pool.clone();
    let t2 = tokio::spawn(async move {
        let mut t2 = pool2.begin().await.expect("BEGIN T2");
        sqlx::query(
            "INSERT INTO ticks (time, symbol, price, volume) VALUES ('2024-07-03T06:26:01Z', $1, 31, 0.25), ('2024-07-03T06:25:50Z', $1, 9, 0.75)",
        )
        .bind(S)
        .execute(&mut *t2)
        .await
        .expect("INSERT in T2");
        t2.commit().await.expect("COMMIT T2");
    });
    commit_t1_then_t2(pool, flavour, t1, t2, "its minutes").await;

    let got = stored_candles(pool).await;
    assert_stored(
        &got,
        S,
        "2024-07-03T06:25:00Z",
        Ohlcv {
            open: 11.5,
            high: 11.5,
            low: 9.0,
            close: 9.0,
            volume: 1.75,
        },
        2,
        "minute 06:25 after round two",
    );
    assert_stored(
        &got,
        S,
        "2024-07-03T06:26:00Z",
        Ohlcv {
            open: 31.0,
            high: 31.0,
            low: 30.0,
            close: 30.0,
            volume: 0.75,
        },
        2,
        "minute 06:26 after round two",
    );
    assert_candles_match_ticks(pool, "after round two").await;
}

#[actix_web::test]
async fn two_transactions_writing_one_minute_both_count_in_its_candle() {
    let app = spawn_app().await;
    concurrent_writers_of_one_minute(
        &app.pool,
        Flavour::detect(&app.pool).await.expect("flavour"),
    )
    .await;
}

/// Several writers hammer the same few minutes at once with single-statement transactions;
/// afterwards `one_min_candle` still equals the recomputation.
pub async fn parallel_writers_keep_candles_exact(pool: &PgPool, flavour: Flavour) {
    const WRITERS: i64 = 4;
    const STATEMENTS: usize = 60;
    let base = at("2024-07-03T07:00:00Z").timestamp_micros();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed() ^ (w as u64 + 1));
            let mut done = 0;
            while done < STATEMENTS {
                let minute = rng.random_range(0..4i64);
                let symbol = *["PAR/A", "PAR/B"].choose(&mut rng).expect("symbols");
                // Inserted times are distinct per writer (micros ≡ w mod WRITERS): no key races.
                let micros = base + minute * MINUTE + rng.random_range(0..MINUTE / WRITERS) * WRITERS + w;
                let from = at_micros(base + minute * MINUTE);
                let to = at_micros(base + (minute + rng.random_range(1..=2)) * MINUTE);
                let q = match rng.random_range(0..10) {
                    0..6 => sqlx::query("INSERT INTO ticks VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
                        .bind(at_micros(micros))
                        .bind(symbol)
                        .bind(rng.random_range(1.0..100.0f64))
                        .bind(rng.random_range(0..64) as f64 / 8.0),
                    6..8 => sqlx::query("UPDATE ticks SET price = $4 WHERE symbol = $1 AND time >= $2 AND time < $3")
                        .bind(symbol)
                        .bind(from)
                        .bind(to)
                        .bind(rng.random_range(1.0..100.0f64)),
                    _ => sqlx::query("DELETE FROM ticks WHERE symbol = $1 AND time >= $2 AND time < $3 AND price < $4")
                        .bind(symbol)
                        .bind(from)
                        .bind(to)
                        .bind(rng.random_range(1.0..30.0f64)),
                };
                match q.execute(&pool).await {
                    Ok(_) => done += 1,
                    // Two multi-row statements may lock the same rows in different orders;
                    // PostgreSQL breaks the cycle and the client retries, as any client would.
                    Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("40P01" | "40001")) => {}
                    Err(e) => panic!("writer {w}: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("a writer to finish")
            .expect("writer task");
    }
    flavour
        .refresh(
            pool,
            at_micros(base - MINUTE),
            at_micros(base + 10 * MINUTE),
        )
        .await
        .expect("refreshing");
    let candles = assert_candles_match_ticks(pool, "after parallel writers").await;
    assert!(
        candles >= 4,
        "only {candles} candles after the parallel writers"
    );
}

#[actix_web::test]
async fn parallel_writers_of_the_same_minutes_leave_exact_candles() {
    let app = spawn_app().await;
    parallel_writers_keep_candles_exact(
        &app.pool,
        Flavour::detect(&app.pool).await.expect("flavour"),
    )
    .await;
}

/// Eight connections insert one tick per statement into the same minute at once (the hot
/// symbol of a live feed): every tick counts in the candle, open and close are the earliest
/// and latest, whatever order the inserts commit in.
pub async fn concurrent_inserts_into_one_hot_minute(pool: &PgPool, flavour: Flavour) {
    const WRITERS: i64 = 8;
    const TICKS: i64 = 40;
    let minute = at("2024-07-03T08:00:00Z").timestamp_micros();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await.expect("a connection");
            let mut rng = StdRng::seed_from_u64(seed() ^ (w as u64 + 100));
            for i in 0..TICKS {
                // Distinct times across writers, interleaved through the whole minute.
                let micros = minute + (i * WRITERS + w) * (MINUTE / (TICKS * WRITERS));
                sqlx::query("INSERT INTO ticks VALUES ($1, 'HOT/USD', $2, $3)")
                    .bind(at_micros(micros))
                    .bind(rng.random_range(1.0..100.0f64))
                    .bind(rng.random_range(0..64) as f64 / 8.0)
                    .execute(&mut *conn)
                    .await
                    .unwrap_or_else(|e| panic!("writer {w}: {e}"));
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("a writer to finish")
            .expect("writer task");
    }
    flavour
        .refresh(pool, at_micros(minute - MINUTE), at_micros(minute + MINUTE))
        .await
        .expect("refreshing");
    let got = stored_candles(pool).await;
    let key = ("HOT/USD".to_owned(), minute / 1_000_000);
    assert_eq!(
        got.get(&key).map(|c| c.trades),
        Some(WRITERS * TICKS),
        "every insert counts in the hot minute"
    );
    assert_candles_match_ticks(pool, "after concurrent inserts into one minute").await;
}

#[actix_web::test]
async fn concurrent_inserts_into_one_hot_minute_keep_its_candle_exact() {
    let app = spawn_app().await;
    concurrent_inserts_into_one_hot_minute(
        &app.pool,
        Flavour::detect(&app.pool).await.expect("flavour"),
    )
    .await;
}
