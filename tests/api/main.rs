//! One test binary for everything that needs a database: one embedded cluster per run, a fresh
//! database per test (copied from a migrated template).

mod admin_audit;
mod admin_conflicts;
mod admin_import;
mod admin_session;
mod admin_support;
mod admin_ticks;
mod api_errors;
mod bearer;
mod bodies;
mod browser;
mod candles;
mod chart_page;
mod chart_paging;
mod corrections;
mod demo;
mod feed;
mod helpers;
mod history;
mod import;
mod journal;
mod live_poll;
mod memory;
mod migrations;
// The shipped nginx config made to run on loopback, shared with `candlewick-bench viewers --proxy nginx`.
#[path = "../../bench/src/nginx_conf.rs"]
mod nginx_conf;
// How Chromium runs headless, shared with the bench's page measurements.
#[path = "../../bench/src/chromium_flags.rs"]
mod chromium_flags;
mod read_timeouts;
mod replicas;
mod rollups;
mod smoke;
mod stopping;
mod storage;
mod times;
mod timescale;
mod tutorial;
mod unusable_ticks;
mod ws;
