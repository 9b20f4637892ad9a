//! Years of history at every interval: the session settings of candlewick's connections,
//! statistics after bulk loads, and the hour and day rollups, which must always equal
//! aggregating the ticks.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use crate::helpers::spawn_app;

#[actix_web::test]
async fn candlewicks_connections_never_jit_compile() {
    // The test app's pool is built from a URL, as with DATABASE_URL.
    let app = spawn_app().await;
    let jit: String = sqlx::query_scalar("SHOW jit")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jit, "off", "JIT costs seconds per query on wide plans");
}
