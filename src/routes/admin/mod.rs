//! `/admin`: sign-in with the admin token, then tick forms, CSV import and the audit trail.
//!
//! Sessions live in an encrypted cookie (actix-session's cookie store, keyed from the admin
//! token) that names a row of `admin_sessions`: signing out deletes the row, so a saved copy of
//! the cookie no longer works. Every form carries the session's CSRF token; every write goes
//! through `db::ticks` and records itself in `audit_log` as `admin session`.

pub mod audit;
pub mod import;
mod listing;
pub mod session;
pub mod ticks;

use actix_session::config::{CookieContentSecurity, PersistentSession};
use actix_session::{Session, SessionExt, SessionMiddleware, storage::CookieSessionStore};
use actix_web::cookie::SameSite;
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::Utc;
use futures_util::future::LocalBoxFuture;
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};

use crate::auth::{Auth, constant_time_eq};
use crate::error::{AppError, PageError};
use crate::state::AppState;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "candlewick_admin";
/// A session ends this long after sign-in, however active (seconds).
pub const SESSION_MAX_AGE_SECS: i64 = 12 * 3600;
/// A session ends after this long without a request (seconds).
pub const SESSION_IDLE_SECS: i64 = 3600;
/// `last_seen` is rewritten (and the cookie re-sent) at most this often (seconds).
const TOUCH_EVERY_SECS: i64 = 60;

const KEY_SIGNED_IN_AT: &str = "signed_in_at";
const KEY_LAST_SEEN: &str = "last_seen";
const KEY_CSRF: &str = "csrf";
const KEY_SESSION_ID: &str = "session_id";
const KEY_FLASH: &str = "flash";

/// State of the admin pages shared by all workers of one server.
pub struct AdminState {
    pub imports: import::ImportRegistry,
    pub uploads: import::UploadDir,
}

impl AdminState {
    /// Uploads are spooled under `data_dir` (leftovers of a killed server are removed now).
    pub fn new(data_dir: &std::path::Path) -> Self {
        Self {
            imports: import::ImportRegistry::default(),
            uploads: import::UploadDir::prepare(data_dir),
        }
    }
}

/// Registers `/admin` and everything under it, behind the session middleware.
pub fn configure(
    auth: &Auth,
    secure_cookies: bool,
) -> impl FnOnce(&mut web::ServiceConfig) + use<> {
    let sessions = SessionMiddleware::builder(CookieSessionStore::default(), auth.cookie_key())
        .cookie_name(SESSION_COOKIE.to_owned())
        .cookie_path("/admin".to_owned())
        .cookie_http_only(true)
        .cookie_same_site(SameSite::Strict)
        .cookie_secure(secure_cookies)
        .cookie_content_security(CookieContentSecurity::Private)
        // The cookie outlives the browser session up to the absolute limit; the limits
        // themselves are checked against the timestamps inside it (see `Admin`).
        .session_lifecycle(PersistentSession::default().session_ttl(
            actix_web::cookie::time::Duration::seconds(SESSION_MAX_AGE_SECS),
        ))
        .build();
    move |cfg| {
        cfg.service(
            web::scope("/admin")
                .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store")))
                .wrap(sessions)
                .app_data(form_config())
                .app_data(query_config())
                .route("", web::get().to(ticks::list::list_ticks))
                .route("/", web::get().to(ticks::list::list_ticks))
                .route("/sign-in", web::get().to(session::sign_in_form))
                .route("/sign-in", web::post().to(session::sign_in))
                .route("/sign-out", web::post().to(session::sign_out))
                .route(
                    "/sign-out-everywhere",
                    web::post().to(session::sign_out_everywhere),
                )
                .route("/ticks/new", web::get().to(ticks::new::new_tick_form))
                .route("/ticks/new", web::post().to(ticks::new::create_tick))
                .route("/ticks/edit", web::get().to(ticks::edit::edit_tick_form))
                .route("/ticks/edit", web::post().to(ticks::edit::update_tick))
                .route(
                    "/ticks/delete",
                    web::get().to(ticks::delete::confirm_delete),
                )
                .route("/ticks/delete", web::post().to(ticks::delete::delete_tick))
                .route(
                    "/ticks/delete-unstorable",
                    web::post().to(ticks::delete::delete_unstorable_tick),
                )
                .route("/import", web::get().to(import::import_form))
                .route("/import", web::post().to(import::upload))
                .route("/import/{id}", web::get().to(import::import_status))
                .route("/audit", web::get().to(audit::list_audit))
                .default_service(web::to(not_found)),
        );
    }
}

/// Forms that cannot be read get an admin error page (the app-wide handlers answer the API's
/// JSON).
fn form_config() -> web::FormConfig {
    web::FormConfig::default()
        .limit(crate::error::MAX_FORM_BYTES)
        .error_handler(|err, _req| {
            use actix_web::error::UrlencodedError as E;
            match err {
                E::Overflow { .. } => {
                    PageError(AppError::PayloadTooLarge("The form is too large.".into()))
                }
                E::ContentType => PageError(AppError::BadRequest(
                    "The form was not sent as a form (application/x-www-form-urlencoded).".into(),
                )),
                other => PageError(AppError::BadRequest(format!(
                    "The form could not be read: {other}."
                ))),
            }
            .into()
        })
}

/// Query strings that cannot be read get an admin error page too.
fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        PageError(AppError::BadRequest(format!(
            "This address could not be read: {err}."
        )))
        .into()
    })
}

async fn not_found() -> Result<HttpResponse, PageError> {
    Err(PageError(AppError::NotFound(
        "There is no such admin page.".into(),
    )))
}

/// A signed-in admin: extracting it checks the session, its expiry, and that it has not been
/// signed out (one indexed lookup per admin request).
pub struct Admin {
    session: Session,
    csrf: String,
    id: String,
}

impl FromRequest for Admin {
    type Error = PageError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let session = req.get_session();
        let pool = req
            .app_data::<web::Data<AppState>>()
            .map(|s| s.pool.clone());
        Box::pin(async move {
            let admin = Admin::from_session(session, Utc::now().timestamp())?;
            let pool = pool.ok_or_else(|| {
                PageError::infra(anyhow::anyhow!("no AppState registered with the app"))
            })?;
            let active = crate::db::sessions::is_active(&pool, &admin.id, SESSION_MAX_AGE_SECS)
                .await
                .map_err(PageError::infra)?;
            if !active {
                // Signed out (here or everywhere): the saved cookie is worth nothing now.
                admin.session.purge();
                return Err(PageError(AppError::SignInRequired { expired: false }));
            }
            Ok(admin)
        })
    }
}

impl Admin {
    fn from_session(session: Session, now: i64) -> Result<Self, PageError> {
        let signed_in_at: Option<i64> = session.get(KEY_SIGNED_IN_AT).ok().flatten();
        let last_seen: Option<i64> = session.get(KEY_LAST_SEEN).ok().flatten();
        let csrf: Option<String> = session.get(KEY_CSRF).ok().flatten();
        let id: Option<String> = session.get(KEY_SESSION_ID).ok().flatten();
        let (Some(signed_in_at), Some(last_seen), Some(csrf), Some(id)) =
            (signed_in_at, last_seen, csrf, id)
        else {
            return Err(PageError(AppError::SignInRequired { expired: false }));
        };
        let fresh = now - signed_in_at <= SESSION_MAX_AGE_SECS
            && now - last_seen <= SESSION_IDLE_SECS
            // Stamps from the future come from a clock jump; start over rather than trust them.
            && signed_in_at <= now + TOUCH_EVERY_SECS
            && csrf.len() >= 32;
        if !fresh {
            session.purge();
            return Err(PageError(AppError::SignInRequired { expired: true }));
        }
        if now - last_seen >= TOUCH_EVERY_SECS {
            let _ = session.insert(KEY_LAST_SEEN, now);
        }
        Ok(Self { session, csrf, id })
    }

    /// Starts a fresh session (new id, new CSRF token) after a successful sign-in; the
    /// browser's previous session, if any, ends.
    async fn start(session: &Session, pool: &sqlx::PgPool, now: i64) -> anyhow::Result<()> {
        let previous: Option<String> = session.get(KEY_SESSION_ID).ok().flatten();
        let id = Alphanumeric.sample_string(&mut rand::rng(), 43);
        crate::db::sessions::create(pool, &id, SESSION_MAX_AGE_SECS).await?;
        if let Some(previous) = previous {
            crate::db::sessions::revoke(pool, &previous).await?;
        }
        session.renew();
        session.insert(KEY_SESSION_ID, id)?;
        session.insert(KEY_SIGNED_IN_AT, now)?;
        session.insert(KEY_LAST_SEEN, now)?;
        session.insert(KEY_CSRF, Alphanumeric.sample_string(&mut rand::rng(), 43))?;
        Ok(())
    }

    /// Ends this session on the server and removes its cookie.
    async fn end(self, pool: &sqlx::PgPool) -> anyhow::Result<()> {
        crate::db::sessions::revoke(pool, &self.id).await?;
        self.session.purge();
        Ok(())
    }

    /// Refuses a form whose CSRF token is missing or not this session's (403, nothing written).
    pub fn check_csrf(&self, submitted: Option<&str>) -> Result<(), PageError> {
        let Some(submitted) = submitted.filter(|s| !s.is_empty()) else {
            return Err(PageError(AppError::Forbidden(
                "The form was sent without its security token. Reload the page and try again."
                    .into(),
            )));
        };
        if constant_time_eq(&self.csrf, submitted) {
            Ok(())
        } else {
            Err(PageError(AppError::Forbidden(
                "The form's security token does not match your session. Reload the page and try again.".into(),
            )))
        }
    }

    /// A message for the next page this session sees.
    pub fn flash(&self, kind: FlashKind, message: impl Into<String>) {
        let _ = self.session.insert(
            KEY_FLASH,
            Flash {
                kind,
                message: message.into(),
            },
        );
    }

    /// What every admin page needs: the CSRF token (sign-out form) and a pending flash message.
    pub fn chrome(&self, section: Section) -> Chrome {
        let flash = self
            .session
            .remove_as::<Flash>(KEY_FLASH)
            .and_then(Result::ok);
        Chrome {
            csrf: self.csrf.clone(),
            flash,
            section,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlashKind {
    Success,
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flash {
    pub kind: FlashKind,
    pub message: String,
}

impl Flash {
    pub fn class(&self) -> &'static str {
        match self.kind {
            FlashKind::Success => "flash flash-success",
            FlashKind::Error => "flash flash-error",
        }
    }
}

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Ticks,
    NewTick,
    Import,
    Audit,
}

/// The parts of the layout every signed-in page shares.
pub struct Chrome {
    pub csrf: String,
    pub flash: Option<Flash>,
    pub section: Section,
}

impl Chrome {
    pub fn current(&self, name: &str) -> bool {
        let s = match self.section {
            Section::Ticks => "ticks",
            Section::NewTick => "new",
            Section::Import => "import",
            Section::Audit => "audit",
        };
        s == name
    }
}

/// 303 See Other to `location` (POST-redirect-GET).
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// Renders `page` with `status`, as an error page when rendering fails.
pub fn page<T: Template>(status: StatusCode, page: &T) -> Result<HttpResponse, PageError> {
    Ok(crate::render::render_with(status, page)?)
}

/// A query string built from pairs, percent-encoded (templates escape it again for HTML).
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    s.finish()
}

/// A number as the pages show it; `None` (NULL in the table) as a dash.
pub fn number(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |x| x.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_percent_encoded_and_skip_empty_values() {
        assert_eq!(
            query(&[("symbol", "<a&b>"), ("from", "")]),
            "symbol=%3Ca%26b%3E"
        );
    }
}
