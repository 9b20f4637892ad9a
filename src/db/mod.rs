//! Database access: one async fn per query, grouped by what they touch.

pub mod candles;
pub mod flavour;
pub mod journal;
pub mod ticks;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use flavour::Flavour;

/// Embedded in the binary; `serve` applies them at boot, `candlewick migrate` alone.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Connection options for `url`, with the session settings every query here relies on.
pub fn connect_options(url: &SecretString) -> anyhow::Result<PgConnectOptions> {
    let opts = PgConnectOptions::from_str(url.expose_secret())
        .context("parsing the database URL")?
        .application_name("candlewick")
        // Timestamps in error details and text output read as UTC.
        .options([("timezone", "UTC")]);
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

/// Applies the migrations (both storage flavours live in them) and reports the flavour.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<Flavour> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying the database migrations")?;
    Flavour::detect(pool).await
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

/// True when `e` is a unique violation (a duplicate key).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logged_url_has_no_password() {
        let url: SecretString = "postgres://u:hunter2@127.0.0.1:5432/db".to_owned().into();
        let shown = display_url(&url);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("u@127.0.0.1:5432/db"), "{shown}");
    }
}
