//! `GET /api/corrections`: where a symbol's data was corrected after the fact, per minute, from
//! the audit trail; the chart marks those bars.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::query;
use crate::db::audit::{self, Correction};
use crate::domain::time::rfc3339;
use crate::error::AppError;
use crate::state::AppState;

const DEFAULT_LIMIT: i64 = 1_000;
const MAX_LIMIT: i64 = 10_000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/corrections", web::get().to(list_corrections));
}

#[derive(Debug, Deserialize)]
struct CorrectionQuery {
    symbol: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
}

/// `[{"minute": RFC 3339, "changes": [{"at", "by", "action", "time", "before", "after"}]}]`,
/// newest minute first; `before`/`after` are `{"price", "volume"}` or null. `limit` counts
/// changes.
async fn list_corrections(
    q: web::Query<CorrectionQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let symbol =
        query::symbol(q.symbol.as_deref())?.unwrap_or_else(|| state.default_symbol.clone());
    let from = query::optional_time("from", q.from.as_deref())?;
    let to = query::optional_time("to", q.to.as_deref())?;
    let limit = query::limit(q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let rows = audit::corrections(&state.read_pool, symbol.as_str(), from, to, limit)
        .await
        .map_err(AppError::from_infra)?;
    Ok(HttpResponse::Ok().json(by_minute(&rows)))
}

/// Groups changes (ordered by minute) into one object per minute.
fn by_minute(rows: &[Correction]) -> Vec<Value> {
    let mut out: Vec<(DateTime<Utc>, Vec<Value>)> = Vec::new();
    for c in rows {
        let change = json!({
            "at": rfc3339(c.at),
            "by": c.actor,
            "action": c.action,
            "time": rfc3339(c.time),
            "before": amounts(c.before.as_ref()),
            "after": amounts(c.after.as_ref()),
        });
        match out.last_mut() {
            Some((m, changes)) if *m == c.minute => changes.push(change),
            _ => out.push((c.minute, vec![change])),
        }
    }
    out.into_iter()
        .map(|(minute, changes)| json!({ "minute": rfc3339(minute), "changes": changes }))
        .collect()
}

/// The price and volume of an audited tick (the rest repeats the minute and symbol).
fn amounts(tick: Option<&Value>) -> Value {
    match tick {
        Some(t) => json!({ "price": t.get("price"), "volume": t.get("volume") }),
        None => Value::Null,
    }
}
