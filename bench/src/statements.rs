//! What the servers ran, from pg_stat_statements. It is read from the cluster's maintenance
//! database, which sees every database: reading it is not counted with the scratch database.

use anyhow::Context;
use sqlx::Connection;

use crate::setup::Cluster;

/// How the poll (`db::journal::poll`) begins: it tells the polls among the statements.
pub const POLL_PREFIX: &str = "WITH lock_order AS";

/// Creates pg_stat_statements where it is read and zeroes it; false when the cluster does not
/// preload it.
pub async fn enable(cluster: &Cluster) -> bool {
    let Ok(mut admin) = cluster.admin().await else {
        return false;
    };
    let ok = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut admin)
        .await
        .is_ok()
        && sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&mut admin)
            .await
            .is_ok();
    admin.close().await.ok();
    ok
}

/// One normalized statement run in a database.
pub struct StatementStat {
    pub query: String,
    pub calls: i64,
    /// Mean server-side execution time (ms), planning and the round trip excluded.
    pub mean_exec_ms: f64,
}

/// Every statement run so far in database `db`.
pub async fn stats(cluster: &Cluster, db: &str) -> anyhow::Result<Vec<StatementStat>> {
    let mut conn = cluster.admin().await?;
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        r#"
        SELECT s.query, s.calls, s.mean_exec_time
        FROM pg_stat_statements s
        JOIN pg_database d ON d.oid = s.dbid
        WHERE d.datname = $1
        "#,
    )
    .bind(db)
    .fetch_all(&mut conn)
    .await
    .context("reading pg_stat_statements")?;
    conn.close().await.ok();
    Ok(rows
        .into_iter()
        .map(|(query, calls, mean_exec_ms)| StatementStat {
            query,
            calls,
            mean_exec_ms,
        })
        .collect())
}

/// Calls so far of each normalized statement run in database `db`.
pub async fn calls(cluster: &Cluster, db: &str) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(stats(cluster, db)
        .await?
        .into_iter()
        .map(|s| (s.query, s.calls))
        .collect())
}

/// Calls of each statement between two readings, most first. Left out: statements that did not
/// run, the bench's own reads of pg_stat_statements, and whatever `ours` says the bench ran.
pub fn calls_between(
    before: Vec<(String, i64)>,
    after: Vec<(String, i64)>,
    ours: impl Fn(&str) -> bool,
) -> Vec<(String, i64)> {
    let before: std::collections::HashMap<String, i64> = before.into_iter().collect();
    let mut ran: Vec<(String, i64)> = after
        .into_iter()
        .map(|(query, calls)| {
            let d = calls - before.get(&query).copied().unwrap_or(0);
            (query, d)
        })
        .filter(|(query, d)| *d > 0 && !query.contains("pg_stat_statements") && !ours(query))
        .collect();
    ran.sort_by_key(|(_, calls)| std::cmp::Reverse(*calls));
    ran
}

/// A statement on one line, cut to `width` characters (for reports).
pub fn one_line(query: &str, width: usize) -> String {
    query
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(width)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str, calls: i64) -> (String, i64) {
        (text.to_owned(), calls)
    }

    #[test]
    fn only_statements_that_ran_between_the_readings_count_busiest_first() {
        let before = vec![q("WITH lock_order AS (…)", 10), q("SELECT 1", 4)];
        let after = vec![
            q("SELECT 1", 4),
            q("WITH lock_order AS (…)", 13),
            q("INSERT INTO ticks", 5),
            q("SELECT pg_stat_statements_reset()", 1),
            q("SELECT now()", 1),
        ];
        let ran = calls_between(before, after, |s| s.starts_with("INSERT"));
        assert_eq!(
            ran,
            vec![q("WITH lock_order AS (…)", 3), q("SELECT now()", 1)]
        );
    }

    #[test]
    fn a_statement_is_shown_on_one_line_cut_to_width() {
        assert_eq!(one_line("SELECT a,\n       b\nFROM t", 12), "SELECT a, b ");
    }
}
