//! `GET /admin`: ticks newest first, filtered by symbol and time range, in keyset pages, each
//! with the candle of its minute. Plain links and a GET form: no JavaScript needed.

use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::key_query;
use crate::db::ticks::{TickFilter, TickWithCandle, UnstorableTick};
use crate::domain::Symbol;
use crate::domain::time::{parse_form_time, rfc3339};
use crate::error::PageError;
use crate::routes::admin::listing::{self, text};
use crate::routes::admin::{Admin, Chrome, Section, number, page, query};
use crate::state::AppState;

/// Ticks per page.
pub const PAGE_SIZE: i64 = 50;
/// Ticks stored outside the accepted time range that the list names (all are counted).
const UNSTORABLE_SHOWN: i64 = 20;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    symbol: Option<String>,
    from: Option<String>,
    to: Option<String>,
    before_time: Option<String>,
    before_symbol: Option<String>,
}

#[derive(Default)]
struct FilterErrors {
    symbol: Option<String>,
    from: Option<String>,
    to: Option<String>,
    before: Option<String>,
}

impl FilterErrors {
    fn any(&self) -> bool {
        self.symbol.is_some() || self.from.is_some() || self.to.is_some() || self.before.is_some()
    }
}

#[derive(Template)]
#[template(path = "admin/ticks/list.html")]
struct TickListPage {
    chrome: Chrome,
    symbol: String,
    from: String,
    to: String,
    errors: FilterErrors,
    symbols: Vec<String>,
    rows: Vec<Row>,
    /// Query string of the next (older) page, if there is one.
    older: Option<String>,
    /// Query string of the first page with the same filters, when not on it.
    newest: Option<String>,
    /// How many ticks another program stored that candlewick cannot use (a time outside its
    /// range, a NaN or infinite price or volume), and some of them.
    unstorable_count: usize,
    unstorable: Vec<UnstorableRow>,
}

/// A tick candlewick cannot use; its time is PostgreSQL's text, also the key to delete it.
struct UnstorableRow {
    time: String,
    symbol: String,
    price: String,
    volume: String,
    problem: String,
}

impl From<UnstorableTick> for UnstorableRow {
    fn from(t: UnstorableTick) -> Self {
        Self {
            price: number(t.price),
            volume: number(t.volume),
            time: t.time,
            symbol: t.symbol,
            problem: t.problem,
        }
    }
}

struct Row {
    time: String,
    symbol: String,
    price: String,
    volume: String,
    candle: Option<[String; 5]>,
    key: String,
}

impl From<&TickWithCandle> for Row {
    fn from(t: &TickWithCandle) -> Self {
        let candle = t.candle_high.map(|_| {
            [
                number(t.candle_open),
                number(t.candle_high),
                number(t.candle_low),
                number(t.candle_close),
                number(t.candle_volume),
            ]
        });
        Self {
            time: rfc3339(t.time),
            symbol: t.symbol.clone(),
            price: number(t.price),
            volume: number(t.volume),
            candle,
            key: key_query(t.time, &t.symbol),
        }
    }
}

pub async fn list_ticks(
    admin: Admin,
    q: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let q = q.into_inner();
    let (symbol, from, to) = (text(q.symbol), text(q.from), text(q.to));
    let mut errors = FilterErrors::default();
    let mut filter = TickFilter {
        symbol: listing::symbol(&symbol, &mut errors.symbol),
        from: listing::time(&from, &mut errors.from),
        to: listing::time(&to, &mut errors.to),
        limit: PAGE_SIZE + 1,
        ..TickFilter::default()
    };
    if let (Some(f), Some(t)) = (filter.from, filter.to)
        && f >= t
    {
        errors.to = Some("“to” must be later than “from”".into());
    }
    let before = (text(q.before_time), text(q.before_symbol));
    if !before.0.is_empty() || !before.1.is_empty() {
        match (parse_form_time(&before.0), Symbol::parse(&before.1)) {
            (Ok(t), Ok(s)) => filter.before = Some((t, s.to_string())),
            _ => {
                errors.before = Some(
                    "The page link is broken; showing nothing. Start again from the newest ticks."
                        .into(),
                )
            }
        }
    }
    let symbols = crate::db::ticks::list_symbols(&state.pool)
        .await
        .map_err(PageError::infra)?;
    let (unstorable_count, unstorable) =
        crate::db::ticks::list_unstorable(&state.pool, UNSTORABLE_SHOWN)
            .await
            .map_err(PageError::infra)?;
    let ticks = listing::fetch_page(
        errors.any(),
        PAGE_SIZE,
        crate::db::ticks::list_ticks_with_candles(&state.pool, &filter),
    )
    .await?;
    let filters = [
        ("symbol", symbol.as_str()),
        ("from", from.as_str()),
        ("to", to.as_str()),
    ];
    let older = ticks.rows.last().filter(|_| ticks.more).map(|last| {
        let time = rfc3339(last.time);
        listing::older(
            &filters,
            &[
                ("before_time", time.as_str()),
                ("before_symbol", last.symbol.as_str()),
            ],
        )
    });
    let newest = filter.before.is_some().then(|| query(&filters));
    let page_data = TickListPage {
        chrome: admin.chrome(Section::Ticks),
        symbol,
        from,
        to,
        errors,
        symbols,
        rows: ticks.rows.iter().map(Row::from).collect(),
        older,
        newest,
        unstorable_count: usize::try_from(unstorable_count).unwrap_or(usize::MAX),
        unstorable: unstorable.into_iter().map(UnstorableRow::from).collect(),
    };
    page(ticks.status, &page_data)
}
