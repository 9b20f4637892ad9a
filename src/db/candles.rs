//! Candle reads from `one_min_candle` (a continuous aggregate or a maintained table).

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

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

/// Candles of `symbol` at `interval` in `[from, to)`, newest first, rolled up from 1m candles.
#[tracing::instrument(name = "Fetch candles", skip(pool))]
pub async fn fetch_candles(
    pool: &PgPool,
    symbol: &str,
    interval: Interval,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
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
          AND ($3::timestamptz IS NULL OR bucket >= date_bin(make_interval(secs => $2), $3, 'epoch'))
          AND ($4::timestamptz IS NULL OR bucket < $4)
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
    .context("reading candles")
}
