//! Prices and volumes.

use serde::Serialize;

use super::{ParseError, refuse};

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
}
