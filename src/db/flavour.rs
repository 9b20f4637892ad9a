//! What differs between the two storage flavours at run time: whether `one_min_candle` is a
//! TimescaleDB continuous aggregate (which needs refreshing after edits to materialized
//! minutes) or a trigger-maintained table (always exact). The schema side of the difference
//! lives in the migrations; everything else reads the same names either way.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// Changed minutes older than this may already be materialized by TimescaleDB (the refresh
/// policy's end offset is one minute; one more covers a refresh running as the minute ends).
const MATERIALIZED_AFTER_SECS: i64 = 120;

/// How often the aggregate is brought up to a minute ago, as TimescaleDB's refresh policy would
/// (candlewick does not rely on TimescaleDB's job scheduler; the embedded cluster does not run it).
const PERIODIC_REFRESH_SECS: i64 = 60;

/// How often a refresh refused for a concurrent one (the policy's job, another server) is
/// retried; the waits grow by 100 ms per attempt, up to 1 s.
const REFRESH_RETRIES: u32 = 20;

/// What a bulk load was, for how long its clean-up may wait (see [`vacuum_materialized`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// `candlewick import` or the admin import: reports done when every page reads fast.
    Import,
    /// An API batch over the bulk threshold: its writer waits for the answer.
    Batch,
}

impl Load {
    /// Pauses before each VACUUM of the chunks a load materialized while some of their pages
    /// are not all-visible yet.
    fn vacuum_pauses_ms(self) -> &'static [u64] {
        match self {
            Self::Import => &[0, 200, 400, 800, 1_600, 3_200],
            Self::Batch => &[0],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    TimescaleDb,
    Postgres,
}

/// Where the poll reads a changed minute's candle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinuteSource {
    /// `one_min_candle`, exact in the writing transaction (plain PostgreSQL).
    Stored,
    /// `candlewick_live_minutes`, exact in the writing transaction for the recent minutes, and
    /// recomputed from `ticks` before them: a continuous aggregate shows an edit to a
    /// materialized minute only after a refresh. (Reading a minute through the real-time view
    /// costs more than recomputing it; see BENCHMARKS.md.)
    Live,
}

impl Flavour {
    pub async fn detect(pool: &PgPool) -> anyhow::Result<Self> {
        let value: Option<String> =
            sqlx::query_scalar("SELECT value FROM candlewick_meta WHERE key = 'flavour'")
                .fetch_optional(pool)
                .await
                .context("reading the storage flavour")?;
        Ok(match value.as_deref() {
            Some("timescaledb") => Self::TimescaleDb,
            _ => Self::Postgres,
        })
    }

    /// `timescaledb 2.27.2 on PostgreSQL 15.20` or `postgresql 15.20 (no timescaledb)`.
    pub async fn describe(self, pool: &PgPool) -> anyhow::Result<String> {
        let (server, ts): (String, Option<String>) = sqlx::query_as(
            r#"
            SELECT current_setting('server_version'),
                   (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb')
            "#,
        )
        .fetch_one(pool)
        .await
        .context("reading the server version")?;
        let server = server
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        Ok(match (self, ts) {
            (Self::TimescaleDb, Some(v)) => format!("timescaledb {v} (PostgreSQL {server})"),
            _ => format!("postgresql {server} (no timescaledb)"),
        })
    }

    pub fn minute_source(self) -> MinuteSource {
        match self {
            Self::Postgres => MinuteSource::Stored,
            Self::TimescaleDb => MinuteSource::Live,
        }
    }

    /// Plans the refreshes this flavour needs after changes; the plain flavour needs none.
    pub fn refresher(self) -> Refresher {
        Refresher {
            flavour: self,
            pending: None,
            running: false,
            last_periodic: None,
        }
    }

    /// After ticks in `[from, to)` changed: a continuous aggregate only shows edits to
    /// already-materialized minutes once that range is refreshed; the plain table is already
    /// exact. Runs outside any transaction (TimescaleDB refuses otherwise).
    ///
    /// The refresh starts at the beginning of time, not at `from`: a refresh moves the
    /// aggregate's watermark to its end, and real-time aggregation only covers minutes after
    /// the watermark, so refreshing `[from, to)` alone would hide every never-materialized
    /// minute before `from` (history loaded before the policy's first run). Only invalidated
    /// ranges are recomputed, so this costs what a run of the refresh policy costs.
    ///
    /// TimescaleDB refuses (55P03) rather than waits for a refresh whose window overlaps one
    /// in progress; such a refresh is retried until the other one is done.
    pub async fn refresh(
        self,
        pool: &PgPool,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        if self == Self::Postgres {
            // The minutes are exact; the hour and day rows catch up (reads are exact anyway).
            fold_rollups(pool).await?;
            return Ok(());
        }
        let mut conn = pool
            .acquire()
            .await
            .context("connecting to refresh the aggregates")?;
        refresh_all(&mut conn, from, to).await
    }
}

/// Plain PostgreSQL: folds the hours and days changed since the last fold into the stored
/// hour and day rows (migration 0009: writers only journal their minutes, so that writers of
/// one hour never wait on each other); returns how many hours it folded. Reads of
/// `one_hour_candle` / `one_day_candle` are exact either way (they fold what is pending); the
/// fold keeps that pending set, and so their cost, small. A no-op on TimescaleDB.
pub async fn fold_rollups<'e>(conn: impl sqlx::PgExecutor<'e>) -> anyhow::Result<u64> {
    let folded: i64 = sqlx::query_scalar("SELECT candlewick_fold_rollups()")
        .fetch_one(conn)
        .await
        .context("folding the hour and day rollups")?;
    Ok(u64::try_from(folded).unwrap_or_default())
}

/// Refreshes the minutes, then the rollups on top of them, up to `to`.
async fn refresh_all(
    conn: &mut PgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<()> {
    refresh_aggregate(conn, Aggregate::Minutes, from, to).await?;
    // Each rollup over the whole buckets before `to` (the minutes there are materialized now),
    // and on to its own watermark: a bulk load materializes whole days, and an edited hour or
    // day below the watermark must be refreshed whole. Only invalidated buckets are
    // recomputed; real-time aggregation covers the rest.
    let hours = floor_to(to, 3_600).max(watermark(conn, Aggregate::Hours).await?.unwrap_or(to));
    refresh_aggregate(conn, Aggregate::Hours, from, hours).await?;
    let days = floor_to(to, 86_400).max(watermark(conn, Aggregate::Days).await?.unwrap_or(to));
    refresh_aggregate(conn, Aggregate::Days, from, days).await?;
    Ok(())
}

/// Where an aggregate's materialized buckets end; `None` before anything is materialized.
async fn watermark(
    conn: &mut PgConnection,
    aggregate: Aggregate,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let view = match aggregate {
        Aggregate::Minutes => "one_min_candle",
        Aggregate::Hours => "one_hour_candle",
        Aggregate::Days => "one_day_candle",
    };
    let micros: Option<i64> = sqlx::query_scalar(
        r#"
        SELECT _timescaledb_functions.cagg_watermark(mat_hypertable_id)
        FROM _timescaledb_catalog.continuous_agg
        WHERE user_view_name = $1
        "#,
    )
    .bind(view)
    .fetch_optional(&mut *conn)
    .await
    .with_context(|| format!("reading the watermark of {view}"))?;
    // Beyond what chrono holds (the empty aggregate's watermark is 4714 BC): nothing there.
    Ok(micros.and_then(DateTime::from_timestamp_micros))
}

/// Minutes materialized per refresh after a bulk load: each step is a bounded transaction, and
/// reads keep going meanwhile (real-time aggregation covers what is not materialized yet).
const LOAD_REFRESH_STEP_SECS: i64 = 30 * 86_400;

/// After a bulk load of ticks in `[first, last]` was committed, before it reports done: on
/// TimescaleDB the aggregates are materialized over it (in steps, logging progress), on plain
/// PostgreSQL the hour and day rollups are folded, then the planner's statistics are brought
/// up to date for what changed, on both flavours.
///
/// `conn` is the connection that wrote the load, after its commit: it is told to flush its
/// table statistics first, so that the count of changes since the last ANALYZE, which it
/// reports later otherwise, is not added back after the ANALYZE here.
pub async fn after_load(
    conn: &mut PgConnection,
    load: Load,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
) -> anyhow::Result<()> {
    // The flush happens as the connection goes idle after this statement.
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .context("flushing the load's table statistics")?;
    let flavour: Option<String> =
        sqlx::query_scalar("SELECT value FROM candlewick_meta WHERE key = 'flavour'")
            .fetch_optional(&mut *conn)
            .await
            .context("reading the storage flavour")?;
    if flavour.as_deref() == Some("timescaledb") {
        if let Some((from, to)) = materialize(conn, first, last).await? {
            vacuum_materialized(conn, load, from, to).await?;
        }
    } else {
        fold_rollups(&mut *conn).await?;
    }
    sqlx::query("SELECT candlewick_analyze_loaded($1, $2)")
        .bind(first)
        .bind(last)
        .execute(&mut *conn)
        .await
        .context("analyzing what a bulk load changed")?;
    Ok(())
}

/// Marks the heap pages of the aggregates' chunks a load materialized (`[from, to)`) all-visible,
/// so that pages of candles are read from their covering indexes alone (migration 0013) from
/// the first read after the load rather than once autovacuum gets to them. An import tries
/// again for up to 6 s while some pages cannot be marked yet; an API batch, whose writer waits,
/// vacuums once and leaves the rest to autovacuum.
async fn vacuum_materialized(
    conn: &mut PgConnection,
    load: Load,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<()> {
    let mut chunks: Vec<String> = sqlx::query_scalar(
        r#"
        SELECT format('%I.%I', ch.chunk_schema, ch.chunk_name)
        FROM timescaledb_information.continuous_aggregates c
        JOIN timescaledb_information.chunks ch
          ON ch.hypertable_schema = c.materialization_hypertable_schema
         AND ch.hypertable_name = c.materialization_hypertable_name
        WHERE c.view_name IN ('one_min_candle', 'one_hour_candle', 'one_day_candle')
          AND ch.range_end > $1
          AND ch.range_start < $2
        "#,
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await
    .context("finding the materialized chunks of a load")?;
    for pause_ms in load.vacuum_pauses_ms() {
        if chunks.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(*pause_ms)).await;
        // The names come from TimescaleDB's catalog, quoted by `format`, never from input.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("VACUUM {}", chunks.join(", "))))
            .execute(&mut *conn)
            .await
            .context("vacuuming the materialized chunks of a load")?;
        // A page is marked only once its rows are older than every snapshot in the database,
        // and right after the load's last refresh (or a poll's) some are not yet: try again.
        chunks = sqlx::query_scalar(
            "SELECT c FROM unnest($1::text[]) AS c \
             WHERE (SELECT relallvisible < relpages FROM pg_class WHERE oid = c::regclass)",
        )
        .bind(&chunks)
        .fetch_all(&mut *conn)
        .await
        .context("checking the vacuumed chunks")?;
    }
    if !chunks.is_empty() {
        tracing::debug!(?chunks, "left to autovacuum: pages not all-visible yet");
    }
    Ok(())
}

/// Materializes the aggregates over a load. TimescaleDB logs no invalidation for a COPY into
/// `ticks` (see migration 0004) and takes a never-materialized range that a refresh already
/// passed over (a poll's refresh before the import) as up to date, so the loaded range is
/// refreshed with `force`, from the load's first day (or, where the minutes are not
/// materialized that far, from the oldest tick or the watermark, whichever is later) to the
/// end of its last, not past what the poll treats as live ([`MATERIALIZED_AFTER_SECS`]); in steps of
/// [`LOAD_REFRESH_STEP_SECS`], each its own transaction, while reads go on (real-time
/// aggregation covers what is not materialized yet). Returns the range refreshed, if any: a
/// batch of the last minutes alone is left to the poll's refreshes.
async fn materialize(
    conn: &mut PgConnection,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
) -> anyhow::Result<Option<(DateTime<Utc>, DateTime<Utc>)>> {
    let (watermark, oldest): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = sqlx::query_as(
        r#"
        SELECT
            (SELECT _timescaledb_functions.to_timestamp(
                        _timescaledb_functions.cagg_watermark(mat_hypertable_id))
             FROM _timescaledb_catalog.continuous_agg
             WHERE user_view_name = 'one_min_candle'),
            (SELECT min(time) FROM ticks WHERE time > '-infinity')
        "#,
    )
    .fetch_one(&mut *conn)
    .await
    .context("reading the minutes' watermark")?;
    let mut start = floor_to(first, 60).timestamp();
    if let Some(oldest) = oldest {
        let unmaterialized = watermark.map_or(oldest, |w| w.max(oldest));
        start = start.min(floor_to(unmaterialized, 60).timestamp());
    }
    // Whole days: an hour or day the load touched may already be materialized, and only a
    // forced refresh of all of it takes the load in. Only the live day is left partial (and
    // above the watermarks of hours and days: real-time).
    let start = floor_secs(start, 86_400);
    let now = Utc::now().timestamp();
    let end = (floor_secs(floor_to(last, 60).timestamp(), 86_400) + 86_400)
        .min(now.div_euclid(60) * 60 - MATERIALIZED_AFTER_SECS);
    if end <= start {
        return Ok(None);
    }
    // One aggregate over the whole load before the next: a refresh of hours (days) reads the
    // minutes (hours) through their real-time view, and the part of it above their watermark,
    // unmaterialized, is aggregated from the ticks whatever the refreshed window. Interleaved
    // per step, every hour and day step paid for the years of the load not materialized yet
    // (a 30-day day step of a ten-year import took over a minute).
    let steps = (end - start + LOAD_REFRESH_STEP_SECS - 1) / LOAD_REFRESH_STEP_SECS;
    let total = 3 * steps;
    let mut logged = 0;
    for (pass, aggregate) in [Aggregate::Minutes, Aggregate::Hours, Aggregate::Days]
        .into_iter()
        .enumerate()
    {
        for step in 0..steps {
            let from = start + step * LOAD_REFRESH_STEP_SECS;
            let to = (from + LOAD_REFRESH_STEP_SECS).min(end);
            // Steps start and (but for the live day) end on whole days; each rollup refreshes
            // its whole buckets.
            let (from, to) = match aggregate {
                Aggregate::Minutes => (from, to),
                Aggregate::Hours => (floor_secs(from, 3_600), floor_secs(to, 3_600)),
                Aggregate::Days => (floor_secs(from, 86_400), floor_secs(to, 86_400)),
            };
            force_refresh(conn, aggregate, from, to).await?;
            let done = i64::try_from(pass).unwrap_or_default() * steps + step + 1;
            let percent = done * 100 / total;
            if percent >= logged + 10 || done == total {
                logged = percent;
                tracing::info!(
                    "materializing candles: {percent} % ({aggregate:?} up to {})",
                    DateTime::from_timestamp(to, 0)
                        .unwrap_or(last)
                        .format("%Y-%m-%d %H:%M")
                );
            }
        }
    }
    Ok(DateTime::from_timestamp(start, 0).zip(DateTime::from_timestamp(end, 0)))
}

fn floor_secs(t: i64, secs: i64) -> i64 {
    t.div_euclid(secs) * secs
}

/// Recomputes `[from, to)` (Unix seconds, whole buckets) of one aggregate whatever its
/// invalidation log says; nothing when the window holds no whole bucket.
async fn force_refresh(
    conn: &mut PgConnection,
    aggregate: Aggregate,
    from: i64,
    to: i64,
) -> anyhow::Result<()> {
    if to <= from {
        return Ok(());
    }
    let (Some(from), Some(to)) = (
        DateTime::from_timestamp(from, 0),
        DateTime::from_timestamp(to, 0),
    ) else {
        return Ok(());
    };
    let sql = match aggregate {
        Aggregate::Minutes => {
            "CALL refresh_continuous_aggregate('one_min_candle', $2, $1, force => true)"
        }
        Aggregate::Hours => {
            "CALL refresh_continuous_aggregate('one_hour_candle', $2, $1, force => true)"
        }
        Aggregate::Days => {
            "CALL refresh_continuous_aggregate('one_day_candle', $2, $1, force => true)"
        }
    };
    run_refresh(conn, sql, aggregate, Some(from), to).await
}

/// The continuous aggregates, finest first (each is refreshed after the one it reads).
#[derive(Debug, Clone, Copy)]
enum Aggregate {
    Minutes,
    Hours,
    Days,
}

/// Refreshes one aggregate from the beginning of time up to `to`, retried while another
/// refresh of it runs.
async fn refresh_aggregate(
    conn: &mut PgConnection,
    aggregate: Aggregate,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<()> {
    let sql = match aggregate {
        Aggregate::Minutes => "CALL refresh_continuous_aggregate('one_min_candle', NULL, $1)",
        Aggregate::Hours => "CALL refresh_continuous_aggregate('one_hour_candle', NULL, $1)",
        Aggregate::Days => "CALL refresh_continuous_aggregate('one_day_candle', NULL, $1)",
    };
    run_refresh(conn, sql, aggregate, None, to)
        .await
        .with_context(|| format!("after changes from {from}"))
}

/// Runs a refresh (`$1` its end, `$2` its start when given), retried while another refresh of the same
/// aggregate runs.
async fn run_refresh(
    conn: &mut PgConnection,
    sql: &'static str,
    aggregate: Aggregate,
    from: Option<DateTime<Utc>>,
    to: DateTime<Utc>,
) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        let mut query = sqlx::query(sql).bind(to);
        if let Some(from) = from {
            query = query.bind(from);
        }
        let done = query.execute(&mut *conn).await;
        match done {
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("55P03") && attempt < REFRESH_RETRIES =>
            {
                attempt += 1;
                let wait = 100 * u64::from(attempt.min(10));
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            done => {
                done.with_context(|| format!("refreshing {aggregate:?} up to {to}"))?;
                return Ok(());
            }
        }
    }
}

fn floor_to(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(secs) * secs, 0).unwrap_or(t)
}

/// Which ranges of `one_min_candle` must be refreshed, one refresh at a time: ranges changed
/// while one runs are merged and refreshed next, so slow refreshes never pile up.
#[derive(Debug)]
pub struct Refresher {
    flavour: Flavour,
    /// Unix seconds, `[from, to)`.
    pending: Option<(i64, i64)>,
    running: bool,
    /// When the last periodic refresh was asked for (Unix seconds).
    last_periodic: Option<i64>,
}

/// One refresh to run (outside any transaction); report its end with [`Refresher::done`].
pub struct Refresh {
    flavour: Flavour,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

impl Refresh {
    pub async fn run(self, pool: &PgPool) -> anyhow::Result<()> {
        self.flavour.refresh(pool, self.from, self.to).await
    }
}

impl Refresher {
    /// Changed minutes before this (Unix seconds) may be materialized: a poll reports their
    /// range for [`Refresher::changed`]. `None`: nothing is ever materialized.
    pub fn cutoff(&self, now: i64) -> Option<i64> {
        (self.flavour == Flavour::TimescaleDb).then_some(now - MATERIALIZED_AFTER_SECS)
    }

    /// A poll saw changed minutes from `first` to `last` (Unix seconds) before the cutoff.
    pub fn changed(&mut self, first: i64, last: i64) {
        if self.flavour == Flavour::TimescaleDb {
            self.include(first, last + 60);
        }
    }

    /// Everything may have changed while nobody watched (start, TRUNCATE): bring the aggregate
    /// up to date once, as far as the periodic refresh goes. Not further: a minute materialized
    /// after the cutoff would take later edits only at a refresh no poll asks for (they are not
    /// reported as old), so wider channels read through the aggregate would miss them.
    pub fn everything(&mut self, now: i64) {
        if self.flavour == Flavour::TimescaleDb {
            self.include(0, now.div_euclid(60) * 60 - 60);
        }
    }

    /// Asks, once a minute, for the aggregate up to the last complete minute but one: live
    /// minutes get materialized, so reads of the aggregate stay cheap.
    pub fn periodic(&mut self, now: i64) {
        if self.flavour != Flavour::TimescaleDb
            || self
                .last_periodic
                .is_some_and(|t| now - t < PERIODIC_REFRESH_SECS)
        {
            return;
        }
        self.last_periodic = Some(now);
        self.include(0, now.div_euclid(60) * 60 - 60);
    }

    fn include(&mut self, from: i64, to: i64) {
        self.pending = Some(match self.pending {
            Some((a, b)) => (a.min(from), b.max(to)),
            None => (from, to),
        });
    }

    /// The next refresh to run, unless one is running or nothing is pending.
    pub fn next_refresh(&mut self) -> Option<Refresh> {
        if self.running {
            return None;
        }
        let (from, to) = self.pending.take()?;
        let (Some(from), Some(to)) = (
            DateTime::from_timestamp(from, 0),
            DateTime::from_timestamp(to, 0),
        ) else {
            return None;
        };
        self.running = true;
        Some(Refresh {
            flavour: self.flavour,
            from,
            to,
        })
    }

    /// The running refresh ended (its error is the caller's to log).
    pub fn done(&mut self) {
        self.running = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_minutes_of_a_timescaledb_aggregate_are_refreshed_one_range_at_a_time() {
        let now = 10_000 * 60;
        let mut r = Flavour::TimescaleDb.refresher();
        assert_eq!(
            r.cutoff(now),
            Some(now - 120),
            "fresh minutes are real-time"
        );
        assert!(r.next_refresh().is_none(), "nothing changed yet");
        r.changed(now - 600, now - 300);
        let first = r.next_refresh().expect("a refresh");
        assert_eq!(
            (first.from.timestamp(), first.to.timestamp()),
            (now - 600, now - 240)
        );
        r.changed(now - 900, now - 900);
        assert!(r.next_refresh().is_none(), "one refresh at a time");
        r.done();
        assert_eq!(
            r.next_refresh().map(|n| n.from.timestamp()),
            Some(now - 900)
        );
    }

    #[test]
    fn a_refresh_of_everything_materializes_only_minutes_older_than_the_cutoff() {
        let now = 10_000 * 60 + 30;
        let mut r = Flavour::TimescaleDb.refresher();
        r.everything(now);
        let refresh = r.next_refresh().expect("a refresh");
        let last_materialized = refresh.to.timestamp() - 60;
        assert!(
            r.cutoff(now)
                .is_some_and(|cutoff| last_materialized < cutoff),
            "minute {last_materialized} is materialized but edits to it are not reported old"
        );
    }

    #[test]
    fn the_plain_flavour_never_refreshes() {
        let mut r = Flavour::Postgres.refresher();
        assert_eq!(r.cutoff(1_000_000), None);
        r.changed(0, 60);
        r.everything(1_000_000);
        r.periodic(1_000_000);
        assert!(r.next_refresh().is_none());
    }

    #[test]
    fn the_aggregate_is_refreshed_up_to_a_minute_ago_once_a_minute() {
        let now = 10_000 * 60 + 30;
        let mut r = Flavour::TimescaleDb.refresher();
        r.periodic(now);
        let refresh = r.next_refresh().expect("a periodic refresh");
        assert_eq!(refresh.to.timestamp(), 10_000 * 60 - 60);
        r.done();
        r.periodic(now + 30);
        assert!(r.next_refresh().is_none(), "not again within the minute");
        r.periodic(now + 60);
        assert!(r.next_refresh().is_some());
    }
}
