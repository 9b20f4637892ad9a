//! The poll's re-reads of changed buckets, every held channel's in one statement: a poll with
//! changes in many wide channels (5m, 15m, 1h, 4h, 1d of many symbols) costs one round trip,
//! not one per channel. Each range is read as [`super::candles::fetch_candles`] reads it: 1m,
//! 1h and 1d from their relation, 5m, 15m and 4h rolled up from the nearest finer one.

use anyhow::Context;
use chrono::{DateTime, Utc};

use sqlx::PgPool;

use super::candles::CandleRow;
use crate::domain::Interval;

/// Bars of one channel in `[from, to)` (Unix seconds, whole buckets of `interval`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reread {
    pub symbol: String,
    pub interval: Interval,
    pub from: i64,
    pub to: i64,
}

/// Which relation holds (or rolls up into) an interval's bars: 0 minutes, 1 hours, 2 days.
fn source(interval: Interval) -> i32 {
    match interval {
        Interval::M1 | Interval::M5 | Interval::M15 => 0,
        Interval::H1 | Interval::H4 => 1,
        Interval::D1 => 2,
    }
}

/// The bars of every range, ascending, in the order asked; one statement for all of them.
#[tracing::instrument(name = "Read changed buckets again", skip_all, fields(ranges = ranges.len()))]
pub async fn fetch_rereads(
    pool: &PgPool,
    ranges: &[Reread],
) -> anyhow::Result<Vec<Vec<CandleRow>>> {
    let mut out = vec![Vec::new(); ranges.len()];
    if ranges.is_empty() {
        return Ok(out);
    }
    let index: Vec<i32> = (0..ranges.len() as i32).collect();
    let symbols: Vec<&str> = ranges.iter().map(|r| r.symbol.as_str()).collect();
    let sources: Vec<i32> = ranges.iter().map(|r| source(r.interval)).collect();
    let secs: Vec<f64> = ranges.iter().map(|r| r.interval.seconds() as f64).collect();
    let time = |t: i64| DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default();
    let from: Vec<DateTime<Utc>> = ranges.iter().map(|r| time(r.from)).collect();
    let to: Vec<DateTime<Utc>> = ranges.iter().map(|r| time(r.to)).collect();
    #[derive(sqlx::FromRow)]
    struct Row {
        i: i32,
        #[sqlx(flatten)]
        candle: CandleRow,
    }
    // Each range reads only its own relation: the other two branches are skipped by their
    // one-time filter on `r.source`.
    let rows: Vec<Row> = sqlx::query_as(
        r#"
        WITH r AS (
            SELECT *
            FROM unnest($1::int[], $2::text[], $3::int[], $4::float8[], $5::timestamptz[], $6::timestamptz[])
                AS r(i, symbol, source, secs, lo, hi)
        ),
        bars AS (
            SELECT r.i, r.secs, m.bucket, m.open, m.high, m.low, m.close, m.volume
            FROM r
            CROSS JOIN LATERAL (
                SELECT c.bucket, c.open, c.high, c.low, c.close, c.volume
                FROM one_min_candle c
                WHERE r.source = 0
                  AND c.symbol = r.symbol
                  AND c.bucket >= r.lo
                  AND c.bucket < r.hi
                UNION ALL
                SELECT c.bucket, c.open, c.high, c.low, c.close, c.volume
                FROM one_hour_candle c
                WHERE r.source = 1
                  AND c.symbol = r.symbol
                  AND c.bucket >= r.lo
                  AND c.bucket < r.hi
                UNION ALL
                SELECT c.bucket, c.open, c.high, c.low, c.close, c.volume
                FROM one_day_candle c
                WHERE r.source = 2
                  AND c.symbol = r.symbol
                  AND c.bucket >= r.lo
                  AND c.bucket < r.hi
            ) AS m
        )
        SELECT
            i,
            date_bin(make_interval(secs => secs), bucket, 'epoch') AS bucket,
            (array_agg(open ORDER BY bucket))[1] AS open,
            max(high) AS high,
            min(low) AS low,
            (array_agg(close ORDER BY bucket DESC))[1] AS close,
            sum(volume) AS volume
        FROM bars
        GROUP BY i, 2
        ORDER BY i, 2
        "#,
    )
    .bind(&index)
    .bind(&symbols)
    .bind(&sources)
    .bind(&secs)
    .bind(&from)
    .bind(&to)
    .fetch_all(pool)
    .await
    .context("reading changed buckets again")?;
    for row in rows {
        if let Some(bars) = usize::try_from(row.i).ok().and_then(|i| out.get_mut(i)) {
            bars.push(row.candle);
        }
    }
    Ok(out)
}
