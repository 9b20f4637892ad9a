//! Errors become responses in one place: JSON `{"error": ...}` for the API, a page for HTML routes.

use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, ResponseError};

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
    #[error("{0}")]
    TooManyRequests(String),
    /// Refused for a while (answered with `Retry-After`).
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
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
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests(_) | Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) | Self::TimedOut(_) | Self::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Unexpected(e) | Self::Unavailable(e) | Self::TimedOut(e) => {
                tracing::error!(error.cause_chain = ?e, "request failed");
            }
            _ => {}
        }
        let mut res = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unauthorized(_)) {
            res.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if matches!(self, Self::Overloaded(_)) {
            res.insert_header((actix_web::http::header::RETRY_AFTER, "1"));
        }
        if let Self::RateLimited {
            retry_after_secs, ..
        } = self
        {
            res.insert_header((
                actix_web::http::header::RETRY_AFTER,
                retry_after_secs.to_string(),
            ));
        }
        res.insert_header(ContentType::json())
            .body(serde_json::json!({ "error": self.to_string() }).to_string())
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
