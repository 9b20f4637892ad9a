//! How a viewer joins: by default as the chart page does (the newest 500 candles, the snapshot
//! as one gzip-compressed binary frame); `--limit none --format json` joins as before both
//! existed (the whole window as one JSON text frame).

use clap::{Args, ValueEnum};
use serde::Serialize;

/// Candles the chart page asks for on screens up to ~1,500 px wide (1,000 or 1,500 wider).
pub const PAGE_LIMIT: usize = 500;

#[derive(Debug, Clone, Copy, Args, Serialize)]
pub struct JoinArgs {
    /// Candles per snapshot, or `none` for the whole window.
    #[arg(long, default_value = "500", value_parser = parse_limit)]
    pub limit: Limit,
    /// How the snapshot comes: `gzip` (one binary frame of compressed JSON, as the chart page
    /// asks) or `json` (a text frame).
    #[arg(long, value_enum, default_value_t = SnapshotFormat::Gzip)]
    pub format: SnapshotFormat,
}

/// A snapshot size: the newest N candles, or the whole window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limit(pub Option<usize>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotFormat {
    Gzip,
    Json,
}

fn parse_limit(s: &str) -> Result<Limit, String> {
    if s == "none" {
        return Ok(Limit(None));
    }
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(Limit(Some(n))),
        _ => Err(format!("a number of candles or `none`; got {s:?}")),
    }
}

impl Default for JoinArgs {
    /// The chart page's way.
    fn default() -> Self {
        Self {
            limit: Limit(Some(PAGE_LIMIT)),
            format: SnapshotFormat::Gzip,
        }
    }
}

impl JoinArgs {
    /// The `/ws` query for `symbol` (also `interval=1m`).
    pub fn query(&self, symbol: &str) -> String {
        let mut q = format!("symbol={symbol}&interval=1m");
        if let Limit(Some(n)) = self.limit {
            q.push_str(&format!("&limit={n}"));
        }
        if self.format == SnapshotFormat::Gzip {
            q.push_str("&format=gzip");
        }
        q
    }

    /// `url` with this way of joining added, unless it already names a limit or format.
    pub fn apply_to(&self, url: &str) -> String {
        let has = |key: &str| {
            url.split_once('?')
                .is_some_and(|(_, q)| q.split('&').any(|kv| kv.split('=').next() == Some(key)))
        };
        let mut out = url.to_owned();
        let mut add = |kv: String| {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(&kv);
        };
        if let (Limit(Some(n)), false) = (self.limit, has("limit")) {
            add(format!("limit={n}"));
        }
        if self.format == SnapshotFormat::Gzip && !has("format") {
            add("format=gzip".to_owned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_asks_for_500_gzipped_candles_and_none_means_the_whole_window() {
        let page = JoinArgs::default();
        assert_eq!(
            page.query("BTC/USD"),
            "symbol=BTC/USD&interval=1m&limit=500&format=gzip"
        );
        let old = JoinArgs {
            limit: parse_limit("none").unwrap_or(Limit(Some(1))),
            format: SnapshotFormat::Json,
        };
        assert_eq!(old.query("S001"), "symbol=S001&interval=1m");
    }

    #[test]
    fn a_given_url_keeps_its_own_limit_and_format() {
        let page = JoinArgs::default();
        assert_eq!(
            page.apply_to("ws://127.0.0.1:8080/ws?symbol=X&limit=20"),
            "ws://127.0.0.1:8080/ws?symbol=X&limit=20&format=gzip"
        );
        assert_eq!(
            page.apply_to("ws://127.0.0.1:8080/ws"),
            "ws://127.0.0.1:8080/ws?limit=500&format=gzip"
        );
        assert!(parse_limit("0").is_err());
    }
}
