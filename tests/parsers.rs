//! Property tests of the tick parsers (times, symbols, prices, JSON rows, CSV rows): whatever
//! the input, no panic; whatever is accepted parses back the same from how candlewick writes it,
//! and every accepted time lies in the range PostgreSQL stores and RFC 3339 writes back.
//!
//! A bounded number of cases runs with `cargo test` (`PROPTEST_CASES` raises it for a longer
//! search). What a search finds becomes a plain regression test at the bottom of this file.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use candlewick::domain::time::{
    EARLIEST_SECS, END_SECS, in_range, parse_form_time, parse_query_time, parse_time, rfc3339,
};
use candlewick::domain::{Price, Symbol, Tick, Volume};
use candlewick::ingest::{csv as csv_body, json as json_body};
use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

/// 512 cases per property unless `PROPTEST_CASES` says otherwise.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Strings shaped like times, around and past every edge: years 0 to 10000 and signed or
/// five-digit ones, impossible months, days and hours, 0 to 12 fraction digits, offsets up to
/// ±24:60, a `+` turned into a space, a space instead of `T`.
fn time_like() -> impl Strategy<Value = String> {
    let year = prop_oneof![
        8 => (0i32..=10_000).prop_map(|y| format!("{y:04}")),
        1 => (-300_000i32..300_000).prop_map(|y| format!("{y:+}")),
        1 => Just("+10000".to_owned()),
    ];
    let fraction = prop_oneof![
        Just(String::new()),
        "[0-9]{1,12}".prop_map(|d| format!(".{d}")),
    ];
    let offset = prop_oneof![
        Just("Z".to_owned()),
        Just("z".to_owned()),
        Just(String::new()),
        (prop::bool::ANY, 0u32..=24, 0u32..=60, prop::bool::ANY).prop_map(
            |(minus, h, m, space)| {
                let sign = if minus {
                    "-"
                } else if space {
                    " "
                } else {
                    "+"
                };
                format!("{sign}{h:02}:{m:02}")
            }
        ),
    ];
    (
        year,
        0u32..=13,
        0u32..=32,
        prop::bool::ANY,
        0u32..=24,
        0u32..=60,
        0u32..=61,
        fraction,
        offset,
    )
        .prop_map(|(y, mo, d, space, h, mi, s, frac, off)| {
            let sep = if space { ' ' } else { 'T' };
            format!("{y}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{off}")
        })
}

/// Real instants written in RFC 3339 with any offset and precision, most near the ends of the
/// range, where an offset can carry them past it.
fn instant_like() -> impl Strategy<Value = String> {
    const DAY: i64 = 86_400;
    let secs = prop_oneof![
        EARLIEST_SECS..END_SECS,
        (EARLIEST_SECS - 2 * DAY)..(EARLIEST_SECS + 2 * DAY),
        (END_SECS - 2 * DAY)..(END_SECS + 2 * DAY),
    ];
    let nanos = prop_oneof![Just(0u32), 0u32..1_000_000_000, Just(999_999_999)];
    let offset_minutes = prop_oneof![Just(0i32), -1439i32..=1439, Just(-1439), Just(1439)];
    (secs, nanos, offset_minutes, 0usize..4).prop_filter_map(
        "chrono holds it",
        |(secs, nanos, offset, precision)| {
            let t = DateTime::from_timestamp(secs, nanos)?;
            let zone = chrono::FixedOffset::east_opt(offset * 60)?;
            let format = [
                SecondsFormat::Secs,
                SecondsFormat::Millis,
                SecondsFormat::Micros,
                SecondsFormat::Nanos,
            ][precision];
            Some(t.with_timezone(&zone).to_rfc3339_opts(format, offset == 0))
        },
    )
}

fn time_text() -> impl Strategy<Value = String> {
    prop_oneof![2 => instant_like(), 1 => time_like()]
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[ -~]{0,40}"]
}

/// Checks one accepted time: in range, whole microseconds, and read back the same by every
/// parser from both ways candlewick writes times (`rfc3339`, and chrono's serde in API JSON).
fn check_accepted_time(t: DateTime<Utc>, input: &str) -> Result<(), TestCaseError> {
    prop_assert!(in_range(t), "{input:?} gave {t:?}");
    prop_assert_eq!(t.nanosecond() % 1_000, 0, "{:?} kept nanoseconds", input);
    let written = [
        rfc3339(t),
        serde_json::to_value(t)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned(),
    ];
    for w in written {
        prop_assert_eq!(parse_time(&w), Ok(t), "{:?} via {:?}", input, w);
        prop_assert_eq!(parse_query_time(&w), Ok(t), "{:?} via {:?}", input, w);
        prop_assert_eq!(parse_form_time(&w), Ok(t), "{:?} via {:?}", input, w);
    }
    Ok(())
}

fn check_time_input(input: &str) -> Result<(), TestCaseError> {
    for parse in [parse_time, parse_query_time, parse_form_time] {
        if let Ok(t) = parse(input) {
            check_accepted_time(t, input)?;
        }
    }
    // What bodies accept, query strings and forms accept too, as the same instant.
    if let Ok(t) = parse_time(input) {
        prop_assert_eq!(parse_query_time(input), Ok(t));
        prop_assert_eq!(parse_form_time(input), Ok(t));
    }
    Ok(())
}

fn symbol_like() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[A-Za-z0-9 /._:+^=#@!<>()\\[\\]&;,'\"-]{0,34}",
        1 => any_text(),
        3 => "[A-Z]{1,5}/[A-Z]{3}",
    ]
}

fn amount_like() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<f64>().prop_map(|v| v.to_string()),
        1 => any::<f64>().prop_map(|v| format!("{v:e}")),
        4 => (0.0f64..2e15).prop_map(|v| v.to_string()),
        1 => (-1e3f64..1e6).prop_map(|v| format!("{v:.3}")),
        1 => "[-+]?[0-9]{0,20}(\\.[0-9]{0,20})?([eE][-+]?[0-9]{1,4})?",
        1 => any_text(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn time_like_strings_never_panic_and_what_is_accepted_reads_back(input in time_text()) {
        check_time_input(&input)?;
    }

    #[test]
    fn any_text_as_a_time_never_panics(input in any_text()) {
        check_time_input(&input)?;
    }

    #[test]
    fn accepted_symbols_read_back_unchanged(input in symbol_like()) {
        if let Ok(s) = Symbol::parse(&input) {
            prop_assert_eq!(s.as_str(), input.as_str());
            prop_assert_eq!(Symbol::parse(s.as_str()), Ok(s.clone()));
            prop_assert!(!s.as_str().is_empty() && s.as_str().chars().count() <= 32);
        }
    }

    #[test]
    fn accepted_amounts_read_back_unchanged(input in amount_like()) {
        if let Ok(p) = Price::parse(&input) {
            prop_assert!(p.get().is_finite() && p.get() > 0.0 && p.get() <= 1e15);
            prop_assert_eq!(Price::parse(&p.get().to_string()), Ok(p));
            prop_assert_eq!(Price::parse(&serde_json::to_string(&p).unwrap()), Ok(p));
        }
        if let Ok(v) = Volume::parse(&input) {
            prop_assert!(v.get().is_finite() && v.get() >= 0.0 && v.get() <= 1e15);
            prop_assert_eq!(Volume::parse(&v.get().to_string()), Ok(v));
            prop_assert_eq!(Volume::parse(&serde_json::to_string(&v).unwrap()), Ok(v));
        }
    }

    #[test]
    fn json_bodies_never_panic_and_accepted_ticks_read_back(rows in prop::collection::vec(json_row(), 0..6), single in prop::bool::ANY) {
        let body = match (single, rows.first()) {
            (true, Some(row)) => row.clone(),
            _ => Value::Array(rows),
        };
        let bytes = serde_json::to_vec(&body).unwrap();
        if let Ok(ticks) = json_body::parse_ticks(&bytes) {
            check_ticks(&ticks)?;
            // As the API writes ticks back (GET /api/ticks serializes them with serde).
            let again = serde_json::to_vec(&ticks).unwrap();
            prop_assert_eq!(json_body::parse_ticks(&again).unwrap(), ticks);
        }
    }

    #[test]
    fn any_bytes_as_a_json_body_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = json_body::parse_ticks(&bytes);
        let _ = json_body::parse_amounts(&bytes);
    }

    #[test]
    fn csv_bodies_never_panic_and_accepted_ticks_read_back(
        rows in prop::collection::vec((time_text(), symbol_like(), amount_like(), amount_like()), 0..6),
        order in Just(["time", "symbol", "price", "volume"]).prop_shuffle(),
    ) {
        let mut out = csv::Writer::from_writer(Vec::new());
        out.write_record(order).unwrap();
        for (time, symbol, price, volume) in &rows {
            let field = |name: &str| match name {
                "time" => time.as_str(),
                "symbol" => symbol.as_str(),
                "price" => price.as_str(),
                _ => volume.as_str(),
            };
            out.write_record(order.iter().map(|n| field(n))).unwrap();
        }
        let bytes = out.into_inner().unwrap();
        if let Ok(ticks) = csv_body::parse_ticks(&bytes) {
            check_ticks(&ticks)?;
            let again = ticks_as_csv(&ticks);
            prop_assert_eq!(csv_body::parse_ticks(&again).unwrap(), ticks);
        }
    }

    #[test]
    fn any_bytes_as_a_csv_body_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = csv_body::parse_ticks(&bytes);
        let mut with_header = b"time,symbol,price,volume\n".to_vec();
        with_header.extend_from_slice(&bytes);
        let _ = csv_body::parse_ticks(&with_header);
    }
}

/// A JSON row as clients send them: mostly the four fields, each of any JSON type, sometimes
/// missing or joined by another.
fn json_row() -> impl Strategy<Value = Value> {
    let value = |text: BoxedStrategy<String>| {
        prop_oneof![
            40 => text.prop_map(Value::String),
            1 => any::<f64>().prop_map(|v| json!(v)),
            1 => any::<i64>().prop_map(|v| json!(v)),
            1 => Just(Value::Null),
            1 => Just(json!(true)),
            1 => Just(json!([1, 2])),
        ]
    };
    let number = prop_oneof![
        8 => (0.0f64..1.1e15).prop_map(|v| json!(v)),
        1 => any::<f64>().prop_map(|v| json!(v)),
        1 => value(amount_like().boxed()),
    ];
    let volume = number.clone();
    (
        prop::option::weighted(0.97, value(time_text().boxed())),
        prop::option::weighted(0.97, value(symbol_like().boxed())),
        prop::option::weighted(0.97, number),
        prop::option::weighted(0.97, volume),
        prop::option::weighted(0.05, Just(json!("x"))),
    )
        .prop_map(|(time, symbol, price, volume, extra)| {
            let mut row = serde_json::Map::new();
            for (name, v) in [
                ("time", time),
                ("symbol", symbol),
                ("price", price),
                ("volume", volume),
                ("exchange", extra),
            ] {
                if let Some(v) = v {
                    row.insert(name.to_owned(), v);
                }
            }
            Value::Object(row)
        })
}

fn check_ticks(ticks: &[Tick]) -> Result<(), TestCaseError> {
    for t in ticks {
        check_accepted_time(t.time, &rfc3339(t.time))?;
        prop_assert_eq!(Symbol::parse(t.symbol.as_str()), Ok(t.symbol.clone()));
        prop_assert_eq!(copied_time(t), t.time, "COPY writes another instant");
    }
    Ok(())
}

/// The instant of `t` as the bulk path (COPY) writes it for PostgreSQL.
fn copied_time(t: &Tick) -> DateTime<Utc> {
    let mut row = Vec::new();
    candlewick::db::copy::write_csv_row(&mut row, t);
    let row = String::from_utf8(row).unwrap();
    let field = row.split(',').next().unwrap();
    DateTime::parse_from_str(field, "%Y-%m-%d %H:%M:%S%.f%#z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Ticks as CSV with the header, the way a client would write back what the API listed.
fn ticks_as_csv(ticks: &[Tick]) -> Vec<u8> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(["time", "symbol", "price", "volume"])
        .unwrap();
    for t in ticks {
        out.write_record([
            rfc3339(t.time),
            t.symbol.to_string(),
            t.price.get().to_string(),
            t.volume.get().to_string(),
        ])
        .unwrap();
    }
    out.into_inner().unwrap()
}

/// The searches check round trips only on what is accepted: make sure that is a good share.
#[test]
fn the_generated_inputs_are_often_accepted() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut sample = |strategy: BoxedStrategy<bool>| {
        (0..1000)
            .filter(|_| strategy.new_tree(&mut runner).unwrap().current())
            .count()
    };
    let times = sample(time_text().prop_map(|t| parse_time(&t).is_ok()).boxed());
    let rows = sample(
        json_row()
            .prop_map(|r| json_body::parse_ticks(r.to_string().as_bytes()).is_ok())
            .boxed(),
    );
    assert!(times > 400, "{times} of 1000 times accepted");
    assert!(rows > 100, "{rows} of 1000 JSON rows accepted");
}

// Regression tests: inputs the searches above found, kept as plain cases.

#[test]
fn year_10000_in_utc_is_refused_not_stored() {
    assert!(parse_time("9999-12-31T23:59:59-23:59").is_err());
    assert!(parse_form_time("9999-12-31T23:59:59-23:59").is_err());
}

#[test]
fn both_write_paths_store_the_parsed_instant_below_a_microsecond_and_before_2000() {
    // The bound path once rounded these toward 2000, COPY away from it: a microsecond apart.
    for input in [
        "1999-12-31T23:59:59.0000005Z",
        "0001-01-01T00:00:00.999999999Z",
        "9999-12-31T23:59:59.9999999Z",
    ] {
        let tick = Tick {
            time: parse_time(input).unwrap(),
            symbol: Symbol::parse("A").unwrap(),
            price: Price::new(1.0).unwrap(),
            volume: Volume::new(1.0).unwrap(),
        };
        assert_eq!(tick.time.nanosecond() % 1_000, 0, "{input}");
        assert_eq!(copied_time(&tick), tick.time, "{input}");
    }
}

#[test]
fn a_leap_second_is_stored_as_the_next_second_on_both_paths() {
    let t = parse_time("2016-12-31T23:59:60Z").unwrap();
    assert_eq!(rfc3339(t), "2017-01-01T00:00:00Z");
    assert!(matches!(
        parse_time("9999-12-31T23:59:60Z"),
        Err(candlewick::domain::time::TimeError::OutOfRange(_))
    ));
}
