//! Candle reads from `one_min_candle` (a continuous aggregate or a maintained table) for the
//! API: any range of all stored history, newest first, paged back with `before`.

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

/// The newest `limit` candles of `range` (bounds are `coalesce`d rather than `IS NULL OR`ed, so
/// they stay index conditions in a prepared statement's generic plan). 1m candles are read by the index in order; wider
/// ones are rolled up from 1m candles over a span that holds `limit` of them when the history
/// has no gaps, widened (doubling) until it holds enough or reaches the oldest candle: the
/// cost follows the page, not the history stored.
#[tracing::instrument(name = "Fetch candles", skip(pool))]
pub async fn fetch_candles(pool: &PgPool, range: &CandleRange) -> anyhow::Result<Vec<CandleRow>> {
    let secs = range.interval.seconds();
    // A bucket starting before `to` is whole: its later minutes count too.
    let upper = range.to.map(|t| ceil_to(t, secs));
    let lower = range.from.map(|t| floor_to(t, secs));
    if range.interval == Interval::M1 {
        return minutes(pool, &range.symbol, lower, upper, range.limit).await;
    }
    let Some((oldest, newest)) = stored_span(pool, &range.symbol, upper).await? else {
        return Ok(Vec::new());
    };
    let newest = floor_to(newest, secs) + chrono::Duration::seconds(secs);
    let floor = lower.map_or(floor_to(oldest, secs), |l| l.max(floor_to(oldest, secs)));
    let mut span = chrono::Duration::seconds(secs.saturating_mul(range.limit.max(1)));
    loop {
        let start = (newest - span).max(floor);
        let rows = rolled_up(
            pool,
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

async fn minutes(
    pool: &PgPool,
    symbol: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: i64,
) -> anyhow::Result<Vec<CandleRow>> {
    sqlx::query_as(concat!(
        r#"
        SELECT bucket, open, high, low, close, volume
        FROM one_min_candle
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
    .bind(symbol)
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(pool)
    .await
    .context("reading candles")
}

/// The oldest and the newest 1m bucket of `symbol` before `to` (two index probes).
async fn stored_span(
    pool: &PgPool,
    symbol: &str,
    to: Option<DateTime<Utc>>,
) -> anyhow::Result<Option<(DateTime<Utc>, DateTime<Utc>)>> {
    let (oldest, newest): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = sqlx::query_as(concat!(
        r#"
        SELECT min(bucket), max(bucket)
        FROM one_min_candle
        WHERE symbol = $1
          AND "#,
        storable_time_sql!("bucket"),
        r#"
          AND bucket < coalesce($2::timestamptz, 'infinity')
        "#
    ))
    .bind(symbol)
    .bind(to)
    .fetch_one(pool)
    .await
    .context("finding the stored span")?;
    Ok(oldest.zip(newest))
}

/// `interval` candles rolled up from the 1m candles in `[from, to)`, newest first.
async fn rolled_up(
    pool: &PgPool,
    symbol: &str,
    interval: Interval,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i64,
) -> anyhow::Result<Vec<CandleRow>> {
    sqlx::query_as(
        r#"
        SELECT
            date_bin(make_interval(secs => $2), bucket, 'epoch') AS bucket,
            (array_agg(open ORDER BY bucket))[1] AS open,
            max(high) AS high,
            min(low) AS low,
            (array_agg(close ORDER BY bucket DESC))[1] AS close,
            sum(volume) AS volume
        FROM one_min_candle
        WHERE symbol = $1
          AND bucket >= $3
          AND bucket < $4
        GROUP BY 1
        ORDER BY 1 DESC
        LIMIT $5
        "#,
    )
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
