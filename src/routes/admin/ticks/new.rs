//! `GET/POST /admin/ticks/new`: add one tick.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::FieldErrors;
use crate::db::WriteError;
use crate::db::audit::Author;
use crate::domain::time::{parse_form_time, rfc3339};
use crate::domain::{Symbol, Tick};
use crate::error::PageError;
use crate::routes::admin::{Admin, Chrome, FlashKind, Section, page, see_other};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct NewTickForm {
    csrf_token: Option<String>,
    #[serde(default)]
    time: String,
    #[serde(default)]
    symbol: String,
    #[serde(default)]
    price: String,
    #[serde(default)]
    volume: String,
}

#[derive(Template)]
#[template(path = "admin/ticks/new.html")]
struct NewTickPage {
    chrome: Chrome,
    form: NewTickForm,
    errors: FieldErrors,
    /// A form-wide problem (the tick exists already).
    problem: Option<String>,
}

pub async fn new_tick_form(admin: Admin) -> Result<HttpResponse, PageError> {
    let form = NewTickForm {
        volume: "0".into(),
        ..NewTickForm::default()
    };
    page(
        StatusCode::OK,
        &NewTickPage {
            chrome: admin.chrome(Section::NewTick),
            form,
            errors: FieldErrors::default(),
            problem: None,
        },
    )
}

#[tracing::instrument(name = "Admin create tick", skip_all, fields(symbol = %form.symbol))]
pub async fn create_tick(
    admin: Admin,
    form: web::Form<NewTickForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    admin.check_csrf(form.csrf_token.as_deref())?;
    let form = form.into_inner();
    let mut errors = FieldErrors::default();
    let time = parse_form_time(&form.time)
        .map_err(|e| errors.time = Some(e.to_string()))
        .ok();
    let symbol = Symbol::parse(form.symbol.trim())
        .map_err(|e| errors.symbol = Some(e.0))
        .ok();
    let price = errors.price(&form.price);
    let volume = errors.volume(&form.volume);
    let (Some(time), Some(symbol), Some(price), Some(volume)) = (time, symbol, price, volume)
    else {
        let reshown = NewTickPage {
            chrome: admin.chrome(Section::NewTick),
            form,
            errors,
            problem: None,
        };
        return page(StatusCode::UNPROCESSABLE_ENTITY, &reshown);
    };
    let tick = Tick {
        time,
        symbol,
        price,
        volume,
    };
    match crate::db::ticks::insert_ticks(
        &state.pool,
        std::slice::from_ref(&tick),
        Author::AdminSession,
    )
    .await
    {
        Ok(_) => {
            metrics::counter!("candlewick_ticks_inserted_total", "via" => "admin").increment(1);
            admin.flash(
                FlashKind::Success,
                format!(
                    "Added a tick for {} at {}.",
                    tick.symbol,
                    rfc3339(tick.time)
                ),
            );
            Ok(see_other("/admin"))
        }
        Err(WriteError::Duplicate(_)) => {
            let problem = format!(
                "A tick for {} at {} already exists; nothing was written. Edit that tick instead.",
                tick.symbol,
                rfc3339(tick.time)
            );
            let errors = FieldErrors {
                time: Some("a tick with this time and symbol already exists".into()),
                ..FieldErrors::default()
            };
            let reshown = NewTickPage {
                chrome: admin.chrome(Section::NewTick),
                form,
                errors,
                problem: Some(problem),
            };
            page(StatusCode::CONFLICT, &reshown)
        }
        Err(e) => Err(PageError(e.into())),
    }
}
