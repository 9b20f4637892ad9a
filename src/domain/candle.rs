//! Candles and the intervals they are drawn at.

use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::ParseError;

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

/// Rolls ascending 1m candles up into `interval` candles (ascending). The one place that says
/// how narrower candles make a wider one; `one_min_candle` itself is made from ticks in SQL
/// (`candlewick_minute_candle`, migration 0003).
pub fn roll_up<'a>(
    minutes: impl IntoIterator<Item = &'a Candle>,
    interval: Interval,
) -> Vec<Candle> {
    let mut out: Vec<Candle> = Vec::new();
    for c in minutes {
        let b = interval.bucket_of(c.t);
        match out.last_mut() {
            Some(last) if last.t == b => last.merge(c),
            _ => out.push(Candle { t: b, ..*c }),
        }
    }
    out
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
    fn buckets_align_to_the_epoch_also_before_1970() {
        assert_eq!(Interval::M5.bucket_of(299), 0);
        assert_eq!(Interval::M1.bucket_of(-1), -60);
        assert_eq!(Interval::D1.bucket_of(86_400 + 5), 86_400);
    }
}
