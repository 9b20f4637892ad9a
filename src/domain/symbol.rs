//! Market symbols.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ParseError, refuse};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
