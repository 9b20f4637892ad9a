//! Guessing the admin token costs time, and a guessable token is refused at start.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::process::Command;

use serde_json::json;

use crate::helpers::{TOKEN, spawn_app};

fn bad_tick() -> serde_json::Value {
    json!({ "time": "2024-07-03T06:25:00Z", "symbol": "GUESS", "price": 1.0, "volume": 1.0 })
}

#[actix_web::test]
async fn wrong_bearer_tokens_are_limited_per_client_address_like_sign_ins() {
    let app = spawn_app().await;
    let post = |token: &'static str| {
        app.client
            .post(app.url("/api/ticks"))
            .bearer_auth(token)
            .json(&bad_tick())
            .send()
    };
    for i in 0..5 {
        let r = post("not-the-admin-token").await.unwrap();
        assert_eq!(r.status(), 403, "guess {}", i + 1);
    }
    // The sixth is refused before the token is compared, the right one too.
    for token in ["not-the-admin-token", TOKEN] {
        let r = post(token).await.unwrap();
        assert_eq!(r.status(), 429, "after five wrong tokens, {token:?}");
        let retry: u64 = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("too many wrong admin tokens"),
            "{body}"
        );
    }
    assert_eq!(app.tick_count().await, 0, "nothing was written");
    // One limiter: the sign-in form from the same address is refused as well.
    let r = app
        .client
        .post(app.url("/admin/sign-in"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

#[test]
fn an_empty_or_short_admin_token_stops_the_start_saying_why() {
    let data = tempfile::tempdir().unwrap();
    for (token, says) in [("", "set but empty"), ("short-token", "at least 16")] {
        let out = Command::new(env!("CARGO_BIN_EXE_candlewick"))
            .args(["serve", "--bind", "127.0.0.1:0", "--no-demo", "--data-dir"])
            .arg(data.path())
            .env("CANDLEWICK_ADMIN_TOKEN", token)
            // Unreachable on purpose: the token is refused before the database is opened.
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .output()
            .expect("running candlewick serve");
        assert!(!out.status.success(), "{token:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{token:?}: {stderr}");
        assert!(token.is_empty() || !stderr.contains(token), "{stderr}");
    }
}
