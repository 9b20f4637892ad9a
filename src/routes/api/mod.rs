//! The JSON API: ticks (read, write, bulk), candles (JSON and CSV), symbols and corrections.

mod body;
mod candles;
mod corrections;
mod query;
mod ticks;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    ticks::configure(cfg);
    candles::configure(cfg);
    corrections::configure(cfg);
}
