use std::time::Duration;

use anyhow::Context;
use candlewick::config::{Cli, Command, Settings};
use candlewick::startup::{Application, Database};
use secrecy::SecretString;

fn main() -> std::process::ExitCode {
    candlewick::telemetry::init();
    raise_open_file_limit();
    let cli = Cli::load();
    let result = actix_web::rt::System::new().block_on(async move {
        match cli.command {
            None => serve(cli.serve).await,
            Some(Command::Serve(settings)) => serve(settings).await,
            Some(Command::Migrate(db)) => {
                let database = Database::open(&db).await?;
                tracing::info!("migrations applied");
                database.close().await;
                Ok(())
            }
            Some(Command::Import(args)) => candlewick::import::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error.cause_chain = ?e, "candlewick stopped: {e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let database = Database::open(&settings.db).await?;
    let token = match &settings.admin_token {
        Some(t) => t.clone(),
        None => admin_token(&settings)?,
    };
    let app =
        Application::build_with_pool(&settings, database.pool.clone(), database.flavour, token)
            .await?;
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
    let token = candlewick::secrets::load_or_create(&path, 32)?;
    tracing::info!("admin token: in {} (sign in at /admin)", path.display());
    {
        use secrecy::ExposeSecret;
        // Printed to the terminal, not the log stream: the token never goes into logs.
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!("admin token: {}", token.expose_secret());
        }
    }
    Ok(token)
}

/// Every viewer holds a socket: lift the open-file soft limit to the hard limit (often 1,024
/// soft against many thousands hard), so one process can hold as many viewers as the box allows.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the open-file limit"),
    }
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
