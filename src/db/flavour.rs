//! The one place that knows whether `one_min_candle` is a TimescaleDB continuous aggregate or a
//! trigger-maintained table. Everything else reads the same names either way.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// How often a refresh refused for a concurrent one (the policy's job, another server) is
/// retried; the waits grow by 100 ms per attempt, up to 1 s.
const REFRESH_RETRIES: u32 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    TimescaleDb,
    Postgres,
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
    pub async fn after_changes(
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
