//! One test binary for everything that needs a database: one embedded cluster per run, a fresh
//! database per test (copied from a migrated template).

mod helpers;
mod smoke;
mod browser;
mod candles;
mod ws;
mod journal;
mod api_errors;
mod tutorial;
mod timescale;
mod admin_import;
mod admin_session;
mod admin_support;
mod admin_ticks;
mod import;
mod admin_audit;
