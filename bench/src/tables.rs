//! What the write benches compare `ticks` with, in the same database: a bare table with the same
//! primary key (plain PostgreSQL) or the tutorial's own schema (TimescaleDB: a hypertable and a
//! continuous aggregate, no triggers); and many symbols' history written in one statement.

use std::ops::Range;

use anyhow::Context;
use candlewick::db::Flavour;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::setup::Scratch;

/// The name of the `i`-th synthetic symbol (`S000`, `S001`, …): what [`insert_minutely`] writes.
#[allow(dead_code)] // for the write-path benches beside ingest
pub fn symbol(i: u32) -> String {
    format!("S{i:03}")
}

/// The table writes are compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// `bare_ticks`: the same columns and primary key as `ticks`, nothing else.
    BareTable,
    /// `tutorial_ticks`: a hypertable with the same primary key and a continuous aggregate
    /// `tutorial_one_min_candle` (real-time, with the same refresh policy), no triggers.
    TutorialSchema,
}

impl Baseline {
    /// The baseline of `flavour`.
    #[allow(dead_code)] // for the write-path benches beside ingest
    pub fn of(flavour: Flavour) -> Self {
        match flavour {
            Flavour::Postgres => Self::BareTable,
            Flavour::TimescaleDb => Self::TutorialSchema,
        }
    }

    pub fn table(self) -> &'static str {
        match self {
            Self::BareTable => "bare_ticks",
            Self::TutorialSchema => "tutorial_ticks",
        }
    }

    /// Creates the table (again, empty) in `db`.
    pub async fn create(self, db: &Scratch) -> anyhow::Result<()> {
        let pool = &db.pool;
        let table = self.table();
        exec(pool, &format!("DROP TABLE IF EXISTS {table} CASCADE")).await?;
        exec(
            pool,
            &format!(
                r#"
                CREATE TABLE {table} (
                    time TIMESTAMPTZ NOT NULL,
                    symbol TEXT NOT NULL,
                    price DOUBLE PRECISION,
                    volume DOUBLE PRECISION,
                    PRIMARY KEY (time, symbol)
                )
                "#
            ),
        )
        .await?;
        if self == Self::TutorialSchema {
            exec(
                pool,
                &format!("SELECT create_hypertable('{table}', by_range('time', INTERVAL '1 day'))"),
            )
            .await?;
            exec(
                pool,
                &format!(
                    r#"
                    CREATE MATERIALIZED VIEW tutorial_one_min_candle
                    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
                    SELECT
                        time_bucket('1 minute', time) AS bucket,
                        symbol,
                        first(price, time) AS open,
                        max(price) AS high,
                        min(price) AS low,
                        last(price, time) AS close,
                        sum(volume) AS volume,
                        count(*) AS trades
                    FROM {table}
                    GROUP BY bucket, symbol
                    WITH NO DATA
                    "#
                ),
            )
            .await?;
            exec(
                pool,
                r#"
                SELECT add_continuous_aggregate_policy('tutorial_one_min_candle',
                    start_offset => NULL,
                    end_offset => INTERVAL '1 minute',
                    schedule_interval => INTERVAL '1 minute')
                "#,
            )
            .await?;
        }
        Ok(())
    }
}

async fn exec(pool: &PgPool, sql: &str) -> anyhow::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .with_context(|| format!("running {}", crate::statements::one_line(sql, 80)))?;
    Ok(())
}

/// One tick per minute (7 s past it) for each of the `symbols` over `minutes` minutes from
/// `start`, in one `INSERT … SELECT` into `table`; returns the rows written. Prices follow a
/// slow wave per symbol, so candles have distinct open, high, low and close over hours.
pub async fn insert_minutely(
    pool: &PgPool,
    table: &str,
    symbols: Range<u32>,
    start: DateTime<Utc>,
    minutes: u32,
) -> anyhow::Result<u64> {
    let sql = format!(
        r#"
        INSERT INTO {table} (time, symbol, price, volume)
        SELECT $1::timestamptz + m * INTERVAL '1 minute' + INTERVAL '7 seconds',
               'S' || lpad(s::text, 3, '0'),
               100 + s + 10 * sin(m / 60.0),
               0.1 + (m % 10) * 0.01
        FROM generate_series(0, $2 - 1) AS m,
             generate_series($3::int, $4 - 1) AS s
        "#
    );
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(start)
        .bind(minutes as i32)
        .bind(symbols.start as i32)
        .bind(symbols.end as i32)
        .execute(pool)
        .await
        .with_context(|| format!("inserting minutely ticks into {table}"))?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_symbols_are_numbered_as_the_sql_writes_them() {
        assert_eq!(symbol(7), "S007");
        assert_eq!(symbol(499), "S499");
        assert!(candlewick::domain::Symbol::parse(&symbol(0)).is_ok());
    }
}
