//! The admin CSV upload: streamed, validated, all or nothing, progress page.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::time::Duration;

use crate::admin_support::{admin, audit_rows, csrf, location, multipart, page};
use crate::helpers::{TestApp, eventually, spawn_app};

fn csv_rows(n: usize, symbol: &str) -> String {
    let mut s = String::from("time,symbol,price,volume\n");
    for i in 0..n {
        s.push_str(&format!(
            "2024-07-03T{:02}:{:02}:{:02}Z,{symbol},{}.5,1\n",
            i / 3600,
            (i / 60) % 60,
            i % 60,
            100 + i
        ));
    }
    s
}

/// A multipart field: name, file name, content.
type Part<'a> = (&'a str, Option<&'a str>, &'a [u8]);

async fn upload(app: &TestApp, client: &reqwest::Client, parts: &[Part<'_>]) -> reqwest::Response {
    let (content_type, body) = multipart(parts);
    client
        .post(app.url("/admin/import"))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST /admin/import")
}

/// Uploads `content` as the form would: the session's `token`, then the file `name`.
async fn upload_file(
    app: &TestApp,
    client: &reqwest::Client,
    token: &str,
    name: &str,
    content: &[u8],
) -> reqwest::Response {
    upload(
        app,
        client,
        &[
            ("csrf_token", None, token.as_bytes()),
            ("file", Some(name), content),
        ],
    )
    .await
}

/// Follows the progress page until the import is no longer running; returns the last page.
async fn finished(app: &TestApp, client: &reqwest::Client, progress_url: &str) -> String {
    eventually(Duration::from_secs(60), "the import to finish", || async {
        let html = page(app, client, progress_url, 200).await;
        (!html.contains(r#"http-equiv="refresh""#)).then_some(html)
    })
    .await
}

#[actix_web::test]
async fn an_uploaded_csv_is_imported_in_the_background_with_a_progress_page() {
    let app = spawn_app().await;
    let client = admin(&app).await;
    let token = csrf(&app, client).await;
    let r = upload_file(
        &app,
        client,
        &token,
        "ticks.csv",
        csv_rows(5_000, "IMP").as_bytes(),
    )
    .await;
    assert_eq!(r.status(), 303);
    let progress = location(&r);
    assert!(progress.starts_with("/admin/import/"), "{progress}");
    let html = finished(&app, client, &progress).await;
    assert!(html.contains("Imported 5000 rows"), "{html}");
    assert!(html.contains("ticks.csv"));
    assert_eq!(app.tick_count().await, 5_000);
    assert_eq!(audit_rows(&app), ["admin session|import||5000"]);
    // The candles follow, and the import is listed on the form page.
    let candles = app.get_json("/api/candles?symbol=IMP&interval=1h").await;
    assert_eq!(candles.as_array().map(Vec::len), Some(2), "{candles}");
    assert!(
        page(&app, client, "/admin/import", 200)
            .await
            .contains(&progress)
    );
}

#[actix_web::test]
async fn a_csv_with_bad_lines_writes_nothing_and_names_the_lines() {
    let app = spawn_app().await;
    let client = admin(&app).await;
    let token = csrf(&app, client).await;
    let mut csv = csv_rows(3_000, "BAD");
    csv.push_str("2024-07-04T00:00:00Z,BAD,abc,1\n"); // line 3002
    csv.push_str("2024-07-04T00:00:01Z,BAD,1\n"); // line 3003
    csv.push_str(
        &csv_rows(10, "BAD")
            .replace("time,symbol,price,volume\n", "")
            .replace("2024-07-03", "2024-07-05"),
    );
    csv.push_str("not a time,BAD,1,1\n"); // line 3014
    let r = upload_file(&app, client, &token, "bad.csv", csv.as_bytes()).await;
    assert_eq!(r.status(), 303);
    let html = finished(&app, client, &location(&r)).await;
    assert!(
        html.contains("3 of 3013 lines are invalid; nothing was written"),
        "{html}"
    );
    assert!(html.contains("line 3002: price must be a number"), "{html}");
    assert!(
        html.contains("line 3003: expected 4 fields like the header, found 3"),
        "{html}"
    );
    assert!(html.contains("line 3014: time must be RFC 3339"), "{html}");
    assert_eq!(app.tick_count().await, 0);
    assert!(audit_rows(&app).is_empty());
}

#[actix_web::test]
async fn a_csv_repeating_an_existing_tick_writes_nothing() {
    let app = spawn_app().await;
    let r = app.post_ticks_json(&serde_json::json!({"time": "2024-07-03T00:00:05Z", "symbol": "DUP", "price": 1.0, "volume": 1.0})).await;
    assert_eq!(r.status(), 201);
    let client = admin(&app).await;
    let token = csrf(&app, client).await;
    let r = upload_file(
        &app,
        client,
        &token,
        "dup.csv",
        csv_rows(100, "DUP").as_bytes(),
    )
    .await;
    let html = finished(&app, client, &location(&r)).await;
    assert!(html.contains("already exists"), "{html}");
    assert!(html.contains("DUP"), "the duplicate is named: {html}");
    assert_eq!(app.tick_count().await, 1);
}

#[actix_web::test]
async fn uploads_without_the_csrf_token_first_are_refused_and_stored_nowhere() {
    let app = spawn_app().await;
    let client = admin(&app).await;
    let token = csrf(&app, client).await;
    let csv = csv_rows(10, "X");
    let cases: [(&str, Vec<Part>); 3] = [
        ("no token", vec![("file", Some("a.csv"), csv.as_bytes())]),
        (
            "forged token",
            vec![
                (
                    "csrf_token",
                    None,
                    b"forged-forged-forged-forged-forged-forged-fo",
                ),
                ("file", Some("a.csv"), csv.as_bytes()),
            ],
        ),
        (
            "token after the file",
            vec![
                ("file", Some("a.csv"), csv.as_bytes()),
                ("csrf_token", None, token.as_bytes()),
            ],
        ),
    ];
    for (what, parts) in cases {
        let r = upload(&app, client, &parts).await;
        assert_eq!(r.status(), 403, "{what}");
    }
    // No file at all, or an empty one: the form again.
    let r = upload(&app, client, &[("csrf_token", None, token.as_bytes())]).await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("Choose a CSV file"));
    let r = upload_file(&app, client, &token, "empty.csv", b"").await;
    assert_eq!(r.status(), 422);
    assert_eq!(app.tick_count().await, 0);
}

#[actix_web::test]
async fn uploads_over_100_mb_are_refused() {
    let app = spawn_app().await;
    let client = admin(&app).await;
    let token = csrf(&app, client).await;
    let mut big = csv_rows(1, "BIG").into_bytes();
    big.resize(100 * 1024 * 1024 + 1, b'\n');
    let r = upload_file(&app, client, &token, "big.csv", &big).await;
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("larger than 100 MB"));
    assert_eq!(app.tick_count().await, 0);
}
