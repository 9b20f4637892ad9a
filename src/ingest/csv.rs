//! CSV with the header `time,symbol,price,volume` (columns in any order): API bodies and imported
//! files, read by one reader in batches.

use std::io::Read;

use crate::domain::{ParseError, Price, RowErrors, Symbol, Tick, Volume, parse_time};

/// Reads ticks from CSV in batches. After the first bad line it returns no more ticks but keeps
/// checking lines, so the report counts every bad one.
pub struct CsvTicks<R: Read> {
    reader: csv::Reader<R>,
    columns: Option<Columns>,
    errors: RowErrors,
    record: csv::StringRecord,
    done: bool,
}

impl<R: Read> CsvTicks<R> {
    /// Reads the header; a missing or wrong one refuses the whole input.
    pub fn new(input: R) -> Self {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .buffer_capacity(1 << 20)
            .from_reader(input);
        let mut errors = RowErrors::lines();
        let columns = match reader.headers() {
            Ok(h) if h.is_empty() || (h.len() == 1 && h.get(0).is_some_and(str::is_empty)) => {
                errors.push(
                    "line 1: the input is empty; expected the header time,symbol,price,volume"
                        .into(),
                );
                None
            }
            Ok(h) => Columns::from_header(h)
                .map_err(|e| errors.push(format!("line 1: {e}")))
                .ok(),
            Err(e) => {
                errors.push(format!("line 1: reading the header: {}", problem(&e)));
                None
            }
        };
        Self {
            done: columns.is_none(),
            reader,
            columns,
            errors,
            record: csv::StringRecord::new(),
        }
    }

    /// Up to `max` more good ticks; empty at the end of the input (or of the good part).
    pub fn next_batch(&mut self, max: usize) -> Vec<Tick> {
        let mut batch = Vec::new();
        let Some(columns) = self.columns else {
            return batch;
        };
        while !self.done && batch.len() < max {
            match self.reader.read_record(&mut self.record) {
                Ok(false) => self.done = true,
                Ok(true) => {
                    self.errors.count_row();
                    match columns.tick(&self.record) {
                        Ok(t) if self.errors.is_empty() => batch.push(t),
                        Ok(_) => {}
                        Err(e) => {
                            let line = self
                                .record
                                .position()
                                .map_or(self.errors.row_count() + 1, |p| p.line());
                            self.errors.push(format!("line {line}: {}", e.0));
                        }
                    }
                }
                Err(e) => {
                    self.errors.count_row();
                    let line = e
                        .position()
                        .map_or(self.errors.row_count() + 1, |p| p.line());
                    self.errors.push(format!("line {line}: {}", problem(&e)));
                    // Other errors (I/O) leave the rest of the input unreadable.
                    self.done = !matches!(
                        e.kind(),
                        csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. }
                    );
                }
            }
            if !self.errors.is_empty() {
                batch.clear();
            }
        }
        batch
    }

    /// Bytes of the input read so far.
    pub fn bytes_read(&self) -> u64 {
        self.reader.position().byte()
    }

    /// Data lines read so far.
    pub fn rows(&self) -> u64 {
        self.errors.row_count()
    }

    /// Whether a bad line (or header) has been found.
    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Reads whatever is left, then: the number of data lines, or every problem found.
    pub fn finish(mut self) -> Result<u64, RowErrors> {
        while !self.next_batch(usize::MAX).is_empty() {}
        if self.errors.is_empty() && self.errors.row_count() == 0 {
            self.errors
                .push("line 2: the input has a header but no rows".into());
        }
        let rows = self.errors.row_count();
        self.errors.into_result().map(|()| rows)
    }
}

/// A whole CSV body (the API's `text/csv`): every tick, or every problem.
pub fn parse_ticks(body: &[u8]) -> Result<Vec<Tick>, RowErrors> {
    let mut reader = CsvTicks::new(body);
    let ticks = reader.next_batch(usize::MAX);
    reader.finish()?;
    Ok(ticks)
}

/// Where each field sits.
#[derive(Debug, Clone, Copy)]
struct Columns {
    time: usize,
    symbol: usize,
    price: usize,
    volume: usize,
}

impl Columns {
    fn from_header(h: &csv::StringRecord) -> Result<Self, String> {
        let find = |name: &str| {
            h.iter().position(|c| {
                c.trim()
                    .trim_start_matches('\u{feff}')
                    .eq_ignore_ascii_case(name)
            })
        };
        match (find("time"), find("symbol"), find("price"), find("volume")) {
            (Some(time), Some(symbol), Some(price), Some(volume)) => Ok(Self {
                time,
                symbol,
                price,
                volume,
            }),
            _ => Err(format!(
                "the CSV header must be time,symbol,price,volume; got {:?}",
                h.iter().collect::<Vec<_>>().join(",")
            )),
        }
    }

    fn tick(&self, r: &csv::StringRecord) -> Result<Tick, ParseError> {
        let field = |i: usize, name: &str| {
            r.get(i)
                .ok_or_else(|| ParseError(format!("{name} is missing")))
        };
        Ok(Tick {
            time: parse_time(field(self.time, "time")?)?,
            symbol: Symbol::parse(field(self.symbol, "symbol")?)?,
            price: Price::parse(field(self.price, "price")?)?,
            volume: Volume::parse(field(self.volume, "volume")?)?,
        })
    }
}

/// A CSV-level problem in words (the csv crate's messages name byte offsets and record indexes).
fn problem(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("expected {expected_len} fields like the header, found {len}")
        }
        csv::ErrorKind::Utf8 { .. } => "the line is not valid UTF-8".into(),
        csv::ErrorKind::Io(io) => format!("reading the input: {io}"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_reported_with_their_line_numbers() {
        let invalid = parse_ticks(
            b"time,symbol,price,volume\n\
             2024-07-03T06:25:00Z,A,1,1\n\
             2024-07-03T06:26:00Z,A,abc,1\n\
             2024-07-03T06:27:00Z,A,1\n\
             nope,A,1,1\n",
        )
        .unwrap_err();
        assert_eq!(invalid.total(), 3, "{invalid}");
        assert_eq!(invalid.row_count(), 4);
        let shown = invalid.shown();
        assert!(shown[0].starts_with("line 3: price"), "{invalid}");
        assert!(
            shown[1].starts_with("line 4: expected 4 fields"),
            "{invalid}"
        );
        assert!(shown[2].starts_with("line 5: time"), "{invalid}");
    }

    #[test]
    fn an_input_without_the_header_or_rows_is_refused() {
        let e = parse_ticks(b"2024-07-03T06:25:00Z,A,1,1\n").unwrap_err();
        assert!(e.shown()[0].starts_with("line 1: the CSV header"), "{e}");
        let e = parse_ticks(b"").unwrap_err();
        assert!(e.shown()[0].contains("empty"), "{e}");
        let e = parse_ticks(b"time,symbol,price,volume\n").unwrap_err();
        assert!(e.shown()[0].contains("no rows"), "{e}");
    }

    #[test]
    fn columns_may_come_in_any_order_and_symbols_may_hold_commas() {
        let ticks = parse_ticks(
            b"symbol,time,volume,price\nA,2024-07-03T06:25:00Z,1,2\n\"B,C\",2024-07-03T06:25:00Z,3,4\n",
        )
        .unwrap();
        assert_eq!(ticks.len(), 2);
        assert_eq!((ticks[0].price.get(), ticks[0].volume.get()), (2.0, 1.0));
        assert_eq!(ticks[1].symbol.as_str(), "B,C");
    }

    #[test]
    fn batches_stop_at_the_first_bad_line_but_every_line_is_checked() {
        let mut r = CsvTicks::new(
            &b"time,symbol,price,volume\n\
               2024-07-03T06:25:00Z,A,1,1\n\
               2024-07-03T06:26:00Z,A,1,1\n\
               x,A,1,1\n\
               2024-07-03T06:28:00Z,A,1,1\n\
               y,A,1,1\n"[..],
        );
        assert_eq!(r.next_batch(1).len(), 1);
        assert!(r.next_batch(10).is_empty(), "nothing after a bad line");
        assert!(r.failed());
        assert_eq!(r.finish().unwrap_err().total(), 2);
    }
}
