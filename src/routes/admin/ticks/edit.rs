//! `GET/POST /admin/ticks/edit`: change a tick's price and volume (time and symbol are its key).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::{FieldErrors, TickKeyQuery, key_query, no_such_tick, parse_key};
use crate::db::audit::Author;
use crate::domain::time::rfc3339;
use crate::error::PageError;
use crate::routes::admin::{Admin, Chrome, FlashKind, Section, number, page, see_other};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct EditTickForm {
    csrf_token: Option<String>,
    time: Option<String>,
    symbol: Option<String>,
    #[serde(default)]
    price: String,
    #[serde(default)]
    volume: String,
}

#[derive(Template)]
#[template(path = "admin/ticks/edit.html")]
struct EditTickPage {
    chrome: Chrome,
    /// RFC 3339, as sent back in the hidden key field.
    time: String,
    symbol: String,
    price: String,
    volume: String,
    errors: FieldErrors,
    key: String,
}

pub async fn edit_tick_form(
    admin: Admin,
    q: web::Query<TickKeyQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (time, tick) = q.fetch(&state.pool).await?;
    let edit = EditTickPage {
        chrome: admin.chrome(Section::Ticks),
        time: rfc3339(time),
        symbol: tick.symbol.clone(),
        price: tick.price.map(|p| p.to_string()).unwrap_or_default(),
        volume: tick.volume.map(|v| v.to_string()).unwrap_or_default(),
        errors: FieldErrors::default(),
        key: key_query(time, &tick.symbol),
    };
    page(StatusCode::OK, &edit)
}

#[tracing::instrument(name = "Admin update tick", skip_all, fields(symbol = ?form.symbol, time = ?form.time))]
pub async fn update_tick(
    admin: Admin,
    form: web::Form<EditTickForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    admin.check_csrf(form.csrf_token.as_deref())?;
    let form = form.into_inner();
    let (time, symbol) = parse_key(form.time.as_deref(), form.symbol.as_deref())?;
    let mut errors = FieldErrors::default();
    let price = errors.price(&form.price);
    let volume = errors.volume(&form.volume);
    let (Some(price), Some(volume)) = (price, volume) else {
        let reshown = EditTickPage {
            chrome: admin.chrome(Section::Ticks),
            time: rfc3339(time),
            symbol: symbol.to_string(),
            price: form.price,
            volume: form.volume,
            errors,
            key: key_query(time, symbol.as_str()),
        };
        return page(StatusCode::UNPROCESSABLE_ENTITY, &reshown);
    };
    let updated = crate::db::ticks::update_tick(
        &state.pool,
        time,
        symbol.as_str(),
        price,
        volume,
        Author::AdminSession,
    )
    .await
    .map_err(PageError::infra)?
    .ok_or_else(|| no_such_tick(time, symbol.as_str()))?;
    admin.flash(
        FlashKind::Success,
        format!(
            "Updated the tick for {symbol} at {}: price {}, volume {}.",
            rfc3339(time),
            number(updated.price),
            number(updated.volume)
        ),
    );
    Ok(see_other("/admin"))
}
