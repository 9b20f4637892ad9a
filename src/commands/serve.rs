//! `candlewick serve`: opens the database, builds the application, serves until a signal.

use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};

use crate::config::Settings;
use crate::startup::Application;

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let database = crate::db::open(&settings.db).await?;
    let token = match &settings.admin_token {
        Some(t) => t.clone(),
        None => admin_token(&settings)?,
    };
    let app = Application::build(&settings, database.pool.clone(), database.flavour, token).await?;
    let addr = std::net::SocketAddr::new(settings.bind.ip(), app.port());
    tracing::info!("listening on http://{addr}");
    let stop = app.stopper();
    let server = actix_web::rt::spawn(app.run_until_stopped());
    tokio::select! {
        res = server => {
            tracing::warn!("the HTTP server stopped by itself");
            res.context("the server task")??;
        }
        signal = shutdown_signal() => {
            tracing::info!("{signal}: shutting down");
            tokio::time::timeout(Duration::from_secs(10), stop()).await.ok();
        }
    }
    database.close().await;
    Ok(())
}

/// A generated token, kept in `<data-dir>/admin-token` and printed so the user can sign in.
fn admin_token(settings: &Settings) -> anyhow::Result<SecretString> {
    let path = settings.db.data_dir.join("admin-token");
    let token = crate::secrets::load_or_create(&path, 32)?;
    tracing::info!("admin token: in {} (sign in at /admin)", path.display());
    // Printed to the terminal, not the log stream: the token never goes into logs.
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("admin token: {}", token.expose_secret());
    }
    Ok(token)
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler at boot");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler at boot");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
