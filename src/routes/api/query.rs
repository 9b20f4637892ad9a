//! Query-string parameters, taken as text and validated here so every problem gets our own
//! message (400).

use chrono::{DateTime, Utc};

use crate::domain::Symbol;
use crate::domain::time::{EARLIEST_SECS, END_SECS, TimeError, parse_query_time};
use crate::error::AppError;

/// 400 for what is not a time, 422 for an instant PostgreSQL cannot store.
pub fn time(name: &str, value: &str) -> Result<DateTime<Utc>, AppError> {
    parse_query_time(value).map_err(|e| match e {
        TimeError::Malformed(m) => AppError::BadRequest(format!("{name}: {m}")),
        TimeError::OutOfRange(m) => AppError::Validation(format!("{name}: {m}")),
    })
}

pub fn optional_time(name: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, AppError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| time(name, v))
        .transpose()
}

/// A time given as RFC 3339 or as Unix seconds (what the chart has at hand).
pub fn optional_instant(
    name: &str,
    value: Option<&str>,
) -> Result<Option<DateTime<Utc>>, AppError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match v.parse::<i64>() {
        Ok(secs) if (EARLIEST_SECS..END_SECS).contains(&secs) => {
            Ok(DateTime::from_timestamp(secs, 0))
        }
        Ok(secs) => Err(AppError::Validation(format!(
            "{name}: {secs} is outside the years 1 to 9999"
        ))),
        Err(_) => time(name, v).map(Some),
    }
}

pub fn limit(value: Option<&str>, default: i64, max: i64) -> Result<i64, AppError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(AppError::BadRequest(format!(
                "limit must be a whole number from 1 to {max}; got {v:?}"
            ))),
        },
    }
}

pub fn symbol(value: Option<&str>) -> Result<Option<Symbol>, AppError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| Symbol::parse(v).map_err(|e| AppError::BadRequest(format!("symbol: {}", e.0))))
        .transpose()
}
