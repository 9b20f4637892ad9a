//! HTTP routes; each module registers its own.

pub mod admin;
pub mod api;
pub mod assets;
pub mod dashboard;
pub mod health;
pub mod ws;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    health::configure(cfg);
    api::configure(cfg);
    ws::configure(cfg);
    assets::configure(cfg);
    dashboard::configure(cfg);
}
