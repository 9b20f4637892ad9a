//! Candle reads from `one_min_candle`, `one_hour_candle` and `one_day_candle` (continuous
//! aggregates or maintained tables) for the API and snapshots: any range of all stored
//! history, newest first, paged back with `before`.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::arrays::{Floats, Times};
use super::storable_time_sql;
use crate::domain::Interval;

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct CandleRow {
    pub bucket: DateTime<Utc>,
    pub open: Option<f64>,
    pub high: Option<f64>,
    pub low: Option<f64>,
    pub close: Option<f64>,
    pub volume: Option<f64>,
}

/// Which candles: `[from, to)`, newest first, at most `limit`.
#[derive(Debug, Clone)]
pub struct CandleRange {
    pub symbol: String,
    pub interval: Interval,
    /// Buckets that start at or after this (rounded down to the interval).
    pub from: Option<DateTime<Utc>>,
    /// Buckets that start before this.
    pub to: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// Where candles of an interval are read: a relation holding them (1m, 1h, 1d), or rolled up
/// at read time from the nearest finer one (5m and 15m from minutes, 4h from hours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Minutes,
    Hours,
    Days,
}

impl Source {
    fn seconds(self) -> i64 {
        match self {
            Self::Minutes => 60,
            Self::Hours => 3_600,
            Self::Days => 86_400,
        }
    }

    /// The nearest relation whose buckets divide `interval`'s.
    fn of(interval: Interval) -> Self {
        match interval {
            Interval::M1 | Interval::M5 | Interval::M15 => Self::Minutes,
            Interval::H1 | Interval::H4 => Self::Hours,
            Interval::D1 => Self::Days,
        }
    }
}

/// The same query over each of the three relations (their names are fixed, never input).
macro_rules! per_source {
    ($source:expr, $sql:ident) => {
        match $source {
            Source::Minutes => $sql!("one_min_candle"),
            Source::Hours => $sql!("one_hour_candle"),
            Source::Days => $sql!("one_day_candle"),
        }
    };
}

macro_rules! view_name {
    ($relation:literal) => {
        $relation
    };
}

/// A page statement as one row of six arrays, in the page's order: a row per candle cost the
/// server ~0.8 µs each in the driver's per-row machinery (a 15m page reads 15,015 minutes),
/// while PostgreSQL builds the arrays in a fraction of that and they decode in one loop.
macro_rules! columns_sql {
    ($page:expr) => {
        concat!(
            "SELECT array_agg(bucket) AS bucket, array_agg(open) AS open, array_agg(high) AS high,
                    array_agg(low) AS low, array_agg(close) AS close, array_agg(volume) AS volume
             FROM (",
            $page,
            ") AS page"
        )
    };
}

/// A page of plain PostgreSQL's `one_hour_candle` or `one_day_candle` (migration 0009), whose
/// union PostgreSQL sorts whole: the stored rows but the pending ones, newest first by the
/// index and no more than the page, beside the handful of pending buckets folded at read time;
/// only those are sorted.
macro_rules! plain_rollup_sql {
    ("one_min_candle") => {
        unreachable!("minutes are not rolled up")
    };
    ("one_hour_candle") => {
        plain_rollup_sql!(
            "candlewick_hour_candles",
            "candlewick_pending_hours",
            "candlewick_pending_hour_candles"
        )
    };
    ("one_day_candle") => {
        plain_rollup_sql!(
            "candlewick_day_candles",
            "candlewick_pending_days",
            "candlewick_pending_day_candles"
        )
    };
    ($stored:literal, $pending:literal, $folded:literal) => {
        columns_sql!(concat!(
            r#"
            SELECT bucket, open, high, low, close, volume FROM (
                (SELECT s.bucket, s.open, s.high, s.low, s.close, s.volume
                 FROM "#,
            $stored,
            r#" s
                 WHERE s.symbol = $1
                   AND "#,
            storable_time_sql!("s.bucket"),
            r#"
                   AND s.bucket >= coalesce($2::timestamptz, '-infinity')
                   AND s.bucket < coalesce($3::timestamptz, 'infinity')
                   AND (s.symbol, s.bucket) NOT IN (SELECT p.symbol, p.bucket FROM "#,
            $pending,
            r#"() p)
                 ORDER BY s.bucket DESC
                 LIMIT $4)
                UNION ALL
                (SELECT f.bucket, f.open, f.high, f.low, f.close, f.volume
                 FROM "#,
            $folded,
            r#"() f
                 WHERE f.symbol = $1
                   AND "#,
            storable_time_sql!("f.bucket"),
            r#"
                   AND f.bucket >= coalesce($2::timestamptz, '-infinity')
                   AND f.bucket < coalesce($3::timestamptz, 'infinity'))
            ) AS page
            ORDER BY bucket DESC
            LIMIT $4
            "#
        ))
    };
}

/// Where an aggregate's materialized rows are and where they end (TimescaleDB), or `None`.
type Materialized = Option<(String, Option<DateTime<Utc>>)>;

/// How long [`materialized`] answers from memory. A remembered watermark is at or below the
/// true one (refreshes only move it forward), and below the watermark the materialization and
/// the real-time view agree while above it the view is exact: reads stay exact, and a page no
/// longer costs a third round trip.
const MATERIALIZED_TTL: Duration = Duration::from_secs(1);

/// Per database (host, port, name) and view: when read, and what.
type MaterializedCache = Mutex<HashMap<(String, &'static str), (Instant, Materialized)>>;
static MATERIALIZED: LazyLock<MaterializedCache> = LazyLock::new(Default::default);

async fn materialized(pool: &PgPool, view: &'static str) -> anyhow::Result<Materialized> {
    let options = pool.connect_options();
    let key = (
        format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        ),
        view,
    );
    let remembered = MATERIALIZED
        .lock()
        .ok()
        .and_then(|cache| cache.get(&key).cloned())
        .filter(|(at, _)| at.elapsed() < MATERIALIZED_TTL);
    if let Some((_, answer)) = remembered {
        return Ok(answer);
    }
    let answer: Materialized =
        sqlx::query_as("SELECT relation, watermark FROM candlewick_materialized($1)")
            .bind(view)
            .fetch_optional(pool)
            .await
            .context("finding the materialized candles")?;
    if let Ok(mut cache) = MATERIALIZED.lock() {
        cache.insert(key, (Instant::now(), answer.clone()));
    }
    Ok(answer)
}

/// The newest `limit` candles of `range` (bounds are `coalesce`d rather than `IS NULL OR`ed, so
/// they stay index conditions in a prepared statement's generic plan). 1m, 1h and 1d candles
/// are stored (the hour and day rollups are kept exact on every write): they are read by the
/// index in order. 5m, 15m and 4h ones are rolled up here from the nearest finer rollup, read
/// the same way, newest first, in batches of as many rows as the missing bars can hold, until
/// `limit` bars are whole or the rows run out: the cost follows the page, not the history
/// stored (a `GROUP BY date_bin(…)` in SQL sorted or hashed every row of the span instead, and
/// on TimescaleDB went through the real-time view).
#[tracing::instrument(name = "Fetch candles", skip(pool))]
pub async fn fetch_candles(pool: &PgPool, range: &CandleRange) -> anyhow::Result<Vec<CandleRow>> {
    let secs = range.interval.seconds();
    // A bucket starting before `to` is whole: its later minutes count too.
    let upper = range.to.map(|t| ceil_to(t, secs));
    let lower = range.from.map(|t| floor_to(t, secs));
    let source = Source::of(range.interval);
    let limit = range.limit.max(1);
    if source.seconds() == secs {
        return stored(pool, source, &range.symbol, lower, upper, limit).await;
    }
    let per_bar = secs / source.seconds();
    let mut rollup = Rollup::new(secs, usize::try_from(limit).unwrap_or(usize::MAX));
    let mut before = upper;
    loop {
        // Enough rows for the bars still missing and the one being rolled up, when whole.
        let missing = i64::try_from(rollup.missing()).unwrap_or(i64::MAX);
        let batch = missing.saturating_add(1).saturating_mul(per_bar);
        // Only the bar being rolled up is missing: read no further back than its start.
        let from = match rollup.last_needed() {
            Some(start) => Some(lower.map_or(start, |l| l.max(start))),
            None => lower,
        };
        let rows = stored(pool, source, &range.symbol, from, before, batch).await?;
        let short = (rows.len() as i64) < batch;
        before = rows.last().map(|r| r.bucket);
        for row in rows {
            if rollup.push(row) {
                return Ok(rollup.finish());
            }
        }
        if short || before.is_none() {
            return Ok(rollup.finish());
        }
    }
}

/// Rolls finer candles, pushed newest first, up into bars `secs` wide: open of the oldest, close
/// of the newest, high and low over all, volume summed oldest first (as the ticks are).
struct Rollup {
    secs: i64,
    limit: usize,
    done: Vec<CandleRow>,
    /// The bar being rolled up and its rows so far (newest first).
    current: Option<(DateTime<Utc>, Vec<CandleRow>)>,
}

impl Rollup {
    fn new(secs: i64, limit: usize) -> Self {
        Self {
            secs,
            limit,
            done: Vec::new(),
            current: None,
        }
    }

    /// Bars still missing, the one being rolled up included.
    fn missing(&self) -> usize {
        self.limit.saturating_sub(self.done.len())
    }

    /// The start of the bar being rolled up when it is the last one needed.
    fn last_needed(&self) -> Option<DateTime<Utc>> {
        match &self.current {
            Some((bucket, _)) if self.missing() == 1 => Some(*bucket),
            _ => None,
        }
    }

    /// Adds the next older row; returns whether `limit` bars are whole (this row starts the
    /// bar after them and is not needed).
    fn push(&mut self, row: CandleRow) -> bool {
        let bucket = floor_to(row.bucket, self.secs);
        match &mut self.current {
            Some((b, rows)) if *b == bucket => rows.push(row),
            _ => {
                if let Some((b, rows)) = self.current.take() {
                    self.done.push(combine(b, &rows));
                }
                if self.done.len() >= self.limit {
                    return true;
                }
                self.current = Some((bucket, vec![row]));
            }
        }
        false
    }

    /// The bars, newest first.
    fn finish(mut self) -> Vec<CandleRow> {
        if self.done.len() < self.limit
            && let Some((b, rows)) = self.current.take()
        {
            self.done.push(combine(b, &rows));
        }
        self.done
    }
}

/// One bar from its rows, newest first (what `(array_agg(open ORDER BY bucket))[1]`, `max`,
/// `min`, `(array_agg(close ORDER BY bucket DESC))[1]` and `sum` give in SQL).
fn combine(bucket: DateTime<Utc>, rows: &[CandleRow]) -> CandleRow {
    fn fold(values: impl Iterator<Item = Option<f64>>, f: fn(f64, f64) -> f64) -> Option<f64> {
        values.flatten().reduce(f)
    }
    CandleRow {
        bucket,
        open: rows.last().and_then(|r| r.open),
        high: fold(rows.iter().map(|r| r.high), f64::max),
        low: fold(rows.iter().map(|r| r.low), f64::min),
        close: rows.first().and_then(|r| r.close),
        volume: fold(rows.iter().rev().map(|r| r.volume), |a, b| a + b),
    }
}

fn floor_to(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(secs) * secs, 0).unwrap_or(t)
}

fn ceil_to(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    let floor = floor_to(t, secs);
    if floor == t && t.timestamp_subsec_nanos() == 0 {
        t
    } else {
        floor + chrono::Duration::seconds(secs)
    }
}

/// A page as [`columns_sql`] returns it (`NULL`s when it is empty).
#[derive(sqlx::FromRow)]
struct Columns {
    bucket: Option<Times>,
    open: Option<Floats>,
    high: Option<Floats>,
    low: Option<Floats>,
    close: Option<Floats>,
    volume: Option<Floats>,
}

impl Columns {
    /// The rows, newest first. `array_agg` keeps the order of a sorted subquery as it is read
    /// here, which PostgreSQL does not promise in general: a page out of order is sorted.
    fn into_rows(self) -> anyhow::Result<Vec<CandleRow>> {
        let buckets = self.bucket.unwrap_or_default().0;
        let n = buckets.len();
        let column = |values: Option<Floats>| {
            let values = values.unwrap_or_default().0;
            anyhow::ensure!(values.len() == n, "a candle column of another length");
            Ok(values)
        };
        let (open, high, low, close, volume) = (
            column(self.open)?,
            column(self.high)?,
            column(self.low)?,
            column(self.close)?,
            column(self.volume)?,
        );
        let mut rows: Vec<CandleRow> = buckets
            .into_iter()
            .zip(open)
            .zip(high)
            .zip(low)
            .zip(close)
            .zip(volume)
            .map(
                |(((((bucket, open), high), low), close), volume)| CandleRow {
                    bucket,
                    open,
                    high,
                    low,
                    close,
                    volume,
                },
            )
            .collect();
        if !rows.is_sorted_by(|a, b| a.bucket > b.bucket) {
            rows.sort_unstable_by_key(|r| std::cmp::Reverse(r.bucket));
        }
        Ok(rows)
    }
}

/// Runs a [`columns_sql`] page statement: `$1` the symbol, `$2`/`$3` the bounds, `$4` the limit.
async fn read_page(
    pool: &PgPool,
    sql: impl sqlx::SqlSafeStr,
    symbol: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: i64,
    what: &'static str,
) -> anyhow::Result<Vec<CandleRow>> {
    let columns: Columns = sqlx::query_as(sql)
        .bind(symbol)
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_one(pool)
        .await
        .context(what)?;
    columns.into_rows().context(what)
}

async fn stored(
    pool: &PgPool,
    source: Source,
    symbol: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: i64,
) -> anyhow::Result<Vec<CandleRow>> {
    macro_rules! sql {
        ($relation:literal) => {
            columns_sql!(concat!(
                r#"
                SELECT bucket, open, high, low, close, volume
                FROM "#,
                $relation,
                r#"
                WHERE symbol = $1
                  AND "#,
                storable_time_sql!("bucket"),
                r#"
                  AND bucket >= coalesce($2::timestamptz, '-infinity')
                  AND bucket < coalesce($3::timestamptz, 'infinity')
                ORDER BY bucket DESC
                LIMIT $4
                "#
            ))
        };
    }
    let materialized = materialized(pool, per_source!(source, view_name)).await?;
    if materialized.is_none() && source != Source::Minutes {
        // Plain PostgreSQL's hour and day views are a union PostgreSQL does not read in order
        // (migration 0009): read their halves apart.
        let sql = per_source!(source, plain_rollup_sql);
        return read_page(
            pool,
            sql,
            symbol,
            from,
            to,
            limit,
            "reading rolled-up candles",
        )
        .await;
    }
    // TimescaleDB: the real-time tail through the view, then the materialized rows straight
    // from their hypertable in index order (through the view every matching row is sorted).
    let Some((relation, Some(watermark))) = materialized else {
        // Plain PostgreSQL's minutes, or nothing materialized yet (or a watermark chrono cannot
        // hold): all of it through the view.
        let sql = per_source!(source, sql);
        return read_page(pool, sql, symbol, from, to, limit, "reading candles").await;
    };
    let mut rows: Vec<CandleRow> = Vec::new();
    if to.is_none_or(|t| t > watermark) {
        rows = read_page(
            pool,
            per_source!(source, sql),
            symbol,
            Some(from.map_or(watermark, |f| f.max(watermark))),
            to,
            limit,
            "reading the real-time candles",
        )
        .await?;
    }
    let left = limit - rows.len() as i64;
    if left > 0 && from.is_none_or(|f| f < watermark) {
        let upper = to.map_or(watermark, |t| t.min(watermark));
        // `relation` comes from TimescaleDB's catalog, never from input.
        let sql = format!(
            columns_sql!(concat!(
                r#"
                SELECT bucket, open, high, low, close, volume
                FROM {}
                WHERE symbol = $1
                  AND "#,
                storable_time_sql!("bucket"),
                r#"
                  AND bucket >= coalesce($2::timestamptz, '-infinity')
                  AND bucket < $3
                ORDER BY bucket DESC
                LIMIT $4
                "#
            )),
            relation
        );
        let older = read_page(
            pool,
            sqlx::AssertSqlSafe(sql),
            symbol,
            from,
            Some(upper),
            left,
            "reading materialized candles",
        )
        .await?;
        rows.extend(older);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap_or_default()
    }

    #[test]
    fn bounds_round_to_whole_buckets() {
        assert_eq!(floor_to(t(3_599), 3_600), t(0));
        assert_eq!(ceil_to(t(3_600), 3_600), t(3_600));
        assert_eq!(ceil_to(t(3_601), 3_600), t(7_200));
        assert_eq!(ceil_to(t(-1), 60), t(0));
    }

    fn row(minute: i64, price: f64, volume: f64) -> CandleRow {
        CandleRow {
            bucket: t(minute * 60),
            open: Some(price),
            high: Some(price + 1.0),
            low: Some(price - 1.0),
            close: Some(price + 0.5),
            volume: Some(volume),
        }
    }

    #[test]
    fn rows_pushed_newest_first_roll_up_into_whole_bars() {
        // Minutes 0..=11 with minute 6 missing, at 5m: bars at 10 (10, 11), 5 (5, 7..9), 0.
        let mut rollup = Rollup::new(300, 10);
        for m in (0..12).rev().filter(|m| *m != 6) {
            assert!(!rollup.push(row(m, m as f64, 1.0)));
        }
        let bars = rollup.finish();
        assert_eq!(
            bars.iter()
                .map(|b| b.bucket.timestamp())
                .collect::<Vec<_>>(),
            vec![600, 300, 0]
        );
        let five = &bars[1];
        assert_eq!(five.open, Some(5.0), "the oldest minute's open");
        assert_eq!(five.close, Some(9.5), "the newest minute's close");
        assert_eq!((five.high, five.low), (Some(10.0), Some(4.0)));
        assert_eq!(five.volume, Some(4.0));
    }

    #[test]
    fn a_rollup_stops_at_the_row_after_limit_bars_and_asks_only_for_the_last_bar() {
        let mut rollup = Rollup::new(300, 2);
        for m in [14, 13, 12, 11, 10, 9] {
            assert!(!rollup.push(row(m, 1.0, 1.0)));
        }
        assert_eq!(rollup.missing(), 1);
        assert_eq!(rollup.last_needed(), Some(t(300)), "only bar 5 is missing");
        assert!(rollup.push(row(4, 1.0, 1.0)), "bar 0 is not needed");
        let bars = rollup.finish();
        assert_eq!(bars.len(), 2);
        assert_eq!(bars[1].volume, Some(1.0), "bar 5 holds minute 9 only");
    }

    #[test]
    fn empty_values_are_left_out_as_sql_aggregates_leave_out_null() {
        let mut rollup = Rollup::new(300, 1);
        let mut gap = row(1, 7.0, 2.0);
        gap.high = None;
        gap.volume = None;
        rollup.push(row(2, 3.0, 1.0));
        rollup.push(gap);
        let bar = &rollup.finish()[0];
        assert_eq!(
            (bar.high, bar.volume, bar.open),
            (Some(4.0), Some(1.0), Some(7.0))
        );
    }
}
