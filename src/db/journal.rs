//! The poller's reads: what changed since its last snapshot, and the windows of symbols it starts
//! to watch, in one snapshot.
//!
//! Position in the journal is a PostgreSQL snapshot (`pg_snapshot`), not a sequence number: a
//! change is new when its transaction is visible now but was not visible in the previous
//! snapshot. A transaction that took its xid early and committed late is therefore still seen.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::flavour::{Flavour, MinuteSource};
use super::storable_time_sql;
use crate::domain::Candle;

/// Where the poller is in the journal: the text form of a `pg_snapshot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position(pub String);

impl Position {
    /// The snapshot's xmin: every transaction below it had ended when the snapshot was taken,
    /// so a viewer whose candles are as of this position has seen every change journaled below
    /// it. This number, the same on every replica of the database, is the resume token's `seq`.
    pub fn seq(&self) -> u64 {
        self.part(0)
    }

    /// The snapshot's xmax: no transaction from it on was seen.
    pub fn upto(&self) -> u64 {
        self.part(1)
    }

    fn part(&self, n: usize) -> u64 {
        self.0
            .split(':')
            .nth(n)
            .and_then(|x| x.parse().ok())
            .unwrap_or_default()
    }
}

/// A reconnecting viewer's place: journal entries of transactions from `since` on may be new
/// to it (see [`Position::seq`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResumeFrom {
    pub symbol: String,
    pub since: u64,
}

/// What a viewer resuming from `from` missed, as of the poll's position.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumed {
    pub from: ResumeFrom,
    /// The minutes (Unix seconds, within the window) changed since; `None` when the journal no
    /// longer holds all of it (pruned, or a wholesale change): the viewer needs a snapshot.
    pub minutes: Option<Vec<i64>>,
}

/// A minute that changed, with its candle as of the poll (`None`: it has no ticks any more).
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteChange {
    pub symbol: String,
    pub t: i64,
    pub candle: Option<Candle>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Changes {
    /// Changed minutes of the symbols asked for, since the window start.
    pub minutes: Vec<MinuteChange>,
    /// A TRUNCATE (or something else wholesale) happened: reload everything.
    pub reload: bool,
    /// The first and last changed minute (Unix seconds) of any symbol before `old_before`.
    pub old: Option<(i64, i64)>,
}

/// What one poll reads.
#[derive(Debug, Clone)]
pub struct PollRequest<'a> {
    /// The previous position; `None` at start (only the position is read, and `load`).
    pub from: Option<&'a Position>,
    /// Symbols whose changed minutes to read; `None`: every symbol.
    pub symbols: Option<&'a [String]>,
    /// Symbols whose whole window to read (in the same snapshot as the changes).
    pub load: &'a [String],
    /// The window's start: older minutes are not read.
    pub since: DateTime<Utc>,
    /// Report the range of changed minutes (any symbol) older than this in [`Changes::old`].
    pub old_before: Option<DateTime<Utc>>,
}

/// What one poll found.
#[derive(Debug, Clone, Default)]
pub struct PollResult {
    pub position: Option<Position>,
    pub changes: Changes,
    /// The 1m candles of each symbol of [`PollRequest::load`] since the window start, ascending.
    pub windows: Vec<(String, Vec<Candle>)>,
    /// What names this database's journal (read when the poll starts without a position):
    /// resume tokens from another database, or from this one after a restore or a failover,
    /// are not taken.
    pub epoch: Option<String>,
    /// The changed minutes for each resume asked for, as of `position`.
    pub resumed: Vec<Resumed>,
}

#[derive(sqlx::FromRow)]
struct CandleRecord {
    symbol: Option<String>,
    t: Option<i64>,
    open: Option<f64>,
    high: Option<f64>,
    low: Option<f64>,
    close: Option<f64>,
    volume: Option<f64>,
}

impl CandleRecord {
    /// The candle, unless it has no prices or a value JSON cannot carry (a NaN or infinite
    /// sum of another writer's huge volumes): such a minute is left out, never sent as null.
    fn candle(&self) -> Option<Candle> {
        let candle = Candle {
            t: self.t?,
            open: self.open?,
            high: self.high?,
            low: self.low?,
            close: self.close?,
            volume: self.volume.unwrap_or(0.0),
        };
        [
            candle.open,
            candle.high,
            candle.low,
            candle.close,
            candle.volume,
        ]
        .iter()
        .all(|v| v.is_finite())
        .then_some(candle)
    }
}

/// Journal entries one poll reads at most. More (an import of years commits millions at once)
/// are a wholesale change, as a TRUNCATE is: the poller reloads the bars it holds and refreshes
/// every aggregate instead of sorting every entry. Listing them took longer than a poll may
/// (10 s after ten years of minutes), and a failed poll starts again from the same place: the
/// feed stayed stale until the journal was pruned an hour later.
pub const MAX_CHANGES_PER_POLL: i64 = 100_000;

/// The changes statement; `$candle` reads a changed minute `k` as `a(open, high, low, close,
/// volume, recompute)` (`recompute`: leave the minute to [`RECOMPUTE`]); past `$5` entries it
/// reads none and reports a wholesale change. Its first CTE takes the lock on `ticks` before
/// the journal's, as `TRUNCATE ticks, candle_changes, …` does: in the other order each could
/// wait for the other.
macro_rules! changes_sql {
    ($candle:literal) => {
        concat!(
            r#"
        WITH lock_order AS MATERIALIZED (
            SELECT FROM ticks WHERE false
        ),
        prev AS (
            SELECT $1::text::pg_snapshot AS snap
        ),
        -- The xid ranges that can hold new entries: from the previous xmin up to this
        -- snapshot's xmax, around the transactions still running (their entries are invisible
        -- anyway; an import running for minutes has millions, which the index then skips).
        stops AS (
            SELECT x
            FROM prev, pg_snapshot_xip(pg_current_snapshot()) AS x
            WHERE x >= pg_snapshot_xmin(prev.snap)
            UNION ALL
            SELECT pg_snapshot_xmax(pg_current_snapshot())
        ),
        spans AS MATERIALIZED (
            SELECT
                coalesce(
                    lag((x::text::bigint + 1)::text::xid8) OVER (ORDER BY x),
                    (SELECT pg_snapshot_xmin(snap) FROM prev)
                ) AS lo,
                x AS hi
            FROM stops
        ),
        new_entries AS NOT MATERIALIZED (
            SELECT c.symbol, c.bucket
            FROM spans s
            JOIN candle_changes c ON c.xid >= s.lo AND c.xid < s.hi, prev
            WHERE NOT pg_visible_in_snapshot(c.xid, prev.snap)
        ),
        backlog AS MATERIALIZED (
            SELECT count(*) > $5 AS too_long
            FROM (SELECT FROM new_entries LIMIT $5 + 1) n
        ),
        changed AS MATERIALIZED (
            SELECT DISTINCT c.symbol, c.bucket
            FROM new_entries c
            WHERE NOT (SELECT too_long FROM backlog)
              -- A minute no Unix second can name (another writer's `infinity`) is no change
              -- candlewick can show; journals written before migration 0007 may hold one.
              AND (c.symbol IS NULL OR "#,
            storable_time_sql!("c.bucket"),
            r#")
        ),
        summary AS (
            SELECT
                coalesce(bool_or(symbol IS NULL), false)
                    OR (SELECT too_long FROM backlog) AS wholesale,
                extract(epoch FROM min(bucket) FILTER (WHERE bucket < $4))::bigint AS old_from,
                extract(epoch FROM max(bucket) FILTER (WHERE bucket < $4))::bigint AS old_to
            FROM changed
        )
        SELECT
            pg_current_snapshot()::text AS position,
            s.wholesale,
            s.old_from,
            s.old_to,
            k.symbol,
            extract(epoch FROM k.bucket)::bigint AS t,
            a.open, a.high, a.low, a.close, a.volume,
            coalesce(a.recompute, false) AS recompute
        FROM summary s
        -- A wholesale change lists no minutes: the poller reloads what it holds instead (a
        -- bulk statement journals its hours beside the wholesale entry, for the rollups).
        LEFT JOIN changed k
          ON NOT s.wholesale
         AND k.symbol IS NOT NULL
         AND ($2::text[] IS NULL OR k.symbol = ANY($2))
         AND k.bucket >= $3
        LEFT JOIN LATERAL ("#,
            $candle,
            r#") AS a ON true
        "#
        )
    };
}

/// On the plain flavour `one_min_candle` is exact in the writing transaction: read it.
const CHANGES_STORED: &str = changes_sql!(
    "SELECT m.open, m.high, m.low, m.close, m.volume, false AS recompute FROM one_min_candle m \
     WHERE m.symbol = k.symbol AND m.bucket = k.bucket"
);
/// On TimescaleDB an edit to a materialized minute shows in the aggregate only after a
/// refresh: a changed minute is read from `candlewick_live_minutes`, kept exact in the writing
/// transaction from `live_minutes_from` on (migration 0012); an older one is left to
/// [`RECOMPUTE`]. Recomputing it here, in a lateral call of `candlewick_minute_candle`, made
/// PostgreSQL plan the function's read of `ticks` over every chunk in every poll, changed old
/// minutes or not: 11–25 ms of planning a poll at three years (157 chunks), against 0.4 ms
/// without it.
const CHANGES_LIVE: &str = changes_sql!(
    "SELECT m.open, m.high, m.low, m.close, m.volume, false AS recompute \
     FROM candlewick_live_minutes m \
     WHERE k.bucket >= (SELECT to_timestamp(value::bigint) FROM candlewick_meta \
                        WHERE key = 'live_minutes_from') \
       AND m.symbol = k.symbol AND m.bucket = k.bucket \
     UNION ALL \
     SELECT NULL, NULL, NULL, NULL, NULL, true \
     WHERE coalesce(k.bucket < (SELECT to_timestamp(value::bigint) FROM candlewick_meta \
                                WHERE key = 'live_minutes_from'), true)"
);
/// TimescaleDB: changed minutes older than the live minutes, recomputed from `ticks` (`$1`
/// symbols, `$2` minutes), one row per minute that still has usable ticks.
const RECOMPUTE: &str = r#"
    SELECT k.symbol, extract(epoch FROM k.bucket)::bigint AS t,
           m.open, m.high, m.low, m.close, m.volume
    FROM unnest($1::text[], $2::timestamptz[]) AS k(symbol, bucket)
    JOIN LATERAL candlewick_minute_candle(k.symbol, k.bucket) m ON m.trades > 0
"#;

/// One poll: the changes since `from` of the symbols asked for, recomputed or read as the
/// flavour needs, and the windows of `load`, all in one snapshot. Without symbols to load it is
/// one statement; its cost follows the changed minutes, never the window or the viewers.
pub async fn poll(
    pool: &PgPool,
    flavour: Flavour,
    req: &PollRequest<'_>,
) -> anyhow::Result<PollResult> {
    poll_resuming(pool, flavour, req, &[]).await
}

/// [`poll`], and in the same snapshot what each of `resumes` missed: reconnecting viewers get
/// just that, whichever replica of the database they last read from.
#[tracing::instrument(name = "Poll changes", skip_all)]
pub async fn poll_resuming(
    pool: &PgPool,
    flavour: Flavour,
    req: &PollRequest<'_>,
    resumes: &[ResumeFrom],
) -> anyhow::Result<PollResult> {
    if req.load.is_empty() && resumes.is_empty() {
        let mut conn = pool.acquire().await.context("connecting for a poll")?;
        return read(&mut conn, flavour, req).await;
    }
    let mut tx = pool.begin().await.context("starting a poll")?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .context("setting the poll's isolation")?;
    let mut result = read(&mut tx, flavour, req).await?;
    if !req.load.is_empty() {
        result.windows = load_windows(&mut tx, req.load, req.since).await?;
    }
    if !resumes.is_empty() {
        result.resumed = missed(&mut tx, resumes).await?;
    }
    tx.commit().await.context("ending the poll")?;
    Ok(result)
}

/// The position and the changes (within a REPEATABLE READ transaction: its snapshot).
async fn read(
    conn: &mut PgConnection,
    flavour: Flavour,
    req: &PollRequest<'_>,
) -> anyhow::Result<PollResult> {
    let Some(from) = req.from else {
        // The epoch: the cluster (its system identifier and timeline: a restored backup or a
        // promoted standby starts a new one) and the database in it. Where a managed service
        // does not let us read the control data, the database alone.
        let (position, epoch): (String, String) = sqlx::query_as(
            r#"
            SELECT
                pg_current_snapshot()::text,
                concat_ws(
                    '.',
                    CASE
                        WHEN has_function_privilege('pg_control_system()', 'EXECUTE')
                         AND has_function_privilege('pg_control_checkpoint()', 'EXECUTE')
                        THEN (
                            SELECT concat_ws('.', s.system_identifier, c.timeline_id)
                            FROM pg_control_system() s, pg_control_checkpoint() c
                        )
                        ELSE 'db'
                    END,
                    d.oid
                )
            FROM pg_database d
            WHERE d.datname = current_database()
            "#,
        )
        .fetch_one(&mut *conn)
        .await
        .context("reading the journal position")?;
        return Ok(PollResult {
            position: Some(Position(position)),
            epoch: Some(epoch),
            ..PollResult::default()
        });
    };
    #[derive(sqlx::FromRow)]
    struct Row {
        position: String,
        wholesale: bool,
        old_from: Option<i64>,
        old_to: Option<i64>,
        recompute: bool,
        #[sqlx(flatten)]
        candle: CandleRecord,
    }
    let sql = match flavour.minute_source() {
        MinuteSource::Stored => CHANGES_STORED,
        MinuteSource::Live => CHANGES_LIVE,
    };
    let rows: Vec<Row> = sqlx::query_as(sql)
        .bind(&from.0)
        .bind(req.symbols)
        .bind(req.since)
        .bind(req.old_before)
        .bind(MAX_CHANGES_PER_POLL)
        .fetch_all(&mut *conn)
        .await
        .context("reading changed minutes")?;
    let mut result = PollResult::default();
    let mut recompute: HashMap<(String, i64), usize> = HashMap::new();
    for row in rows {
        result.position = Some(Position(row.position));
        result.changes.reload |= row.wholesale;
        if let (Some(a), Some(b)) = (row.old_from, row.old_to) {
            result.changes.old = Some((a, b));
        }
        let (Some(symbol), Some(t)) = (row.candle.symbol.clone(), row.candle.t) else {
            continue;
        };
        if row.recompute {
            recompute.insert((symbol.clone(), t), result.changes.minutes.len());
        }
        result.changes.minutes.push(MinuteChange {
            symbol,
            t,
            candle: row.candle.candle(),
        });
    }
    if !recompute.is_empty() {
        recompute_old_minutes(conn, &mut result.changes.minutes, &recompute).await?;
    }
    Ok(result)
}

/// Fills in the candles of the changed minutes at `at` (by symbol and minute) from `ticks`.
/// Outside a poll's transaction this reads a later snapshot than the changes did: a minute
/// then shows a write committed after the poll's position, and the next poll, whose journal
/// entries include that write, reads the minute again, so a chart is never behind the ticks
/// nor shown anything older than it had.
async fn recompute_old_minutes(
    conn: &mut PgConnection,
    minutes: &mut [MinuteChange],
    at: &HashMap<(String, i64), usize>,
) -> anyhow::Result<()> {
    let (symbols, times): (Vec<&str>, Vec<DateTime<Utc>>) = at
        .keys()
        .filter_map(|(s, t)| Some((s.as_str(), DateTime::from_timestamp(*t, 0)?)))
        .unzip();
    let rows: Vec<CandleRecord> = sqlx::query_as(RECOMPUTE)
        .bind(&symbols)
        .bind(&times)
        .fetch_all(&mut *conn)
        .await
        .context("recomputing changed minutes from ticks")?;
    for row in rows {
        if let (Some(symbol), Some(t)) = (row.symbol.clone(), row.t)
            && let Some(&i) = at.get(&(symbol, t))
        {
            minutes[i].candle = row.candle();
        }
    }
    Ok(())
}

/// Every 1m candle since `since` of each of `symbols` (one indexed read for all of them).
async fn load_windows(
    conn: &mut PgConnection,
    symbols: &[String],
    since: DateTime<Utc>,
) -> anyhow::Result<Vec<(String, Vec<Candle>)>> {
    let rows: Vec<CandleRecord> = sqlx::query_as(
        r#"
        SELECT symbol, extract(epoch FROM bucket)::bigint AS t, open, high, low, close, volume
        FROM one_min_candle
        WHERE symbol = ANY($1)
          AND bucket >= $2
          AND bucket < '10000-01-01 00:00:00+00'
        ORDER BY symbol, bucket
        "#,
    )
    .bind(symbols)
    .bind(since)
    .fetch_all(&mut *conn)
    .await
    .context("reading candle windows")?;
    let mut windows: HashMap<&str, Vec<Candle>> =
        symbols.iter().map(|s| (s.as_str(), Vec::new())).collect();
    for row in &rows {
        if let (Some(symbol), Some(candle)) = (&row.symbol, row.candle())
            && let Some(candles) = windows.get_mut(symbol.as_str())
        {
            candles.push(candle);
        }
    }
    Ok(windows
        .into_iter()
        .map(|(s, candles)| (s.to_owned(), candles))
        .collect())
}

/// More changed minutes than this make a resume a snapshot (a bulk load happened meanwhile).
const MAX_RESUMED_MINUTES: i64 = 10_000;

/// The minutes each of `resumes` missed: journal entries of its symbol from transactions
/// `since` on that this snapshot sees. `None` where the journal may have lost some (pruned
/// below `since`, see `candlewick_prune_journal`: its oldest mark bounds what was pruned) or
/// holds a wholesale change.
async fn missed(conn: &mut PgConnection, resumes: &[ResumeFrom]) -> anyhow::Result<Vec<Resumed>> {
    let symbols: Vec<&str> = resumes.iter().map(|r| r.symbol.as_str()).collect();
    let since: Vec<String> = resumes.iter().map(|r| r.since.to_string()).collect();
    let rows: Vec<(String, String, bool, Vec<i64>)> = sqlx::query_as(concat!(
        r#"
        WITH r AS (
            SELECT symbol, since::xid8 AS since
            FROM unnest($1::text[], $2::text[]) AS r(symbol, since)
        ),
        horizon AS (
            SELECT min(oldest_running) AS xid FROM candle_changes_marks
        )
        SELECT
            r.symbol,
            r.since::text,
            coalesce(h.xid > r.since, false)
                OR EXISTS (
                    SELECT FROM candle_changes c
                    WHERE c.xid >= r.since
                      AND c.symbol IS NULL
                ) AS lost,
            ARRAY(
                SELECT DISTINCT extract(epoch FROM c.bucket)::bigint
                FROM candle_changes c
                WHERE c.xid >= r.since
                  AND c.symbol = r.symbol
                  AND "#,
        storable_time_sql!("c.bucket"),
        r#"
                LIMIT $3
            ) AS minutes
        FROM r, horizon h
        "#,
    ))
    .bind(&symbols)
    .bind(&since)
    .bind(MAX_RESUMED_MINUTES + 1)
    .fetch_all(&mut *conn)
    .await
    .context("reading what resuming viewers missed")?;
    Ok(rows
        .into_iter()
        .map(|(symbol, since, lost, minutes)| Resumed {
            from: ResumeFrom {
                symbol,
                since: since.parse().unwrap_or_default(),
            },
            minutes: (!lost && minutes.len() <= MAX_RESUMED_MINUTES as usize).then_some(minutes),
        })
        .collect())
}

/// Forgets journal entries of transactions that ended more than `keep` ago (see
/// `candlewick_prune_journal`); a poller away longer than that reloads its windows.
pub async fn prune(pool: &PgPool, keep: std::time::Duration) -> anyhow::Result<u64> {
    let pruned: i64 =
        sqlx::query_scalar("SELECT candlewick_prune_journal(make_interval(secs => $1))")
            .bind(keep.as_secs_f64())
            .fetch_one(pool)
            .await
            .context("pruning the change journal")?;
    Ok(u64::try_from(pruned).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_names_its_xmin_as_the_resume_seq_and_its_xmax() {
        let p = Position("7410:7415:7410,7412".into());
        assert_eq!((p.seq(), p.upto()), (7410, 7415));
        let idle = Position("4294967300:4294967300:".into());
        assert_eq!((idle.seq(), idle.upto()), (4_294_967_300, 4_294_967_300));
        assert_eq!(
            Position("garbage".into()).seq(),
            0,
            "no position: resumes nothing"
        );
    }
}
