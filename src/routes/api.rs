//! The JSON API: ticks (read, write, bulk), candles (JSON and CSV) and symbols.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, put, web};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use crate::db;
use crate::db::candles::CandleRow;
use crate::db::ticks::{Actor, TickFilter};
use crate::domain::{Interval, ParseError, Price, Symbol, Tick, Volume, parse_time};
use crate::error::AppError;
use crate::format::rfc3339;
use crate::startup::AppState;

/// Largest request body the API takes (413 beyond it).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// How many row errors a rejected batch reports.
const MAX_REPORTED_ERRORS: usize = 10;
const DEFAULT_TICK_LIMIT: i64 = 100;
const MAX_TICK_LIMIT: i64 = 10_000;
const DEFAULT_CANDLE_LIMIT: i64 = 20_000;
const MAX_CANDLE_LIMIT: i64 = 200_000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_ticks)
        .service(list_ticks)
        .service(update_tick)
        .service(delete_tick)
        .service(list_candles)
        .service(list_candles_csv)
        .service(list_symbols);
}

/// Checks `Authorization: Bearer <admin token>` in constant time.
pub fn require_bearer(req: &HttpRequest, state: &AppState) -> Result<(), AppError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(AppError::Unauthorized(
            "this endpoint needs Authorization: Bearer <admin token>".into(),
        ));
    };
    let token = value
        .to_str()
        .ok()
        // The scheme is case-insensitive (RFC 9110 §11.1).
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        })
        .map(|(_, token)| token)
        .ok_or_else(|| {
            AppError::Unauthorized("expected Authorization: Bearer <admin token>".into())
        })?;
    if state.auth.token_matches(token.trim()) {
        Ok(())
    } else {
        Err(AppError::Forbidden("the admin token is not valid".into()))
    }
}

/// `POST /api/ticks`: one tick, an array of ticks, or `text/csv`; all or nothing.
#[post("/api/ticks")]
async fn create_ticks(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    require_bearer(&req, &state)?;
    let body = read_body(body, MAX_BODY_BYTES).await?;
    let is_csv = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/csv"));
    let ticks = if is_csv {
        parse_csv_body(&body)?
    } else {
        parse_json_body(&body)?
    };
    if ticks.is_empty() {
        return Err(AppError::Validation("no ticks given".into()));
    }
    check_no_repeats(&ticks)?;
    let inserted = db::ticks::insert_ticks(&state.pool, &ticks, Actor::ApiToken).await?;
    metrics::counter!("candlewick_ticks_inserted_total", "via" => "api").increment(inserted);
    Ok(HttpResponse::Created().json(serde_json::json!({ "inserted": inserted })))
}

/// Reads the whole body, refusing more than `limit` bytes with a JSON 413.
pub async fn read_body(mut body: web::Payload, limit: usize) -> Result<web::BytesMut, AppError> {
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| AppError::BadRequest(format!("reading the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(AppError::PayloadTooLarge(format!(
                "the body is larger than {limit} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn parse_json_body(body: &[u8]) -> Result<Vec<Tick>, AppError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| AppError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    let (rows, single) = match value {
        Value::Array(rows) => (rows, false),
        v @ Value::Object(_) => (vec![v], true),
        _ => {
            return Err(AppError::Validation(
                "expected a tick object or an array of tick objects".into(),
            ));
        }
    };
    let mut ticks = Vec::with_capacity(rows.len());
    let mut errors = RowErrors::default();
    for (i, row) in rows.iter().enumerate() {
        match tick_from_json(row) {
            Ok(t) => ticks.push(t),
            Err(e) if single => return Err(AppError::Validation(e.0)),
            Err(e) => errors.push(format!("row {} (index {i}): {}", i + 1, e.0)),
        }
    }
    errors.into_result(rows.len())?;
    Ok(ticks)
}

/// A JSON number, or a string holding one (CSV-minded clients send those).
fn number_field(row: &serde_json::Map<String, Value>, name: &str) -> Result<String, ParseError> {
    match row.get(name) {
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(ParseError(format!("{name} is required"))),
        Some(other) => Err(ParseError(format!("{name} must be a number, got {other}"))),
    }
}

fn string_field<'a>(
    row: &'a serde_json::Map<String, Value>,
    name: &str,
) -> Result<&'a str, ParseError> {
    match row.get(name) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(ParseError(format!("{name} is required"))),
        Some(other) => Err(ParseError(format!("{name} must be a string, got {other}"))),
    }
}

fn tick_from_json(row: &Value) -> Result<Tick, ParseError> {
    let Value::Object(row) = row else {
        return Err(ParseError(
            "expected an object with time, symbol, price and volume".into(),
        ));
    };
    if let Some(extra) = row
        .keys()
        .find(|k| !matches!(k.as_str(), "time" | "symbol" | "price" | "volume"))
    {
        return Err(ParseError(format!(
            "unknown field {extra:?} (expected time, symbol, price, volume)"
        )));
    }
    Ok(Tick {
        time: parse_time(string_field(row, "time")?)?,
        symbol: Symbol::parse(string_field(row, "symbol")?)?,
        price: Price::parse(&number_field(row, "price")?)?,
        volume: Volume::parse(&number_field(row, "volume")?)?,
    })
}

/// Collects row errors; any error rejects the whole batch.
#[derive(Default)]
pub struct RowErrors {
    shown: Vec<String>,
    total: usize,
}

impl RowErrors {
    pub fn push(&mut self, msg: String) {
        self.total += 1;
        if self.shown.len() < MAX_REPORTED_ERRORS {
            self.shown.push(msg);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub fn message(&self, rows: usize) -> String {
        let more = if self.total > self.shown.len() {
            format!(" (and {} more)", self.total - self.shown.len())
        } else {
            String::new()
        };
        format!(
            "{} of {rows} rows are invalid, nothing was written: {}{more}",
            self.total,
            self.shown.join("; ")
        )
    }

    fn into_result(self, rows: usize) -> Result<(), AppError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(AppError::Validation(self.message(rows)))
        }
    }
}

/// Parses a `time,symbol,price,volume` CSV (columns in any order, header required).
pub fn parse_csv_body(body: &[u8]) -> Result<Vec<Tick>, AppError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(body);
    let columns = CsvColumns::from_headers(
        reader
            .headers()
            .map_err(|e| AppError::Validation(format!("reading the CSV header: {e}")))?,
    )
    .map_err(AppError::Validation)?;
    let mut ticks = Vec::new();
    let mut errors = RowErrors::default();
    let mut rows = 0;
    for record in reader.records() {
        rows += 1;
        match record {
            Ok(r) => match columns.tick(&r) {
                Ok(t) => ticks.push(t),
                Err(e) => errors.push(format!("line {}: {}", line_of(&r, rows), e.0)),
            },
            Err(e) => errors.push(format!("line {}: {e}", rows + 1)),
        }
    }
    errors.into_result(rows)?;
    Ok(ticks)
}

fn line_of(r: &csv::StringRecord, fallback_row: usize) -> u64 {
    r.position().map_or(fallback_row as u64 + 1, |p| p.line())
}

/// Where each field sits in a CSV file with the header `time,symbol,price,volume`.
#[derive(Debug, Clone, Copy)]
pub struct CsvColumns {
    time: usize,
    symbol: usize,
    price: usize,
    volume: usize,
}

impl CsvColumns {
    pub fn from_headers(h: &csv::StringRecord) -> Result<Self, String> {
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

    pub fn tick(&self, r: &csv::StringRecord) -> Result<Tick, ParseError> {
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

/// The same (time, symbol) twice in one batch is a conflict, named by its rows.
fn check_no_repeats(ticks: &[Tick]) -> Result<(), AppError> {
    let mut seen = std::collections::HashMap::with_capacity(ticks.len());
    for (i, t) in ticks.iter().enumerate() {
        if let Some(first) = seen.insert((t.time, t.symbol.as_str()), i) {
            return Err(AppError::Conflict(format!(
                "rows {} and {} are both {} at {}; nothing was written",
                first + 1,
                i + 1,
                t.symbol,
                rfc3339(t.time)
            )));
        }
    }
    Ok(())
}

/// Query-string time: RFC 3339, forgiving a `+` offset that form-encoding turned into a space.
pub fn query_time(name: &str, value: &str) -> Result<DateTime<Utc>, AppError> {
    parse_time(value)
        .or_else(|e| {
            if value.contains(' ') {
                parse_time(&value.replace(' ', "+"))
            } else {
                Err(e)
            }
        })
        .map_err(|e| AppError::BadRequest(format!("{name}: {}", e.0)))
}

fn optional_time(name: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, AppError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| query_time(name, v))
        .transpose()
}

fn parse_limit(value: Option<&str>, default: i64, max: i64) -> Result<i64, AppError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(AppError::BadRequest(format!(
                "limit must be a whole number from 1 to {max}; got {v:?}"
            ))),
        },
    }
}

fn query_symbol(value: Option<&str>) -> Result<Option<Symbol>, AppError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| Symbol::parse(v).map_err(|e| AppError::BadRequest(format!("symbol: {}", e.0))))
        .transpose()
}

/// Query strings are taken as text and validated here, so every problem gets our own message.
#[derive(Debug, Deserialize)]
struct TickQuery {
    symbol: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
}

#[get("/api/ticks")]
async fn list_ticks(
    q: web::Query<TickQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let filter = TickFilter {
        symbol: query_symbol(q.symbol.as_deref())?.map(|s| s.to_string()),
        from: optional_time("from", q.from.as_deref())?,
        to: optional_time("to", q.to.as_deref())?,
        before: None,
        limit: parse_limit(q.limit.as_deref(), DEFAULT_TICK_LIMIT, MAX_TICK_LIMIT)?,
    };
    let rows = db::ticks::list_ticks(&state.pool, &filter)
        .await
        .map_err(AppError::from_infra)?;
    Ok(HttpResponse::Ok().json(rows))
}

#[derive(Debug, Deserialize)]
struct TickKey {
    time: Option<String>,
    symbol: Option<String>,
}

impl TickKey {
    fn parse(&self) -> Result<(DateTime<Utc>, Symbol), AppError> {
        let time = self
            .time
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AppError::BadRequest("time is required".into()))?;
        let symbol = query_symbol(self.symbol.as_deref())?
            .ok_or_else(|| AppError::BadRequest("symbol is required".into()))?;
        Ok((query_time("time", time)?, symbol))
    }
}

#[put("/api/ticks")]
async fn update_tick(
    req: HttpRequest,
    key: web::Query<TickKey>,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    require_bearer(&req, &state)?;
    let (time, symbol) = key.parse()?;
    let body = read_body(body, 64 * 1024).await?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| AppError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(AppError::Validation(
            "expected an object {\"price\": .., \"volume\": ..}".into(),
        ));
    };
    if let Some(extra) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "price" | "volume"))
    {
        return Err(AppError::Validation(format!(
            "unknown field {extra:?} (expected price, volume)"
        )));
    }
    let price =
        Price::parse(&number_field(&fields, "price").map_err(|e| AppError::Validation(e.0))?)
            .map_err(|e| AppError::Validation(e.0))?;
    let volume =
        Volume::parse(&number_field(&fields, "volume").map_err(|e| AppError::Validation(e.0))?)
            .map_err(|e| AppError::Validation(e.0))?;
    let updated = db::ticks::update_tick(
        &state.pool,
        time,
        symbol.as_str(),
        price,
        volume,
        Actor::ApiToken,
    )
    .await
    .map_err(AppError::from_infra)?
    .ok_or_else(|| no_such_tick(time, &symbol))?;
    Ok(HttpResponse::Ok().json(updated))
}

#[delete("/api/ticks")]
async fn delete_tick(
    req: HttpRequest,
    key: web::Query<TickKey>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    require_bearer(&req, &state)?;
    let (time, symbol) = key.parse()?;
    let deleted = db::ticks::delete_tick(&state.pool, time, symbol.as_str(), Actor::ApiToken)
        .await
        .map_err(AppError::from_infra)?
        .ok_or_else(|| no_such_tick(time, &symbol))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "deleted": deleted })))
}

fn no_such_tick(time: DateTime<Utc>, symbol: &Symbol) -> AppError {
    AppError::NotFound(format!("no tick for {symbol} at {}", rfc3339(time)))
}

#[derive(Debug, Deserialize)]
struct CandleQuery {
    symbol: Option<String>,
    interval: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
}

async fn candles(q: &CandleQuery, state: &AppState) -> Result<Vec<CandleRow>, AppError> {
    let symbol = query_symbol(q.symbol.as_deref())?.unwrap_or_else(|| state.default_symbol.clone());
    let interval = match q.interval.as_deref().filter(|v| !v.is_empty()) {
        None => Interval::M1,
        Some(v) => Interval::parse(v).map_err(|e| AppError::BadRequest(e.0))?,
    };
    let from = optional_time("from", q.from.as_deref())?;
    let to = optional_time("to", q.to.as_deref())?;
    let limit = parse_limit(q.limit.as_deref(), DEFAULT_CANDLE_LIMIT, MAX_CANDLE_LIMIT)?;
    db::candles::fetch_candles(&state.pool, symbol.as_str(), interval, from, to, limit)
        .await
        .map_err(AppError::from_infra)
}

/// `[{"bucket": RFC 3339, "open", "high", "low", "close", "volume"}]`, newest first.
#[get("/api/candles")]
async fn list_candles(
    q: web::Query<CandleQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let rows = candles(&q, &state).await?;
    let out: Vec<Value> = rows
        .iter()
        .map(|c| {
            serde_json::json!({
                "bucket": rfc3339(c.bucket),
                "open": c.open, "high": c.high, "low": c.low, "close": c.close, "volume": c.volume,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

#[get("/api/candles.csv")]
async fn list_candles_csv(
    q: web::Query<CandleQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let rows = candles(&q, &state).await?;
    let mut out = String::with_capacity(64 * (rows.len() + 1));
    out.push_str("bucket,open,high,low,close,volume\n");
    let num = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    for c in &rows {
        out.push_str(&format!(
            "{},{},{},{},{},{}\n",
            rfc3339(c.bucket),
            num(c.open),
            num(c.high),
            num(c.low),
            num(c.close),
            num(c.volume)
        ));
    }
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            "inline; filename=\"candles.csv\"",
        ))
        .body(out))
}

#[get("/api/symbols")]
async fn list_symbols(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let symbols = db::ticks::list_symbols(&state.pool)
        .await
        .map_err(AppError::from_infra)?;
    Ok(HttpResponse::Ok().json(symbols))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_with_one_bad_row_names_that_row() {
        let body = br#"[{"time":"2024-07-03T06:25:00Z","symbol":"A","price":1,"volume":1},
                        {"time":"2024-07-03T06:26:00Z","symbol":"A","price":"abc","volume":1}]"#;
        let err = parse_json_body(body).unwrap_err().to_string();
        assert!(err.contains("row 2"), "{err}");
    }

    #[test]
    fn csv_columns_may_come_in_any_order() {
        let ticks =
            parse_csv_body(b"symbol,time,volume,price\nA,2024-07-03T06:25:00Z,1,2\n").unwrap();
        assert_eq!(ticks[0].price.get(), 2.0);
        assert_eq!(ticks[0].volume.get(), 1.0);
    }

    #[test]
    fn csv_errors_carry_line_numbers() {
        let err = parse_csv_body(
            b"time,symbol,price,volume\n2024-07-03T06:25:00Z,A,1,1\n2024-07-03T06:26:00Z,A,x,1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn a_plus_offset_mangled_into_a_space_still_parses() {
        assert!(query_time("time", "2024-07-03T08:25:00 02:00").is_ok());
    }
}
