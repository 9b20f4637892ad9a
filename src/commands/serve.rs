//! `candlewick serve`: opens the database, builds the application, serves until a signal.

use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};

use crate::config::Settings;
use crate::startup::Application;

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    // Before anything starts: a server nobody can sign in to, or with a guessable token, is
    // a configuration mistake to report at once.
    if let Some(t) = &settings.admin_token {
        crate::config::check_admin_token(t.expose_secret()).map_err(anyhow::Error::msg)?;
    }
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
    let server = async move { server.await.context("the server task")? };
    tokio::pin!(server);
    let res = tokio::select! {
        res = &mut server => {
            tracing::warn!("the HTTP server stopped by itself");
            res
        }
        signal = shutdown_signal() => {
            tracing::info!("{signal}: shutting down");
            finish(stop(), server, SHUTDOWN_DEADLINE).await
        }
    };
    database.close().await;
    res
}

/// How long the server (sessions, in-flight requests, the demo feed) gets to stop after a
/// signal before the database is closed under it.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Stops the server and waits for its task, which ends after the demo feed's: only then may
/// the caller close the database (closing it first failed the feed's last write). Gives up
/// after `deadline`, saying so.
async fn finish(
    stopping: impl Future<Output = ()>,
    server: impl Future<Output = anyhow::Result<()>>,
    deadline: Duration,
) -> anyhow::Result<()> {
    let stopped = async {
        stopping.await;
        server.await
    };
    match tokio::time::timeout(deadline, stopped).await {
        Ok(res) => res,
        Err(_) => {
            tracing::warn!(
                ?deadline,
                "the server did not stop in time; closing the database anyway"
            );
            Ok(())
        }
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[actix_web::test]
    async fn shutting_down_waits_for_the_server_task_to_end() {
        let ended = Arc::new(AtomicBool::new(false));
        let flag = ended.clone();
        let server = async move {
            // The demo feed's last write, after the HTTP server itself has stopped.
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
            Ok(())
        };
        finish(async {}, server, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(
            ended.load(Ordering::SeqCst),
            "returned before the server task ended"
        );
    }

    #[actix_web::test]
    async fn a_server_that_does_not_stop_is_given_up_on_at_the_deadline() {
        let server = std::future::pending::<anyhow::Result<()>>();
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            finish(async {}, server, Duration::from_millis(50)),
        )
        .await;
        assert!(matches!(res, Ok(Ok(()))), "{res:?}");
    }

    #[actix_web::test]
    async fn the_server_tasks_failure_is_the_commands_result() {
        let server = async { Err(anyhow::anyhow!("the demo feed panicked")) };
        let e = finish(async {}, server, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("demo feed"), "{e}");
    }
}
