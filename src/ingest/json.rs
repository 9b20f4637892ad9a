//! JSON bodies: one tick object or an array of them (`POST /api/ticks`), and the
//! `{"price", "volume"}` of a tick update (`PUT /api/ticks`).
//!
//! An array is read element by element, each row checked and dropped before the next is read:
//! a large body never becomes a tree of JSON values (a 50 MiB array used to take ten times its
//! size in memory, which the allocator then kept).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::BodyError;
use crate::domain::{ParseError, Price, RowErrors, Symbol, Tick, Volume, parse_time};

/// Parses `{"time","symbol","price","volume"}` or an array of such objects; all or nothing.
pub fn parse_ticks(body: &[u8]) -> Result<Vec<Tick>, BodyError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut rows = Rows {
        ticks: Vec::new(),
        errors: RowErrors::rows(),
    };
    let shape = TopLevel(&mut rows)
        .deserialize(&mut de)
        .and_then(|shape| de.end().map(|()| shape));
    let shape = match shape {
        Ok(shape) => shape,
        // Only our visitor raises data errors: the top level is neither an object nor an array.
        Err(e) if e.is_data() => {
            return Err(refused(
                "expected a tick object or an array of tick objects",
            ));
        }
        Err(e) => return Err(malformed(e)),
    };
    match shape {
        Shape::Single(Err(e)) => Err(refused(&e.0)),
        Shape::Single(Ok(tick)) => Ok(vec![tick]),
        Shape::Array if rows.errors.row_count() == 0 => Err(refused("no ticks given")),
        Shape::Array => {
            rows.errors.into_result().map_err(BodyError::Invalid)?;
            Ok(rows.ticks)
        }
    }
}

/// The good ticks of an array so far (none once a row was bad), and its problems.
struct Rows {
    ticks: Vec<Tick>,
    errors: RowErrors,
}

impl Rows {
    fn push(&mut self, row: &Value) {
        let i = self.errors.row_count();
        self.errors.count_row();
        match tick_from_json(row) {
            Ok(t) if self.errors.is_empty() => self.ticks.push(t),
            Ok(_) => {}
            Err(e) => {
                self.errors
                    .push(format!("row {} (index {i}): {}", i + 1, e.0));
                // Nothing of the batch will be written: stop holding its ticks.
                self.ticks = Vec::new();
            }
        }
    }
}

/// What the body held at the top level.
enum Shape {
    Single(Result<Tick, ParseError>),
    Array,
}

/// Reads the top-level value: an array row by row into [`Rows`], or one object.
struct TopLevel<'a>(&'a mut Rows);

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = Shape;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tick object or an array of tick objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        // Each row is a small JSON value, checked and dropped before the next is read.
        while let Some(row) = seq.next_element::<Value>()? {
            self.0.push(&row);
        }
        Ok(Shape::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Shape, A::Error> {
        let row = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Shape::Single(tick_from_json(&row)))
    }
}

/// Parses the body of a tick update: `{"price": .., "volume": ..}`.
pub fn parse_amounts(body: &[u8]) -> Result<(Price, Volume), BodyError> {
    let Value::Object(fields) = parse_value(body)? else {
        return Err(refused(
            "expected an object {\"price\": .., \"volume\": ..}",
        ));
    };
    let amounts = || -> Result<(Price, Volume), ParseError> {
        only_fields(&fields, &["price", "volume"])?;
        Ok((
            Price::parse(&number_field(&fields, "price")?)?,
            Volume::parse(&number_field(&fields, "volume")?)?,
        ))
    };
    amounts().map_err(|e| refused(&e.0))
}

fn parse_value(body: &[u8]) -> Result<Value, BodyError> {
    serde_json::from_slice(body).map_err(malformed)
}

fn malformed(e: serde_json::Error) -> BodyError {
    BodyError::Malformed(format!("the body is not valid JSON: {e}"))
}

/// A body refused as a whole (422), with `msg` as its one problem.
fn refused(msg: &str) -> BodyError {
    BodyError::Invalid(RowErrors::rows().refused(msg.to_owned()))
}

fn tick_from_json(row: &Value) -> Result<Tick, ParseError> {
    let Value::Object(row) = row else {
        return Err(ParseError(
            "expected an object with time, symbol, price and volume".into(),
        ));
    };
    only_fields(row, &["time", "symbol", "price", "volume"])?;
    Ok(Tick {
        time: parse_time(string_field(row, "time")?)?,
        symbol: Symbol::parse(string_field(row, "symbol")?)?,
        price: Price::parse(&number_field(row, "price")?)?,
        volume: Volume::parse(&number_field(row, "volume")?)?,
    })
}

fn only_fields(row: &Map<String, Value>, allowed: &[&str]) -> Result<(), ParseError> {
    match row.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(extra) => Err(ParseError(format!(
            "unknown field {extra:?} (expected {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

/// A JSON number, or a string holding one (CSV-minded clients send those).
fn number_field(row: &Map<String, Value>, name: &str) -> Result<String, ParseError> {
    match row.get(name) {
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(ParseError(format!("{name} is required"))),
        Some(other) => Err(ParseError(format!("{name} must be a number, got {other}"))),
    }
}

fn string_field<'a>(row: &'a Map<String, Value>, name: &str) -> Result<&'a str, ParseError> {
    match row.get(name) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(ParseError(format!("{name} is required"))),
        Some(other) => Err(ParseError(format!("{name} must be a string, got {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_with_one_bad_row_names_that_row() {
        let body = br#"[{"time":"2024-07-03T06:25:00Z","symbol":"A","price":1,"volume":1},
                        {"time":"2024-07-03T06:26:00Z","symbol":"A","price":"abc","volume":1}]"#;
        let err = parse_ticks(body).unwrap_err().to_string();
        assert!(err.contains("row 2"), "{err}");
        assert!(err.contains("nothing was written"), "{err}");
    }

    #[test]
    fn text_that_is_not_json_is_malformed_not_invalid() {
        assert!(matches!(
            parse_ticks(b"{\"time\":"),
            Err(BodyError::Malformed(_))
        ));
        assert!(matches!(parse_ticks(b"[]"), Err(BodyError::Invalid(_))));
        assert!(matches!(
            parse_amounts(b"[1,2]"),
            Err(BodyError::Invalid(_))
        ));
    }

    #[test]
    fn every_bad_row_of_an_array_is_counted() {
        let good = r#"{"time":"2024-07-03T06:25:00Z","symbol":"A","price":1,"volume":1}"#;
        let bad = r#"{"time":"2024-07-03T06:25:00Z","symbol":"A","price":-1,"volume":1}"#;
        let body = format!("[{bad},{good},{bad},5,{good}]");
        let Err(BodyError::Invalid(e)) = parse_ticks(body.as_bytes()) else {
            panic!("refused as invalid");
        };
        assert_eq!((e.total(), e.row_count()), (3, 5), "{e}");
        assert!(e.shown()[2].starts_with("row 4 (index 3)"), "{e}");
        let ticks = parse_ticks(format!("[{good}]").as_bytes()).unwrap();
        assert_eq!(ticks.len(), 1);
    }

    #[test]
    fn the_top_level_is_one_object_or_an_array_with_nothing_after_it() {
        let one = r#"{"time":"2024-07-03T06:25:00Z","symbol":"A","price":1,"volume":1}"#;
        assert_eq!(parse_ticks(one.as_bytes()).unwrap().len(), 1);
        for refused in [r#""tick""#, "null", "5", "true"] {
            assert!(
                matches!(parse_ticks(refused.as_bytes()), Err(BodyError::Invalid(_))),
                "{refused}"
            );
        }
        for malformed in [
            format!("{one} x"),
            format!("[{one}] [{one}]"),
            "[".into(),
            "".into(),
        ] {
            assert!(
                matches!(
                    parse_ticks(malformed.as_bytes()),
                    Err(BodyError::Malformed(_))
                ),
                "{malformed}"
            );
        }
        let single_bad = r#"{"time":"2024-07-03T06:25:00Z","symbol":"A","price":1}"#;
        let e = parse_ticks(single_bad.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("volume is required"), "{e}");
        assert!(!e.contains("row 1"), "a single object has no rows: {e}");
    }
}
