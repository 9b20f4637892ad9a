//! `/api/candles` (JSON and CSV) and `/api/symbols`.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::Value;

use super::query;
use crate::db;
use crate::db::candles::{CandleRange, CandleRow};
use crate::domain::Interval;
use crate::domain::time::rfc3339;
use crate::error::AppError;
use crate::state::AppState;

const DEFAULT_CANDLE_LIMIT: i64 = 20_000;
const MAX_CANDLE_LIMIT: i64 = 200_000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/candles", web::get().to(list_candles))
        .route("/api/candles.csv", web::get().to(list_candles_csv))
        .route("/api/symbols", web::get().to(list_symbols));
}

#[derive(Debug, Deserialize)]
struct CandleQuery {
    symbol: Option<String>,
    interval: Option<String>,
    from: Option<String>,
    to: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

/// A page of candles, and how long a client may keep it.
struct Page {
    rows: Vec<CandleRow>,
    cache: &'static str,
}

/// Candles whose buckets have all ended this long ago only change by corrections: a page of
/// them may be kept a minute (corrections of loaded bars reach the chart over the WebSocket).
const CLOSED_AFTER_SECS: i64 = 120;

async fn candles(q: &CandleQuery, state: &AppState) -> Result<Page, AppError> {
    let symbol =
        query::symbol(q.symbol.as_deref())?.unwrap_or_else(|| state.default_symbol.clone());
    let interval = match q.interval.as_deref().filter(|v| !v.is_empty()) {
        None => Interval::M1,
        Some(v) => Interval::parse(v).map_err(|e| AppError::BadRequest(e.0))?,
    };
    let from = query::optional_time("from", q.from.as_deref())?;
    let to = query::optional_time("to", q.to.as_deref())?;
    let before = query::optional_instant("before", q.before.as_deref())?;
    let to = match (to, before) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let limit = query::limit(q.limit.as_deref(), DEFAULT_CANDLE_LIMIT, MAX_CANDLE_LIMIT)?;
    let range = CandleRange {
        symbol: symbol.to_string(),
        interval,
        from,
        to,
        limit,
    };
    let rows = db::candles::fetch_candles(&state.read_pool, &range)
        .await
        .map_err(AppError::from_infra)?;
    let closed = to.is_some_and(|t| {
        t.timestamp() + interval.seconds() < chrono::Utc::now().timestamp() - CLOSED_AFTER_SECS
    });
    Ok(Page {
        rows,
        cache: if closed {
            "public, max-age=60"
        } else {
            "no-cache"
        },
    })
}

/// `[{"bucket": RFC 3339, "open", "high", "low", "close", "volume"}]`, newest first.
async fn list_candles(
    q: web::Query<CandleQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let page = candles(&q, &state).await?;
    let out: Vec<Value> = page
        .rows
        .iter()
        .map(|c| {
            serde_json::json!({
                "bucket": rfc3339(c.bucket),
                "open": c.open, "high": c.high, "low": c.low, "close": c.close, "volume": c.volume,
            })
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, page.cache))
        .json(out))
}

async fn list_candles_csv(
    q: web::Query<CandleQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let page = candles(&q, &state).await?;
    let rows = page.rows;
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
        .insert_header((header::CACHE_CONTROL, page.cache))
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            "inline; filename=\"candles.csv\"",
        ))
        .body(out))
}

async fn list_symbols(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let symbols = db::ticks::list_symbols(&state.read_pool)
        .await
        .map_err(AppError::from_infra)?;
    Ok(HttpResponse::Ok().json(symbols))
}
