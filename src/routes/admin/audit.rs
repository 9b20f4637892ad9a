//! `GET /admin/audit`: every write made through candlewick, newest first, with filters.

use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::db::audit::{self, Action, AuditEntry, AuditFilter, Author};
use crate::domain::time::rfc3339;
use crate::error::PageError;
use crate::routes::admin::listing::{self, text};
use crate::routes::admin::{Admin, Chrome, Section, page, query};
use crate::state::AppState;

pub const PAGE_SIZE: i64 = 50;
/// Longer before/after values are cut on the page.
const MAX_SHOWN_JSON: usize = 600;

/// One text per filter: the query's values as typed, or the messages for the ones refused.
#[derive(Debug, Default, Deserialize)]
pub struct AuditFields {
    symbol: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
    before: Option<String>,
}

impl AuditFields {
    fn any(&self) -> bool {
        self.symbol.is_some()
            || self.actor.is_some()
            || self.action.is_some()
            || self.from.is_some()
            || self.to.is_some()
            || self.before.is_some()
    }
}

struct Choice {
    value: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    chrome: Chrome,
    symbol: String,
    from: String,
    to: String,
    actors: Vec<Choice>,
    actions: Vec<Choice>,
    errors: AuditFields,
    rows: Vec<AuditRow>,
    older: Option<String>,
    newest: Option<String>,
}

struct AuditRow {
    at: String,
    actor: String,
    action: String,
    symbol: String,
    tick_time: String,
    rows: i64,
    before: String,
    after: String,
}

impl From<AuditEntry> for AuditRow {
    fn from(e: AuditEntry) -> Self {
        let json = |v: Option<serde_json::Value>| match v {
            None => String::new(),
            Some(v) => {
                let s = v.to_string();
                if s.chars().count() > MAX_SHOWN_JSON {
                    format!("{}…", s.chars().take(MAX_SHOWN_JSON).collect::<String>())
                } else {
                    s
                }
            }
        };
        Self {
            at: rfc3339(e.at),
            actor: e.actor,
            action: e.action,
            symbol: e.symbol.unwrap_or_default(),
            tick_time: e.tick_time.map(rfc3339).unwrap_or_default(),
            rows: e.rows,
            before: json(e.before),
            after: json(e.after),
        }
    }
}

pub async fn list_audit(
    admin: Admin,
    q: web::Query<AuditFields>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let q = q.into_inner();
    let (symbol, actor, action, from, to, before) = (
        text(q.symbol),
        text(q.actor),
        text(q.action),
        text(q.from),
        text(q.to),
        text(q.before),
    );
    let mut errors = AuditFields::default();
    let mut filter = AuditFilter {
        symbol: listing::symbol(&symbol, &mut errors.symbol),
        from: listing::time(&from, &mut errors.from),
        to: listing::time(&to, &mut errors.to),
        limit: PAGE_SIZE + 1,
        ..AuditFilter::default()
    };
    if !actor.is_empty() {
        match Author::parse(&actor) {
            Some(a) => filter.author = Some(a),
            None => errors.actor = Some("choose one of the listed actors".into()),
        }
    }
    if !action.is_empty() {
        match Action::parse(&action) {
            Some(a) => filter.action = Some(a),
            None => errors.action = Some("choose one of the listed actions".into()),
        }
    }
    if !before.is_empty() {
        filter.before = before
            .parse::<i64>()
            .map_err(|_| errors.before = Some("The page link is broken.".into()))
            .ok();
    }
    let entries =
        listing::fetch_page(errors.any(), PAGE_SIZE, audit::list(&state.pool, &filter)).await?;
    let filters = [
        ("symbol", symbol.as_str()),
        ("actor", actor.as_str()),
        ("action", action.as_str()),
        ("from", from.as_str()),
        ("to", to.as_str()),
    ];
    let older = entries.rows.last().filter(|_| entries.more).map(|last| {
        let id = last.id.to_string();
        listing::older(&filters, &[("before", id.as_str())])
    });
    let newest = filter.before.is_some().then(|| query(&filters));
    let audit = AuditPage {
        chrome: admin.chrome(Section::Audit),
        actors: Author::ALL
            .iter()
            .map(|a| Choice {
                value: a.as_str(),
                selected: a.as_str() == actor,
            })
            .collect(),
        actions: Action::ALL
            .iter()
            .map(|a| Choice {
                value: a.as_str(),
                selected: a.as_str() == action,
            })
            .collect(),
        symbol,
        from,
        to,
        errors,
        rows: entries.rows.into_iter().map(AuditRow::from).collect(),
        older,
        newest,
    };
    page(entries.status, &audit)
}
