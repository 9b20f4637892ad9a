//! HTTP routes; each module registers its own.

pub mod admin;
pub mod api;
pub mod assets;
pub mod dashboard;
pub mod health;
pub mod ws;

use actix_web::middleware::DefaultHeaders;
use actix_web::{HttpResponse, web};

use crate::auth::Auth;
use crate::error::AppError;
use crate::state::AppState;

/// Every route, the admin pages behind their session middleware, and a JSON 404 for the rest.
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

async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound("no such page".into()))
}
