//! `/api/candles?before=…&limit=…`: paging back through all stored history, page by page, with
//! no duplicate and no missing bucket at the seams, compressed and cacheable.

use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};

const SYMBOL: &str = "HIS/USD";

/// Two days of one tick a minute, with a six-hour gap (a market closed) in the middle.
async fn app_with_history() -> TestApp {
    let app = spawn_app().await;
    store_history(&app).await;
    app
}

pub async fn store_history(app: &TestApp) {
    let start = chrono::DateTime::parse_from_rfc3339("2024-07-01T00:00:30Z")
        .expect("a time")
        .timestamp();
    let mut csv = String::from("time,symbol,price,volume\n");
    for m in 0..2 * 1440 {
        if (1000..1360).contains(&m) {
            continue;
        }
        let t = chrono::DateTime::from_timestamp(start + m * 60, 0).expect("a time");
        csv.push_str(&format!("{},{SYMBOL},{},1\n", t.to_rfc3339(), 100 + m % 17));
    }
    let r = app.post_ticks_raw("text/csv", csv).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

fn buckets(page: &Value) -> Vec<String> {
    page.as_array()
        .expect("an array")
        .iter()
        .map(|c| c["bucket"].as_str().expect("a bucket").to_owned())
        .collect()
}

#[actix_web::test]
async fn paging_back_with_before_gives_every_candle_once_at_every_interval() {
    let app = app_with_history().await;
    pages_hold_every_candle_once(&app).await;
}

pub async fn pages_hold_every_candle_once(app: &TestApp) {
    for (interval, page_size) in [("1m", 500), ("5m", 100), ("1h", 7), ("1d", 1)] {
        let all = app
            .get_json(&format!(
                "/api/candles?symbol=HIS%2FUSD&interval={interval}&limit=200000"
            ))
            .await;
        let mut paged: Vec<Value> = Vec::new();
        let mut before: Option<String> = None;
        for n in 0.. {
            assert!(n < 1000, "{interval}: paging does not end");
            let mut path =
                format!("/api/candles?symbol=HIS%2FUSD&interval={interval}&limit={page_size}");
            if let Some(b) = &before {
                path.push_str(&format!("&before={b}"));
            }
            let page = app.get_json(&path).await;
            let rows = page.as_array().expect("an array").clone();
            if rows.is_empty() {
                break;
            }
            assert!(rows.len() <= page_size, "{interval}: a page over its limit");
            let oldest = rows.last().expect("a row")["bucket"]
                .as_str()
                .expect("a bucket")
                .to_owned();
            // Alternate the two accepted forms of `before`.
            before = Some(if n % 2 == 0 {
                oldest.replace('+', "%2B")
            } else {
                chrono::DateTime::parse_from_rfc3339(&oldest)
                    .expect("RFC 3339")
                    .timestamp()
                    .to_string()
            });
            paged.extend(rows);
        }
        assert_eq!(
            buckets(&Value::Array(paged.clone())),
            buckets(&all),
            "{interval}: the pages together are every candle once, newest first"
        );
        assert_eq!(Value::Array(paged), all, "{interval}: the same candles");
    }
}

#[actix_web::test]
async fn history_pages_are_compressed_and_closed_ones_cacheable() {
    let app = app_with_history().await;
    for encoding in ["gzip", "br"] {
        let r = app
            .client
            .get(app.url("/api/candles?symbol=HIS%2FUSD&limit=1500&before=2024-07-02T00:00:00Z"))
            .header("Accept-Encoding", encoding)
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()
                .get("content-encoding")
                .and_then(|v| v.to_str().ok()),
            Some(encoding)
        );
        assert_eq!(
            r.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("public, max-age=60"),
            "a page of the past"
        );
    }
    let r = app.get("/api/candles?symbol=HIS%2FUSD&limit=10").await;
    assert_eq!(
        r.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-cache"),
        "the newest candles still change"
    );
    for bad in ["yesterday", "99999999999999", "1.5"] {
        let r = app
            .get(&format!("/api/candles?symbol=HIS%2FUSD&before={bad}"))
            .await;
        assert!(
            matches!(r.status().as_u16(), 400 | 422),
            "before={bad}: {}",
            r.status()
        );
    }
}
