use crate::helpers::spawn_app;

#[actix_web::test]
async fn health_answers_and_a_posted_tick_reads_back() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let r = app
        .post_ticks_json(&serde_json::json!({"time":"2024-07-03T06:25:00Z","symbol":"BTC/USD","price":61057.0,"volume":0.5}))
        .await;
    assert_eq!(r.status(), 201);
    let ticks = app.get_json("/api/ticks?symbol=BTC/USD").await;
    assert_eq!(ticks.as_array().map(Vec::len), Some(1), "{ticks}");
}

#[actix_web::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/api/ticks"))
        .header("Authorization", format!("bearer {}", crate::helpers::TOKEN))
        .json(&serde_json::json!({"time":"2024-07-03T06:25:00Z","symbol":"BTC/USD","price":1.5,"volume":0.5}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 201);
}

#[actix_web::test]
async fn ticks_at_the_ends_of_the_calendar_are_stored_and_candled() {
    let app = spawn_app().await;
    for time in ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"] {
        let r = app
            .post_ticks_json(
                &serde_json::json!({"time": time, "symbol": "EDGE", "price": 1e15, "volume": 1e15}),
            )
            .await;
        assert_eq!(
            r.status(),
            201,
            "{time}: {}",
            r.text().await.unwrap_or_default()
        );
    }
    let candles = app.get_json("/api/candles?symbol=EDGE&interval=1d").await;
    assert_eq!(candles.as_array().map(Vec::len), Some(2), "{candles}");
}

#[actix_web::test]
async fn unknown_paths_get_a_page_outside_the_api_and_json_inside() {
    let app = spawn_app().await;
    for path in ["/nope", "/admin/nope", "/static/nope.js"] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 404, "{path}");
        let content_type = r.headers()["content-type"]
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert!(
            content_type.starts_with("text/html"),
            "{path}: {content_type}"
        );
        let body = r.text().await.expect("a body");
        assert!(body.contains("<h1>Not Found</h1>"), "{path}: {body}");
    }
    for path in ["/api/nope", "/api"] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 404, "{path}");
        let body: serde_json::Value = r.json().await.expect("a JSON body");
        assert_eq!(body["error"], "no such page", "{path}");
    }
    // A method a route does not take falls through to the same 404 (every route guards its own).
    let r = app
        .client
        .patch(app.url("/api/ticks"))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 404);
}
