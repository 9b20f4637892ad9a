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
