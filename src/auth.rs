//! The admin token: the bearer check of the write API, the key of the admin session cookies,
//! and the constant-time comparison both of those and the admin pages' CSRF check use.

use std::collections::{HashMap, VecDeque};
use std::future::{Ready, ready};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::error::AppError;

/// The admin token.
pub struct Auth {
    token: SecretString,
    /// Failed attempts per client address, of the sign-in form and the bearer check alike.
    pub limiter: FailureLimiter,
}

impl Auth {
    pub fn new(token: SecretString) -> Self {
        Self {
            token,
            limiter: FailureLimiter::default(),
        }
    }

    pub fn token_matches(&self, candidate: &str) -> bool {
        constant_time_eq(self.token.expose_secret(), candidate)
    }

    /// Key material for the session cookie, derived from the token: rotating it signs everyone out.
    pub fn cookie_key(&self) -> actix_web::cookie::Key {
        let mut material = self.token.expose_secret().as_bytes().to_vec();
        material.extend_from_slice(
            b"candlewick session cookie key, v1, padded to at least 64 bytes.......",
        );
        actix_web::cookie::Key::derive_from(&material)
    }
}

/// Compares two secrets without an early exit on the first differing byte (the length is not
/// secret).
pub fn constant_time_eq(expected: &str, candidate: &str) -> bool {
    let (expected, candidate) = (expected.as_bytes(), candidate.as_bytes());
    expected.len() == candidate.len() && bool::from(expected.ct_eq(candidate))
}

/// A request that carries `Authorization: Bearer <admin token>`: taking it as a handler
/// argument refuses every other request (401 without the header, 403 with a wrong token, 429
/// once the client's address has had [`MAX_FAILURES`] wrong ones in [`FAILURE_WINDOW`]).
pub struct Bearer;

impl FromRequest for Bearer {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check_bearer(req))
    }
}

fn check_bearer(req: &HttpRequest) -> Result<Bearer, AppError> {
    let auth = req
        .app_data::<web::Data<Auth>>()
        .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("no Auth registered with the app")))?;
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(AppError::Unauthorized(
            "this endpoint needs Authorization: Bearer <admin token>".into(),
        ));
    };
    let token = value
        .to_str()
        .ok()
        // The scheme is case-insensitive (RFC 9110 §11.1).
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        })
        .map(|(_, token)| token)
        .ok_or_else(|| {
            AppError::Unauthorized("expected Authorization: Bearer <admin token>".into())
        })?;
    // Like the sign-in form: an address that used up its failures is refused before the token
    // is compared, right token or not, so guessing costs a minute per five guesses.
    let ip = crate::client_addr::resolve(req).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let now = Instant::now();
    if let Err(retry_after_secs) = auth.limiter.check(ip, now) {
        tracing::warn!(client = %ip, "bearer token refused: too many failed attempts");
        return Err(AppError::TooManyRequests {
            message: format!(
                "too many wrong admin tokens from your address; try again in {retry_after_secs} s"
            ),
            retry_after_secs,
        });
    }
    if auth.token_matches(token.trim()) {
        Ok(Bearer)
    } else {
        auth.limiter.record_failure(ip, now);
        tracing::warn!(client = %ip, "bearer token refused: wrong admin token");
        Err(AppError::Forbidden("the admin token is not valid".into()))
    }
}

/// Failed attempts (sign-ins and bearer tokens together) one client address may make per [`FAILURE_WINDOW`].
pub const MAX_FAILURES: usize = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Above this many tracked addresses, forget those with no recent failure.
const TRACKED_ADDRESSES: usize = 10_000;

/// Recent failed attempts to present the admin token per client address, through the sign-in
/// form or `Authorization: Bearer`: one count, so neither is a way around the other's limit (IPv6 per /64, what one host usually holds).
#[derive(Default)]
pub struct FailureLimiter {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl FailureLimiter {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn only_the_same_secret_matches() {
        assert!(constant_time_eq("s3cret", "s3cret"));
        assert!(!constant_time_eq("s3cret", "s3creT"));
        assert!(!constant_time_eq("s3cret", "s3cre"));
        assert!(!constant_time_eq("s3cret", ""));
    }

    #[test]
    fn five_failures_in_a_minute_lock_the_address_until_the_oldest_expires() {
        let limiter = FailureLimiter::default();
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
        let limiter = FailureLimiter::default();
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
