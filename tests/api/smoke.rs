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
