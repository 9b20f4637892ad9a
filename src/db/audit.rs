//! `audit_log`: every write made through candlewick (API, admin pages, imports), recorded in the
//! writing transaction, and read back by the admin pages.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

use crate::domain::Tick;

/// Who made a write (the `actor` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Author {
    AdminSession,
    ApiToken,
    CliImport,
    DemoFeed,
}

impl Author {
    pub const ALL: [Author; 4] = [
        Self::AdminSession,
        Self::ApiToken,
        Self::CliImport,
        Self::DemoFeed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdminSession => "admin session",
            Self::ApiToken => "api token",
            Self::CliImport => "cli import",
            Self::DemoFeed => "demo feed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// What a write did (the `action` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Insert,
    Update,
    Delete,
    Import,
}

impl Action {
    pub const ALL: [Action; 4] = [Self::Insert, Self::Update, Self::Delete, Self::Import];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Import => "import",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One audit row to write.
#[derive(Debug)]
pub struct Record<'a> {
    pub author: Author,
    pub action: Action,
    pub symbol: Option<&'a str>,
    pub tick_time: Option<DateTime<Utc>>,
    pub rows: i64,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Writes `entry` on `conn` (the writing transaction).
pub async fn record(conn: &mut PgConnection, entry: Record<'_>) -> anyhow::Result<()> {
    sqlx::query(
        r#"
        INSERT INTO audit_log (actor, action, symbol, tick_time, rows, before, after)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        "#,
    )
    .bind(entry.author.as_str())
    .bind(entry.action.as_str())
    .bind(entry.symbol)
    .bind(entry.tick_time)
    .bind(entry.rows)
    .bind(entry.before)
    .bind(entry.after)
    .execute(conn)
    .await
    .context("recording the write in the audit log")?;
    Ok(())
}

/// The audit row of an insert: the rows themselves for small batches, a summary for bulk loads.
pub fn insert_record(ticks: &[Tick], author: Author) -> Record<'_> {
    const DETAILED: usize = 100;
    if let [t] = ticks {
        return Record {
            author,
            action: Action::Insert,
            symbol: Some(t.symbol.as_str()),
            tick_time: Some(t.time),
            rows: 1,
            before: None,
            after: Some(tick_json(t)),
        };
    }
    let after = if ticks.len() <= DETAILED {
        Value::Array(ticks.iter().map(tick_json).collect())
    } else {
        let first = ticks.iter().map(|t| t.time).min();
        let last = ticks.iter().map(|t| t.time).max();
        let mut symbols: Vec<&str> = ticks.iter().map(|t| t.symbol.as_str()).collect();
        symbols.sort_unstable();
        symbols.dedup();
        symbols.truncate(20);
        json!({ "rows": ticks.len(), "first": first, "last": last, "symbols": symbols })
    };
    let symbol = ticks
        .first()
        .map(|t| t.symbol.as_str())
        .filter(|s| ticks.iter().all(|t| t.symbol.as_str() == *s));
    Record {
        author,
        action: Action::Insert,
        symbol,
        tick_time: None,
        rows: ticks.len() as i64,
        before: None,
        after: Some(after),
    }
}

/// The audit row of a streamed import of `rows` ticks between `first` and `last`.
pub fn import_record(
    author: Author,
    rows: u64,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
) -> Record<'static> {
    Record {
        author,
        action: Action::Import,
        symbol: None,
        tick_time: None,
        rows: i64::try_from(rows).unwrap_or(i64::MAX),
        before: None,
        after: Some(json!({ "rows": rows, "first": first, "last": last })),
    }
}

fn tick_json(t: &Tick) -> Value {
    json!({ "time": t.time, "symbol": t.symbol, "price": t.price, "volume": t.volume })
}

/// Which entries to list: newest first, optional filters, resuming below `before` (an id).
#[derive(Debug, Default)]
pub struct AuditFilter {
    pub symbol: Option<String>,
    pub author: Option<Author>,
    pub action: Option<Action>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Keyset cursor: entries with a smaller id.
    pub before: Option<i64>,
    pub limit: i64,
}

#[derive(Debug, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub symbol: Option<String>,
    pub tick_time: Option<DateTime<Utc>>,
    pub rows: i64,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

#[tracing::instrument(name = "List audit entries", skip(pool))]
pub async fn list(pool: &PgPool, f: &AuditFilter) -> anyhow::Result<Vec<AuditEntry>> {
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
    .bind(f.author.map(Author::as_str))
    .bind(f.action.map(Action::as_str))
    .bind(f.from)
    .bind(f.to)
    .bind(f.before)
    .bind(f.limit)
    .fetch_all(pool)
    .await
    .context("listing audit entries")
}

/// The statement of [`corrections`] ($1 symbol, $2 from, $3 to, $4 limit, $5 actors, $6
/// actions). Only single-tick writes record `tick_time`. The partial index
/// `audit_log_corrections` (migration 0007) hands rows over in the order listed, so the scan
/// stops after `limit` matches instead of sorting every match of the symbol.
pub const CORRECTIONS_SQL: &str = r#"
        SELECT id, at, actor, action, tick_time AS time,
               date_bin('1 minute', tick_time, 'epoch') AS minute, before, after
        FROM audit_log
        WHERE symbol = $1
          AND tick_time IS NOT NULL
          AND at >= COALESCE($2::timestamptz, '-infinity')
          AND tick_time >= COALESCE($2::timestamptz, '-infinity')
          AND tick_time < COALESCE($3::timestamptz, 'infinity')
          AND actor = ANY($5)
          AND action = ANY($6)
          AND at >= date_bin('1 minute', tick_time, 'epoch') + INTERVAL '2 minutes'
        ORDER BY date_bin('1 minute', tick_time, 'epoch') DESC, id
        LIMIT $4
        "#;

/// One change to one tick that counts as a correction of its minute (see [`corrections`]).
#[derive(Debug, sqlx::FromRow)]
pub struct Correction {
    pub id: i64,
    /// When the change was written.
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    /// The changed tick's time, and the minute it falls in.
    pub time: DateTime<Utc>,
    pub minute: DateTime<Utc>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Changes of `symbol`'s ticks in `[from, to)` made after the fact: one tick inserted, updated
/// or deleted through the admin pages or the API when its minute had been closed for at least a
/// whole minute (so a live writer that sends a minute's last tick a little late does not count).
/// A one-tick array is one tick. Batches and imports load history rather than fix it, and the
/// demo feed is not audited, so none of them count. Newest minute first, each minute's changes in the order they were made;
/// at most `limit` changes.
#[tracing::instrument(name = "List corrections", skip(pool))]
pub async fn corrections(
    pool: &PgPool,
    symbol: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: i64,
) -> anyhow::Result<Vec<Correction>> {
    sqlx::query_as(CORRECTIONS_SQL)
        .bind(symbol)
        .bind(from)
        .bind(to)
        .bind(limit)
        .bind([Author::AdminSession.as_str(), Author::ApiToken.as_str()])
        .bind([Action::Insert, Action::Update, Action::Delete].map(Action::as_str))
        .fetch_all(pool)
        .await
        .context("listing corrections")
}
