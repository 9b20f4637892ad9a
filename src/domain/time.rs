//! Instants as users type them and as we print them: the one parser for every route and form.
//!
//! Accepted instants are those PostgreSQL stores *and* RFC 3339 writes back in a form this
//! parser takes again: the years 0001 to 9999 in UTC, to the microsecond (PostgreSQL's
//! resolution). So every time candlewick prints is accepted back by every route and form.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, SubsecRound, TimeDelta, Timelike, Utc};

use super::ParseError;

/// `0001-01-01T00:00:00Z` in Unix seconds: the earliest instant accepted.
pub const EARLIEST_SECS: i64 = -62_135_596_800;
/// `10000-01-01T00:00:00Z` in Unix seconds: the first instant no longer accepted (RFC 3339
/// has four-digit years).
pub const END_SECS: i64 = 253_402_300_800;

/// Why a time was refused; the message is safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not a time as we take them (400 in a query string).
    #[error("{0}")]
    Malformed(String),
    /// A real instant that PostgreSQL cannot store, or RFC 3339 cannot write back (422
    /// everywhere).
    #[error("{0}")]
    OutOfRange(String),
}

impl From<TimeError> for ParseError {
    fn from(e: TimeError) -> Self {
        ParseError(e.to_string())
    }
}

fn malformed<T>(msg: String) -> Result<T, TimeError> {
    Err(TimeError::Malformed(msg))
}

/// Whether `t` lies in the accepted range.
pub fn in_range(t: DateTime<Utc>) -> bool {
    (EARLIEST_SECS..END_SECS).contains(&t.timestamp())
}

/// `t` as PostgreSQL will store it (microseconds; a leap second as the next second), or why it
/// cannot be accepted.
fn storable(t: DateTime<Utc>, input: &str) -> Result<DateTime<Utc>, TimeError> {
    // Sub-microsecond digits are dropped here, not by the database: both write paths (bound
    // values and COPY) then store exactly what was parsed.
    let mut t = t.trunc_subsecs(6);
    if t.nanosecond() >= 1_000_000_000 {
        // unwrap: a nanosecond below 1e9 is always valid.
        #[allow(clippy::unwrap_used)]
        let within = t.with_nanosecond(t.nanosecond() - 1_000_000_000).unwrap();
        t = within + TimeDelta::seconds(1);
    }
    if in_range(t) {
        Ok(t)
    } else {
        Err(TimeError::OutOfRange(format!(
            "time {input:?} is {} in UTC; times must lie between 0001-01-01T00:00:00Z and \
             9999-12-31T23:59:59.999999Z",
            t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
        )))
    }
}

/// An instant given as RFC 3339 with an explicit offset (`Z` or `+02:00`): JSON and CSV bodies.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, TimeError> {
    let t = s.trim();
    if t.is_empty() {
        return malformed("time is required".into());
    }
    match DateTime::parse_from_rfc3339(t) {
        Ok(d) => storable(d.with_timezone(&Utc), t),
        Err(_) => malformed(format!(
            "time must be RFC 3339 with an offset, like 2024-07-03T06:25:00Z; got {t:?}"
        )),
    }
}

/// A time in a query string: RFC 3339, forgiving a `+` offset that form-encoding turned into
/// a space (`?time=2024-07-03T08:25:00+02:00` typed into a browser's address bar).
pub fn parse_query_time(s: &str) -> Result<DateTime<Utc>, TimeError> {
    match parse_time(s) {
        Err(e @ TimeError::Malformed(_)) => match plus_restored(s.trim()) {
            Some(fixed) => match parse_time(&fixed) {
                Err(TimeError::Malformed(_)) => Err(e),
                other => other,
            },
            None => Err(e),
        },
        other => other,
    }
}

/// A time typed into an admin form or filter: what [`parse_query_time`] takes, or a
/// `datetime-local` value (`2024-07-03T06:25`, seconds and fractions optional), taken as UTC.
pub fn parse_form_time(s: &str) -> Result<DateTime<Utc>, TimeError> {
    let t = s.trim();
    if t.is_empty() {
        return malformed("time is required".into());
    }
    match parse_query_time(t) {
        Err(TimeError::Malformed(_)) => {}
        other => return other,
    }
    let local = t.replacen(' ', "T", 1);
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(&local, fmt) {
            return storable(naive.and_utc(), t);
        }
    }
    malformed(format!(
        "time must be a UTC date and time like 2024-07-03T06:25:00 or RFC 3339 like 2024-07-03T06:25:00Z; got {t:?}"
    ))
}

/// `2024-07-03T08:25:00 02:00` → `2024-07-03T08:25:00+02:00`.
fn plus_restored(t: &str) -> Option<String> {
    let (head, tail) = t.rsplit_once(' ')?;
    Some(format!("{head}+{tail}"))
}

/// RFC 3339 in UTC with `Z`, sub-second digits only when present.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The value for a `datetime-local` input (UTC, milliseconds only when present).
pub fn datetime_local(t: DateTime<Utc>) -> String {
    if t.timestamp_subsec_nanos() == 0 {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn times_need_an_offset() {
        assert!(parse_time("2024-07-03T06:25:00Z").is_ok());
        assert!(parse_time("2024-07-03T08:25:00+02:00").is_ok());
        for bad in [
            "2024-07-03T06:25:00",
            "yesterday",
            "2024-13-45T99:00:00Z",
            "",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_plus_offset_mangled_into_a_space_still_parses_in_a_query() {
        assert_eq!(
            parse_query_time("2024-07-03T08:25:00 02:00"),
            parse_time("2024-07-03T06:25:00Z")
        );
        assert!(parse_time("2024-07-03T08:25:00 02:00").is_err());
    }

    #[test]
    fn form_times_accept_rfc3339_and_datetime_local_as_utc() {
        let want = parse_time("2024-07-03T06:25:00Z").unwrap();
        for ok in [
            "2024-07-03T06:25:00Z",
            "2024-07-03T08:25:00+02:00",
            "2024-07-03T08:25:00 02:00",
            "2024-07-03T06:25",
            "2024-07-03T06:25:00",
            "2024-07-03 06:25:00",
            " 2024-07-03T06:25:00.000 ",
        ] {
            assert_eq!(parse_form_time(ok), Ok(want), "{ok:?}");
        }
        assert_eq!(
            parse_form_time("2024-07-03T06:25:00.25").map(|t| t.timestamp_subsec_millis()),
            Ok(250)
        );
        for bad in ["", "yesterday", "2024-13-03T06:25", "2024-07-03", "06:25"] {
            assert!(parse_form_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn datetime_local_values_round_trip() {
        for s in ["2024-07-03T06:25:00", "2024-07-03T06:25:00.125"] {
            let t = parse_form_time(s).unwrap();
            assert_eq!(datetime_local(t), s);
        }
    }

    #[test]
    fn the_range_constants_are_year_1_and_year_10000() {
        let at = |y| {
            chrono::NaiveDate::from_ymd_opt(y, 1, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp()
        };
        assert_eq!((EARLIEST_SECS, END_SECS), (at(1), at(10000)));
    }

    #[test]
    fn times_postgresql_or_rfc3339_cannot_hold_are_out_of_range_in_every_parser() {
        for bad in [
            // Year 10000 once in UTC: it was stored and printed as +10000-01-01T23:58:59Z.
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+00:01",
            "0000-12-31T23:59:59Z",
        ] {
            for parse in [parse_time, parse_query_time, parse_form_time] {
                assert!(
                    matches!(parse(bad), Err(TimeError::OutOfRange(_))),
                    "{bad:?}: {:?}",
                    parse(bad)
                );
            }
        }
        // What forms take beyond RFC 3339: signed and five-digit years, read as UTC.
        for bad in [
            "-5000-01-01T00:00:00",
            "+200000-01-01T00:00",
            "+10000-01-01T00:00:00",
            "+262000-01-01 00:00:00",
        ] {
            let e = parse_form_time(bad).unwrap_err();
            assert!(matches!(e, TimeError::OutOfRange(_)), "{bad:?}: {e:?}");
            assert!(e.to_string().contains("0001-01-01T00:00:00Z"), "{e}");
        }
        assert!(matches!(
            parse_query_time("soon"),
            Err(TimeError::Malformed(_))
        ));
    }

    #[test]
    fn the_first_and_last_microsecond_of_the_range_are_accepted_and_round_trip() {
        for (input, want) in [
            ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
            ("0001-01-01T00:00:00-00:01", "0001-01-01T00:01:00Z"),
            ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
            ("9999-12-31T23:59:59+00:00", "9999-12-31T23:59:59Z"),
        ] {
            let t = parse_time(input).unwrap();
            assert_eq!(rfc3339(t), want, "{input}");
            assert_eq!(parse_query_time(&rfc3339(t)), Ok(t), "{input}");
            assert_eq!(parse_form_time(&rfc3339(t)), Ok(t), "{input}");
        }
    }

    #[test]
    fn digits_below_a_microsecond_are_dropped_as_postgresql_would_not_keep_them() {
        let t = parse_time("9999-12-31T23:59:59.9999999Z").unwrap();
        assert_eq!(rfc3339(t), "9999-12-31T23:59:59.999999Z");
        // Before 2000 too (the bound path once rounded these toward 2000, COPY down).
        let t = parse_time("1999-12-31T23:59:59.0000005Z").unwrap();
        assert_eq!(rfc3339(t), "1999-12-31T23:59:59Z");
    }

    #[test]
    fn a_leap_second_is_the_next_second_as_postgresql_stores_it() {
        let t = parse_time("2016-12-31T23:59:60.5Z").unwrap();
        assert_eq!(rfc3339(t), "2017-01-01T00:00:00.500Z");
    }
}
