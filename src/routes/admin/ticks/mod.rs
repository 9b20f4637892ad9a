//! The tick pages: list, create, edit, delete. Time and symbol are a tick's key.

pub mod delete;
pub mod edit;
pub mod list;
pub mod new;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use askama::Template;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;

use super::{Admin, Chrome, Section, page, query};
use crate::db::ticks::{Seen, TickRow};
use crate::domain::time::{TimeError, parse_form_time, rfc3339};
use crate::domain::{Price, Symbol, Volume};
use crate::error::{AppError, PageError};

/// Messages next to the form fields; empty when the input is fine.
#[derive(Debug, Default)]
pub struct FieldErrors {
    pub time: Option<String>,
    pub symbol: Option<String>,
    pub price: Option<String>,
    pub volume: Option<String>,
}

impl FieldErrors {
    pub fn any(&self) -> bool {
        self.time.is_some()
            || self.symbol.is_some()
            || self.price.is_some()
            || self.volume.is_some()
    }

    /// The price field parsed, or `None` with its message noted.
    pub fn price(&mut self, input: &str) -> Option<Price> {
        Price::parse(input).map_err(|e| self.price = Some(e.0)).ok()
    }

    /// The volume field parsed, or `None` with its message noted.
    pub fn volume(&mut self, input: &str) -> Option<Volume> {
        Volume::parse(input)
            .map_err(|e| self.volume = Some(e.0))
            .ok()
    }
}

/// `?time=...&symbol=...` naming one tick (edit and delete pages).
#[derive(Debug, Deserialize)]
pub struct TickKeyQuery {
    time: Option<String>,
    symbol: Option<String>,
}

impl TickKeyQuery {
    pub fn parse(&self) -> Result<(DateTime<Utc>, Symbol), PageError> {
        parse_key(self.time.as_deref(), self.symbol.as_deref())
    }

    /// The tick the link names, with the time as parsed: 400 when it names none, 404 when
    /// that tick is not there.
    pub async fn fetch(&self, pool: &PgPool) -> Result<(DateTime<Utc>, TickRow), PageError> {
        let (time, symbol) = self.parse()?;
        let tick = crate::db::ticks::fetch_tick(pool, time, symbol.as_str())
            .await
            .map_err(PageError::infra)?
            .ok_or_else(|| no_such_tick(time, symbol.as_str()))?;
        Ok((time, tick))
    }
}

/// A tick's key from a link or a hidden field: 400 when it cannot name a tick, 422 when its
/// time is one PostgreSQL cannot store.
pub fn parse_key(
    time: Option<&str>,
    symbol: Option<&str>,
) -> Result<(DateTime<Utc>, Symbol), PageError> {
    let time = parse_form_time(time.unwrap_or_default()).map_err(|e| match e {
        TimeError::Malformed(m) => PageError(AppError::BadRequest(format!(
            "This link names no tick: {m}."
        ))),
        TimeError::OutOfRange(m) => PageError(AppError::Validation(format!(
            "This link names no tick: {m}."
        ))),
    })?;
    let symbol = Symbol::parse(symbol.unwrap_or_default())
        .map_err(|e| AppError::BadRequest(format!("This link names no tick: {e}.")))?;
    Ok((time, symbol))
}

/// The query string that names a tick, for edit and delete links.
pub fn key_query(time: DateTime<Utc>, symbol: &str) -> String {
    query(&[("time", &rfc3339(time)), ("symbol", symbol)])
}

/// `404` for a tick that is not (or no longer) there.
pub fn no_such_tick(time: DateTime<Utc>, symbol: &str) -> PageError {
    PageError(AppError::NotFound(format!(
        "There is no tick for {symbol} at {}. It may have been deleted meanwhile.",
        rfc3339(time)
    )))
}

/// The hidden `seen_price`/`seen_volume` fields of the edit and delete forms: the tick's values
/// when the form was loaded (empty for NULL), exactly as `f64` prints them.
pub fn seen_field(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// What the form was loaded with; `None` for a request without the fields (a script posting by
/// hand), which writes unconditionally as the API does.
pub fn parse_seen(price: Option<&str>, volume: Option<&str>) -> Result<Option<Seen>, PageError> {
    let (Some(price), Some(volume)) = (price, volume) else {
        return Ok(None);
    };
    let one = |s: &str| -> Result<Option<f64>, PageError> {
        if s.is_empty() {
            return Ok(None);
        }
        s.parse::<f64>().map(Some).map_err(|_| {
            PageError(AppError::BadRequest(
                "This form is damaged: reload the tick and try again.".into(),
            ))
        })
    };
    Ok(Some(Seen {
        price: one(price)?,
        volume: one(volume)?,
    }))
}

/// The message over a form whose tick was changed by another writer after it was loaded.
fn changed_meanwhile(now: &TickRow, what: &str) -> String {
    format!(
        "Nothing was {what}: this tick was changed by another writer after you opened this form. \
         It now has price {} and volume {}, shown here; check them and submit again.",
        super::number(now.price),
        super::number(now.volume)
    )
}

/// Makes a page about one tick (the edit form, the delete confirmation) from the tick as
/// stored, with a message when another writer changed it meanwhile.
pub type TickPageOf<P> = fn(Chrome, DateTime<Utc>, &TickRow, Option<String>) -> P;

/// `GET` of a page about the tick a link names (404 when it is not there).
pub async fn tick_page<P: Template>(
    admin: &Admin,
    q: &TickKeyQuery,
    pool: &PgPool,
    of: TickPageOf<P>,
) -> Result<HttpResponse, PageError> {
    let (time, tick) = q.fetch(pool).await?;
    page(
        StatusCode::OK,
        &of(admin.chrome(Section::Ticks), time, &tick, None),
    )
}

/// The page again (409) with the tick as another writer left it: nothing was `what`.
pub fn changed_page<P: Template>(
    admin: &Admin,
    time: DateTime<Utc>,
    now: &TickRow,
    what: &str,
    of: TickPageOf<P>,
) -> Result<HttpResponse, PageError> {
    tracing::info!("tick changed since the page was loaded: nothing {what}");
    let message = changed_meanwhile(now, what);
    page(
        StatusCode::CONFLICT,
        &of(admin.chrome(Section::Ticks), time, now, Some(message)),
    )
}
