//! Database access: opening it (URL or embedded cluster, migrations), then one async fn per
//! query, grouped by what they touch.

mod arrays;
pub mod audit;
pub mod candles;
pub mod copy;
pub mod flavour;
pub mod journal;
pub mod rereads;
pub mod sessions;
pub mod ticks;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

pub use flavour::Flavour;

use crate::config::{DbSettings, EmbeddedTimescaleDb};
use crate::domain::RowErrors;
use crate::embedded::{self, EmbeddedPostgres};

/// A condition keeping a `timestamptz` column to the instants candlewick accepts
/// (`domain::time`: the years 0001 to 9999 in UTC). Reads that hand times back use it, so a row
/// another program stored outside that range is never decoded (chrono cannot hold every year
/// PostgreSQL can) nor printed as a time the API would refuse.
macro_rules! storable_time_sql {
    ($column:literal) => {
        concat!(
            "(",
            $column,
            " >= '0001-01-01 00:00:00+00' AND ",
            $column,
            " < '10000-01-01 00:00:00+00')"
        )
    };
}
pub(crate) use storable_time_sql;

/// A condition keeping to the ticks candlewick can use: a storable time and, where there is
/// one, a finite price and volume (NaN sorts above `Infinity` in PostgreSQL, so the bounds
/// refuse it too). The same text as the candle functions and the `ticks_unusable` index of
/// migration 0007, so `NOT usable_tick_sql!()` is answered from that index.
macro_rules! usable_tick_sql {
    () => {
        concat!(
            "(",
            storable_time_sql!("time"),
            " AND (price IS NULL OR (price > '-Infinity' AND price < 'Infinity'))",
            " AND (volume IS NULL OR (volume > '-Infinity' AND volume < 'Infinity')))"
        )
    };
}
pub(crate) use usable_tick_sql;

/// Embedded in the binary; `serve` applies them at boot, `candlewick migrate` alone.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Connection options for `url`, with the session settings every query here relies on.
pub fn connect_options(url: &SecretString) -> anyhow::Result<PgConnectOptions> {
    let opts = PgConnectOptions::from_str(url.expose_secret())
        .context("parsing the database URL")?
        .application_name("candlewick")
        // Timestamps in error details and text output read as UTC. No JIT: on a hypertable of
        // years of chunks it compiled for seconds per query, and candlewick's queries are
        // index probes that never gain from it.
        .options([("timezone", "UTC"), ("jit", "off")]);
    Ok(opts)
}

/// A lazily connecting pool: the server starts (and `/healthz` answers) while the database is down.
pub fn build_pool(options: PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(16)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(options)
}

/// The `application_name` of [`read_pool`]'s connections (in `pg_stat_activity`).
pub const READ_POOL_NAME: &str = "candlewick api read";

/// A pool for the API's reads, over the same database as `pool`: each of its statements is
/// cancelled by PostgreSQL after `timeout` (`statement_timeout`, lock waits included), so an
/// abandoned or runaway read never keeps running there. Writes, imports, polls and refreshes
/// use `pool`, unbounded.
pub fn read_pool(pool: &PgPool, timeout: Duration) -> PgPool {
    let millis = timeout.as_millis().max(1);
    let options = (*pool.connect_options())
        .clone()
        .application_name(READ_POOL_NAME)
        .options([("statement_timeout", format!("{millis}ms"))]);
    PgPoolOptions::new()
        .max_connections(8)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(options)
}

/// Migrations whose text was revised after release, with the checksum of their first text
/// (see migrations/README.md: an applied migration is never edited any more).
///
/// 0002 first ran `CREATE EXTENSION timescaledb` wherever TimescaleDB was installed; when it was
/// not preloaded that ends the connection, so the migration could not succeed there. It now
/// checks `shared_preload_libraries` first. Everywhere the first text did succeed, the two
/// give the same schema, so a database that applied it counts as having applied the revision.
///
/// 0003's first text gave `candlewick_minute_candle` six columns (no `open_time`,
/// `close_time`), and 0004's kept an unused candle index and had no one-row insert path.
/// Migration 0007 redefines that function and the trigger functions and drops that index, so a
/// database that applied either first text ends with the same schema as any other.
const REVISED: [(i64, &str); 3] = [
    (
        2,
        "3861e5b879c7d4ea52ea7bbbae8df76dc8cb4bd68f42c044b54b8d1470193592c8e36fb2694c5eade41e6629e149e406",
    ),
    (
        3,
        "096736c58392275a240116e8e969537927de8e1bfc368ad916c21542ad5e8d693c3ef01684a2ab6edb33a955296454cb",
    ),
    (
        4,
        "107690ef71483266a4169e3fb09589c3f473eba0361761728d5d60b23d562c7ed55886d903ab3f58918258b6b7985887",
    ),
];

/// Every migration's checksum (SHA-384 of its file) as released. A test holds the embedded
/// migrations to it: editing an applied migration fails the build's tests instead of every
/// database that applied it. A new migration adds its line here.
pub const RELEASED: &[(i64, &str)] = &[
    (
        1,
        "34d3586b3d9270bb60012570353c3270ee9621155b2479e10ce8d71617dd96c21c6cc49627433bcb6a4f890228f500dc",
    ),
    (
        2,
        "459ea89ac3396c1f44e41d98d0bde6249f1e32fb98a66b37cafb42fe047035eea2457db4a5c88c42b7b186bd35be97f9",
    ),
    (
        3,
        "152d92f59aa1a1a41745ec35b1230b3fd9c3ccf8bfded5ebd11b424621fac17a42d441ef226312ee2c3cde77dc856875",
    ),
    (
        4,
        "22710b3c9a50a4f174abc4b58fef1a238cae89cc6af0466dc059fd8e273a5de9ddb31aca04444f8f4f736f4f8c0c7820",
    ),
    (
        6,
        "4cfa3a3d9da501ecf58ac3323658f39619f7a3403bcc0f669ec65ea2bb66e2abc57d96825406254561c91102b86f2951",
    ),
    (
        7,
        "854239cb59b7c918a064c4c86563485bc98e86cd4f76399a35e9a3f348fadfba72d62809d5c72961bbe43b5c3fd3fe2f",
    ),
    (
        8,
        "7bb5707499dc6c33c7578f15ad799ced131a58fb3ea72667f93b858d6292f362b7295880dcdcfb4c267538f692793cd3",
    ),
    (
        9,
        "6acaec60f90761a2dece25189e2ad45f51799ce85286bd64468d29e0923bf70ce111012efbef6251628b3b2bd0301543",
    ),
    (
        12,
        "7836ab9b394045742257096d9b2b57f4102ab949347147e2a9873966dddf13d5f6d2796d412ab65b11ac3f93e93f42e8",
    ),
    (
        13,
        "c678f5c56fc9989eeedb78131407b098111e9ca2fe00a353aa3c42eca4bdec0ed0be97287a0ec3b41f8c9ad24fcfd6e9",
    ),
    (
        14,
        "919084661f10f8f97e90aa40195732309198c01e109a9d659d3710f929434f86c0a1a20f2e81068c0f1d493daf468bb7",
    ),
    (
        15,
        "5da981b4ec0d3202723fc7c56d9b2c64f98af433b07e7b53dee3bb9b4ac449346032d2b95d6417387d1c421922c9eb1f",
    ),
];

/// Applies the migrations (both storage flavours live in them) and reports the flavour.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<Flavour> {
    accept_revised_migrations(pool).await?;
    MIGRATOR
        .run(pool)
        .await
        .context("applying the database migrations")?;
    Flavour::detect(pool).await
}

/// Records the current checksum of each [`REVISED`] migration a database applied in its
/// first text, so that the migrator's check of applied migrations accepts it.
async fn accept_revised_migrations(pool: &PgPool) -> anyhow::Result<()> {
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .context("looking for applied migrations")?;
    if !migrated {
        return Ok(());
    }
    for (version, first) in REVISED {
        let Some(current) = MIGRATOR.iter().find(|m| m.version == version) else {
            continue;
        };
        sqlx::query(
            r#"
            UPDATE _sqlx_migrations
            SET checksum = $1
            WHERE version = $2
              AND checksum = decode($3, 'hex')
            "#,
        )
        .bind(current.checksum.as_ref())
        .bind(version)
        .bind(first)
        .execute(pool)
        .await
        .with_context(|| format!("accepting the revised migration {version}"))?;
    }
    Ok(())
}

/// The URL without its password, for logs.
pub fn display_url(url: &SecretString) -> String {
    match url::Url::parse(url.expose_secret()) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(None);
            }
            u.to_string()
        }
        Err(_) => "<unparsable database URL>".into(),
    }
}

/// A database ready for the server: the pool, its flavour and, if we started it, the cluster.
pub struct Database {
    pub pool: PgPool,
    pub flavour: Flavour,
    pub display_url: String,
    pub embedded: Option<EmbeddedPostgres>,
}

/// Connects to `--database-url` or starts the embedded cluster; applies the migrations.
pub async fn open(settings: &DbSettings) -> anyhow::Result<Database> {
    let (url, display_url, embedded) = match &settings.database_url {
        Some(url) => (url.clone(), display_url(url), None),
        None => {
            let data_dir = settings.data_dir.clone();
            let options = embedded::Options {
                timescaledb: settings.embedded_timescaledb == EmbeddedTimescaleDb::Auto,
                ..embedded::Options::default()
            };
            let pg =
                tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&data_dir, &options))
                    .await
                    .context("starting the embedded PostgreSQL")??;
            ensure_database(&pg).await?;
            (
                pg.url(embedded::DB_NAME),
                pg.display_url(embedded::DB_NAME),
                Some(pg),
            )
        }
    };
    tracing::info!("database: {display_url}");
    let pool = build_pool(connect_options(&url)?);
    let flavour = migrate(&pool).await?;
    let described = flavour.describe(&pool).await?;
    tracing::info!("storage: {described}");
    Ok(Database {
        pool,
        flavour,
        display_url,
        embedded,
    })
}

impl Database {
    /// Closes the pool, then stops the embedded cluster (if any).
    pub async fn close(self) {
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            match tokio::task::spawn_blocking(move || pg.stop()).await {
                Ok(Ok(())) => tracing::info!("embedded PostgreSQL stopped"),
                Ok(Err(e)) => {
                    tracing::error!(error.cause_chain = ?e, "stopping the embedded PostgreSQL")
                }
                Err(e) => tracing::error!(error = %e, "stopping the embedded PostgreSQL"),
            }
        }
    }
}

/// Creates the `candlewick` database in a fresh embedded cluster.
pub async fn ensure_database(pg: &EmbeddedPostgres) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect_with(&connect_options(&pg.url("postgres"))?)
        .await
        .context("connecting to the embedded PostgreSQL")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
            .bind(embedded::DB_NAME)
            .fetch_one(&mut conn)
            .await
            .context("checking for the candlewick database")?;
    if !exists {
        sqlx::query(r#"CREATE DATABASE "candlewick""#)
            .execute(&mut conn)
            .await
            .context("creating the candlewick database")?;
    }
    conn.close().await.ok();
    if !pg.timescaledb() {
        refuse_timescaledb_without_preload(pg).await?;
    }
    Ok(())
}

/// A database made with TimescaleDB cannot be used without it preloaded (every query of its
/// tables would fail): say so at start instead.
async fn refuse_timescaledb_without_preload(pg: &EmbeddedPostgres) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect_with(&connect_options(&pg.url(embedded::DB_NAME))?)
        .await
        .context("connecting to the embedded PostgreSQL")?;
    let uses_it: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')",
    )
    .fetch_one(&mut conn)
    .await
    .context("checking the database for TimescaleDB")?;
    conn.close().await.ok();
    if uses_it {
        anyhow::bail!(
            "the embedded database in {} was created with TimescaleDB, which is not preloaded now; \
             start with --embedded-timescaledb auto (the default) on a machine where TimescaleDB is \
             installed, or use another --data-dir",
            pg.cluster_dir().display()
        );
    }
    Ok(())
}

/// Why a write of ticks wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Rows that failed validation (a streamed import found them part-way).
    #[error("{0}")]
    Invalid(RowErrors),
    /// A (time, symbol) that already exists, or appears twice in the batch.
    #[error("{0}; nothing was written")]
    Duplicate(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// True when `e` is a unique violation (a duplicate key).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// An applied migration is never edited: each keeps the checksum it was released with, and
    /// every migration has its line in [`RELEASED`].
    #[test]
    fn every_migration_keeps_the_checksum_it_was_released_with() {
        let embedded: Vec<(i64, String)> = MIGRATOR
            .iter()
            .map(|m| (m.version, hex(&m.checksum)))
            .collect();
        let released: Vec<(i64, String)> = RELEASED
            .iter()
            .map(|(v, sum)| (*v, (*sum).to_owned()))
            .collect();
        for (version, sum) in &embedded {
            let pinned = released.iter().find(|(v, _)| v == version);
            assert_eq!(
                pinned.map(|(_, s)| s),
                Some(sum),
                "migration {version} is not the text it was released with (or has no line in \
                 RELEASED): add a new migration instead of editing one (migrations/README.md)"
            );
        }
        assert_eq!(
            embedded.len(),
            released.len(),
            "RELEASED names a migration that is not there"
        );
    }

    /// [`REVISED`] names earlier texts of released migrations, never a current one.
    #[test]
    fn revised_checksums_are_first_texts() {
        for (version, first) in REVISED {
            let current = RELEASED
                .iter()
                .find(|(v, _)| *v == version)
                .map(|(_, s)| *s);
            assert!(current.is_some(), "{version} is released");
            assert_ne!(current, Some(first), "{version}");
        }
    }

    #[test]
    fn the_logged_url_has_no_password() {
        let url: SecretString = "postgres://u:hunter2@127.0.0.1:5432/db".to_owned().into();
        let shown = display_url(&url);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("u@127.0.0.1:5432/db"), "{shown}");
    }
}
