//! HTTP routes; each module registers its own.

pub mod admin;
pub mod api;
pub mod assets;
pub mod dashboard;
pub mod health;
pub mod ws;

use actix_web::middleware::DefaultHeaders;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::auth::Auth;
use crate::error::{AppError, PageError};
use crate::state::AppState;

/// Every route, the admin pages behind their session middleware, and a 404 for the rest: JSON
/// under `/api`, a page elsewhere.
pub fn configure(state: &AppState, auth: &Auth) -> impl FnOnce(&mut web::ServiceConfig) + use<> {
    let admin = admin::configure(auth, state.secure_cookies);
    move |cfg| {
        cfg.app_data(crate::error::json_config())
            .app_data(crate::error::query_config())
            .app_data(crate::error::form_config());
        health::configure(cfg);
        api::configure(cfg);
        ws::configure(cfg);
        assets::configure(cfg);
        dashboard::configure(cfg);
        admin(cfg);
        cfg.default_service(web::to(not_found));
    }
}

/// Headers every response carries (pages, API and assets alike).
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("Content-Security-Policy", content_security_policy()))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Referrer-Policy", "same-origin"))
}

/// Scripts and styles only from us, plus the one `<style>` the chart library injects (by hash).
fn content_security_policy() -> String {
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self' {}; img-src 'self' data:; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        assets::LIBRARY_STYLE_HASH
    )
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, actix_web::Error> {
    let e = AppError::NotFound("no such page".into());
    let path = req.path();
    Err(if path == "/api" || path.starts_with("/api/") {
        e.into()
    } else {
        PageError(e).into()
    })
}
