use candlewick::commands;
use candlewick::config::{Cli, Command};

/// jemalloc gives memory back to the system once a large request is done (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    candlewick::telemetry::init();
    candlewick::startup::raise_open_file_limit();
    let cli = Cli::load();
    let result = actix_web::rt::System::new().block_on(async move {
        match cli.command {
            None => commands::serve::run(cli.serve).await,
            Some(Command::Serve(settings)) => commands::serve::run(settings).await,
            Some(Command::Migrate(db)) => commands::migrate(&db).await,
            Some(Command::Import(args)) => commands::import::run(args).await,
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
