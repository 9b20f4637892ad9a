//! Every read the API runs is bounded in the database: a slow one is cancelled there and
//! answered 503, instead of running on after its client gave up.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::time::Duration;

use sqlx::Connection;

use crate::helpers::{eventually, spawn_app_with};

#[actix_web::test]
async fn a_read_over_the_api_read_timeout_is_cancelled_and_answered_503() {
    let app = spawn_app_with(&["--api-read-timeout", "300ms"]).await;
    // Another session holds every candle and tick behind a lock: reads wait on it.
    let mut blocker =
        sqlx::PgConnection::connect_with(&candlewick::db::connect_options(&app.db_url).unwrap())
            .await
            .unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE ticks, audit_log, one_min_candle, one_hour_candle, one_day_candle IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();

    for path in [
        "/api/candles?symbol=SLOW&interval=1m",
        "/api/candles?symbol=SLOW&interval=1h",
        "/api/candles.csv?symbol=SLOW&interval=1m",
        "/api/ticks?symbol=SLOW",
        "/api/symbols",
        "/api/corrections?symbol=SLOW",
    ] {
        let r = app
            .client
            .get(app.url(path))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: no answer while the lock is held: {e}"));
        assert_eq!(r.status(), 503, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("took too long"),
            "{path}: {body}"
        );
    }
    // Nothing of the server's is left waiting in the database.
    eventually(Duration::from_secs(5), "no waiting reads", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND application_name = $1",
        )
        .bind(candlewick::db::READ_POOL_NAME)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (waiting == 0).then_some(())
    })
    .await;
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    assert_eq!(
        app.get("/api/candles?symbol=SLOW&interval=1m")
            .await
            .status(),
        200,
        "reads work again once the lock is gone"
    );
}
