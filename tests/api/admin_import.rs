//! The admin CSV upload: streamed, validated, all or nothing, progress page.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::admin_support::{
    admin, audit_rows, csrf, csrf_of, location, multipart, page, saved_session_cookie,
};
use crate::helpers::{TestApp, eventually, spawn_app, spawn_app_with};

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

/// An upload sent by hand over TCP, so a test can stop part-way through the body.
struct RawUpload {
    stream: TcpStream,
    body: Vec<u8>,
    sent: usize,
}

impl RawUpload {
    /// Sends the request head (announcing `content_length`, the whole body's or more) and the
    /// first `first` bytes of the multipart body of `parts`.
    async fn start(
        app: &TestApp,
        cookie: &str,
        parts: &[Part<'_>],
        content_length: Option<usize>,
        first: usize,
    ) -> Self {
        let (content_type, body) = multipart(parts);
        let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        let head = format!(
            "POST /admin/import HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            content_length.unwrap_or(body.len())
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body[..first]).await.unwrap();
        stream.flush().await.unwrap();
        Self {
            stream,
            body,
            sent: first,
        }
    }

    async fn send_rest(&mut self) {
        self.stream
            .write_all(&self.body[self.sent..])
            .await
            .unwrap();
        self.sent = self.body.len();
    }

    /// The response's status and head, without waiting for more of the request to be sent.
    async fn response(&mut self) -> (u16, String) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(30), async {
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = self.stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the server closed the connection without answering");
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        assert!(read.is_ok(), "no answer while the upload was unfinished");
        let head = String::from_utf8_lossy(&got).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line: {head}"));
        (status, head)
    }
}

/// Spooled uploads in `dir`.
fn spooled(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("candlewick-upload-"))
        .collect();
    names.sort();
    names
}

#[actix_web::test]
async fn uploads_are_spooled_under_the_data_dir_and_a_killed_servers_leftovers_go_at_start() {
    let data = tempfile::tempdir().unwrap();
    let uploads = data.path().join("uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    let ours = format!("candlewick-upload-{}-live.csv", std::process::id());
    for name in [
        // A process id above any pid_max: that server is gone.
        "candlewick-upload-999999999-a1b2.csv",
        "candlewick-upload-old.csv",
        ours.as_str(),
        "notes.txt",
    ] {
        std::fs::write(uploads.join(name), b"time,symbol,price,volume\n").unwrap();
    }
    let app = spawn_app_with(&["--data-dir", data.path().to_str().unwrap()]).await;
    assert_eq!(
        spooled(&uploads),
        std::slice::from_ref(&ours),
        "only a live server's upload stays"
    );
    assert!(
        uploads.join("notes.txt").exists(),
        "other files are not ours to remove"
    );

    // An upload in flight is spooled there, and removed once imported.
    let cookie = saved_session_cookie(&app).await;
    let token = {
        let r = crate::admin_support::plain_client()
            .get(app.url("/admin/import"))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap();
        csrf_of(&r.text().await.unwrap())
    };
    let csv = csv_rows(20_000, "SPOOL");
    let parts = [
        ("csrf_token", None, token.as_bytes()),
        ("file", Some("spool.csv"), csv.as_bytes()),
    ];
    let mut upload = RawUpload::start(&app, &cookie, &parts, None, csv.len() / 2).await;
    eventually(
        Duration::from_secs(20),
        "the upload's spool file",
        || async { (spooled(&uploads).len() == 2).then_some(()) },
    )
    .await;
    upload.send_rest().await;
    let (status, head) = upload.response().await;
    assert_eq!(status, 303, "{head}");
    eventually(Duration::from_secs(60), "the import", || async {
        (app.tick_count().await == 20_000).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "the spool file to go", || async {
        (spooled(&uploads) == std::slice::from_ref(&ours)).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn with_two_imports_running_a_third_is_refused_before_its_upload_is_read() {
    let app = spawn_app().await;
    let client = admin(&app).await;
    let token = csrf(&app, client).await;
    // Imports stay running while their COPY waits for this lock.
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE ticks IN SHARE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    for name in ["one.csv", "two.csv"] {
        let csv = csv_rows(10, name);
        let r = upload_file(&app, client, &token, name, csv.as_bytes()).await;
        assert_eq!(r.status(), 303, "{name}");
    }

    // The third announces 50 MB and sends a few bytes: the answer must not wait for the rest.
    let cookie = saved_session_cookie(&app).await;
    let csv = csv_rows(10, "three");
    let parts = [
        ("csrf_token", None, token.as_bytes()),
        ("file", Some("three.csv"), csv.as_bytes()),
    ];
    let mut upload = RawUpload::start(&app, &cookie, &parts, Some(50_000_000), 100).await;
    let (status, head) = upload.response().await;
    assert_eq!(status, 429, "{head}");

    lock.rollback().await.unwrap();
    eventually(Duration::from_secs(60), "the two imports", || async {
        (app.tick_count().await == 20).then_some(())
    })
    .await;
    // With the slots free again, an upload is taken. An import holds its slot until its
    // statistics and rollups are done too, a moment after its ticks are counted: until then
    // the answer is still 429, which reads nothing.
    eventually(
        Duration::from_secs(30),
        "an upload taken with the slots free",
        || async {
            let r = upload_file(
                &app,
                client,
                &token,
                "four.csv",
                csv_rows(10, "four").as_bytes(),
            )
            .await;
            match r.status().as_u16() {
                303 => Some(()),
                429 => None,
                other => panic!("the fourth upload: {other}"),
            }
        },
    )
    .await;
}
