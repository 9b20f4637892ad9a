//! Reads and writes of `ticks`. Every write records itself in `audit_log` in the same transaction.

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::domain::{Price, Tick, Volume};

/// Who made a write, as recorded in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    AdminSession,
    ApiToken,
    CliImport,
    DemoFeed,
}

impl Actor {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdminSession => "admin session",
            Self::ApiToken => "api token",
            Self::CliImport => "cli import",
            Self::DemoFeed => "demo feed",
        }
    }
}

/// A stored tick as read back (other writers may have stored NULL price or volume).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TickRow {
    pub time: DateTime<Utc>,
    pub symbol: String,
    pub price: Option<f64>,
    pub volume: Option<f64>,
}

/// A write refused by the database for a reason the user can fix.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("a tick for {symbol} at {time} already exists")]
    Duplicate { symbol: String, time: String },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Batches up to this size go through one UNNEST insert; larger ones through COPY.
pub const UNNEST_MAX_ROWS: usize = 10_000;

/// Inserts `ticks` in one transaction: all or nothing.
#[tracing::instrument(name = "Insert ticks", skip_all, fields(rows = ticks.len(), actor = actor.as_str()))]
pub async fn insert_ticks(pool: &PgPool, ticks: &[Tick], actor: Actor) -> Result<u64, WriteError> {
    let mut tx = pool
        .begin()
        .await
        .context("starting a transaction to insert ticks")?;
    let inserted = if ticks.len() <= UNNEST_MAX_ROWS {
        insert_unnest(&mut tx, ticks).await
    } else {
        copy_in(&mut tx, ticks).await
    };
    let inserted = match inserted {
        Ok(n) => n,
        Err(e) if crate::db::is_unique_violation(&e) => {
            drop(tx);
            return Err(find_duplicate(pool, ticks).await);
        }
        Err(e) => return Err(anyhow::Error::new(e).context("inserting ticks").into()),
    };
    // The demo feed's synthetic ticks would drown the trail of real corrections.
    if actor != Actor::DemoFeed {
        audit_insert(&mut tx, ticks, actor).await?;
    }
    tx.commit().await.context("committing inserted ticks")?;
    Ok(inserted)
}

async fn insert_unnest(conn: &mut PgConnection, ticks: &[Tick]) -> Result<u64, sqlx::Error> {
    let times: Vec<DateTime<Utc>> = ticks.iter().map(|t| t.time).collect();
    let symbols: Vec<&str> = ticks.iter().map(|t| t.symbol.as_str()).collect();
    let prices: Vec<f64> = ticks.iter().map(|t| t.price.get()).collect();
    let volumes: Vec<f64> = ticks.iter().map(|t| t.volume.get()).collect();
    let done = sqlx::query(
        r#"
        INSERT INTO ticks (time, symbol, price, volume)
        SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::float8[], $4::float8[])
        "#,
    )
    .bind(&times)
    .bind(&symbols)
    .bind(&prices)
    .bind(&volumes)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// The bulk path: `COPY ... FROM STDIN` in binary-safe CSV, sent in large chunks.
pub async fn copy_in(conn: &mut PgConnection, ticks: &[Tick]) -> Result<u64, sqlx::Error> {
    let mut copy = conn
        .copy_in_raw("COPY ticks (time, symbol, price, volume) FROM STDIN WITH (FORMAT csv)")
        .await?;
    let mut buf = Vec::with_capacity(1 << 20);
    for chunk in ticks.chunks(16_384) {
        buf.clear();
        for t in chunk {
            write_csv_row(&mut buf, t);
        }
        copy.send(buf.as_slice()).await?;
    }
    copy.finish().await
}

/// One COPY CSV line; symbols are quoted (they may hold commas or quotes).
pub fn write_csv_row(buf: &mut Vec<u8>, t: &Tick) {
    use chrono::{Datelike, Timelike};
    use std::io::Write;
    // Fields by hand rather than a chrono format string, which is parsed again for every row
    // (7 % of a bulk load's CPU). Microseconds, truncated, as sqlx binds them on the other path.
    let n = t.time.naive_utc();
    let micros = (n.nanosecond() / 1_000).min(999_999);
    let _ = write!(
        buf,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{micros:06}+00,\"",
        n.year(),
        n.month(),
        n.day(),
        n.hour(),
        n.minute(),
        n.second()
    );
    for b in t.symbol.as_str().bytes() {
        if b == b'"' {
            buf.push(b'"');
        }
        buf.push(b);
    }
    let _ = writeln!(buf, "\",{:?},{:?}", t.price.get(), t.volume.get());
}

/// Names the first tick of `ticks` that already exists (called after a unique violation).
async fn find_duplicate(pool: &PgPool, ticks: &[Tick]) -> WriteError {
    let times: Vec<DateTime<Utc>> = ticks.iter().map(|t| t.time).collect();
    let symbols: Vec<&str> = ticks.iter().map(|t| t.symbol.as_str()).collect();
    let found: Result<Option<(DateTime<Utc>, String)>, _> = sqlx::query_as(
        r#"
        SELECT t.time, t.symbol
        FROM ticks t
        JOIN UNNEST($1::timestamptz[], $2::text[]) AS k(time, symbol)
          ON t.time = k.time AND t.symbol = k.symbol
        LIMIT 1
        "#,
    )
    .bind(&times)
    .bind(&symbols)
    .fetch_optional(pool)
    .await;
    match found {
        Ok(Some((time, symbol))) => WriteError::Duplicate {
            symbol,
            time: crate::format::rfc3339(time),
        },
        // Another writer's row that has since gone away: still a conflict, named generically.
        Ok(None) => WriteError::Duplicate {
            symbol: ticks
                .first()
                .map(|t| t.symbol.to_string())
                .unwrap_or_default(),
            time: ticks
                .first()
                .map(|t| crate::format::rfc3339(t.time))
                .unwrap_or_default(),
        },
        Err(e) => {
            WriteError::Unexpected(anyhow::Error::new(e).context("looking up a duplicate tick"))
        }
    }
}

/// Audit rows for a batch: the rows themselves for small batches, a summary for bulk loads.
async fn audit_insert(conn: &mut PgConnection, ticks: &[Tick], actor: Actor) -> anyhow::Result<()> {
    const DETAILED: usize = 100;
    if ticks.len() == 1 {
        let t = &ticks[0];
        record(
            conn,
            actor,
            "insert",
            Some(t.symbol.as_str()),
            Some(t.time),
            1,
            None,
            Some(tick_json(t)),
        )
        .await
    } else {
        let after = if ticks.len() <= DETAILED {
            serde_json::Value::Array(ticks.iter().map(tick_json).collect())
        } else {
            let first = ticks.iter().map(|t| t.time).min();
            let last = ticks.iter().map(|t| t.time).max();
            let mut symbols: Vec<&str> = ticks.iter().map(|t| t.symbol.as_str()).collect();
            symbols.sort_unstable();
            symbols.dedup();
            symbols.truncate(20);
            serde_json::json!({ "rows": ticks.len(), "first": first, "last": last, "symbols": symbols })
        };
        let symbol = ticks
            .first()
            .map(|t| t.symbol.as_str())
            .filter(|s| ticks.iter().all(|t| t.symbol.as_str() == *s));
        record(
            conn,
            actor,
            "insert",
            symbol,
            None,
            ticks.len() as i64,
            None,
            Some(after),
        )
        .await
    }
}

fn tick_json(t: &Tick) -> serde_json::Value {
    serde_json::json!({ "time": t.time, "symbol": t.symbol, "price": t.price, "volume": t.volume })
}

#[allow(clippy::too_many_arguments)]
async fn record(
    conn: &mut PgConnection,
    actor: Actor,
    action: &str,
    symbol: Option<&str>,
    tick_time: Option<DateTime<Utc>>,
    rows: i64,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    sqlx::query(
        r#"
        INSERT INTO audit_log (actor, action, symbol, tick_time, rows, before, after)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        "#,
    )
    .bind(actor.as_str())
    .bind(action)
    .bind(symbol)
    .bind(tick_time)
    .bind(rows)
    .bind(before)
    .bind(after)
    .execute(conn)
    .await
    .context("recording the write in the audit log")?;
    Ok(())
}

/// Changes one tick's price and volume; `None` when there is no such tick.
#[tracing::instrument(name = "Update tick", skip(pool))]
pub async fn update_tick(
    pool: &PgPool,
    time: DateTime<Utc>,
    symbol: &str,
    price: Price,
    volume: Volume,
    actor: Actor,
) -> anyhow::Result<Option<TickRow>> {
    let mut tx = pool
        .begin()
        .await
        .context("starting a transaction to update a tick")?;
    let Some(before) = lock_tick(&mut tx, time, symbol).await? else {
        return Ok(None);
    };
    let after: TickRow = sqlx::query_as(
        r#"
        UPDATE ticks
        SET price = $3, volume = $4
        WHERE time = $1 AND symbol = $2
        RETURNING time, symbol, price, volume
        "#,
    )
    .bind(time)
    .bind(symbol)
    .bind(price.get())
    .bind(volume.get())
    .fetch_one(&mut *tx)
    .await
    .context("updating a tick")?;
    record(
        &mut tx,
        actor,
        "update",
        Some(symbol),
        Some(time),
        1,
        Some(serde_json::to_value(&before).context("encoding the audit row")?),
        Some(serde_json::to_value(&after).context("encoding the audit row")?),
    )
    .await?;
    tx.commit().await.context("committing a tick update")?;
    Ok(Some(after))
}

/// Deletes one tick; `None` when there is no such tick.
#[tracing::instrument(name = "Delete tick", skip(pool))]
pub async fn delete_tick(
    pool: &PgPool,
    time: DateTime<Utc>,
    symbol: &str,
    actor: Actor,
) -> anyhow::Result<Option<TickRow>> {
    let mut tx = pool
        .begin()
        .await
        .context("starting a transaction to delete a tick")?;
    let Some(before) = lock_tick(&mut tx, time, symbol).await? else {
        return Ok(None);
    };
    sqlx::query("DELETE FROM ticks WHERE time = $1 AND symbol = $2")
        .bind(time)
        .bind(symbol)
        .execute(&mut *tx)
        .await
        .context("deleting a tick")?;
    record(
        &mut tx,
        actor,
        "delete",
        Some(symbol),
        Some(time),
        1,
        Some(serde_json::to_value(&before).context("encoding the audit row")?),
        None,
    )
    .await?;
    tx.commit().await.context("committing a tick delete")?;
    Ok(Some(before))
}

async fn lock_tick(
    tx: &mut Transaction<'_, Postgres>,
    time: DateTime<Utc>,
    symbol: &str,
) -> anyhow::Result<Option<TickRow>> {
    sqlx::query_as(
        r#"
        SELECT time, symbol, price, volume
        FROM ticks
        WHERE time = $1 AND symbol = $2
        FOR UPDATE
        "#,
    )
    .bind(time)
    .bind(symbol)
    .fetch_optional(&mut **tx)
    .await
    .context("reading the tick to change")
}

pub async fn fetch_tick(
    pool: &PgPool,
    time: DateTime<Utc>,
    symbol: &str,
) -> anyhow::Result<Option<TickRow>> {
    sqlx::query_as("SELECT time, symbol, price, volume FROM ticks WHERE time = $1 AND symbol = $2")
        .bind(time)
        .bind(symbol)
        .fetch_optional(pool)
        .await
        .context("reading a tick")
}

/// What to list: newest first, optionally one symbol and a time range, resuming before `before`.
#[derive(Debug, Clone, Default)]
pub struct TickFilter {
    pub symbol: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Keyset cursor: list only ticks strictly older than this (time, symbol).
    pub before: Option<(DateTime<Utc>, String)>,
    pub limit: i64,
}

/// The page of ticks a [`TickFilter`] selects, newest first; [`bind_filter`] binds $1 to $6.
macro_rules! filtered_ticks_sql {
    () => {
        r#"
        SELECT time, symbol, price, volume
        FROM ticks
        WHERE ($1::text IS NULL OR symbol = $1)
          AND ($2::timestamptz IS NULL OR time >= $2)
          AND ($3::timestamptz IS NULL OR time < $3)
          AND ($4::timestamptz IS NULL OR (time, symbol) < ($4, $5::text))
        ORDER BY time DESC, symbol DESC
        LIMIT $6
        "#
    };
}

/// Binds the parameters of [`filtered_ticks_sql`].
fn bind_filter<'q, O>(
    query: QueryAs<'q, Postgres, O, PgArguments>,
    f: &'q TickFilter,
) -> QueryAs<'q, Postgres, O, PgArguments> {
    let (before_time, before_symbol) = f.before.clone().unzip();
    query
        .bind(&f.symbol)
        .bind(f.from)
        .bind(f.to)
        .bind(before_time)
        .bind(before_symbol)
        .bind(f.limit)
}

#[tracing::instrument(name = "List ticks", skip(pool))]
pub async fn list_ticks(pool: &PgPool, f: &TickFilter) -> anyhow::Result<Vec<TickRow>> {
    bind_filter(sqlx::query_as(filtered_ticks_sql!()), f)
        .fetch_all(pool)
        .await
        .context("listing ticks")
}

/// Symbols that have ticks, alphabetically.
pub async fn list_symbols(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    // A loose index scan over ticks_symbol_time: one probe per symbol, not a scan of all ticks.
    sqlx::query_scalar(
        r#"
        WITH RECURSIVE s AS (
            (SELECT symbol FROM ticks ORDER BY symbol LIMIT 1)
            UNION ALL
            SELECT (SELECT symbol FROM ticks WHERE symbol > s.symbol ORDER BY symbol LIMIT 1)
            FROM s
            WHERE s.symbol IS NOT NULL
        )
        SELECT symbol AS "symbol!" FROM s WHERE symbol IS NOT NULL
        "#,
    )
    .fetch_all(pool)
    .await
    .context("listing symbols")
}

/// Streams ticks into the database through COPY in one transaction (all or nothing);
/// `on_progress` gets the running row count.
pub async fn copy_stream<S>(
    pool: &PgPool,
    mut rows: S,
    actor: Actor,
    mut on_progress: impl FnMut(u64),
) -> Result<u64, CopyError>
where
    S: futures_util::Stream<Item = Result<Tick, CopyError>> + Unpin,
{
    let mut tx = pool
        .begin()
        .await
        .context("starting the import transaction")?;
    let mut n = 0u64;
    let mut first: Option<DateTime<Utc>> = None;
    let mut last: Option<DateTime<Utc>> = None;
    {
        let mut copy = tx
            .copy_in_raw("COPY ticks (time, symbol, price, volume) FROM STDIN WITH (FORMAT csv)")
            .await
            .context("starting COPY")?;
        let mut buf = Vec::with_capacity(1 << 20);
        loop {
            let next = rows.try_next().await;
            let tick = match next {
                Ok(t) => t,
                Err(e) => {
                    let _ = copy.abort("input rejected").await;
                    return Err(e);
                }
            };
            if let Some(t) = &tick {
                write_csv_row(&mut buf, t);
                n += 1;
                first = Some(first.map_or(t.time, |f| f.min(t.time)));
                last = Some(last.map_or(t.time, |l| l.max(t.time)));
            }
            if buf.len() >= (1 << 20) || (tick.is_none() && !buf.is_empty()) {
                copy.send(buf.as_slice()).await.map_err(copy_error)?;
                buf.clear();
                on_progress(n);
            }
            if tick.is_none() {
                break;
            }
        }
        copy.finish().await.map_err(copy_error)?;
    }
    record(
        &mut tx,
        actor,
        "import",
        None,
        None,
        i64::try_from(n).unwrap_or(i64::MAX),
        None,
        Some(serde_json::json!({ "rows": n, "first": first, "last": last })),
    )
    .await?;
    tx.commit().await.context("committing the import")?;
    Ok(n)
}

/// Why a streamed import stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Bad input lines: nothing was written.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Duplicate(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

fn copy_error(e: sqlx::Error) -> CopyError {
    if crate::db::is_unique_violation(&e) {
        let detail = match &e {
            sqlx::Error::Database(d) => d
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|p| p.detail().map(str::to_owned)),
            _ => None,
        };
        return CopyError::Duplicate(match detail {
            Some(d) => format!("duplicate tick: {d}"),
            None => "the file holds a tick whose (time, symbol) already exists".into(),
        });
    }
    CopyError::Unexpected(anyhow::Error::new(e).context("copying ticks"))
}

/// A listed tick with the candle of its minute (`None`s when no candle row is there).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TickWithCandle {
    pub time: DateTime<Utc>,
    pub symbol: String,
    pub price: Option<f64>,
    pub volume: Option<f64>,
    pub candle_open: Option<f64>,
    pub candle_high: Option<f64>,
    pub candle_low: Option<f64>,
    pub candle_close: Option<f64>,
    pub candle_volume: Option<f64>,
}

/// [`list_ticks`] with each tick's one-minute candle, in one query.
#[tracing::instrument(name = "List ticks with candles", skip(pool))]
pub async fn list_ticks_with_candles(
    pool: &PgPool,
    f: &TickFilter,
) -> anyhow::Result<Vec<TickWithCandle>> {
    // LATERAL keeps the candle lookup a keyed probe per listed tick, also on a continuous aggregate.
    let sql = concat!(
        "WITH page AS (",
        filtered_ticks_sql!(),
        r#")
        SELECT
            p.time, p.symbol, p.price, p.volume,
            c.open AS candle_open,
            c.high AS candle_high,
            c.low AS candle_low,
            c.close AS candle_close,
            c.volume AS candle_volume
        FROM page p
        LEFT JOIN LATERAL (
            SELECT open, high, low, close, volume
            FROM one_min_candle m
            WHERE m.symbol = p.symbol
              AND m.bucket = date_bin('1 minute', p.time, 'epoch')
            LIMIT 1
        ) c ON true
        ORDER BY p.time DESC, p.symbol DESC
        "#
    );
    bind_filter(sqlx::query_as(sql), f)
        .fetch_all(pool)
        .await
        .context("listing ticks with their candles")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Symbol, parse_time};

    #[test]
    fn a_copy_row_carries_utc_microseconds_and_a_quoted_symbol() {
        let tick = Tick {
            time: parse_time("2024-07-03T08:25:00.1234567+02:00").unwrap(),
            symbol: Symbol::parse("A,B'C").unwrap(),
            price: Price::new(61057.5).unwrap(),
            volume: Volume::new(0.25).unwrap(),
        };
        let mut buf = Vec::new();
        write_csv_row(&mut buf, &tick);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "2024-07-03 06:25:00.123456+00,\"A,B'C\",61057.5,0.25\n"
        );
    }
}
