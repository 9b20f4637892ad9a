//! Ticks coming in: the wire formats (a JSON object or array, CSV with a header) parsed row by
//! row into validated [`Tick`]s, every bad row named, and the streamed CSV import that the CLI
//! and the admin upload share. Writing is `db::ticks`' job.

pub mod csv;
pub mod import;
pub mod json;

use std::collections::HashMap;

use crate::domain::time::rfc3339;
use crate::domain::{RowErrors, Tick};

/// Largest request body the API takes (413 beyond it).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Why a body gave no ticks.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not JSON at all (a syntax error, truncated): the request is malformed.
    #[error("{0}")]
    Malformed(String),
    /// Understood, but rows break the rules (or there are none): nothing is written.
    #[error("{0}")]
    Invalid(RowErrors),
}

/// The same (time, symbol) twice in one batch is a conflict: its message names both rows.
pub fn check_no_repeats(ticks: &[Tick]) -> Result<(), String> {
    let mut seen = HashMap::with_capacity(ticks.len());
    for (i, t) in ticks.iter().enumerate() {
        if let Some(first) = seen.insert((t.time, t.symbol.as_str()), i) {
            return Err(format!(
                "rows {} and {} are both {} at {}; nothing was written",
                first + 1,
                i + 1,
                t.symbol,
                rfc3339(t.time)
            ));
        }
    }
    Ok(())
}
