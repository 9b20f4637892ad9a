//! The WebSocket protocol's messages (README.md, "The WebSocket protocol"): what a viewer asks
//! for, and the frames the server sends.

use std::io::Write;

use bytes::Bytes;
use bytestring::ByteString;
use serde::Serialize;

use crate::domain::{Candle, Interval, Symbol};

/// The most candles a snapshot's `limit` may ask for (a week of minutes).
pub const MAX_LIMIT: usize = 10_080;

/// How snapshots are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// A text frame of JSON (the default; scripts read it as is).
    #[default]
    Json,
    /// A binary frame holding the same JSON gzip-compressed, once per change for everyone
    /// (browsers inflate it with `DecompressionStream('gzip')`). Other messages stay text.
    Gzip,
}

impl Format {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Self::Json),
            "gzip" => Ok(Self::Gzip),
            _ => Err(format!("format must be json or gzip; got {s:?}")),
        }
    }
}

/// Where a reconnecting viewer left off: the server run (`epoch`) and the last update it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub epoch: String,
    pub seq: u64,
}

/// What a viewer asks for: a channel, and how to start on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub symbol: Symbol,
    pub interval: Interval,
    /// The newest `limit` candles; `None`: the whole window.
    pub limit: Option<usize>,
    pub format: Format,
    pub resume: Option<Resume>,
}

/// A frame as it goes out.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Text(ByteString),
    Binary(Bytes),
}

/// Server → viewer messages.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    Snapshot {
        symbol: &'a str,
        interval: Interval,
        candles: &'a [Candle],
        /// The last update the snapshot includes: resume from here.
        seq: u64,
        epoch: &'a str,
    },
    Update {
        symbol: &'a str,
        interval: Interval,
        candles: &'a [Candle],
        removed: &'a [i64],
        seq: u64,
    },
    /// A reconnect resumed: the updates after `seq` follow (they may be none).
    Resume {
        symbol: &'a str,
        interval: Interval,
        seq: u64,
        epoch: &'a str,
    },
    Status {
        stale: bool,
    },
    Error {
        error: &'a str,
    },
}

impl ServerMsg<'_> {
    /// Serialized once; the same bytes go to every viewer.
    pub fn to_text(&self) -> ByteString {
        // These types always serialize (a non-finite float becomes `null` in serde_json).
        serde_json::to_string(self)
            .map(ByteString::from)
            .unwrap_or_else(|_| ByteString::from_static("{}"))
    }

    /// The frame in `format` (only snapshots are ever compressed).
    pub fn to_frame(&self, format: Format) -> Frame {
        let text = self.to_text();
        match (format, self) {
            (Format::Gzip, ServerMsg::Snapshot { .. }) => Frame::Binary(gzip(text.as_bytes())),
            _ => Frame::Text(text),
        }
    }
}

fn gzip(bytes: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 3),
        flate2::Compression::default(),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    Bytes::from(enc.finish().unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn a_gzip_snapshot_inflates_to_the_json_one_and_other_messages_stay_text() {
        let candles = [Candle {
            t: 60,
            open: 1.0,
            high: 2.0,
            low: 0.5,
            close: 1.5,
            volume: 3.0,
        }];
        let msg = ServerMsg::Snapshot {
            symbol: "A",
            interval: Interval::M1,
            candles: &candles,
            seq: 7,
            epoch: "e",
        };
        let Frame::Binary(bytes) = msg.to_frame(Format::Gzip) else {
            panic!("a binary frame");
        };
        let mut json = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut json)
            .unwrap();
        assert_eq!(json, &*msg.to_text());
        assert!(matches!(
            ServerMsg::Status { stale: true }.to_frame(Format::Gzip),
            Frame::Text(_)
        ));
    }
}
