//! Signing in with the admin token (rate-limited per client address), signing out, and signing
//! out everywhere.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::Utc;
use serde::Deserialize;

use super::{Admin, AdminState, page, see_other};
use crate::auth::Auth;
use crate::error::{AppError, PageError};
use crate::state::AppState;

/// Failed sign-ins one client address may make per [`FAILURE_WINDOW`].
pub const MAX_FAILURES: usize = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Above this many tracked addresses, forget those with no recent failure.
const TRACKED_ADDRESSES: usize = 10_000;

/// Recent failed sign-ins per client address (IPv6 per /64, what one host usually holds).
#[derive(Default)]
pub struct SignInLimiter {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl SignInLimiter {
    /// `Err(seconds until the next attempt is allowed)` when `ip` has used up its failures.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(times) = map.get_mut(&bucket(ip)) else {
            return Ok(());
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= FAILURE_WINDOW)
        {
            times.pop_front();
        }
        if times.len() < MAX_FAILURES {
            return Ok(());
        }
        let oldest = times.front().copied().unwrap_or(now);
        Err(FAILURE_WINDOW
            .saturating_sub(now.duration_since(oldest))
            .as_secs()
            .max(1))
    }

    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= TRACKED_ADDRESSES {
            map.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < FAILURE_WINDOW)
            });
        }
        let times = map.entry(bucket(ip)).or_default();
        times.push_back(now);
        while times.len() > MAX_FAILURES {
            times.pop_front();
        }
    }
}

fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

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
    admin: web::Data<AdminState>,
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    // The peer, or behind a trusted proxy the address it forwards (see `client_addr`).
    let ip = crate::client_addr::resolve(&req).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    tracing::Span::current().record("client", tracing::field::display(ip));
    let now = Instant::now();
    if let Err(retry_after_secs) = admin.limiter.check(ip, now) {
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
        admin.limiter.record_failure(ip, now);
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn five_failures_in_a_minute_lock_the_address_until_the_oldest_expires() {
        let limiter = SignInLimiter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert!(limiter.check(ip, t0).is_ok(), "attempt {i}");
            limiter.record_failure(ip, t0 + Duration::from_secs(i as u64));
        }
        let wait = limiter.check(ip, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, 50);
        assert!(
            limiter.check("192.0.2.2".parse().unwrap(), t0).is_ok(),
            "other addresses are not affected"
        );
        assert!(limiter.check(ip, t0 + FAILURE_WINDOW).is_ok());
    }

    #[test]
    fn ipv6_addresses_count_per_64_prefix() {
        let limiter = SignInLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            limiter.record_failure(format!("2001:db8::{i}").parse().unwrap(), t0);
        }
        assert!(
            limiter
                .check("2001:db8::ffff".parse().unwrap(), t0)
                .is_err()
        );
        assert!(
            limiter
                .check("2001:db8:0:1::1".parse().unwrap(), t0)
                .is_ok()
        );
    }
}
