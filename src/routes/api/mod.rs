//! The JSON API: ticks (read, write, bulk), candles (JSON and CSV) and symbols.

mod body;
mod candles;
mod query;
mod ticks;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    ticks::configure(cfg);
    candles::configure(cfg);
}
