//! `GET/POST /admin/ticks/edit`: change a tick's price and volume (time and symbol are its key).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{
    FieldErrors, TickKeyQuery, changed_page, key_query, no_such_tick, parse_key, parse_seen,
    seen_field, tick_page,
};
use crate::db::audit::Author;
use crate::db::ticks::TickRow;
use crate::db::ticks::Written;
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
    /// What the form was loaded with (see [`super::parse_seen`]).
    seen_price: Option<String>,
    seen_volume: Option<String>,
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
    /// The tick's values when the form was made, sent back with it.
    seen_price: String,
    seen_volume: String,
    /// Set when another writer changed the tick after the form was loaded.
    conflict: Option<String>,
}

impl EditTickPage {
    /// The form for the tick as it is in `tick`.
    fn of(chrome: Chrome, time: DateTime<Utc>, tick: &TickRow, conflict: Option<String>) -> Self {
        Self {
            chrome,
            time: rfc3339(time),
            symbol: tick.symbol.clone(),
            price: tick.price.map(|p| p.to_string()).unwrap_or_default(),
            volume: tick.volume.map(|v| v.to_string()).unwrap_or_default(),
            errors: FieldErrors::default(),
            key: key_query(time, &tick.symbol),
            seen_price: seen_field(tick.price),
            seen_volume: seen_field(tick.volume),
            conflict,
        }
    }
}

pub async fn edit_tick_form(
    admin: Admin,
    q: web::Query<TickKeyQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    tick_page(&admin, &q, &state.pool, EditTickPage::of).await
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
    let seen = parse_seen(form.seen_price.as_deref(), form.seen_volume.as_deref())?;
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
            seen_price: form.seen_price.unwrap_or_default(),
            seen_volume: form.seen_volume.unwrap_or_default(),
            conflict: None,
        };
        return page(StatusCode::UNPROCESSABLE_ENTITY, &reshown);
    };
    let updated = crate::db::ticks::update_tick(
        &state.pool,
        time,
        symbol.as_str(),
        price,
        volume,
        seen,
        Author::AdminSession,
    )
    .await
    .map_err(PageError::infra)?;
    let updated = match updated {
        Written::Done(row) => row,
        Written::Missing => return Err(no_such_tick(time, symbol.as_str())),
        Written::Changed(now) => {
            return changed_page(&admin, time, &now, "updated", EditTickPage::of);
        }
    };
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
