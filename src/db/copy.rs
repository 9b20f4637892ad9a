//! The one bulk path into `ticks`: `COPY ... FROM STDIN` in CSV, fed in batches, sent in large
//! chunks. Used by big API batches and by every CSV import.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::postgres::PgCopyIn;

use crate::domain::Tick;

/// Bytes gathered before a chunk goes to the server.
const CHUNK_BYTES: usize = 1 << 20;

/// An open `COPY ticks FROM STDIN` on a connection (inside the caller's transaction).
pub struct TickCopy<'c> {
    copy: PgCopyIn<&'c mut PgConnection>,
    buf: Vec<u8>,
    rows: u64,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

/// What a finished COPY wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Copied {
    pub rows: u64,
    pub first: Option<DateTime<Utc>>,
    pub last: Option<DateTime<Utc>>,
}

impl<'c> TickCopy<'c> {
    pub async fn start(conn: &'c mut PgConnection) -> Result<Self, sqlx::Error> {
        let copy = conn
            .copy_in_raw("COPY ticks (time, symbol, price, volume) FROM STDIN WITH (FORMAT csv)")
            .await?;
        Ok(Self {
            copy,
            buf: Vec::with_capacity(CHUNK_BYTES + 4096),
            rows: 0,
            first: None,
            last: None,
        })
    }

    /// Adds `ticks`; sends a chunk whenever enough has gathered.
    pub async fn write(&mut self, ticks: &[Tick]) -> Result<(), sqlx::Error> {
        for t in ticks {
            write_csv_row(&mut self.buf, t);
            self.first = Some(self.first.map_or(t.time, |f| f.min(t.time)));
            self.last = Some(self.last.map_or(t.time, |l| l.max(t.time)));
            if self.buf.len() >= CHUNK_BYTES {
                self.flush().await?;
            }
        }
        self.rows += ticks.len() as u64;
        Ok(())
    }

    /// Rows written so far (sent or still buffered).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    async fn flush(&mut self) -> Result<(), sqlx::Error> {
        if !self.buf.is_empty() {
            self.copy.send(self.buf.as_slice()).await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends the rest and ends the COPY.
    pub async fn finish(mut self) -> Result<Copied, sqlx::Error> {
        self.flush().await?;
        self.copy.finish().await?;
        Ok(Copied {
            rows: self.rows,
            first: self.first,
            last: self.last,
        })
    }

    /// Ends the COPY with an error: nothing of it is written.
    pub async fn abort(self, why: &str) {
        let _ = self.copy.abort(why).await;
    }
}

/// One COPY CSV line; symbols are quoted (they may hold commas or quotes).
pub fn write_csv_row(buf: &mut Vec<u8>, t: &Tick) {
    use chrono::{Datelike, Timelike};
    use std::io::Write;
    // Fields by hand rather than a chrono format string, which is parsed again for every row
    // (7 % of a bulk load's CPU). Microseconds, truncated, as sqlx binds them on the other path.
    let n = t.time.naive_utc();
    let micros = (n.nanosecond() / 1_000).min(999_999);
    let _ = write!(
        buf,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{micros:06}+00,\"",
        n.year(),
        n.month(),
        n.day(),
        n.hour(),
        n.minute(),
        n.second()
    );
    for b in t.symbol.as_str().bytes() {
        if b == b'"' {
            buf.push(b'"');
        }
        buf.push(b);
    }
    let _ = writeln!(buf, "\",{:?},{:?}", t.price.get(), t.volume.get());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use crate::domain::{Price, Symbol, Volume, parse_time};

    #[test]
    fn a_copy_row_carries_utc_microseconds_and_a_quoted_symbol() {
        let tick = Tick {
            time: parse_time("2024-07-03T08:25:00.1234567+02:00").unwrap(),
            symbol: Symbol::parse("A,B'C").unwrap(),
            price: Price::new(61057.5).unwrap(),
            volume: Volume::new(0.25).unwrap(),
        };
        let mut buf = Vec::new();
        write_csv_row(&mut buf, &tick);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "2024-07-03 06:25:00.123456+00,\"A,B'C\",61057.5,0.25\n"
        );
    }
}
