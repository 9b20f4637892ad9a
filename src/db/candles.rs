//! Candle reads from `one_min_candle`, `one_hour_candle` and `one_day_candle` (continuous
//! aggregates or maintained tables) for the API and snapshots: any range of all stored
//! history, newest first, paged back with `before`.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

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

/// The newest `limit` candles of `range` (bounds are `coalesce`d rather than `IS NULL OR`ed, so
/// they stay index conditions in a prepared statement's generic plan). 1m, 1h and 1d candles
/// are stored (the hour and day rollups are kept exact on every write): they are read by the
/// index in order. 5m, 15m and 4h ones are rolled up from the nearest finer rollup over a span
/// that holds `limit` of them when the history has no gaps, widened (doubling) until it holds
/// enough or reaches the oldest candle: the cost follows the page, not the history stored.
#[tracing::instrument(name = "Fetch candles", skip(pool))]
pub async fn fetch_candles(pool: &PgPool, range: &CandleRange) -> anyhow::Result<Vec<CandleRow>> {
    let secs = range.interval.seconds();
    // A bucket starting before `to` is whole: its later minutes count too.
    let upper = range.to.map(|t| ceil_to(t, secs));
    let lower = range.from.map(|t| floor_to(t, secs));
    let source = Source::of(range.interval);
    if source.seconds() == secs {
        return stored(pool, source, &range.symbol, lower, upper, range.limit).await;
    }
    let Some((oldest, newest)) = stored_span(pool, source, &range.symbol, upper).await? else {
        return Ok(Vec::new());
    };
    let newest = floor_to(newest, secs) + chrono::Duration::seconds(secs);
    let floor = lower.map_or(floor_to(oldest, secs), |l| l.max(floor_to(oldest, secs)));
    let mut span = chrono::Duration::seconds(secs.saturating_mul(range.limit.max(1)));
    loop {
        let start = (newest - span).max(floor);
        let rows = rolled_up(
            pool,
            source,
            &range.symbol,
            range.interval,
            start,
            newest,
            range.limit,
        )
        .await?;
        if rows.len() as i64 >= range.limit || start <= floor {
            return Ok(rows);
        }
        span = span * 2;
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
            concat!(
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
            )
        };
    }
    let view = per_source!(source, view_name);
    let materialized: Option<(String, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT relation, watermark FROM candlewick_materialized($1)")
            .bind(view)
            .fetch_optional(pool)
            .await
            .context("finding the materialized candles")?;
    // TimescaleDB: the real-time tail through the view, then the materialized rows straight
    // from their hypertable in index order (through the view every matching row is sorted).
    let Some((relation, Some(watermark))) = materialized else {
        // Plain PostgreSQL's tables, or nothing materialized yet (or a watermark chrono cannot
        // hold): all of it through the view.
        return sqlx::query_as(per_source!(source, sql))
            .bind(symbol)
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all(pool)
            .await
            .context("reading candles");
    };
    let mut rows: Vec<CandleRow> = Vec::new();
    if to.is_none_or(|t| t > watermark) {
        rows = sqlx::query_as(per_source!(source, sql))
            .bind(symbol)
            .bind(from.map_or(watermark, |f| f.max(watermark)))
            .bind(to)
            .bind(limit)
            .fetch_all(pool)
            .await
            .context("reading the real-time candles")?;
    }
    let left = limit - rows.len() as i64;
    if left > 0 && from.is_none_or(|f| f < watermark) {
        let upper = to.map_or(watermark, |t| t.min(watermark));
        // `relation` comes from TimescaleDB's catalog, never from input.
        let sql = format!(
            concat!(
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
            ),
            relation
        );
        let older: Vec<CandleRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(symbol)
            .bind(from)
            .bind(upper)
            .bind(left)
            .fetch_all(pool)
            .await
            .context("reading materialized candles")?;
        rows.extend(older);
    }
    Ok(rows)
}

/// The oldest and the newest bucket of `symbol` in `source` before `to` (two index probes).
async fn stored_span(
    pool: &PgPool,
    source: Source,
    symbol: &str,
    to: Option<DateTime<Utc>>,
) -> anyhow::Result<Option<(DateTime<Utc>, DateTime<Utc>)>> {
    macro_rules! sql {
        ($relation:literal) => {
            concat!(
                r#"
                SELECT min(bucket), max(bucket)
                FROM "#,
                $relation,
                r#"
                WHERE symbol = $1
                  AND "#,
                storable_time_sql!("bucket"),
                r#"
                  AND bucket < coalesce($2::timestamptz, 'infinity')
                "#
            )
        };
    }
    let (oldest, newest): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        sqlx::query_as(per_source!(source, sql))
            .bind(symbol)
            .bind(to)
            .fetch_one(pool)
            .await
            .context("finding the stored span")?;
    Ok(oldest.zip(newest))
}

/// `interval` candles rolled up from the `source` candles in `[from, to)`, newest first.
async fn rolled_up(
    pool: &PgPool,
    source: Source,
    symbol: &str,
    interval: Interval,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i64,
) -> anyhow::Result<Vec<CandleRow>> {
    macro_rules! sql {
        ($relation:literal) => {
            concat!(
                r#"
                SELECT
                    date_bin(make_interval(secs => $2), bucket, 'epoch') AS bucket,
                    (array_agg(open ORDER BY bucket))[1] AS open,
                    max(high) AS high,
                    min(low) AS low,
                    (array_agg(close ORDER BY bucket DESC))[1] AS close,
                    sum(volume) AS volume
                FROM "#,
                $relation,
                r#"
                WHERE symbol = $1
                  AND bucket >= $3
                  AND bucket < $4
                GROUP BY 1
                ORDER BY 1 DESC
                LIMIT $5
                "#
            )
        };
    }
    sqlx::query_as(per_source!(source, sql))
        .bind(symbol)
        .bind(interval.seconds() as f64)
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(pool)
        .await
        .context("rolling up candles")
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
}
