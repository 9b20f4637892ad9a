//! Query-string parameters, taken as text and validated here so every problem gets our own
//! message (400).

use chrono::{DateTime, Utc};

use crate::domain::Symbol;
use crate::domain::time::parse_query_time;
use crate::error::AppError;

pub fn time(name: &str, value: &str) -> Result<DateTime<Utc>, AppError> {
    parse_query_time(value).map_err(|e| AppError::BadRequest(format!("{name}: {}", e.0)))
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
    /// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the years RFC 3339 writes.
    const SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;
    match v.parse::<i64>() {
        Ok(secs) if SECONDS.contains(&secs) => Ok(DateTime::from_timestamp(secs, 0)),
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
