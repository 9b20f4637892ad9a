//! JSON bodies: one tick object or an array of them (`POST /api/ticks`), and the
//! `{"price", "volume"}` of a tick update (`PUT /api/ticks`).

use serde_json::{Map, Value};

use super::BodyError;
use crate::domain::{ParseError, Price, RowErrors, Symbol, Tick, Volume, parse_time};

/// Parses `{"time","symbol","price","volume"}` or an array of such objects; all or nothing.
pub fn parse_ticks(body: &[u8]) -> Result<Vec<Tick>, BodyError> {
    let (rows, single) = match parse_value(body)? {
        Value::Array(rows) => (rows, false),
        v @ Value::Object(_) => (vec![v], true),
        _ => {
            return Err(refused(
                "expected a tick object or an array of tick objects",
            ));
        }
    };
    if rows.is_empty() {
        return Err(refused("no ticks given"));
    }
    let mut ticks = Vec::with_capacity(rows.len());
    let mut errors = RowErrors::rows();
    for (i, row) in rows.iter().enumerate() {
        errors.count_row();
        match tick_from_json(row) {
            Ok(t) => ticks.push(t),
            Err(e) if single => return Err(refused(&e.0)),
            Err(e) => errors.push(format!("row {} (index {i}): {}", i + 1, e.0)),
        }
    }
    errors.into_result().map_err(BodyError::Invalid)?;
    Ok(ticks)
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
    serde_json::from_slice(body)
        .map_err(|e| BodyError::Malformed(format!("the body is not valid JSON: {e}")))
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
}
