//! What each subcommand of the binary does: `serve` (the default), `migrate` and `import`.

pub mod import;
pub mod serve;

use crate::config::DbSettings;

/// `candlewick migrate`: applies the schema and exits.
pub async fn migrate(settings: &DbSettings) -> anyhow::Result<()> {
    let database = crate::db::open(settings).await?;
    tracing::info!("migrations applied");
    database.close().await;
    Ok(())
}
