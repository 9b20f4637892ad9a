//! `GET /api/corrections`: after-the-fact changes per minute, from the audit trail.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::admin_support::{admin, csrf, post_form};
use crate::helpers::{TOKEN, TestApp, spawn_app};

const SYMBOL: &str = "FIX/USD";

async fn post(app: &TestApp, body: Value) {
    let r = app.post_ticks_json(&body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

fn tick(time: &str, price: f64, volume: f64) -> Value {
    json!({ "time": time, "symbol": SYMBOL, "price": price, "volume": volume })
}

async fn put(app: &TestApp, time: &str, price: f64, volume: f64) {
    let r = app
        .client
        .put(app.url(&format!("/api/ticks?time={time}&symbol=FIX%2FUSD")))
        .bearer_auth(TOKEN)
        .json(&json!({ "price": price, "volume": volume }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

async fn corrections(app: &TestApp, query: &str) -> Vec<Value> {
    let v = app
        .get_json(&format!("/api/corrections?symbol=FIX%2FUSD{query}"))
        .await;
    v.as_array().cloned().expect("a JSON array")
}

/// Two ticks of 06:25 in one batch: history loaded, not corrected.
async fn load_history(app: &TestApp) {
    post(
        app,
        json!([
            tick("2024-07-03T06:25:10Z", 61_000.0, 0.5),
            tick("2024-07-03T06:25:50Z", 61_005.0, 0.5),
        ]),
    )
    .await;
}

fn minutes(list: &[Value]) -> Vec<&str> {
    list.iter().map(|m| m["minute"].as_str().unwrap()).collect()
}

#[actix_web::test]
async fn corrections_list_each_after_the_fact_change_per_minute_with_what_changed() {
    // Arrange: history loaded as one batch (a load, not a correction).
    let app = spawn_app().await;
    post(
        &app,
        json!([
            tick("2024-07-03T06:25:10Z", 61_000.0, 0.5),
            tick("2024-07-03T06:25:40Z", 61_010.0, 0.25),
            tick("2024-07-03T06:26:05Z", 61_020.0, 1.0),
        ]),
    )
    .await;
    assert_eq!(corrections(&app, "").await, Vec::<Value>::new());

    // Act: change one tick, delete another, add one to a closed minute, each on its own.
    put(&app, "2024-07-03T06:25:10Z", 60_500.0, 0.5).await;
    let r = app
        .client
        .delete(app.url("/api/ticks?time=2024-07-03T06:26:05Z&symbol=FIX%2FUSD"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    post(&app, tick("2024-07-03T06:27:30.5Z", 61_030.0, 2.0)).await;

    // Assert
    let list = corrections(&app, "").await;
    assert_eq!(
        minutes(&list),
        [
            "2024-07-03T06:27:00Z",
            "2024-07-03T06:26:00Z",
            "2024-07-03T06:25:00Z"
        ]
    );
    let only = |i: usize| {
        let changes = list[i]["changes"].as_array().unwrap();
        assert_eq!(changes.len(), 1, "{}", list[i]);
        changes[0].clone()
    };
    let added = only(0);
    assert_eq!(
        (&added["action"], &added["by"], &added["time"]),
        (
            &json!("insert"),
            &json!("api token"),
            &json!("2024-07-03T06:27:30.500Z")
        )
    );
    assert_eq!(added["before"], Value::Null);
    assert_eq!(added["after"], json!({ "price": 61_030.0, "volume": 2.0 }));
    let deleted = only(1);
    assert_eq!(deleted["action"], "delete");
    assert_eq!(
        deleted["before"],
        json!({ "price": 61_020.0, "volume": 1.0 })
    );
    assert_eq!(deleted["after"], Value::Null);
    let updated = only(2);
    assert_eq!(updated["action"], "update");
    assert_eq!(
        updated["before"],
        json!({ "price": 61_000.0, "volume": 0.5 })
    );
    assert_eq!(
        updated["after"],
        json!({ "price": 60_500.0, "volume": 0.5 })
    );
    let at: DateTime<Utc> = updated["at"].as_str().unwrap().parse().unwrap();
    assert!(
        (Utc::now() - at).num_seconds().abs() < 60,
        "`at` is when the change was written: {at}"
    );

    // Every time the API returns is accepted back by its own from/to.
    let window = corrections(&app, "&from=2024-07-03T06:26:00Z&to=2024-07-03T06:27:00Z").await;
    assert_eq!(minutes(&window), ["2024-07-03T06:26:00Z"]);
    let newest = corrections(&app, "&limit=1").await;
    assert_eq!(minutes(&newest), ["2024-07-03T06:27:00Z"]);
}

#[actix_web::test]
async fn a_minute_changed_twice_lists_both_changes_in_the_order_made() {
    let app = spawn_app().await;
    load_history(&app).await;
    put(&app, "2024-07-03T06:25:10Z", 60_900.0, 0.5).await;
    put(&app, "2024-07-03T06:25:10Z", 60_900.0, 0.75).await;

    let list = corrections(&app, "").await;
    assert_eq!(minutes(&list), ["2024-07-03T06:25:00Z"]);
    let afters: Vec<&Value> = list[0]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["after"])
        .collect();
    assert_eq!(
        afters,
        [
            &json!({ "price": 60_900.0, "volume": 0.5 }),
            &json!({ "price": 60_900.0, "volume": 0.75 })
        ]
    );
}

#[actix_web::test]
async fn live_writes_batches_and_other_symbols_are_not_corrections() {
    let app = spawn_app().await;
    // A tick of the current minute, written one at a time and then fixed: the minute is open.
    let now = Utc::now()
        .duration_trunc(TimeDelta::seconds(1))
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    post(&app, tick(&now, 61_000.0, 0.5)).await;
    put(&app, &now, 61_001.0, 0.5).await;
    // A batch for past minutes: a load.
    post(
        &app,
        json!([
            tick("2024-07-03T06:25:10Z", 61_000.0, 0.5),
            tick("2024-07-03T06:26:10Z", 61_000.0, 0.5),
        ]),
    )
    .await;
    // Another symbol's correction.
    let other =
        json!({ "time": "2024-07-03T06:25:10Z", "symbol": "OTHER", "price": 1.0, "volume": 1.0 });
    post(&app, other).await;

    assert_eq!(corrections(&app, "").await, Vec::<Value>::new());
    let theirs = app.get_json("/api/corrections?symbol=OTHER").await;
    assert_eq!(
        minutes(theirs.as_array().unwrap()),
        ["2024-07-03T06:25:00Z"]
    );
}

#[actix_web::test]
async fn an_edit_through_the_admin_pages_is_a_correction_by_the_admin_session() {
    let app = spawn_app().await;
    load_history(&app).await;
    let client = admin(&app).await;
    let token = csrf(&app, client).await;
    let r = post_form(
        &app,
        client,
        "/admin/ticks/edit",
        &[
            ("time", "2024-07-03T06:25:10Z"),
            ("symbol", SYMBOL),
            ("price", "60800"),
            ("volume", "0.5"),
            ("csrf_token", &token),
        ],
    )
    .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());

    let list = corrections(&app, "").await;
    assert_eq!(minutes(&list), ["2024-07-03T06:25:00Z"]);
    assert_eq!(list[0]["changes"][0]["by"], "admin session");
    assert_eq!(list[0]["changes"][0]["after"]["price"], 60_800.0);
}

#[actix_web::test]
async fn bad_corrections_parameters_are_refused_with_400_naming_them() {
    let app = spawn_app().await;
    for (query, named) in [
        ("symbol=A%09B", "symbol"),
        ("from=garbage", "from"),
        ("from=2024-07-03T06:25:00", "from"),
        ("to=yesterday", "to"),
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=ten", "limit"),
    ] {
        let r = app.get(&format!("/api/corrections?{query}")).await;
        assert_eq!(r.status(), 400, "{query}");
        let body: Value = r.json().await.unwrap();
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{query}: {body}");
    }
}

/// The plan of the corrections query for `limit`, as text.
async fn corrections_plan(app: &TestApp, limit: i64) -> String {
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN {}",
        candlewick::db::audit::CORRECTIONS_SQL
    )))
    .bind(SYMBOL)
    .bind(None::<DateTime<Utc>>)
    .bind(None::<DateTime<Utc>>)
    .bind(limit)
    .bind(["admin session", "api token"])
    .bind(["insert", "update", "delete"])
    .fetch_all(&app.pool)
    .await
    .unwrap();
    rows.join("\n")
}

#[actix_web::test]
async fn listing_corrections_reads_in_order_and_stops_at_the_limit() {
    let app = spawn_app().await;
    // A long audit trail: 60,000 corrections of one symbol over 1,000 minutes, and others'.
    app.psql(&format!(
        "INSERT INTO audit_log (at, actor, action, symbol, tick_time, before, after)
         SELECT t + INTERVAL '1 hour', 'api token', 'update', s, t, '{{}}', '{{}}'
         FROM generate_series(1, 60000) AS i,
              LATERAL (SELECT TIMESTAMPTZ '2024-07-01' + (i % 1000) * INTERVAL '1 minute' AS t) AS m,
              LATERAL (SELECT CASE WHEN i % 3 = 0 THEN 'OTHER' ELSE '{SYMBOL}' END AS s) AS w;
         ANALYZE audit_log;"
    ));
    for limit in [1, 100, 1_000] {
        let plan = corrections_plan(&app, limit).await;
        assert!(
            plan.contains("audit_log_corrections") && !plan.contains("Sort"),
            "limit {limit}: the rows come in order from the index, no sort of every match:\n{plan}"
        );
    }
    // And the answer is the same as before: newest minute first, then in the order written.
    let list = corrections(&app, "&limit=3").await;
    assert_eq!(minutes(&list)[0], "2024-07-01T16:39:00Z", "{list:?}");
}
