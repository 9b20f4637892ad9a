//! What the tick list and the audit trail share: optional filters typed into a GET form, and
//! newest-first keyset pages with links to the next older page and back to the newest.

use actix_web::http::StatusCode;
use chrono::{DateTime, Utc};

use super::query;
use crate::domain::Symbol;
use crate::domain::time::parse_form_time;
use crate::error::PageError;

/// A filter from the query string, trimmed; empty when absent.
pub fn text(value: Option<String>) -> String {
    value.as_deref().unwrap_or_default().trim().to_owned()
}

/// An optional symbol filter: `None` when empty, or when it does not parse (noted in `error`).
pub fn symbol(input: &str, error: &mut Option<String>) -> Option<String> {
    if input.is_empty() {
        return None;
    }
    Symbol::parse(input)
        .map(|s| s.to_string())
        .map_err(|e| *error = Some(e.0))
        .ok()
}

/// An optional time filter: `None` when empty, or when it does not parse (noted in `error`).
pub fn time(input: &str, error: &mut Option<String>) -> Option<DateTime<Utc>> {
    if input.is_empty() {
        return None;
    }
    parse_form_time(input)
        .map_err(|e| *error = Some(e.to_string()))
        .ok()
}

/// One page of rows, newest first.
pub struct Page<T> {
    /// 422 when a filter was refused (the form is shown again with its messages; nothing
    /// fetched).
    pub status: StatusCode,
    pub rows: Vec<T>,
    /// Whether older rows follow this page.
    pub more: bool,
}

/// Runs `fetch` (asked for `size + 1` rows: the extra one tells whether an older page exists)
/// unless a filter was refused, then keeps `size` rows.
pub async fn fetch_page<T>(
    refused: bool,
    size: i64,
    fetch: impl Future<Output = anyhow::Result<Vec<T>>>,
) -> Result<Page<T>, PageError> {
    if refused {
        return Ok(Page {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            rows: Vec::new(),
            more: false,
        });
    }
    let mut rows = fetch.await.map_err(PageError::infra)?;
    let more = rows.len() as i64 > size;
    rows.truncate(size as usize);
    Ok(Page {
        status: StatusCode::OK,
        rows,
        more,
    })
}

/// The query string of the next older page: the same filters and the last row's cursor.
pub fn older(filters: &[(&str, &str)], cursor: &[(&str, &str)]) -> String {
    let mut pairs = filters.to_vec();
    pairs.extend_from_slice(cursor);
    query(&pairs)
}
