//! How the write API reads bodies: media types compared case-insensitively, gzip decoded within
//! the size limit, other encodings refused.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::io::Write;

use crate::helpers::{TOKEN, TestApp, spawn_app};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

async fn post(
    app: &TestApp,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (u16, String) {
    let mut req = app
        .client
        .post(app.url("/api/ticks"))
        .bearer_auth(TOKEN)
        .header("Content-Type", content_type);
    if let Some(encoding) = encoding {
        req = req.header("Content-Encoding", encoding);
    }
    let r = req.body(body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn csv_tick(minute: u32) -> Vec<u8> {
    format!("time,symbol,price,volume\n2024-07-03T06:{minute:02}:00Z,CSV,1.5,1\n").into_bytes()
}

fn json_tick(minute: u32) -> Vec<u8> {
    format!(r#"{{"time":"2024-07-03T06:{minute:02}:00Z","symbol":"JSON","price":1.5,"volume":1}}"#)
        .into_bytes()
}

#[actix_web::test]
async fn csv_is_recognised_whatever_the_case_of_its_media_type() {
    let app = spawn_app().await;
    for (minute, content_type) in [
        "text/csv",
        "TEXT/CSV",
        "Text/Csv; charset=utf-8",
        "text/csv;header=present",
    ]
    .into_iter()
    .enumerate()
    {
        let (status, body) = post(&app, content_type, None, csv_tick(minute as u32)).await;
        assert_eq!(status, 201, "{content_type}: {body}");
    }
    assert_eq!(app.tick_count().await, 4);
}

#[actix_web::test]
async fn gzip_bodies_are_decoded_and_other_encodings_are_refused_with_415() {
    let app = spawn_app().await;
    let (status, body) = post(&app, "application/json", Some("gzip"), gzip(&json_tick(1))).await;
    assert_eq!(status, 201, "gzip JSON: {body}");
    let (status, body) = post(&app, "text/csv", Some("GZIP"), gzip(&csv_tick(2))).await;
    assert_eq!(status, 201, "gzip CSV: {body}");
    let put = app
        .client
        .put(app.url("/api/ticks?time=2024-07-03T06:01:00Z&symbol=JSON"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .header("Content-Encoding", "gzip")
        .body(gzip(br#"{"price":2.5,"volume":3}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200, "gzip PUT");
    assert_eq!(
        app.psql("SELECT price FROM ticks WHERE symbol = 'JSON'")
            .trim(),
        "2.5"
    );

    for encoding in ["br", "deflate", "compress", "zstd", "gzip, br"] {
        let (status, body) = post(&app, "application/json", Some(encoding), json_tick(3)).await;
        assert_eq!(status, 415, "{encoding}: {body}");
        assert!(body.contains("Content-Encoding"), "{encoding}: {body}");
    }
    let (status, body) = post(&app, "application/json", Some("gzip"), json_tick(4)).await;
    assert_eq!(status, 400, "a body that is not gzip: {body}");
    assert!(body.contains("gzip"), "{body}");
    assert_eq!(app.tick_count().await, 2, "only the decoded bodies wrote");
}

#[actix_web::test]
async fn a_gzip_bomb_is_refused_with_413_at_the_decoded_limit() {
    let app = spawn_app().await;
    // Valid JSON once inflated (whitespace around one tick), far over the limit: about 100 KB
    // on the wire.
    let limit = candlewick::ingest::MAX_BODY_BYTES;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(b"[").unwrap();
    let spaces = vec![b' '; 1 << 20];
    for _ in 0..(limit >> 20) + 8 {
        enc.write_all(&spaces).unwrap();
    }
    enc.write_all(&json_tick(5)).unwrap();
    enc.write_all(b"]").unwrap();
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "{} bytes on the wire", bomb.len());
    let (status, body) = post(&app, "application/json", Some("gzip"), bomb).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("decompressed"), "{body}");
    assert_eq!(app.tick_count().await, 0);
}
