//! A realistic feed's writers: several connections, each sending INSERTs of one row (or small
//! batches) for its own share of the symbols, as fast as the database takes them or at a set
//! rate; every statement's latency is recorded by the second of the minute it completed in.
//!
//! Each writer owns its symbols and gives its rows strictly increasing microsecond times, so
//! no two rows ever share a primary key and no write fails for a duplicate.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use secrecy::SecretString;
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use crate::stats::Summary;

/// What to write.
#[derive(Debug, Clone)]
pub struct Load {
    /// The table written (`ticks` or a baseline with the same columns).
    pub table: String,
    pub writers: usize,
    /// Shared out round-robin: writer `w` writes the symbols at `w`, `w + writers`, ….
    pub symbols: Vec<String>,
    /// Writer 0 writes only the first symbol (a hot one), the others share the rest.
    pub hot_writer: bool,
    /// Rows per INSERT (1: `VALUES`, more: `UNNEST` of arrays, as the API writes).
    pub batch: usize,
    /// Rows per second over all writers; `None`: as fast as each writer's statements return.
    pub rate: Option<f64>,
    pub duration: Duration,
}

/// What one load came to.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub table: String,
    pub writers: usize,
    pub symbols: usize,
    pub batch: usize,
    pub seconds: f64,
    pub rows: u64,
    pub statements: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub rows_per_sec: f64,
    /// Every statement's round trip (commit included: each is its own transaction).
    pub latency: Summary,
    /// Statements completed in the first five seconds of a minute (:00–:04) and in the last
    /// five (:55–:59), over the whole seconds the load covered.
    pub first_5s: MinutePart,
    pub last_5s: MinutePart,
    /// Rows per second in the last five seconds of a minute over the first five.
    pub last_over_first: f64,
}

/// Writes in some seconds of the minute.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MinutePart {
    /// Whole seconds of the load that fell in this part.
    pub seconds: usize,
    pub rows_per_sec: f64,
    pub latency: Summary,
}

/// One writer's record.
struct Record {
    rows: u64,
    statements: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
    first_5s: Histogram<u64>,
    last_5s: Histogram<u64>,
    /// Rows by the Unix second their statement completed in.
    rows_by_second: BTreeMap<i64, u64>,
}

impl Record {
    fn new() -> Self {
        Self {
            rows: 0,
            statements: 0,
            errors: 0,
            first_error: None,
            latency: hist(),
            first_5s: hist(),
            last_5s: hist(),
            rows_by_second: BTreeMap::new(),
        }
    }

    fn add(&mut self, rows: u64, took: Duration, done: DateTime<Utc>) {
        let us = took.as_micros() as u64;
        self.rows += rows;
        self.statements += 1;
        self.latency.record(us).ok();
        match second_of_minute(done) {
            0..5 => self.first_5s.record(us).ok(),
            55..60 => self.last_5s.record(us).ok(),
            _ => None,
        };
        *self.rows_by_second.entry(done.timestamp()).or_default() += rows;
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures are valid")
}

fn second_of_minute(t: DateTime<Utc>) -> i64 {
    t.timestamp().rem_euclid(60)
}

/// Runs `load` on `url`, each writer on its own connection; returns what was written.
pub async fn write(url: &SecretString, load: &Load) -> anyhow::Result<Written> {
    let shares = shares(load);
    let writers = shares.len();
    let mut tasks = Vec::new();
    for (w, symbols) in shares.into_iter().enumerate() {
        let conn = PgConnection::connect_with(&candlewick::db::connect_options(url)?)
            .await
            .context("connecting a writer")?;
        let every = load
            .rate
            .map(|r| Duration::from_secs_f64(writers as f64 * load.batch as f64 / r.max(0.001)));
        tasks.push(tokio::spawn(writer(
            conn,
            load.table.clone(),
            symbols,
            load.batch.max(1),
            every,
            load.duration,
            w as u64,
        )));
    }
    let started = Instant::now();
    let mut records = Vec::new();
    for t in tasks {
        records.push(t.await.context("a writer task")??);
    }
    Ok(sum_up(load, writers, started.elapsed(), &records))
}

/// Each writer's symbols (never empty, never shared).
fn shares(load: &Load) -> Vec<Vec<String>> {
    let split = |symbols: &[String], n: usize| -> Vec<Vec<String>> {
        let n = n.clamp(1, symbols.len().max(1));
        (0..n)
            .map(|w| symbols.iter().skip(w).step_by(n).cloned().collect())
            .filter(|s: &Vec<String>| !s.is_empty())
            .collect()
    };
    match (&load.symbols[..], load.hot_writer && load.writers > 1) {
        ([hot, rest @ ..], true) if !rest.is_empty() => {
            let mut shares = vec![vec![hot.clone()]];
            shares.extend(split(rest, load.writers - 1));
            shares
        }
        (all, _) => split(all, load.writers),
    }
}

/// One writer: INSERTs until `duration` has passed, one every `every` when set.
async fn writer(
    mut conn: PgConnection,
    table: String,
    symbols: Vec<String>,
    batch: usize,
    every: Option<Duration>,
    duration: Duration,
    seed: u64,
) -> anyhow::Result<Record> {
    let one = format!("INSERT INTO {table} (time, symbol, price, volume) VALUES ($1, $2, $3, $4)");
    let many = format!(
        "INSERT INTO {table} (time, symbol, price, volume) \
         SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::float8[], $4::float8[])"
    );
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut record = Record::new();
    let mut last_us = 0i64;
    let mut pace = every.map(|e| {
        let mut i = tokio::time::interval(e);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        i
    });
    let end = Instant::now() + duration;
    while Instant::now() < end {
        if let Some(pace) = &mut pace {
            pace.tick().await;
        }
        // Strictly increasing times per writer: its rows never collide.
        let now_us = Utc::now().timestamp_micros();
        let first_us = now_us.max(last_us + 1);
        last_us = first_us + batch as i64 - 1;
        let times: Vec<DateTime<Utc>> = (0..batch as i64)
            .filter_map(|i| DateTime::from_timestamp_micros(first_us + i))
            .collect();
        let names: Vec<&str> = (0..batch)
            .map(|_| symbols[rng.random_range(0..symbols.len())].as_str())
            .collect();
        let prices: Vec<f64> = (0..batch).map(|_| rng.random_range(90.0..110.0)).collect();
        let volumes: Vec<f64> = (0..batch).map(|_| rng.random_range(0.001..1.0)).collect();
        let started = Instant::now();
        let done = if batch == 1 {
            sqlx::query(sqlx::AssertSqlSafe(one.clone()))
                .bind(times[0])
                .bind(names[0])
                .bind(prices[0])
                .bind(volumes[0])
                .execute(&mut conn)
                .await
        } else {
            sqlx::query(sqlx::AssertSqlSafe(many.clone()))
                .bind(&times)
                .bind(&names)
                .bind(&prices)
                .bind(&volumes)
                .execute(&mut conn)
                .await
        };
        let took = started.elapsed();
        match done {
            Ok(_) => record.add(batch as u64, took, Utc::now()),
            Err(e) => {
                record.errors += 1;
                record.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    conn.close().await.ok();
    Ok(record)
}

fn sum_up(load: &Load, writers: usize, elapsed: Duration, records: &[Record]) -> Written {
    let mut latency = hist();
    let mut first = hist();
    let mut last = hist();
    let mut by_second: BTreeMap<i64, u64> = BTreeMap::new();
    for r in records {
        latency.add(&r.latency).ok();
        first.add(&r.first_5s).ok();
        last.add(&r.last_5s).ok();
        for (s, n) in &r.rows_by_second {
            *by_second.entry(*s).or_default() += n;
        }
    }
    // The first and last seconds are partly outside the load.
    let whole: Vec<(i64, u64)> = match (by_second.keys().next(), by_second.keys().last()) {
        (Some(&a), Some(&b)) => by_second
            .iter()
            .filter(|(s, _)| **s > a && **s < b)
            .map(|(s, n)| (*s, *n))
            .collect(),
        _ => Vec::new(),
    };
    let part = |range: std::ops::Range<i64>, hist: &Histogram<u64>| {
        let seconds: Vec<u64> = whole
            .iter()
            .filter(|(s, _)| range.contains(&s.rem_euclid(60)))
            .map(|(_, n)| *n)
            .collect();
        MinutePart {
            seconds: seconds.len(),
            rows_per_sec: if seconds.is_empty() {
                0.0
            } else {
                seconds.iter().sum::<u64>() as f64 / seconds.len() as f64
            },
            latency: Summary::of_hist(hist),
        }
    };
    let first_5s = part(0..5, &first);
    let last_5s = part(55..60, &last);
    let rows: u64 = records.iter().map(|r| r.rows).sum();
    let seconds = elapsed.as_secs_f64();
    Written {
        table: load.table.clone(),
        writers,
        symbols: load.symbols.len(),
        batch: load.batch,
        seconds,
        rows,
        statements: records.iter().map(|r| r.statements).sum(),
        errors: records.iter().map(|r| r.errors).sum(),
        first_error: records.iter().find_map(|r| r.first_error.clone()),
        rows_per_sec: rows as f64 / seconds,
        latency: Summary::of_hist(&latency),
        last_over_first: if first_5s.rows_per_sec > 0.0 {
            (last_5s.rows_per_sec / first_5s.rows_per_sec * 1000.0).round() / 1000.0
        } else {
            0.0
        },
        first_5s,
        last_5s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(symbols: usize, writers: usize, hot_writer: bool) -> Load {
        Load {
            table: "t".into(),
            writers,
            symbols: (0..symbols).map(|i| format!("S{i}")).collect(),
            hot_writer,
            batch: 1,
            rate: None,
            duration: Duration::from_secs(1),
        }
    }

    #[test]
    fn writers_own_their_symbols_and_a_hot_writer_has_one() {
        let shares = shares(&load(7, 3, false));
        assert_eq!(
            shares,
            [vec!["S0", "S3", "S6"], vec!["S1", "S4"], vec!["S2", "S5"]]
        );
        let hot = super::shares(&load(7, 3, true));
        assert_eq!(
            hot,
            [vec!["S0"], vec!["S1", "S3", "S5"], vec!["S2", "S4", "S6"]]
        );
        assert_eq!(
            super::shares(&load(2, 4, false)).len(),
            2,
            "no writer without symbols"
        );
    }

    fn at(unix: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(unix, 0).unwrap_or_default()
    }

    #[test]
    fn rates_by_part_of_the_minute_count_only_whole_seconds() {
        let mut r = Record::new();
        // 11:59:58 (partial: the load's first second) … 12:01:02 (partial: its last), 10 rows
        // in each whole second between.
        for s in 58..=122 {
            let n = if s == 58 || s == 122 { 1 } else { 10 };
            for _ in 0..n {
                r.add(1, Duration::from_millis(2), at(3600 * 12 - 60 + s));
            }
        }
        let load = Load {
            table: "t".into(),
            writers: 1,
            symbols: vec!["A".into()],
            hot_writer: false,
            batch: 1,
            rate: None,
            duration: Duration::from_secs(64),
        };
        let w = sum_up(&load, 1, Duration::from_secs(64), &[r]);
        assert_eq!(w.first_5s.seconds, 7, "12:00:00–04 and 12:01:00–01");
        assert_eq!(w.first_5s.rows_per_sec, 10.0);
        assert_eq!(w.last_5s.seconds, 6, "11:59:59 and 12:00:55–59");
        assert_eq!(w.last_over_first, 1.0);
        assert_eq!(w.latency.p50_ms, 2.0);
    }
}
