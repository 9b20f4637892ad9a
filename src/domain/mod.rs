//! Validated domain types: parse once at the edge, then trust the type.

mod amount;
mod candle;
mod rows;
mod symbol;
pub mod time;

pub use amount::{MAX_AMOUNT, Price, Volume};
pub use candle::{Candle, Interval, roll_up};
pub use rows::{MAX_REPORTED_ERRORS, RowErrors};
pub use symbol::{SYMBOL_MAX_LEN, Symbol};
pub use time::parse_time;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Why a value was refused; the message is safe to show to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn refuse<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// A tick as stored in `ticks`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tick {
    pub time: DateTime<Utc>,
    pub symbol: Symbol,
    pub price: Price,
    pub volume: Volume,
}
