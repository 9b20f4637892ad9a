//! Streamed CSV imports, shared by `candlewick import FILE.csv` and the admin upload. A blocking
//! thread reads and validates the file in batches ([`CsvTicks`], the API's rules) and hands
//! them to one `COPY` in one transaction: all or nothing, memory bounded by a few batches.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use sqlx::PgPool;
use tokio::sync::mpsc;

use super::csv::CsvTicks;
use crate::db::WriteError;
use crate::db::audit::Author;
use crate::domain::Tick;

/// Rows per batch handed from the reader thread to COPY.
const BATCH_ROWS: usize = 8_192;
/// Batches in flight between the reader and COPY.
const BATCHES_IN_FLIGHT: usize = 4;

/// Counters an import updates while it runs; read them from anywhere.
#[derive(Debug, Default)]
pub struct Progress {
    bytes_total: Option<u64>,
    bytes_read: AtomicU64,
    rows_read: AtomicU64,
    rows_written: AtomicU64,
}

impl Progress {
    pub fn new(bytes_total: Option<u64>) -> Self {
        Self {
            bytes_total,
            ..Self::default()
        }
    }
    pub fn bytes_total(&self) -> Option<u64> {
        self.bytes_total
    }
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }
    /// Rows parsed and validated so far.
    pub fn rows_read(&self) -> u64 {
        self.rows_read.load(Ordering::Relaxed)
    }
    /// Rows sent to the database so far (committed only when the import succeeds).
    pub fn rows_written(&self) -> u64 {
        self.rows_written.load(Ordering::Relaxed)
    }
    /// Share of the input read, 0–100, when its size is known.
    pub fn percent(&self) -> Option<u8> {
        let total = self.bytes_total.filter(|t| *t > 0)?;
        Some(((self.bytes_read().min(total) * 100) / total) as u8)
    }
}

/// Imports the CSV file at `path` (`-`: standard input) in one transaction.
pub async fn import_path(
    pool: &PgPool,
    path: &Path,
    author: Author,
    progress: Arc<Progress>,
) -> Result<u64, WriteError> {
    if is_stdin(path) {
        return import_reader(pool, std::io::stdin(), author, progress).await;
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    import_reader(pool, file, author, progress).await
}

pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Imports a CSV stream in one transaction; `progress` follows it.
pub async fn import_reader<R>(
    pool: &PgPool,
    input: R,
    author: Author,
    progress: Arc<Progress>,
) -> Result<u64, WriteError>
where
    R: Read + Send + 'static,
{
    let (tx, rx) = mpsc::channel(BATCHES_IN_FLIGHT);
    let reader_progress = progress.clone();
    let reader = tokio::task::spawn_blocking(move || read(input, &reader_progress, &tx));
    let batches = futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Msg::Rows(batch)) => Some((Ok(batch), Some(rx))),
            Some(Msg::Done) => None,
            Some(Msg::Refused) => {
                let e = anyhow::anyhow!("the input has invalid lines");
                Some((Err(WriteError::Unexpected(e)), None))
            }
            // Never commit what a reader that died half-way had sent.
            None => {
                let e = anyhow::anyhow!("the CSV reader stopped before the end of the input");
                Some((Err(WriteError::Unexpected(e)), None))
            }
        }
    });
    let copied = crate::db::ticks::import_batches(pool, Box::pin(batches), author, |n| {
        progress.rows_written.store(n, Ordering::Relaxed);
    })
    .await;
    // COPY stopped (or finished): the reader notices the closed channel and returns soon.
    let read = reader.await.context("the CSV reader thread")?;
    match (copied, read) {
        // Bad lines are the answer even when COPY stopped first (it was told to).
        (_, Err(invalid)) => Err(WriteError::Invalid(invalid)),
        (copied, Ok(())) => copied,
    }
}

/// What the reader thread hands to COPY.
enum Msg {
    Rows(Vec<Tick>),
    /// The whole input was read and every line was valid.
    Done,
    /// A line was bad: abort COPY (the reader's result says which lines).
    Refused,
}

/// Reads and validates every line, sending good batches while no line was bad, then `Done`,
/// or `Refused` and the problems.
fn read<R: Read>(
    input: R,
    progress: &Progress,
    tx: &mpsc::Sender<Msg>,
) -> Result<(), crate::domain::RowErrors> {
    let mut reader = CsvTicks::new(input);
    loop {
        let batch = reader.next_batch(BATCH_ROWS);
        progress
            .bytes_read
            .store(reader.bytes_read(), Ordering::Relaxed);
        progress.rows_read.store(reader.rows(), Ordering::Relaxed);
        if batch.is_empty() {
            break;
        }
        if tx.blocking_send(Msg::Rows(batch)).is_err() {
            // COPY gave up (a duplicate, the database); its error is the one to report.
            return Ok(());
        }
    }
    let result = reader.finish().map(drop);
    let _ = tx.blocking_send(match result {
        Ok(()) => Msg::Done,
        Err(_) => Msg::Refused,
    });
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn read_all(input: &'static str) -> (Result<(), crate::domain::RowErrors>, Vec<Tick>, bool) {
        let (tx, mut rx) = mpsc::channel(1024);
        let res = read(input.as_bytes(), &Progress::default(), &tx);
        drop(tx);
        let (mut ticks, mut stopped) = (Vec::new(), false);
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Rows(batch) => ticks.extend(batch),
                Msg::Done => {}
                Msg::Refused => stopped = true,
            }
        }
        (res, ticks, stopped)
    }

    #[test]
    fn good_lines_become_batches_and_the_channel_just_ends() {
        let (res, ticks, stopped) =
            read_all("time,symbol,price,volume\n2024-07-03T06:25:00Z,A,2.5,1\n");
        assert!(res.is_ok());
        assert_eq!(ticks.len(), 1);
        assert!(!stopped);
    }

    #[test]
    fn a_bad_line_stops_the_copy_and_is_reported() {
        let (res, _, stopped) = read_all("time,symbol,price,volume\nx,A,1,1\n");
        assert!(res.unwrap_err().shown()[0].starts_with("line 2: time"));
        assert!(stopped, "COPY is told to stop");
        let (res, _, stopped) = read_all("time,symbol,price,volume\n");
        assert!(
            res.is_err() && stopped,
            "a header without rows writes nothing"
        );
    }
}
