//! One-dimensional `float8[]` and `timestamptz[]` results, decoded straight from PostgreSQL's
//! binary array format. A page of candles comes back as one row of such arrays (15,015 minutes
//! for a 15m page, see `candles`), and sqlx's generic `Vec<T>` decoding builds a typed value
//! reference per element, which cost the server more than PostgreSQL spent building the arrays.
//! Text results (a simple-protocol query) fall back to sqlx's decoding.

use chrono::{DateTime, Utc};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgHasArrayType, PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::{Decode, Postgres, Type};

/// A `float8[]`, its `NULL` elements `None`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Floats(pub Vec<Option<f64>>);

/// A `timestamptz[]` without `NULL` elements.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Times(pub Vec<DateTime<Utc>>);

impl Type<Postgres> for Floats {
    fn type_info() -> PgTypeInfo {
        f64::array_type_info()
    }
}

impl Type<Postgres> for Times {
    fn type_info() -> PgTypeInfo {
        DateTime::<Utc>::array_type_info()
    }
}

impl<'r> Decode<'r, Postgres> for Floats {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.format() == PgValueFormat::Text {
            return Ok(Self(Vec::decode(value)?));
        }
        elements(value.as_bytes()?, float).map(Self)
    }
}

/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl<'r> Decode<'r, Postgres> for Times {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.format() == PgValueFormat::Text {
            return Ok(Self(Vec::decode(value)?));
        }
        elements(value.as_bytes()?, time).map(Self)
    }
}

fn float(bytes: Option<&[u8]>) -> Result<Option<f64>, BoxDynError> {
    bytes.map(|b| Ok(f64::from_be_bytes(fixed(b)?))).transpose()
}

fn time(bytes: Option<&[u8]>) -> Result<DateTime<Utc>, BoxDynError> {
    let micros = i64::from_be_bytes(fixed(bytes.ok_or("a NULL time in an array")?)?);
    micros
        .checked_add(POSTGRES_EPOCH_MICROS)
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(|| "an array time out of range (infinity?)".into())
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], BoxDynError> {
    bytes
        .try_into()
        .map_err(|_| format!("an array element of {} bytes, not {N}", bytes.len()).into())
}

/// The elements of a binary array of at most one dimension (an empty array has none): the
/// header (dimensions, has-nulls flag, element type, then length and lower bound per dimension),
/// then each element as its length (-1 for `NULL`) and bytes.
fn elements<T>(
    mut bytes: &[u8],
    mut element: impl FnMut(Option<&[u8]>) -> Result<T, BoxDynError>,
) -> Result<Vec<T>, BoxDynError> {
    let mut int = || -> Result<i32, BoxDynError> {
        let (head, rest) = bytes.split_first_chunk::<4>().ok_or("an array cut short")?;
        bytes = rest;
        Ok(i32::from_be_bytes(*head))
    };
    let dimensions = int()?;
    let _has_nulls = int()?;
    let _element_type = int()?;
    let len = match dimensions {
        0 => return Ok(Vec::new()),
        1 => usize::try_from(int()?).map_err(|_| "an array of negative length")?,
        n => return Err(format!("an array of {n} dimensions, not 1").into()),
    };
    let _lower_bound = int()?;
    let mut out = Vec::with_capacity(len.min(bytes.len() / 4));
    for _ in 0..len {
        let (head, rest) = bytes.split_first_chunk::<4>().ok_or("an array cut short")?;
        let size = i32::from_be_bytes(*head);
        if size < 0 {
            bytes = rest;
            out.push(element(None)?);
            continue;
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let (value, rest) = rest
            .split_at_checked(size)
            .ok_or("an array element cut short")?;
        bytes = rest;
        out.push(element(Some(value))?);
    }
    if !bytes.is_empty() {
        return Err("bytes after an array's last element".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary one-dimensional array of 8-byte elements (`None`: `NULL`).
    fn array(elements: &[Option<[u8; 8]>]) -> Vec<u8> {
        let mut out = Vec::new();
        for word in [1, i32::from(elements.iter().any(Option::is_none)), 701] {
            out.extend_from_slice(&i32::to_be_bytes(word));
        }
        out.extend_from_slice(&i32::try_from(elements.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        for e in elements {
            match e {
                Some(bytes) => {
                    out.extend_from_slice(&8i32.to_be_bytes());
                    out.extend_from_slice(bytes);
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        out
    }

    fn floats(bytes: &[u8]) -> Result<Vec<Option<f64>>, BoxDynError> {
        elements(bytes, float)
    }

    #[test]
    fn floats_and_nulls_decode_in_order() {
        let bytes = array(&[
            Some(1.5f64.to_be_bytes()),
            None,
            Some((-0.25f64).to_be_bytes()),
        ]);
        assert_eq!(
            floats(&bytes).ok(),
            Some(vec![Some(1.5), None, Some(-0.25)])
        );
    }

    #[test]
    fn an_empty_array_has_no_dimensions() {
        let mut bytes = Vec::new();
        for word in [0i32, 0, 701] {
            bytes.extend_from_slice(&word.to_be_bytes());
        }
        assert_eq!(floats(&bytes).ok(), Some(vec![]));
    }

    #[test]
    fn cut_short_or_trailing_bytes_are_errors_not_panics() {
        let bytes = array(&[Some(1.0f64.to_be_bytes()), Some(2.0f64.to_be_bytes())]);
        for cut in 0..bytes.len() {
            assert!(floats(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(floats(&longer).is_err());
        let mut wide = bytes;
        wide[23] = 4; // the first element claims 4 bytes
        assert!(floats(&wide).is_err());
    }

    #[test]
    fn times_count_from_2000() {
        let bytes = array(&[Some(0i64.to_be_bytes()), Some(60_000_000i64.to_be_bytes())]);
        let times = elements(&bytes, time);
        assert_eq!(
            times
                .ok()
                .map(|t| t.iter().map(DateTime::timestamp).collect::<Vec<_>>()),
            Some(vec![946_684_800, 946_684_860])
        );
        let null = array(&[None]);
        assert!(elements(&null, time).is_err());
        let infinity = array(&[Some(i64::MAX.to_be_bytes())]);
        assert!(elements(&infinity, time).is_err());
    }
}
