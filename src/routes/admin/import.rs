//! `/admin/import`: upload a CSV file (up to 100 MB). The upload is streamed to a temp file under
//! the data dir, then imported in the background exactly as `candlewick import` does; its page
//! refreshes itself (no JavaScript) until the import is done.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_multipart::Multipart;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use rand::distr::{Alphanumeric, SampleString};
use tokio::io::AsyncWriteExt;

use crate::db::WriteError;
use crate::db::audit::Author;
use crate::error::{AppError, PageError};
use crate::ingest::import::Progress;
use crate::routes::admin::{Admin, AdminState, Chrome, FlashKind, Section, page, see_other};
use crate::state::AppState;

/// The largest file the upload form takes.
pub const MAX_UPLOAD_BYTES: u64 = 100 * 1024 * 1024;
/// Imports running at once; more wait for the user to try again.
const MAX_RUNNING: usize = 2;
/// Finished imports stay listed this long.
const KEEP_FINISHED: Duration = Duration::from_secs(6 * 3600);
/// The progress page reloads itself this often while the import runs (seconds).
const REFRESH_SECS: u32 = 1;

/// The beginning of a spooled upload's file name; the server's process id follows it.
const SPOOL_PREFIX: &str = "candlewick-upload-";

/// Where uploads are spooled: `<data-dir>/uploads`, next to the data they are for (the system's
/// temp dir may be small, and nothing removed what a killed server left there).
pub struct UploadDir(PathBuf);

impl UploadDir {
    /// Creates the folder and removes what servers that are gone left in it (a killed process
    /// cannot delete its temp files). Uploads of live servers sharing the folder are kept:
    /// their names carry the process id. Problems are logged; uploads report them when they
    /// happen.
    pub fn prepare(data_dir: &Path) -> Self {
        let dir = data_dir.join("uploads");
        if let Err(e) = create_private_dir(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the upload folder");
            return Self(dir);
        }
        let removed = remove_leftovers(&dir);
        if removed > 0 {
            tracing::info!(dir = %dir.display(), removed, "removed uploads left by a stopped server");
        }
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Removes the spooled uploads in `dir` whose server process is gone; returns how many.
fn remove_leftovers(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(SPOOL_PREFIX))
                .is_some_and(|rest| !owner_is_alive(rest))
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Whether the process named at the start of `rest` (`<pid>-...`) still runs.
fn owner_is_alive(rest: &str) -> bool {
    let Some(pid) = rest
        .split('-')
        .next()
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|p| *p > 0)
    else {
        return false;
    };
    // Signal 0 checks for the process without signalling it; EPERM means it exists.
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Imports started from the admin pages of this server.
#[derive(Default)]
pub struct ImportRegistry {
    jobs: Mutex<Jobs>,
}

#[derive(Default)]
struct Jobs {
    by_id: HashMap<String, Arc<ImportJob>>,
    /// Slots taken by uploads still being received.
    uploading: usize,
}

/// A place for one import, taken before its upload is read: given back when dropped, unless
/// the import starts.
pub struct Slot<'a> {
    registry: &'a ImportRegistry,
    held: bool,
}

impl Slot<'_> {
    fn start(mut self, job: Arc<ImportJob>) {
        let mut jobs = self.registry.lock();
        jobs.uploading -= 1;
        jobs.by_id.insert(job.id.clone(), job);
        self.held = false;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.held {
            self.registry.lock().uploading -= 1;
        }
    }
}

impl ImportRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, id: &str) -> Option<Arc<ImportJob>> {
        self.lock().by_id.get(id).cloned()
    }

    /// Newest first.
    fn recent(&self) -> Vec<Arc<ImportJob>> {
        let mut jobs: Vec<_> = self.lock().by_id.values().cloned().collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.started_at));
        jobs
    }

    /// A slot for one more import, unless [`MAX_RUNNING`] are running or being uploaded.
    fn reserve(&self) -> Option<Slot<'_>> {
        let mut jobs = self.lock();
        jobs.by_id
            .retain(|_, j| j.finished_since().is_none_or(|d| d < KEEP_FINISHED));
        let running = jobs
            .by_id
            .values()
            .filter(|j| j.outcome().is_none())
            .count();
        if running + jobs.uploading >= MAX_RUNNING {
            return None;
        }
        jobs.uploading += 1;
        Some(Slot {
            registry: self,
            held: true,
        })
    }
}

pub struct ImportJob {
    id: String,
    file_name: String,
    started_at: DateTime<Utc>,
    started: Instant,
    progress: Arc<Progress>,
    outcome: Mutex<Option<(Outcome, Instant)>>,
}

#[derive(Clone)]
enum Outcome {
    Done {
        rows: u64,
    },
    Failed {
        summary: String,
        errors: Vec<String>,
        unreported: u64,
    },
}

impl ImportJob {
    /// How the import ended and when (`None` while it runs).
    fn ended(&self) -> std::sync::MutexGuard<'_, Option<(Outcome, Instant)>> {
        self.outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn outcome(&self) -> Option<Outcome> {
        self.ended().as_ref().map(|(o, _)| o.clone())
    }

    fn finished_since(&self) -> Option<Duration> {
        self.ended().as_ref().map(|(_, at)| at.elapsed())
    }

    fn finish(&self, outcome: Outcome) {
        *self.ended() = Some((outcome, Instant::now()));
    }

    fn view(&self) -> JobView {
        let outcome = self.ended().clone();
        let end = outcome.as_ref().map_or_else(Instant::now, |(_, at)| *at);
        let seconds = end.duration_since(self.started).as_secs_f64();
        let p = &self.progress;
        let (state, rows, summary, errors, unreported) = match outcome.map(|(o, _)| o) {
            None => ("running", p.rows_read(), None, Vec::new(), 0),
            Some(Outcome::Done { rows }) => ("done", rows, None, Vec::new(), 0),
            Some(Outcome::Failed {
                summary,
                errors,
                unreported,
            }) => ("failed", p.rows_read(), Some(summary), errors, unreported),
        };
        JobView {
            id: self.id.clone(),
            file_name: self.file_name.clone(),
            started_at: crate::domain::time::rfc3339(self.started_at),
            state,
            percent: p.percent().unwrap_or(0),
            megabytes_read: format!("{:.1}", p.bytes_read() as f64 / 1e6),
            megabytes_total: format!("{:.1}", p.bytes_total().unwrap_or(0) as f64 / 1e6),
            rows,
            rows_written: p.rows_written(),
            seconds: format!("{seconds:.1}"),
            rate: if seconds > 0.0 {
                format!("{:.0}", rows as f64 / seconds)
            } else {
                "—".into()
            },
            summary,
            errors,
            unreported,
        }
    }
}

/// What the pages show of a job.
struct JobView {
    id: String,
    file_name: String,
    started_at: String,
    state: &'static str,
    percent: u8,
    megabytes_read: String,
    megabytes_total: String,
    rows: u64,
    rows_written: u64,
    seconds: String,
    rate: String,
    summary: Option<String>,
    errors: Vec<String>,
    unreported: u64,
}

#[derive(Template)]
#[template(path = "admin/import/form.html")]
struct ImportFormPage {
    chrome: Chrome,
    error: Option<String>,
    jobs: Vec<JobView>,
    max_megabytes: u64,
}

fn form_page(admin: &Admin, imports: &ImportRegistry, error: Option<String>) -> ImportFormPage {
    ImportFormPage {
        chrome: admin.chrome(Section::Import),
        error,
        jobs: imports.recent().iter().map(|j| j.view()).collect(),
        max_megabytes: MAX_UPLOAD_BYTES / (1024 * 1024),
    }
}

pub async fn import_form(
    admin: Admin,
    admin_state: web::Data<AdminState>,
) -> Result<HttpResponse, PageError> {
    page(
        StatusCode::OK,
        &form_page(&admin, &admin_state.imports, None),
    )
}

/// `POST /admin/import` (multipart): `csrf_token` first, then `file`. Receives the file, starts
/// its import in the background and sends the user to its progress page.
#[tracing::instrument(name = "Admin CSV upload", skip_all)]
pub async fn upload(
    admin: Admin,
    req: HttpRequest,
    mut multipart: Multipart,
    state: web::Data<AppState>,
    admin_state: web::Data<AdminState>,
) -> Result<HttpResponse, PageError> {
    let imports = &admin_state.imports;
    // Before anything of the body is read: refusing after spooling 100 MB helps no one.
    let Some(slot) = imports.reserve() else {
        let error = Some(format!(
            "{MAX_RUNNING} imports are running already. Wait for one to finish, then upload again."
        ));
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            &form_page(&admin, imports, error),
        );
    };
    let received = receive(&admin, &req, &mut multipart, admin_state.uploads.path()).await?;
    let Some(upload) = received.filter(|u| u.bytes > 0) else {
        let error = Some("Choose a CSV file to import (it must not be empty).".into());
        return page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &form_page(&admin, imports, error),
        );
    };
    let bytes = upload.bytes;
    let job = Arc::new(ImportJob {
        id: Alphanumeric.sample_string(&mut rand::rng(), 16),
        file_name: upload.file_name,
        started_at: Utc::now(),
        started: Instant::now(),
        progress: Arc::new(Progress::new(Some(bytes))),
        outcome: Mutex::new(None),
    });
    slot.start(job.clone());
    tracing::info!(import = %job.id, bytes, "import started");
    spawn_import(state.pool.clone(), job.clone(), upload.file);
    admin.flash(
        FlashKind::Success,
        format!("Upload received ({:.1} MB); importing.", bytes as f64 / 1e6),
    );
    Ok(see_other(&format!("/admin/import/{}", job.id)))
}

/// A received upload: spooled to a temp file (deleted when dropped).
struct Upload {
    file: tempfile::NamedTempFile,
    file_name: String,
    bytes: u64,
}

/// Reads the upload form: the CSRF token is checked before any of the file is stored, and the
/// file is spooled to `dir`. `None` when the form holds no file.
async fn receive(
    admin: &Admin,
    req: &HttpRequest,
    multipart: &mut Multipart,
    dir: &Path,
) -> Result<Option<Upload>, PageError> {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD) {
        return Err(too_large());
    }
    let mut csrf_ok = false;
    let mut upload = None;
    while let Some(field) = multipart.next().await {
        let mut field = field
            .map_err(|e| AppError::BadRequest(format!("The upload could not be read: {e}.")))?;
        match field.name() {
            Some("csrf_token") => {
                let token = read_small_field(&mut field).await?;
                admin.check_csrf(Some(&token))?;
                csrf_ok = true;
            }
            Some("file") => {
                // Browsers send fields in form order; the token must come first so that nothing
                // of a forged upload is ever stored.
                if !csrf_ok {
                    admin.check_csrf(None)?;
                }
                let file_name = field
                    .content_disposition()
                    .and_then(|cd| cd.get_filename())
                    .unwrap_or("upload.csv")
                    .chars()
                    .take(200)
                    .collect::<String>();
                let (file, bytes) = match spool(&mut field, dir).await {
                    Err(e @ PageError(AppError::PayloadTooLarge(_))) => {
                        drop(field);
                        drain(multipart).await;
                        return Err(e);
                    }
                    other => other?,
                };
                upload = Some(Upload {
                    file,
                    file_name,
                    bytes,
                });
            }
            _ => {
                // Unknown fields are drained (bounded) and ignored.
                read_small_field(&mut field).await?;
            }
        }
    }
    if !csrf_ok {
        admin.check_csrf(None)?;
    }
    Ok(upload)
}

/// Imports the spooled `file` in the background, recording the outcome in `job`; the file is
/// deleted when the import ends.
fn spawn_import(pool: sqlx::PgPool, job: Arc<ImportJob>, file: tempfile::NamedTempFile) {
    actix_web::rt::spawn(async move {
        let result = crate::ingest::import::import_path(
            &pool,
            file.path(),
            Author::AdminSession,
            job.progress.clone(),
        )
        .await;
        drop(file);
        job.finish(outcome_of(&job.id, result));
    });
}

/// What the progress page tells of an import that ended with `result` (logged and counted
/// here).
fn outcome_of(id: &str, result: Result<u64, WriteError>) -> Outcome {
    match result {
        Ok(rows) => {
            metrics::counter!("candlewick_ticks_inserted_total", "via" => "admin import").increment(rows);
            tracing::info!(import = %id, rows, "import done");
            Outcome::Done { rows }
        }
        Err(WriteError::Invalid(invalid)) => Outcome::Failed {
            summary: invalid.summary(),
            unreported: invalid.unreported(),
            errors: invalid.shown().to_vec(),
        },
        Err(WriteError::Duplicate(msg)) => Outcome::Failed {
            summary: "The file holds a tick that already exists (or the same tick twice); nothing was written".into(),
            errors: vec![msg],
            unreported: 0,
        },
        Err(WriteError::Unexpected(e)) => {
            tracing::error!(import = %id, error.cause_chain = ?e, "import failed");
            Outcome::Failed {
                summary: "The import failed on our side and has been logged; nothing was written".into(),
                errors: Vec::new(),
                unreported: 0,
            }
        }
    }
}

/// A form field other than the file: at most a few kilobytes.
async fn read_small_field(field: &mut actix_multipart::Field) -> Result<String, PageError> {
    const LIMIT: usize = 4096;
    let mut buf = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk
            .map_err(|e| AppError::BadRequest(format!("The upload could not be read: {e}.")))?;
        if buf.len() + chunk.len() > LIMIT {
            return Err(PageError(AppError::BadRequest(
                "A form field is too long.".into(),
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| {
        PageError(AppError::BadRequest(
            "A form field is not valid UTF-8.".into(),
        ))
    })
}

/// How much of a refused upload is still read (and dropped): a body just over the limit is read
/// to its end, so the client gets the 413 rather than a connection reset while it sends.
const DRAIN_BYTES: usize = 1 << 20;

/// Reads and drops up to `budget` more bytes of `field`; returns what is left of the budget.
async fn drain_field(field: &mut actix_multipart::Field, mut budget: usize) -> usize {
    while budget > 0 {
        match field.next().await {
            Some(Ok(chunk)) => budget = budget.saturating_sub(chunk.len()),
            _ => break,
        }
    }
    budget
}

/// Reads and drops the rest of a refused upload, up to [`DRAIN_BYTES`].
async fn drain(multipart: &mut Multipart) {
    let mut budget = DRAIN_BYTES;
    while budget > 0 {
        match multipart.next().await {
            Some(Ok(mut field)) => budget = drain_field(&mut field, budget).await,
            _ => break,
        }
    }
}

/// What a multipart body may hold beyond the file itself (boundaries, headers, the token).
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

fn too_large() -> PageError {
    PageError(AppError::PayloadTooLarge(format!(
        "The file is larger than {} MB; nothing was imported. Use `candlewick import FILE.csv` for larger files.",
        MAX_UPLOAD_BYTES / (1024 * 1024)
    )))
}

/// Streams the file field to a temp file in `dir`, refusing more than [`MAX_UPLOAD_BYTES`].
async fn spool(
    field: &mut actix_multipart::Field,
    dir: &Path,
) -> Result<(tempfile::NamedTempFile, u64), PageError> {
    use anyhow::Context;
    // Made again if it went away since the start (or could not be made then).
    create_private_dir(dir)
        .with_context(|| format!("creating the upload folder {}", dir.display()))
        .map_err(PageError::infra)?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{SPOOL_PREFIX}{}-", std::process::id()))
        .suffix(".csv")
        .tempfile_in(dir)
        .context("creating a temp file for the upload")
        .map_err(PageError::infra)?;
    let std_file = tmp
        .reopen()
        .context("opening the upload's temp file")
        .map_err(PageError::infra)?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(std_file));
    let mut bytes = 0u64;
    while let Some(chunk) = field.next().await {
        let chunk = chunk
            .map_err(|e| AppError::BadRequest(format!("The upload could not be read: {e}.")))?;
        bytes += chunk.len() as u64;
        if bytes > MAX_UPLOAD_BYTES {
            drain_field(field, DRAIN_BYTES).await;
            return Err(too_large());
        }
        out.write_all(&chunk)
            .await
            .context("writing the upload to its temp file")
            .map_err(PageError::infra)?;
    }
    out.flush()
        .await
        .context("writing the upload to its temp file")
        .map_err(PageError::infra)?;
    Ok((tmp, bytes))
}

#[derive(Template)]
#[template(path = "admin/import/progress.html")]
struct ImportStatusPage {
    chrome: Chrome,
    job: JobView,
    refresh_secs: u32,
}

pub async fn import_status(
    admin: Admin,
    id: web::Path<String>,
    admin_state: web::Data<AdminState>,
) -> Result<HttpResponse, PageError> {
    let job = admin_state.imports.get(&id).ok_or_else(|| {
        PageError(AppError::NotFound(
            "There is no such import (finished imports are kept for six hours).".into(),
        ))
    })?;
    let status = ImportStatusPage {
        chrome: admin.chrome(Section::Import),
        job: job.view(),
        refresh_secs: REFRESH_SECS,
    };
    page(StatusCode::OK, &status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_that_ended_tells_its_rows_or_why_nothing_was_written() {
        assert!(matches!(outcome_of("a", Ok(7)), Outcome::Done { rows: 7 }));
        let Outcome::Failed {
            summary, errors, ..
        } = outcome_of("b", Err(WriteError::Duplicate("BTC/USD at 06:25".into())))
        else {
            panic!("a duplicate fails the import");
        };
        assert!(summary.contains("already exists"), "{summary}");
        assert_eq!(errors, ["BTC/USD at 06:25"]);
        let Outcome::Failed {
            summary, errors, ..
        } = outcome_of(
            "c",
            Err(WriteError::Unexpected(anyhow::anyhow!("the disk is full"))),
        )
        else {
            panic!("an unexpected error fails the import");
        };
        assert!(
            !summary.contains("disk"),
            "no internals on the page: {summary}"
        );
        assert!(errors.is_empty());
    }
}
