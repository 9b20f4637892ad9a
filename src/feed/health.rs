//! The poll's health: whether the last poll succeeded, for `/readyz` and the
//! `candlewick_ready` gauge.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    poll_ok: AtomicBool,
}

impl Health {
    pub fn set_poll_ok(&self, ok: bool) {
        self.poll_ok.store(ok, Ordering::Relaxed);
    }

    pub fn last_poll_ok(&self) -> bool {
        self.poll_ok.load(Ordering::Relaxed)
    }

    /// Sets the gauges `/metrics` reports from this state (read when scraped: tests run several
    /// servers in one process, each with its own health, and one recorder).
    pub fn record_gauges(&self) {
        metrics::gauge!("candlewick_ready").set(if self.last_poll_ok() { 1.0 } else { 0.0 });
    }
}
