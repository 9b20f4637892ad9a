//! The admin token: the bearer check of the write API, the key of the admin session cookies,
//! and the constant-time comparison both of those and the admin pages' CSRF check use.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::error::AppError;

/// The admin token.
pub struct Auth {
    token: SecretString,
}

impl Auth {
    pub fn new(token: SecretString) -> Self {
        Self { token }
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
/// argument refuses every other request (401 without the header, 403 with a wrong token).
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
    if auth.token_matches(token.trim()) {
        Ok(Bearer)
    } else {
        Err(AppError::Forbidden("the admin token is not valid".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_secret_matches() {
        assert!(constant_time_eq("s3cret", "s3cret"));
        assert!(!constant_time_eq("s3cret", "s3creT"));
        assert!(!constant_time_eq("s3cret", "s3cre"));
        assert!(!constant_time_eq("s3cret", ""));
    }
}
