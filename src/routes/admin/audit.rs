//! `GET /admin/audit`: every write made through candlewick, newest first, with filters.

use actix_web::{HttpResponse, web};
use anyhow::Context;
use askama::Template;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;

use crate::db::ticks::Actor;
use crate::format::rfc3339;
use crate::routes::admin::listing::{self, text};
use crate::routes::admin::{Admin, AdminError, Chrome, Section, page, query};
use crate::startup::AppState;

pub const PAGE_SIZE: i64 = 50;
const ACTORS: [Actor; 4] = [
    Actor::AdminSession,
    Actor::ApiToken,
    Actor::CliImport,
    Actor::DemoFeed,
];
const ACTIONS: [&str; 4] = ["insert", "update", "delete", "import"];
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
) -> Result<HttpResponse, AdminError> {
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
        match ACTORS.iter().find(|a| a.as_str() == actor) {
            Some(a) => filter.actor = Some(a.as_str()),
            None => errors.actor = Some("choose one of the listed actors".into()),
        }
    }
    if !action.is_empty() {
        match ACTIONS.iter().find(|a| **a == action) {
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
        listing::fetch_page(errors.any(), PAGE_SIZE, list_entries(&state.pool, &filter)).await?;
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
        actors: ACTORS
            .iter()
            .map(|a| Choice {
                value: a.as_str(),
                selected: a.as_str() == actor,
            })
            .collect(),
        actions: ACTIONS
            .iter()
            .map(|a| Choice {
                value: a,
                selected: *a == action,
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

#[derive(Debug, Default)]
struct AuditFilter {
    symbol: Option<String>,
    actor: Option<&'static str>,
    action: Option<&'static str>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    /// Keyset cursor: entries with a smaller id.
    before: Option<i64>,
    limit: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct AuditEntry {
    id: i64,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    symbol: Option<String>,
    tick_time: Option<DateTime<Utc>>,
    rows: i64,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
}

#[tracing::instrument(name = "List audit entries", skip(pool))]
async fn list_entries(pool: &PgPool, f: &AuditFilter) -> anyhow::Result<Vec<AuditEntry>> {
    sqlx::query_as(
        r#"
        SELECT id, at, actor, action, symbol, tick_time, rows, before, after
        FROM audit_log
        WHERE ($1::text IS NULL OR symbol = $1)
          AND ($2::text IS NULL OR actor = $2)
          AND ($3::text IS NULL OR action = $3)
          AND ($4::timestamptz IS NULL OR at >= $4)
          AND ($5::timestamptz IS NULL OR at < $5)
          AND ($6::bigint IS NULL OR id < $6)
        ORDER BY id DESC
        LIMIT $7
        "#,
    )
    .bind(&f.symbol)
    .bind(f.actor)
    .bind(f.action)
    .bind(f.from)
    .bind(f.to)
    .bind(f.before)
    .bind(f.limit)
    .fetch_all(pool)
    .await
    .context("listing audit entries")
}
