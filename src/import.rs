//! CSV imports of `time,symbol,price,volume` files, shared by `candlewick import FILE.csv` and the
//! admin upload. A blocking thread parses and validates row by row (the API's rules) and hands
//! batches to one `COPY` in one transaction: all or nothing, memory bounded by a few batches.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::config::ImportArgs;
use crate::db::ticks::{Actor, CopyError};
use crate::domain::Tick;
use crate::routes::api::CsvColumns;
use crate::startup::Database;

/// How many bad lines an import reports (it still counts them all).
pub const MAX_REPORTED_ERRORS: usize = 10;
/// Rows per batch handed from the parser thread to COPY.
const BATCH_ROWS: usize = 8_192;
/// Batches in flight between the parser and COPY.
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

/// Lines that failed validation; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRows {
    /// The first [`MAX_REPORTED_ERRORS`] problems, each starting with `line N:`.
    pub errors: Vec<String>,
    /// How many lines were bad in all.
    pub total: u64,
    /// How many data lines the file has.
    pub rows: u64,
}

impl InvalidRows {
    fn one(msg: String) -> Self {
        Self {
            errors: vec![msg],
            total: 1,
            rows: 0,
        }
    }

    fn push(&mut self, msg: String) {
        self.total += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(msg);
        }
    }

    pub fn summary(&self) -> String {
        if self.rows == 0 {
            return "the file was refused; nothing was written".into();
        }
        let lines = if self.total == 1 {
            "line is"
        } else {
            "lines are"
        };
        format!(
            "{} of {} {lines} invalid; nothing was written",
            self.total, self.rows
        )
    }

    /// How many problems are not among `errors`.
    pub fn unreported(&self) -> u64 {
        self.total.saturating_sub(self.errors.len() as u64)
    }
}

impl std::fmt::Display for InvalidRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:", self.summary())?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        match self.unreported() {
            0 => Ok(()),
            n => write!(f, "\n  (and {n} more)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Invalid(InvalidRows),
    /// A (time, symbol) that already exists, or appears twice in the file.
    #[error("{0}; nothing was written")]
    Duplicate(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// `candlewick import FILE.csv`: opens the database like `serve` does, imports with a progress bar.
pub async fn run(mut args: ImportArgs) -> anyhow::Result<()> {
    if args.db.database_url.is_none()
        && let Some(url) = running_embedded_url(&args.db.data_dir)
    {
        // Starting the embedded cluster again would stop the one a running server uses.
        tracing::info!(
            "the embedded PostgreSQL under {} is running: importing into it",
            args.db.data_dir.display()
        );
        args.db.database_url = Some(url);
    }
    let database = Database::open(&args.db).await?;
    let result = import_with_progress_bar(&database.pool, &args.file).await;
    database.close().await;
    result
}

/// The URL of the embedded cluster under `data_dir` when a server already runs it: its
/// `postmaster.pid` names a live postgres process and the port (4th line) it listens on.
fn running_embedded_url(data_dir: &Path) -> Option<secrecy::SecretString> {
    let pid_file =
        std::fs::read_to_string(data_dir.join("postgres").join("postmaster.pid")).ok()?;
    let mut lines = pid_file.lines();
    let pid: u32 = lines.next()?.trim().parse().ok()?;
    let port: u16 = lines.nth(2)?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if !String::from_utf8_lossy(&cmdline).contains("postgres") {
        return None;
    }
    let password = std::fs::read_to_string(data_dir.join("db-password")).ok()?;
    let mut url = url::Url::parse("postgres://127.0.0.1/").ok()?;
    url.set_username(crate::embedded::DB_USER).ok()?;
    url.set_password(Some(password.trim())).ok()?;
    url.set_port(Some(port)).ok()?;
    url.set_path(crate::embedded::DB_NAME);
    Some(url.to_string().into())
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
    let import = import_path(pool, path, Actor::CliImport, progress.clone());
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
        Err(ImportError::Unexpected(e)) => Err(e.context(format!("importing {}", path.display()))),
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

fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Imports the CSV file at `path` (`-`: standard input) in one transaction.
pub async fn import_path(
    pool: &PgPool,
    path: &Path,
    actor: Actor,
    progress: Arc<Progress>,
) -> Result<u64, ImportError> {
    if is_stdin(path) {
        return import_reader(pool, std::io::stdin(), actor, progress).await;
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    import_reader(pool, file, actor, progress).await
}

/// What the parser thread hands to COPY.
enum Msg {
    Rows(Vec<Tick>),
    /// The whole input was read and every line was valid.
    Done,
    /// A line was bad: abort COPY (the parser's result says which lines).
    Refused,
}

/// Imports a CSV stream in one transaction; `progress` follows it.
pub async fn import_reader<R>(
    pool: &PgPool,
    input: R,
    actor: Actor,
    progress: Arc<Progress>,
) -> Result<u64, ImportError>
where
    R: Read + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Msg>(BATCHES_IN_FLIGHT);
    let parser_progress = progress.clone();
    let parser = tokio::task::spawn_blocking(move || parse(input, &parser_progress, &tx));
    let rows = futures_util::stream::unfold(
        (rx, Vec::new().into_iter(), false),
        |(mut rx, mut batch, over)| async move {
            if over {
                return None;
            }
            loop {
                if let Some(t) = batch.next() {
                    return Some((Ok(t), (rx, batch, false)));
                }
                match rx.recv().await {
                    Some(Msg::Rows(next)) => batch = next.into_iter(),
                    Some(Msg::Done) => return None,
                    Some(Msg::Refused) => {
                        return Some((
                            Err(CopyError::Invalid("invalid input".into())),
                            (rx, batch, true),
                        ));
                    }
                    // Never commit what a parser that died half-way had sent.
                    None => {
                        let e = CopyError::Unexpected(anyhow::anyhow!(
                            "the CSV reader stopped before the end of the input"
                        ));
                        return Some((Err(e), (rx, batch, true)));
                    }
                }
            }
        },
    );
    let copied = crate::db::ticks::copy_stream(pool, Box::pin(rows), actor, |n| {
        progress.rows_written.store(n, Ordering::Relaxed);
    })
    .await;
    // COPY stopped (or finished): the parser notices the closed channel and returns soon.
    let parsed = parser.await.context("the CSV reader thread")?;
    match (copied, parsed) {
        (_, Err(invalid)) => Err(ImportError::Invalid(invalid)),
        (Ok(n), Ok(())) => Ok(n),
        (Err(CopyError::Duplicate(msg)), Ok(())) => Err(ImportError::Duplicate(msg)),
        (Err(CopyError::Invalid(msg)), Ok(())) => {
            Err(ImportError::Unexpected(anyhow::anyhow!(msg)))
        }
        (Err(CopyError::Unexpected(e)), Ok(())) => Err(ImportError::Unexpected(e)),
    }
}

/// Reads and validates every line. After the first bad line it sends no more rows but keeps
/// counting bad lines, so the report says how many there are.
fn parse<R: Read>(
    input: R,
    progress: &Progress,
    tx: &mpsc::Sender<Msg>,
) -> Result<(), InvalidRows> {
    let refuse = |invalid: InvalidRows| {
        let _ = tx.blocking_send(Msg::Refused);
        Err(invalid)
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .buffer_capacity(1 << 20)
        .from_reader(input);
    let columns = match reader.headers() {
        Ok(h) if h.is_empty() || (h.len() == 1 && h.get(0).is_some_and(str::is_empty)) => {
            return refuse(InvalidRows::one(
                "line 1: the file is empty; expected the header time,symbol,price,volume".into(),
            ));
        }
        Ok(h) => match CsvColumns::from_headers(h) {
            Ok(c) => c,
            Err(e) => return refuse(InvalidRows::one(format!("line 1: {e}"))),
        },
        Err(e) => return refuse(InvalidRows::one(format!("line 1: reading the header: {e}"))),
    };
    let mut invalid = InvalidRows {
        errors: Vec::new(),
        total: 0,
        rows: 0,
    };
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                invalid.rows += 1;
                match columns.tick(&record) {
                    Ok(t) if invalid.total == 0 => batch.push(t),
                    Ok(_) => {}
                    Err(e) => {
                        let line = record.position().map_or(invalid.rows + 1, |p| p.line());
                        invalid.push(format!("line {line}: {}", e.0));
                    }
                }
            }
            Err(e) => {
                invalid.rows += 1;
                let line = e.position().map_or(invalid.rows + 1, |p| p.line());
                invalid.push(format!("line {line}: {}", csv_problem(&e)));
                if !matches!(
                    e.kind(),
                    csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. }
                ) {
                    // An I/O error: the rest of the input cannot be read.
                    break;
                }
            }
        }
        if batch.len() == BATCH_ROWS {
            progress
                .bytes_read
                .store(reader.position().byte(), Ordering::Relaxed);
            progress.rows_read.store(invalid.rows, Ordering::Relaxed);
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
            if tx.blocking_send(Msg::Rows(full)).is_err() {
                // COPY gave up (a duplicate, the database); its error is the one to report.
                return Ok(());
            }
        }
    }
    progress
        .bytes_read
        .store(reader.position().byte(), Ordering::Relaxed);
    progress.rows_read.store(invalid.rows, Ordering::Relaxed);
    if invalid.total > 0 {
        return refuse(invalid);
    }
    if invalid.rows == 0 {
        return refuse(InvalidRows::one(
            "line 2: the file has a header but no rows".into(),
        ));
    }
    if !batch.is_empty() && tx.blocking_send(Msg::Rows(batch)).is_err() {
        return Ok(());
    }
    let _ = tx.blocking_send(Msg::Done);
    Ok(())
}

/// A CSV-level problem in words (the csv crate's messages name byte offsets and record indexes).
fn csv_problem(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("expected {expected_len} fields like the header, found {len}")
        }
        csv::ErrorKind::Utf8 { .. } => "the line is not valid UTF-8".into(),
        csv::ErrorKind::Io(io) => format!("reading the input: {io}"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn parse_all(input: &'static str) -> (Result<(), InvalidRows>, Vec<Tick>) {
        let (tx, mut rx) = mpsc::channel(1024);
        let progress = Progress::default();
        let res = parse(input.as_bytes(), &progress, &tx);
        drop(tx);
        let mut ticks = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            if let Msg::Rows(r) = msg {
                ticks.extend(r);
            }
        }
        (res, ticks)
    }

    #[test]
    fn bad_lines_are_reported_with_their_line_numbers() {
        let (res, _) = parse_all(
            "time,symbol,price,volume\n\
             2024-07-03T06:25:00Z,A,1,1\n\
             2024-07-03T06:26:00Z,A,abc,1\n\
             2024-07-03T06:27:00Z,A,1\n\
             nope,A,1,1\n",
        );
        let invalid = res.unwrap_err();
        assert_eq!(invalid.total, 3, "{invalid}");
        assert_eq!(invalid.rows, 4);
        assert!(invalid.errors[0].starts_with("line 3: price"), "{invalid}");
        assert!(
            invalid.errors[1].starts_with("line 4: expected 4 fields"),
            "{invalid}"
        );
        assert!(invalid.errors[2].starts_with("line 5: time"), "{invalid}");
    }

    #[test]
    fn a_file_without_the_header_is_refused() {
        let (res, _) = parse_all("2024-07-03T06:25:00Z,A,1,1\n");
        assert!(res.unwrap_err().errors[0].starts_with("line 1: the CSV header"));
        let (res, _) = parse_all("");
        assert!(res.unwrap_err().errors[0].contains("empty"));
        let (res, _) = parse_all("time,symbol,price,volume\n");
        assert!(res.unwrap_err().errors[0].contains("no rows"));
    }

    #[test]
    fn good_lines_become_ticks() {
        let (res, ticks) = parse_all(
            "symbol,time,price,volume\nA,2024-07-03T06:25:00Z,2.5,1\n\"B,C\",2024-07-03T06:25:00Z,3,0\n",
        );
        assert!(res.is_ok());
        assert_eq!(ticks.len(), 2);
        assert_eq!(ticks[1].symbol.as_str(), "B,C");
    }

    #[test]
    fn reports_stop_at_the_limit_but_count_everything() {
        let mut input = String::from("time,symbol,price,volume\n");
        for _ in 0..25 {
            input.push_str("x,A,1,1\n");
        }
        let (tx, _rx) = mpsc::channel(1024);
        let invalid = parse(input.as_bytes(), &Progress::default(), &tx).unwrap_err();
        assert_eq!(invalid.errors.len(), MAX_REPORTED_ERRORS);
        assert_eq!(invalid.total, 25);
        assert_eq!(invalid.unreported(), 15);
    }
}
