//! `/api/ticks`: list, create (one, a JSON array, or CSV), update and delete.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::body::{self, read_body};
use super::query;
use crate::auth::Bearer;
use crate::db::audit::Author;
use crate::db::ticks::{self, TickFilter};
use crate::domain::Symbol;
use crate::domain::time::rfc3339;
use crate::error::AppError;
use crate::ingest::{self, MAX_BODY_BYTES};
use crate::state::AppState;

const DEFAULT_TICK_LIMIT: i64 = 100;
const MAX_TICK_LIMIT: i64 = 10_000;
/// A tick update is one small object.
const MAX_UPDATE_BYTES: usize = 64 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/ticks", web::post().to(create_ticks))
        .route("/api/ticks", web::get().to(list_ticks))
        .route("/api/ticks", web::put().to(update_tick))
        .route("/api/ticks", web::delete().to(delete_tick));
}

/// `POST /api/ticks`: one tick, an array of ticks, or `text/csv`; all or nothing.
async fn create_ticks(
    _: Bearer,
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let body = read_body(&req, body, MAX_BODY_BYTES).await?;
    let ticks = if body::is_csv(&req) {
        ingest::csv::parse_ticks(&body).map_err(|e| AppError::Validation(e.to_string()))?
    } else {
        ingest::json::parse_ticks(&body)?
    };
    // The ticks hold all they need: the body need not stay in memory beside them.
    drop(body);
    ingest::check_no_repeats(&ticks).map_err(AppError::Conflict)?;
    let inserted = ticks::insert_ticks(&state.pool, &ticks, Author::ApiToken).await?;
    metrics::counter!("candlewick_ticks_inserted_total", "via" => "api").increment(inserted);
    Ok(HttpResponse::Created().json(serde_json::json!({ "inserted": inserted })))
}

#[derive(Debug, Deserialize)]
struct TickQuery {
    symbol: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
}

async fn list_ticks(
    q: web::Query<TickQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let filter = TickFilter {
        symbol: query::symbol(q.symbol.as_deref())?.map(|s| s.to_string()),
        from: query::optional_time("from", q.from.as_deref())?,
        to: query::optional_time("to", q.to.as_deref())?,
        before: None,
        limit: query::limit(q.limit.as_deref(), DEFAULT_TICK_LIMIT, MAX_TICK_LIMIT)?,
    };
    let rows = ticks::list_ticks(&state.read_pool, &filter)
        .await
        .map_err(AppError::from_infra)?;
    Ok(HttpResponse::Ok().json(rows))
}

/// `?time=...&symbol=...`: the key of one tick.
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
        let symbol = query::symbol(self.symbol.as_deref())?
            .ok_or_else(|| AppError::BadRequest("symbol is required".into()))?;
        Ok((query::time("time", time)?, symbol))
    }
}

async fn update_tick(
    _: Bearer,
    req: HttpRequest,
    key: web::Query<TickKey>,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let (time, symbol) = key.parse()?;
    let body = read_body(&req, body, MAX_UPDATE_BYTES).await?;
    let (price, volume) = ingest::json::parse_amounts(&body)?;
    let updated = ticks::update_tick(
        &state.pool,
        time,
        symbol.as_str(),
        price,
        volume,
        None,
        Author::ApiToken,
    )
    .await
    .map_err(AppError::from_infra)?
    .unconditional()
    .ok_or_else(|| no_such_tick(time, &symbol))?;
    Ok(HttpResponse::Ok().json(updated))
}

async fn delete_tick(
    _: Bearer,
    key: web::Query<TickKey>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let (time, symbol) = key.parse()?;
    let deleted = ticks::delete_tick(&state.pool, time, symbol.as_str(), None, Author::ApiToken)
        .await
        .map_err(AppError::from_infra)?
        .unconditional()
        .ok_or_else(|| no_such_tick(time, &symbol))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "deleted": deleted })))
}

fn no_such_tick(time: DateTime<Utc>, symbol: &Symbol) -> AppError {
    AppError::NotFound(format!("no tick for {symbol} at {}", rfc3339(time)))
}
