//! Errors become responses in one place. Every handler fails with one [`AppError`], which has
//! two faces: as itself it answers JSON `{"error": ...}` (the API), wrapped in [`PageError`] an
//! HTML page (the admin pages, the chart page, assets, unknown paths outside `/api`). Neither
//! face logs the error: the request's span (`telemetry::RequestSpan`) logs each one once, with
//! the cause chain of a 5xx.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};
use askama::Template;

use crate::db::WriteError;
use crate::ingest::{BodyError, MAX_BODY_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    NotFound(String),
    /// Input that cannot be understood at all (malformed JSON, a bad query parameter).
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed input that breaks a rule (a negative price, an unknown interval).
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Refused for a while (answered with `Retry-After`).
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    /// An admin page without a valid session: the page face redirects to the sign-in form.
    #[error("sign-in required")]
    SignInRequired { expired: bool },
    /// A body in an encoding we do not read.
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the database is unavailable; try again shortly")]
    Unavailable(#[source] anyhow::Error),
    /// Too much of one kind of work in flight: try again in a second (`Retry-After: 1`).
    #[error("{0}")]
    Overloaded(String),
    /// A read cancelled by its statement timeout (`--api-read-timeout`).
    #[error(
        "the database took too long to answer and the read was cancelled; ask for less (a \
         shorter range, a smaller limit) or try again shortly"
    )]
    TimedOut(#[source] anyhow::Error),
    #[error("something went wrong on our side; it has been logged")]
    Unexpected(#[from] anyhow::Error),
}

impl AppError {
    /// What went wrong inside, for the log: the cause chain of a 5xx (never shown to clients).
    pub fn cause(&self) -> Option<&anyhow::Error> {
        match self {
            Self::Unavailable(e) | Self::TimedOut(e) | Self::Unexpected(e) => Some(e),
            _ => None,
        }
    }

    /// The status, with the headers it needs (the message is the face's to render).
    fn response_builder(&self) -> HttpResponseBuilder {
        let mut res = HttpResponse::build(self.status_code());
        match self {
            Self::Unauthorized(_) => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            Self::TooManyRequests {
                retry_after_secs, ..
            } => {
                res.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            Self::Overloaded(_) => {
                res.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        res
    }

    /// An infrastructure failure: `Unavailable` when the database cannot be reached.
    pub fn from_infra(e: anyhow::Error) -> Self {
        if unreachable(&e) {
            Self::Unavailable(e)
        } else if timed_out(&e) {
            Self::TimedOut(e)
        } else {
            Self::Unexpected(e)
        }
    }
}

/// Whether `e` comes of not reaching the database (no connection, pool closed or exhausted),
/// rather than of a statement it refused.
pub fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<sqlx::Error>().is_some_and(|s| {
            matches!(
                s,
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
            )
        })
    })
}

/// Whether `e` is a statement PostgreSQL cancelled (57014: `statement_timeout`).
pub fn timed_out(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<sqlx::Error>().is_some_and(
            |s| matches!(s, sqlx::Error::Database(d) if d.code().as_deref() == Some("57014")),
        )
    })
}

impl From<WriteError> for AppError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Invalid(rows) => Self::Validation(rows.to_string()),
            WriteError::Duplicate(_) => Self::Conflict(e.to_string()),
            WriteError::Unexpected(e) => Self::from_infra(e),
        }
    }
}

impl From<BodyError> for AppError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Malformed(msg) => Self::BadRequest(msg),
            BodyError::Invalid(rows) => Self::Validation(rows.to_string()),
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unauthorized(_) | Self::SignInRequired { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) | Self::TimedOut(_) | Self::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.response_builder()
            .insert_header(ContentType::json())
            .body(serde_json::json!({ "error": self.to_string() }).to_string())
    }
}

/// The HTML face of an [`AppError`]: an error page, or the way to the sign-in form.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PageError(pub AppError);

impl<E: Into<AppError>> From<E> for PageError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl PageError {
    /// An infrastructure failure (503 when the database is unreachable, else 500).
    pub fn infra(e: anyhow::Error) -> Self {
        Self(AppError::from_infra(e))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: String,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self.0 {
            AppError::SignInRequired { .. } => StatusCode::SEE_OTHER,
            ref e => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let AppError::SignInRequired { expired } = self.0 {
            let to = if expired {
                "/admin/sign-in?expired=1"
            } else {
                "/admin/sign-in"
            };
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, to))
                .finish();
        }
        let status = self.status_code();
        let page = ErrorPage {
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error"),
            message: self.0.to_string(),
        };
        let mut res = self.0.response_builder();
        match page.render() {
            Ok(body) => res.insert_header(ContentType::html()).body(body),
            Err(e) => {
                tracing::error!(error = %e, "rendering the error page");
                res.insert_header(ContentType::plaintext())
                    .body(page.message)
            }
        }
    }
}

/// Turns actix extractor failures (bad JSON, bad query, body too large) into JSON errors.
pub fn json_config() -> actix_web::web::JsonConfig {
    actix_web::web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|err, _req| {
            use actix_web::error::JsonPayloadError as E;
            let e = match &err {
                E::OverflowKnownLength { .. } | E::Overflow { .. } => AppError::PayloadTooLarge(
                    format!("the body is larger than {} bytes", MAX_BODY_BYTES),
                ),
                E::ContentType => {
                    AppError::BadRequest("expected Content-Type: application/json".into())
                }
                E::Deserialize(d) => AppError::Validation(format!("invalid JSON body: {d}")),
                other => AppError::BadRequest(format!("invalid JSON body: {other}")),
            };
            e.into()
        })
}

pub fn query_config() -> actix_web::web::QueryConfig {
    actix_web::web::QueryConfig::default().error_handler(|err, _req| {
        AppError::BadRequest(format!("invalid query string: {err}")).into()
    })
}

/// The largest urlencoded form taken.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

pub fn form_config() -> actix_web::web::FormConfig {
    actix_web::web::FormConfig::default()
        .limit(MAX_FORM_BYTES)
        .error_handler(|err, _req| AppError::BadRequest(format!("invalid form: {err}")).into())
}
