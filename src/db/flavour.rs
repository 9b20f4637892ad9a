//! What differs between the two storage flavours at run time: whether `one_min_candle` is a
//! TimescaleDB continuous aggregate (which needs refreshing after edits to materialized
//! minutes) or a trigger-maintained table (always exact). The schema side of the difference
//! lives in the migrations; everything else reads the same names either way.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Changed minutes older than this may already be materialized by TimescaleDB (the refresh
/// policy's end offset is one minute; one more covers a refresh running as the minute ends).
const MATERIALIZED_AFTER_SECS: i64 = 120;

/// How often the aggregate is brought up to a minute ago, as TimescaleDB's refresh policy would
/// (candlewick does not rely on TimescaleDB's job scheduler; the embedded cluster does not run it).
const PERIODIC_REFRESH_SECS: i64 = 60;

/// How often a refresh refused for a concurrent one (the policy's job, another server) is
/// retried; the waits grow by 100 ms per attempt, up to 1 s.
const REFRESH_RETRIES: u32 = 20;

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
    /// Recomputed from `ticks`: a continuous aggregate shows an edit to a materialized minute
    /// only after a refresh. (Above the watermark the real-time view would be exact too, but
    /// reading a minute through it costs more than recomputing it; see BENCHMARKS.md.)
    Recomputed,
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
            Self::TimescaleDb => MinuteSource::Recomputed,
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
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            let done = sqlx::query("CALL refresh_continuous_aggregate('one_min_candle', NULL, $1)")
                .bind(to)
                .execute(pool)
                .await;
            match done {
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some("55P03") && attempt < REFRESH_RETRIES =>
                {
                    attempt += 1;
                    let wait = 100 * u64::from(attempt.min(10));
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                done => {
                    done.with_context(|| {
                        format!("refreshing one_min_candle after changes in [{from}, {to})")
                    })?;
                    return Ok(());
                }
            }
        }
    }
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
    /// up to date once.
    pub fn everything(&mut self, now: i64) {
        if self.flavour == Flavour::TimescaleDb {
            self.include(0, now);
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
