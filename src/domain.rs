//! Validated domain types: parse once at the edge, then trust the type.

use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Why a value was refused; the message is safe to show to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn refuse<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// The longest symbol we accept.
pub const SYMBOL_MAX_LEN: usize = 32;

/// A market symbol: 1–32 of `A-Z a-z 0-9 / . _ - : + ^ = # @ ! < > ( ) [ ] & ; , '` and spaces inside.
///
/// The set is deliberately wide (it must hold what other writers put in `ticks`) but excludes
/// control characters and leading/trailing whitespace; templates escape everything anyway.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Symbol(String);

impl Symbol {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return refuse("symbol must not be empty");
        }
        if s.chars().count() > SYMBOL_MAX_LEN {
            return refuse(format!(
                "symbol must be at most {SYMBOL_MAX_LEN} characters"
            ));
        }
        if s.trim() != s {
            return refuse("symbol must not start or end with whitespace");
        }
        if let Some(c) = s.chars().find(|c| !Self::allowed(*c)) {
            return refuse(format!(
                "symbol contains the character {c:?}, which is not allowed"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    fn allowed(c: char) -> bool {
        c.is_ascii_alphanumeric() || " /._-:+^=#@!<>()[]&;,'".contains(c)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Symbol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Symbol::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The largest price or volume accepted: far above any market, far below where a minute's sum
/// of volumes could overflow a double.
pub const MAX_AMOUNT: f64 = 1e15;

/// A trade price: finite, greater than zero, at most [`MAX_AMOUNT`].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Price(f64);

impl Price {
    pub fn new(v: f64) -> Result<Self, ParseError> {
        if !v.is_finite() {
            return refuse("price must be a finite number");
        }
        if v <= 0.0 {
            return refuse("price must be greater than 0");
        }
        if v > MAX_AMOUNT {
            return refuse("price must be at most 1e15");
        }
        Ok(Self(v))
    }
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Self::new(parse_number(s, "price")?)
    }
    pub fn get(self) -> f64 {
        self.0
    }
}

/// A traded volume: finite, not negative, at most [`MAX_AMOUNT`].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Volume(f64);

impl Volume {
    pub fn new(v: f64) -> Result<Self, ParseError> {
        if !v.is_finite() {
            return refuse("volume must be a finite number");
        }
        if v < 0.0 {
            return refuse("volume must not be negative");
        }
        if v > MAX_AMOUNT {
            return refuse("volume must be at most 1e15");
        }
        Ok(Self(v))
    }
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Self::new(parse_number(s, "volume")?)
    }
    pub fn get(self) -> f64 {
        self.0
    }
}

fn parse_number(s: &str, what: &str) -> Result<f64, ParseError> {
    let t = s.trim();
    // Rust's f64 parser also takes "inf"/"NaN"; refuse them by name for a clearer message.
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => refuse(format!("{what} must be a finite number")),
        Err(_) if t.is_empty() => refuse(format!("{what} is required")),
        Err(_) => refuse(format!("{what} must be a number, got {t:?}")),
    }
}

/// An instant given as RFC 3339 with an explicit offset (`Z` or `+02:00`).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, ParseError> {
    let t = s.trim();
    if t.is_empty() {
        return refuse("time is required");
    }
    DateTime::parse_from_rfc3339(t)
        .map(|d| d.with_timezone(&Utc))
        .or_else(|_| {
            refuse(format!(
                "time must be RFC 3339 with an offset, like 2024-07-03T06:25:00Z; got {t:?}"
            ))
        })
}

/// A tick as stored in `ticks`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tick {
    pub time: DateTime<Utc>,
    pub symbol: Symbol,
    pub price: Price,
    pub volume: Volume,
}

/// Candle widths the chart and the API offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Interval {
    #[serde(rename = "1m")]
    M1,
    #[serde(rename = "5m")]
    M5,
    #[serde(rename = "15m")]
    M15,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "4h")]
    H4,
    #[serde(rename = "1d")]
    D1,
}

impl Interval {
    pub const ALL: [Interval; 6] = [Self::M1, Self::M5, Self::M15, Self::H1, Self::H4, Self::D1];

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Self::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| {
                ParseError(format!(
                    "interval must be one of 1m 5m 15m 1h 4h 1d; got {s:?}"
                ))
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::M1 => "1m",
            Self::M5 => "5m",
            Self::M15 => "15m",
            Self::H1 => "1h",
            Self::H4 => "4h",
            Self::D1 => "1d",
        }
    }

    /// Width in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Self::M1 => 60,
            Self::M5 => 300,
            Self::M15 => 900,
            Self::H1 => 3_600,
            Self::H4 => 14_400,
            Self::D1 => 86_400,
        }
    }

    /// Start (Unix seconds, UTC, epoch-aligned) of the bucket holding `t`.
    pub fn bucket_of(self, t: i64) -> i64 {
        t.div_euclid(self.seconds()) * self.seconds()
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One OHLCV candle; `t` is the bucket start in Unix seconds (UTC).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candle {
    pub t: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
}

impl Candle {
    pub fn bucket(&self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.t, 0).single().unwrap_or_default()
    }

    /// Folds a later candle into this one (same bucket, `other` after `self` in time).
    pub fn merge(&mut self, other: &Candle) {
        self.high = self.high.max(other.high);
        self.low = self.low.min(other.low);
        self.close = other.close;
        self.volume += other.volume;
    }
}

/// The wire form `[t, open, high, low, close, volume]`.
impl Serialize for Candle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (
            self.t,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
        )
            .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_negative_or_zero_price_is_rejected() {
        assert!(Price::new(-5.0).is_err());
        assert!(Price::new(0.0).is_err());
        assert!(Price::new(61057.0).is_ok());
    }

    #[test]
    fn non_finite_numbers_are_rejected() {
        for s in ["NaN", "inf", "-Infinity", "1e999", "abc", ""] {
            assert!(Price::parse(s).is_err(), "price {s:?}");
            assert!(Volume::parse(s).is_err(), "volume {s:?}");
        }
    }

    #[test]
    fn amounts_beyond_1e15_are_rejected() {
        assert!(Price::new(1e15).is_ok());
        assert!(Price::new(1.5e15).is_err());
        assert!(Volume::new(1e308).is_err());
    }

    #[test]
    fn zero_volume_is_fine_but_negative_is_not() {
        assert!(Volume::new(0.0).is_ok());
        assert!(Volume::new(-0.1).is_err());
    }

    #[test]
    fn symbols_follow_the_documented_syntax() {
        for ok in [
            "BTC/USD",
            "BTC",
            "eth-usd.P",
            "A",
            "<script>alert(1)</script>",
        ] {
            assert!(Symbol::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            " BTC",
            "BTC ",
            "a\nb",
            "x\u{0}",
            &"A".repeat(33),
            "BTC€",
        ] {
            assert!(Symbol::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times_need_an_offset() {
        assert!(parse_time("2024-07-03T06:25:00Z").is_ok());
        assert!(parse_time("2024-07-03T08:25:00+02:00").is_ok());
        for bad in [
            "2024-07-03T06:25:00",
            "yesterday",
            "2024-13-45T99:00:00Z",
            "",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn buckets_align_to_the_epoch_also_before_1970() {
        assert_eq!(Interval::M5.bucket_of(299), 0);
        assert_eq!(Interval::M1.bucket_of(-1), -60);
        assert_eq!(Interval::D1.bucket_of(86_400 + 5), 86_400);
    }
}
