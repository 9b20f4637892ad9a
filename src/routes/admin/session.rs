//! Signing in with the admin token (rate-limited per client address with the bearer check,
//! see [`crate::auth::FailureLimiter`]), signing out, and signing
//! out everywhere.

use std::net::IpAddr;
use std::time::Instant;

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::Utc;
use serde::Deserialize;

use super::{Admin, page, see_other};
use crate::auth::Auth;
use crate::error::{AppError, PageError};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "admin/sign_in.html")]
struct SignInPage {
    notice: Option<&'static str>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SignInQuery {
    expired: Option<String>,
    signed_out: Option<String>,
}

pub async fn sign_in_form(
    req: HttpRequest,
    q: web::Query<SignInQuery>,
) -> Result<HttpResponse, PageError> {
    if Admin::extract(&req).await.is_ok() {
        return Ok(see_other("/admin"));
    }
    let notice = if q.expired.is_some() {
        Some("Your session has expired. Sign in again.")
    } else if q.signed_out.as_deref() == Some(EVERYWHERE) {
        Some("You have signed out everywhere: every admin session has ended.")
    } else if q.signed_out.is_some() {
        Some("You have signed out.")
    } else {
        None
    };
    page(
        StatusCode::OK,
        &SignInPage {
            notice,
            error: None,
        },
    )
}

/// The sign-in form. The token is never logged: this struct has no `Debug`.
#[derive(Deserialize)]
pub struct SignInForm {
    token: Option<String>,
}

#[tracing::instrument(name = "Admin sign-in", skip_all, fields(client))]
pub async fn sign_in(
    req: HttpRequest,
    form: web::Form<SignInForm>,
    session: Session,
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    // The peer, or behind a trusted proxy the address it forwards (see `client_addr`).
    let ip = crate::client_addr::resolve(&req).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    tracing::Span::current().record("client", tracing::field::display(ip));
    let now = Instant::now();
    if let Err(retry_after_secs) = auth.limiter.check(ip, now) {
        tracing::warn!("sign-in refused: too many failed attempts");
        return Err(PageError(AppError::TooManyRequests {
            message: format!(
                "Too many failed sign-ins from your address. Try again in {retry_after_secs} s."
            ),
            retry_after_secs,
        }));
    }
    let token = form.token.as_deref().unwrap_or_default().trim();
    if token.is_empty() || !auth.token_matches(token) {
        auth.limiter.record_failure(ip, now);
        tracing::warn!("sign-in failed: wrong admin token");
        let error = if token.is_empty() {
            "Enter the admin token."
        } else {
            "That is not the admin token."
        };
        return page(
            StatusCode::UNAUTHORIZED,
            &SignInPage {
                notice: None,
                error: Some(error.into()),
            },
        );
    }
    Admin::start(&session, &state.pool, Utc::now().timestamp())
        .await
        .map_err(PageError::infra)?;
    tracing::info!("admin signed in");
    Ok(see_other("/admin"))
}

#[derive(Deserialize)]
pub struct SignOutForm {
    csrf_token: Option<String>,
}

/// The `signed_out` value after signing out everywhere.
const EVERYWHERE: &str = "everywhere";

/// Ends this session on the server: a saved copy of its cookie no longer works.
pub async fn sign_out(
    admin: Admin,
    form: web::Form<SignOutForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    admin.check_csrf(form.csrf_token.as_deref())?;
    admin.end(&state.pool).await.map_err(PageError::infra)?;
    tracing::info!("admin signed out");
    Ok(see_other("/admin/sign-in?signed_out=1"))
}

/// Ends every admin session, in every browser (e.g. after a cookie may have leaked).
pub async fn sign_out_everywhere(
    admin: Admin,
    form: web::Form<SignOutForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    admin.check_csrf(form.csrf_token.as_deref())?;
    let ended = crate::db::sessions::revoke_all(&state.pool)
        .await
        .map_err(PageError::infra)?;
    admin.session.purge();
    tracing::info!(sessions = ended, "admin signed out everywhere");
    Ok(see_other(&format!(
        "/admin/sign-in?signed_out={EVERYWHERE}"
    )))
}
