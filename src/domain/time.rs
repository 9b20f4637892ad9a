//! Instants as users type them and as we print them: the one parser for every route and form.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};

use super::{ParseError, refuse};

/// An instant given as RFC 3339 with an explicit offset (`Z` or `+02:00`): JSON and CSV bodies.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, ParseError> {
    let t = s.trim();
    if t.is_empty() {
        return refuse("time is required");
    }
    DateTime::parse_from_rfc3339(t)
        .map(|d| d.with_timezone(&Utc))
        .or_else(|_| {
            refuse(format!(
                "time must be RFC 3339 with an offset, like 2024-07-03T06:25:00Z; got {t:?}"
            ))
        })
}

/// A time in a query string: RFC 3339, forgiving a `+` offset that form-encoding turned into
/// a space (`?time=2024-07-03T08:25:00+02:00` typed into a browser's address bar).
pub fn parse_query_time(s: &str) -> Result<DateTime<Utc>, ParseError> {
    parse_time(s).or_else(|e| match plus_restored(s.trim()) {
        Some(fixed) => parse_time(&fixed),
        None => Err(e),
    })
}

/// A time typed into an admin form or filter: what [`parse_query_time`] takes, or a
/// `datetime-local` value (`2024-07-03T06:25`, seconds and fractions optional), taken as UTC.
pub fn parse_form_time(s: &str) -> Result<DateTime<Utc>, ParseError> {
    let t = s.trim();
    if t.is_empty() {
        return refuse("time is required");
    }
    if let Ok(d) = parse_query_time(t) {
        return Ok(d);
    }
    let local = t.replacen(' ', "T", 1);
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(&local, fmt) {
            return Ok(naive.and_utc());
        }
    }
    refuse(format!(
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
}
