//! Reads and writes of `ticks`. Every write records itself in `audit_log` in the same transaction.

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};

use super::audit::{self, Action, Author, Record};
use super::copy::TickCopy;
use super::flavour::Load;
use super::{WriteError, storable_time_sql, usable_tick_sql};
use crate::domain::{Price, Tick, Volume};

/// A stored tick as read back (other writers may have stored NULL price or volume).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TickRow {
    pub time: DateTime<Utc>,
    pub symbol: String,
    pub price: Option<f64>,
    pub volume: Option<f64>,
}

/// Batches up to this size go through one UNNEST insert; larger ones through COPY, and are
/// bulk loads (statistics are refreshed after them).
pub const UNNEST_MAX_ROWS: usize = 10_000;

/// Inserts `ticks` in one transaction: all or nothing.
#[tracing::instrument(name = "Insert ticks", skip_all, fields(rows = ticks.len(), author = author.as_str()))]
pub async fn insert_ticks(
    pool: &PgPool,
    ticks: &[Tick],
    author: Author,
) -> Result<u64, WriteError> {
    let mut conn = pool.acquire().await.context("connecting to insert ticks")?;
    let mut tx = conn
        .begin()
        .await
        .context("starting a transaction to insert ticks")?;
    let inserted = if ticks.len() <= UNNEST_MAX_ROWS {
        insert_unnest(&mut tx, ticks).await
    } else {
        copy_all(&mut tx, ticks).await
    };
    let inserted = match inserted {
        Ok(n) => n,
        Err(e) if super::is_unique_violation(&e) => {
            drop(tx);
            return Err(find_duplicate(pool, ticks).await);
        }
        Err(e) => return Err(anyhow::Error::new(e).context("inserting ticks").into()),
    };
    // The demo feed's synthetic ticks would drown the trail of real corrections.
    if author != Author::DemoFeed {
        audit::record(&mut tx, audit::insert_record(ticks, author)).await?;
    }
    tx.commit().await.context("committing inserted ticks")?;
    if ticks.len() > UNNEST_MAX_ROWS {
        let first = ticks.iter().map(|t| t.time).min();
        let last = ticks.iter().map(|t| t.time).max();
        if let (Some(first), Some(last)) = (first, last) {
            after_load(&mut conn, Load::Batch, first, last).await;
        }
    }
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

/// `ticks` through one COPY on `conn`.
pub async fn copy_all(conn: &mut PgConnection, ticks: &[Tick]) -> Result<u64, sqlx::Error> {
    let mut copy = TickCopy::start(conn).await?;
    copy.write(ticks).await?;
    Ok(copy.finish().await?.rows)
}

/// Streams `batches` into one COPY in one transaction (all or nothing), recorded in the audit
/// log as one import; `on_progress` gets the running row count. A batch that is an error
/// aborts the COPY and is returned.
pub async fn import_batches<S>(
    pool: &PgPool,
    mut batches: S,
    author: Author,
    mut on_progress: impl FnMut(u64),
) -> Result<u64, WriteError>
where
    S: Stream<Item = Result<Vec<Tick>, WriteError>> + Unpin,
{
    let mut conn = pool.acquire().await.context("connecting for the import")?;
    let mut tx = conn
        .begin()
        .await
        .context("starting the import transaction")?;
    let mut copy = TickCopy::start(&mut tx).await.map_err(copy_failed)?;
    while let Some(batch) = batches.next().await {
        match batch {
            Ok(batch) => {
                copy.write(&batch).await.map_err(copy_failed)?;
                on_progress(copy.rows());
            }
            Err(e) => {
                copy.abort("input rejected").await;
                return Err(e);
            }
        }
    }
    let copied = copy.finish().await.map_err(copy_failed)?;
    audit::record(
        &mut tx,
        audit::import_record(author, copied.rows, copied.first, copied.last),
    )
    .await?;
    tx.commit().await.context("committing the import")?;
    if let (Some(first), Some(last)) = (copied.first, copied.last) {
        after_load(&mut conn, Load::Import, first, last).await;
    }
    Ok(copied.rows)
}

/// Statistics (and, on TimescaleDB, materialized aggregates) after a committed bulk load. The
/// ticks are stored whatever happens here, so a failure is logged, not returned: the poll's
/// refreshes and autovacuum catch up later.
async fn after_load(
    conn: &mut PgConnection,
    load: Load,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
) {
    if let Err(e) = super::flavour::after_load(conn, load, first, last).await {
        tracing::warn!(error.cause_chain = ?e, "after a bulk load of ticks");
    }
}

/// A failed COPY: a duplicate (named from the server's detail) or something unexpected.
fn copy_failed(e: sqlx::Error) -> WriteError {
    if super::is_unique_violation(&e) {
        let detail = match &e {
            sqlx::Error::Database(d) => d
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|p| p.detail().map(str::to_owned)),
            _ => None,
        };
        return WriteError::Duplicate(match detail {
            Some(d) => format!("duplicate tick: {d}"),
            None => "a tick whose (time, symbol) already exists".into(),
        });
    }
    WriteError::Unexpected(anyhow::Error::new(e).context("copying ticks"))
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
    // Another writer's row that has since gone away is still a conflict, named by the first tick.
    let named = |time: DateTime<Utc>, symbol: &str| {
        WriteError::Duplicate(format!(
            "a tick for {symbol} at {} already exists",
            crate::domain::time::rfc3339(time)
        ))
    };
    match found {
        Ok(Some((time, symbol))) => named(time, &symbol),
        Ok(None) => match ticks.first() {
            Some(t) => named(t.time, t.symbol.as_str()),
            None => WriteError::Duplicate("a tick that already exists".into()),
        },
        Err(e) => anyhow::Error::new(e)
            .context("looking up a duplicate tick")
            .into(),
    }
}

/// A tick's price and volume as a form showed them: a write made from that form applies only
/// while the tick still has them (optimistic concurrency; NULL matches NULL, NaN NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seen {
    pub price: Option<f64>,
    pub volume: Option<f64>,
}

/// What a write of one tick did.
#[derive(Debug)]
pub enum Written {
    /// Written: the row as it is now (after an update) or was (before a delete).
    Done(TickRow),
    /// There is no such tick.
    Missing,
    /// The tick no longer has the values the write expected: nothing was written; the row as
    /// it is now.
    Changed(TickRow),
}

impl Written {
    /// The row, or `None` when there was no such tick, for writes that expected nothing (they
    /// are never `Changed`).
    pub fn unconditional(self) -> Option<TickRow> {
        match self {
            Self::Done(row) | Self::Changed(row) => Some(row),
            Self::Missing => None,
        }
    }
}

/// Changes one tick's price and volume (only while it has the values `seen`, when given).
#[tracing::instrument(name = "Update tick", skip(pool))]
pub async fn update_tick(
    pool: &PgPool,
    time: DateTime<Utc>,
    symbol: &str,
    price: Price,
    volume: Volume,
    seen: Option<Seen>,
    author: Author,
) -> anyhow::Result<Written> {
    let Some((mut tx, before)) = lock_tick(pool, time, symbol).await? else {
        return Ok(Written::Missing);
    };
    // The condition is part of the write itself: what the form showed must still be there.
    let after: Option<TickRow> = sqlx::query_as(
        r#"
        UPDATE ticks
        SET price = $3, volume = $4
        WHERE time = $1
          AND symbol = $2
          AND ($5 OR (price IS NOT DISTINCT FROM $6 AND volume IS NOT DISTINCT FROM $7))
        RETURNING time, symbol, price, volume
        "#,
    )
    .bind(time)
    .bind(symbol)
    .bind(price.get())
    .bind(volume.get())
    .bind(seen.is_none())
    .bind(seen.and_then(|s| s.price))
    .bind(seen.and_then(|s| s.volume))
    .fetch_optional(&mut *tx)
    .await
    .context("updating a tick")?;
    let Some(after) = after else {
        return Ok(Written::Changed(before));
    };
    let record = Record {
        author,
        action: Action::Update,
        symbol: Some(symbol),
        tick_time: Some(time),
        rows: 1,
        before: Some(serde_json::to_value(&before).context("encoding the audit row")?),
        after: Some(serde_json::to_value(&after).context("encoding the audit row")?),
    };
    audit::record(&mut tx, record).await?;
    tx.commit().await.context("committing a tick update")?;
    Ok(Written::Done(after))
}

/// Deletes one tick (only while it has the values `seen`, when given).
#[tracing::instrument(name = "Delete tick", skip(pool))]
pub async fn delete_tick(
    pool: &PgPool,
    time: DateTime<Utc>,
    symbol: &str,
    seen: Option<Seen>,
    author: Author,
) -> anyhow::Result<Written> {
    let Some((mut tx, before)) = lock_tick(pool, time, symbol).await? else {
        return Ok(Written::Missing);
    };
    let deleted = sqlx::query(
        r#"
        DELETE FROM ticks
        WHERE time = $1
          AND symbol = $2
          AND ($3 OR (price IS NOT DISTINCT FROM $4 AND volume IS NOT DISTINCT FROM $5))
        "#,
    )
    .bind(time)
    .bind(symbol)
    .bind(seen.is_none())
    .bind(seen.and_then(|s| s.price))
    .bind(seen.and_then(|s| s.volume))
    .execute(&mut *tx)
    .await
    .context("deleting a tick")?;
    if deleted.rows_affected() == 0 {
        return Ok(Written::Changed(before));
    }
    commit_delete(tx, author, symbol, Some(time), &before).await?;
    Ok(Written::Done(before))
}

/// Records the delete of one tick (`before`: the row as it was) and commits it.
async fn commit_delete(
    mut tx: Transaction<'_, Postgres>,
    author: Author,
    symbol: &str,
    tick_time: Option<DateTime<Utc>>,
    before: &impl Serialize,
) -> anyhow::Result<()> {
    let record = Record {
        author,
        action: Action::Delete,
        symbol: Some(symbol),
        tick_time,
        rows: 1,
        before: Some(serde_json::to_value(before).context("encoding the audit row")?),
        after: None,
    };
    audit::record(&mut tx, record).await?;
    tx.commit().await.context("committing a tick delete")
}

/// A transaction that holds the lock on one tick, and the tick as it is; `None` when there is
/// no such tick.
async fn lock_tick(
    pool: &PgPool,
    time: DateTime<Utc>,
    symbol: &str,
) -> anyhow::Result<Option<(Transaction<'static, Postgres>, TickRow)>> {
    let mut tx = pool
        .begin()
        .await
        .context("starting a transaction to change a tick")?;
    let tick: Option<TickRow> = sqlx::query_as(
        r#"
        SELECT time, symbol, price, volume
        FROM ticks
        WHERE time = $1 AND symbol = $2
        FOR UPDATE
        "#,
    )
    .bind(time)
    .bind(symbol)
    .fetch_optional(&mut *tx)
    .await
    .context("reading the tick to change")?;
    Ok(tick.map(|t| (tx, t)))
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
        concat!(
            r#"
        SELECT time, symbol, price, volume
        FROM ticks
        WHERE "#,
            storable_time_sql!("time"),
            r#"
          AND ($1::text IS NULL OR symbol = $1)
          AND ($2::timestamptz IS NULL OR time >= $2)
          AND ($3::timestamptz IS NULL OR time < $3)
          AND ($4::timestamptz IS NULL OR (time, symbol) < ($4, $5::text))
        ORDER BY time DESC, symbol DESC
        LIMIT $6
        "#
        )
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

/// A tick stored (by another program) that candlewick cannot use: at a time outside the range
/// candlewick accepts, which chrono may not even hold, or with a NaN or infinite price or
/// volume. Its time is the text PostgreSQL prints for it (in UTC), e.g.
/// `200000-01-01 00:00:00+00`, `infinity` or `4714-11-24 00:00:00+00 BC`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct UnstorableTick {
    pub time: String,
    pub symbol: String,
    pub price: Option<f64>,
    pub volume: Option<f64>,
    /// What is wrong with it, in words.
    #[serde(skip)]
    pub problem: String,
}

/// How many ticks candlewick cannot use, and the earliest `limit` of them (both read from the
/// partial index `ticks_unusable`, however many ticks are stored).
#[tracing::instrument(name = "List unstorable ticks", skip(pool))]
pub async fn list_unstorable(
    pool: &PgPool,
    limit: i64,
) -> anyhow::Result<(i64, Vec<UnstorableTick>)> {
    let count: i64 = sqlx::query_scalar(concat!(
        "SELECT count(*) FROM ticks WHERE NOT ",
        usable_tick_sql!()
    ))
    .fetch_one(pool)
    .await
    .context("counting ticks candlewick cannot use")?;
    if count == 0 {
        return Ok((0, Vec::new()));
    }
    let rows = sqlx::query_as(concat!(
        r#"
        SELECT time::text AS time, symbol, price, volume,
               CASE
                   WHEN NOT "#,
        storable_time_sql!("time"),
        r#" THEN 'time outside 0001-9999'
                   WHEN NOT (price IS NULL OR (price > '-Infinity' AND price < 'Infinity'))
                       THEN 'price not a finite number'
                   ELSE 'volume not a finite number'
               END AS problem
        FROM ticks
        WHERE NOT "#,
        usable_tick_sql!(),
        r#"
        ORDER BY ticks.time, symbol
        LIMIT $1
        "#
    ))
    .bind(limit)
    .fetch_all(pool)
    .await
    .context("listing ticks candlewick cannot use")?;
    Ok((count, rows))
}

/// Deletes one tick named as [`list_unstorable`] shows it; `None` when there is no such tick.
#[tracing::instrument(name = "Delete unstorable tick", skip(pool))]
pub async fn delete_unstorable(
    pool: &PgPool,
    time: &str,
    symbol: &str,
    author: Author,
) -> anyhow::Result<Option<UnstorableTick>> {
    let mut tx = pool
        .begin()
        .await
        .context("starting a transaction to delete a tick")?;
    // The usability condition first: the text comparison then only sees the few rows the
    // partial index holds.
    let deleted: Option<UnstorableTick> = sqlx::query_as(concat!(
        r#"
        DELETE FROM ticks
        WHERE NOT "#,
        usable_tick_sql!(),
        r#"
          AND time::text = $1
          AND symbol = $2
        RETURNING time::text AS time, symbol, price, volume, '' AS problem
        "#
    ))
    .bind(time)
    .bind(symbol)
    .fetch_optional(&mut *tx)
    .await
    .context("deleting a tick outside the accepted time range")?;
    let Some(before) = deleted else {
        return Ok(None);
    };
    // No tick_time: the column could not hold every such time for reading back.
    commit_delete(tx, author, symbol, None, &before).await?;
    Ok(Some(before))
}
