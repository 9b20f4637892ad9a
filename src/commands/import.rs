//! `candlewick import FILE.csv`: opens the database like `serve` does (or joins the embedded
//! cluster a running server holds) and imports the file with a progress bar.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::config::ImportArgs;
use crate::db::WriteError;
use crate::db::audit::Author;
use crate::ingest::import::{Progress, import_path, is_stdin};

pub async fn run(mut args: ImportArgs) -> anyhow::Result<()> {
    if args.db.database_url.is_none()
        && let Some(url) = crate::embedded::running_cluster_url(&args.db.data_dir)
    {
        // Starting the embedded cluster again would stop the one a running server uses.
        tracing::info!(
            "the embedded PostgreSQL under {} is running: importing into it",
            args.db.data_dir.display()
        );
        args.db.database_url = Some(url);
    }
    let database = crate::db::open(&args.db).await?;
    let result = import_with_progress_bar(&database.pool, &args.file).await;
    database.close().await;
    result
}

async fn import_with_progress_bar(pool: &PgPool, path: &Path) -> anyhow::Result<()> {
    let size = if is_stdin(path) {
        None
    } else {
        std::fs::metadata(path).ok().map(|m| m.len())
    };
    let progress = Arc::new(Progress::new(size));
    let bar = progress_bar(size);
    let started = Instant::now();
    let import = import_path(pool, path, Author::CliImport, progress.clone());
    tokio::pin!(import);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let result = loop {
        tokio::select! {
            res = &mut import => break res,
            _ = tick.tick() => {
                bar.set_position(if size.is_some() { progress.bytes_read() } else { progress.rows_read() });
                bar.set_message(format!("{} rows", progress.rows_read()));
            }
        }
    };
    bar.finish_and_clear();
    match result {
        Ok(rows) => {
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                rows,
                seconds = secs,
                "imported {rows} rows from {} in {secs:.1} s ({:.0} rows/s)",
                path.display(),
                rows as f64 / secs.max(1e-9)
            );
            Ok(())
        }
        Err(WriteError::Unexpected(e)) => Err(e.context(format!("importing {}", path.display()))),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

fn progress_bar(size: Option<u64>) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressStyle};
    let (bar, template) = match size {
        Some(len) => (
            ProgressBar::new(len),
            "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} [{elapsed_precise}] {msg}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}
