//! `GET /admin/ticks/delete` asks for confirmation; `POST` deletes.

use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::{
    TickKeyQuery, changed_page, key_query, no_such_tick, parse_key, parse_seen, seen_field,
    tick_page,
};
use crate::db::audit::Author;
use crate::db::ticks::{TickRow, Written};
use crate::domain::time::rfc3339;
use crate::error::{AppError, PageError};
use crate::routes::admin::{Admin, Chrome, FlashKind, number, see_other};
use crate::state::AppState;
use chrono::{DateTime, Utc};

#[derive(Template)]
#[template(path = "admin/ticks/delete.html")]
struct ConfirmDeletePage {
    chrome: Chrome,
    time: String,
    symbol: String,
    price: String,
    volume: String,
    key: String,
    /// The tick's values when the page was made, sent back with the form.
    seen_price: String,
    seen_volume: String,
    /// Set when another writer changed the tick after the page was loaded.
    conflict: Option<String>,
}

impl ConfirmDeletePage {
    fn of(chrome: Chrome, time: DateTime<Utc>, tick: &TickRow, conflict: Option<String>) -> Self {
        Self {
            chrome,
            time: rfc3339(time),
            symbol: tick.symbol.clone(),
            price: number(tick.price),
            volume: number(tick.volume),
            key: key_query(time, &tick.symbol),
            seen_price: seen_field(tick.price),
            seen_volume: seen_field(tick.volume),
            conflict,
        }
    }
}

pub async fn confirm_delete(
    admin: Admin,
    q: web::Query<TickKeyQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    tick_page(&admin, &q, &state.pool, ConfirmDeletePage::of).await
}

#[derive(Debug, Deserialize)]
pub struct DeleteTickForm {
    csrf_token: Option<String>,
    time: Option<String>,
    symbol: Option<String>,
    /// What the page was loaded with (see [`super::parse_seen`]).
    seen_price: Option<String>,
    seen_volume: Option<String>,
}

#[tracing::instrument(name = "Admin delete tick", skip_all, fields(symbol = ?form.symbol, time = ?form.time))]
pub async fn delete_tick(
    admin: Admin,
    form: web::Form<DeleteTickForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    admin.check_csrf(form.csrf_token.as_deref())?;
    let (time, symbol) = parse_key(form.time.as_deref(), form.symbol.as_deref())?;
    let seen = parse_seen(form.seen_price.as_deref(), form.seen_volume.as_deref())?;
    let written = crate::db::ticks::delete_tick(
        &state.pool,
        time,
        symbol.as_str(),
        seen,
        Author::AdminSession,
    )
    .await
    .map_err(PageError::infra)?;
    match written {
        Written::Done(_) => {}
        Written::Missing => return Err(no_such_tick(time, symbol.as_str())),
        Written::Changed(now) => {
            return changed_page(&admin, time, &now, "deleted", ConfirmDeletePage::of);
        }
    }
    admin.flash(
        FlashKind::Success,
        format!("Deleted the tick for {symbol} at {}.", rfc3339(time)),
    );
    Ok(see_other("/admin"))
}

#[derive(Debug, Deserialize)]
pub struct DeleteUnstorableForm {
    csrf_token: Option<String>,
    /// The time as the list shows it (PostgreSQL's text for it).
    stored_time: Option<String>,
    symbol: Option<String>,
}

/// `POST /admin/ticks/delete-unstorable`: removes a tick another program stored at a time
/// candlewick cannot show, edit or chart (the list names such ticks with this button).
#[tracing::instrument(name = "Admin delete unstorable tick", skip_all, fields(symbol = ?form.symbol, time = ?form.stored_time))]
pub async fn delete_unstorable_tick(
    admin: Admin,
    form: web::Form<DeleteUnstorableForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    admin.check_csrf(form.csrf_token.as_deref())?;
    let (Some(time), Some(symbol)) = (form.stored_time.as_deref(), form.symbol.as_deref()) else {
        return Err(PageError(AppError::BadRequest(
            "This form names no tick.".into(),
        )));
    };
    let deleted = crate::db::ticks::delete_unstorable(
        &state.pool,
        time,
        symbol,
        Author::AdminSession,
    )
    .await
    .map_err(PageError::infra)?
    .ok_or_else(|| {
        PageError(AppError::NotFound(format!(
            "There is no tick for {symbol} stored at {time}. It may have been deleted meanwhile."
        )))
    })?;
    admin.flash(
        FlashKind::Success,
        format!(
            "Deleted the tick for {} stored at {}.",
            deleted.symbol, deleted.time
        ),
    );
    Ok(see_other("/admin"))
}
