//! `admin_sessions`: the admin sign-ins still in force. The session cookie names its row; a
//! cookie whose row is gone (signed out, signed out everywhere, or too old) no longer signs in.

use anyhow::Context;
use sqlx::PgPool;

/// Records a new sign-in, and forgets sign-ins older than `max_age_secs` (they have ended).
pub async fn create(pool: &PgPool, id: &str, max_age_secs: i64) -> anyhow::Result<()> {
    let mut tx = pool
        .begin()
        .await
        .context("starting a transaction to record a sign-in")?;
    sqlx::query(
        "DELETE FROM admin_sessions WHERE signed_in_at < now() - make_interval(secs => $1)",
    )
    .bind(max_age_secs as f64)
    .execute(&mut *tx)
    .await
    .context("forgetting ended admin sessions")?;
    sqlx::query("INSERT INTO admin_sessions (id) VALUES ($1)")
        .bind(id)
        .execute(&mut *tx)
        .await
        .context("recording an admin sign-in")?;
    tx.commit().await.context("committing an admin sign-in")?;
    Ok(())
}

/// Whether the sign-in `id` is still in force (not signed out, younger than `max_age_secs`).
pub async fn is_active(pool: &PgPool, id: &str, max_age_secs: i64) -> anyhow::Result<bool> {
    sqlx::query_scalar(
        r#"
        SELECT EXISTS (
            SELECT FROM admin_sessions
            WHERE id = $1
              AND signed_in_at >= now() - make_interval(secs => $2)
        )
        "#,
    )
    .bind(id)
    .bind(max_age_secs as f64)
    .fetch_one(pool)
    .await
    .context("checking the admin session")
}

/// Ends the sign-in `id` (sign out).
pub async fn revoke(pool: &PgPool, id: &str) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM admin_sessions WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .context("ending the admin session")?;
    Ok(())
}

/// Ends every sign-in (sign out everywhere); returns how many there were.
pub async fn revoke_all(pool: &PgPool) -> anyhow::Result<u64> {
    let done = sqlx::query("DELETE FROM admin_sessions")
        .execute(pool)
        .await
        .context("ending every admin session")?;
    Ok(done.rows_affected())
}
