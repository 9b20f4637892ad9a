//! The admin tick pages: list, create, edit, delete, CSRF, validation and escaping.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::time::Duration;

use crate::admin_support::{
    admin, audit_rows, browser, csrf, csrf_of, location, page, post_form, sign_in, unescape,
};
use crate::helpers::{TestApp, eventually, spawn_app};

const T: &str = "2024-07-03T06:25:00Z";

async fn api_tick(app: &TestApp, time: &str, symbol: &str, price: f64) {
    let r = app
        .post_ticks_json(
            &serde_json::json!({"time": time, "symbol": symbol, "price": price, "volume": 1.0}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

/// A signed-in admin's tick forms, each sent with the session's CSRF token.
struct Forms<'a> {
    app: &'a TestApp,
    client: &'a reqwest::Client,
    token: String,
}

impl<'a> Forms<'a> {
    async fn sign_in(app: &'a TestApp) -> Self {
        let client = admin(app).await;
        let token = csrf(app, client).await;
        Self { app, client, token }
    }

    /// POSTs the new-tick form with `[time, symbol, price, volume]`.
    async fn create(&self, fields: [&str; 4]) -> reqwest::Response {
        self.post_tick("/admin/ticks/new", fields).await
    }

    /// POSTs the edit form with `[time, symbol, price, volume]`.
    async fn edit(&self, fields: [&str; 4]) -> reqwest::Response {
        self.post_tick("/admin/ticks/edit", fields).await
    }

    /// POSTs the delete form for the tick (`time`, `symbol`).
    async fn delete(&self, time: &str, symbol: &str) -> reqwest::Response {
        let fields = [
            ("csrf_token", self.token.as_str()),
            ("time", time),
            ("symbol", symbol),
        ];
        post_form(self.app, self.client, "/admin/ticks/delete", &fields).await
    }

    async fn post_tick(
        &self,
        path: &str,
        [time, symbol, price, volume]: [&str; 4],
    ) -> reqwest::Response {
        let fields = [
            ("csrf_token", self.token.as_str()),
            ("time", time),
            ("symbol", symbol),
            ("price", price),
            ("volume", volume),
        ];
        post_form(self.app, self.client, path, &fields).await
    }
}

fn price_of(app: &TestApp, time: &str, symbol: &str) -> String {
    app.psql(&format!(
        "SELECT price FROM ticks WHERE time = '{time}' AND symbol = '{symbol}'"
    ))
    .trim()
    .to_owned()
}

#[actix_web::test]
async fn a_tick_created_through_the_form_is_listed_with_a_flash_and_audited() {
    let app = spawn_app().await;
    let forms = Forms::sign_in(&app).await;
    let client = forms.client;
    let r = forms.create([T, "BTC/USD", "61057.5", "0.25"]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/admin");
    assert_eq!(price_of(&app, T, "BTC/USD"), "61057.5");

    let list = page(&app, client, "/admin", 200).await;
    assert!(
        list.contains("Added a tick for BTC/USD at 2024-07-03T06:25:00Z."),
        "the flash message"
    );
    assert!(list.contains("61057.5"), "the row");
    // Its minute's candle, from one_min_candle: open / high / low / close · volume.
    assert!(
        list.contains("61057.5 / 61057.5 / 61057.5 / 61057.5 · 0.25"),
        "{list}"
    );
    let again = page(&app, client, "/admin", 200).await;
    assert!(!again.contains("Added a tick"), "a flash shows once");

    assert_eq!(audit_rows(&app), ["admin session|insert|BTC/USD|1"]);
}

#[actix_web::test]
async fn a_datetime_local_time_is_taken_as_utc() {
    let app = spawn_app().await;
    let forms = Forms::sign_in(&app).await;
    for (typed, stored) in [
        ("2024-07-03T06:25", "2024-07-03 06:25:00+00"),
        ("2024-07-03T06:26:30.5", "2024-07-03 06:26:30.5+00"),
    ] {
        let r = forms.create([typed, "A", "1", "1"]).await;
        assert_eq!(r.status(), 303, "{typed}");
        let got = app.psql(&format!("SELECT time FROM ticks WHERE time = '{stored}'"));
        assert_eq!(got.trim(), stored, "{typed}");
    }
}

#[actix_web::test]
async fn invalid_input_reshows_the_form_with_the_message_next_to_the_field_and_writes_nothing() {
    let app = spawn_app().await;
    let forms = Forms::sign_in(&app).await;
    type Case<'a> = (&'a str, [&'a str; 4], &'a str);
    let cases: [Case; 9] = [
        ("price abc", [T, "A", "abc", "1"], "price must be a number"),
        (
            "negative price",
            [T, "A", "-1", "1"],
            "price must be greater than 0",
        ),
        (
            "NaN price",
            [T, "A", "NaN", "1"],
            "price must be a finite number",
        ),
        (
            "negative volume",
            [T, "A", "1", "-2"],
            "volume must not be negative",
        ),
        ("empty volume", [T, "A", "1", ""], "volume is required"),
        (
            "empty symbol",
            [T, "", "1", "1"],
            "symbol must not be empty",
        ),
        (
            "symbol too long",
            [T, &"S".repeat(33), "1", "1"],
            "at most 32",
        ),
        ("garbage time", ["yesterday", "A", "1", "1"], "time must be"),
        ("no time", ["", "A", "1", "1"], "time is required"),
    ];
    for (what, fields, message) in cases {
        let r = forms.create(fields).await;
        assert_eq!(r.status(), 422, "{what}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains(message),
            "{what}: expected {message:?} in the re-shown form"
        );
        assert!(
            body.contains(r#"class="field-error""#),
            "{what}: a field message"
        );
        assert!(
            body.contains(r#"name="price""#),
            "{what}: the form is shown again"
        );
        assert!(body.contains("Nothing was written"), "{what}");
    }
    // Several bad fields get a message each.
    let r = forms.create(["x", "A", "x", "x"]).await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.text()
            .await
            .unwrap()
            .matches(r#"class="field-error""#)
            .count(),
        3
    );
    assert_eq!(app.tick_count().await, 0);
    assert!(audit_rows(&app).is_empty());
}

#[actix_web::test]
async fn a_duplicate_tick_is_named_and_nothing_is_written() {
    let app = spawn_app().await;
    api_tick(&app, T, "ETH/USD", 3000.0).await;
    let forms = Forms::sign_in(&app).await;
    let r = forms.create([T, "ETH/USD", "1", "1"]).await;
    assert_eq!(r.status(), 409);
    let body = r.text().await.unwrap();
    assert!(
        body.contains(
            "A tick for ETH/USD at 2024-07-03T06:25:00Z already exists; nothing was written"
        ),
        "{body}"
    );
    assert_eq!(price_of(&app, T, "ETH/USD"), "3000");
    assert_eq!(app.tick_count().await, 1);
}

#[actix_web::test]
async fn forms_without_or_with_a_forged_csrf_token_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    api_tick(&app, T, "A", 5.0).await;
    let client = admin(&app).await;
    let own = csrf(&app, client).await;
    // A token from another valid session is as forged as a made-up one.
    let other = browser();
    sign_in(&app, &other).await;
    let foreign = csrf(&app, &other).await;
    assert_ne!(own, foreign);
    let forged = "x".repeat(own.len());
    for (what, token) in [
        ("missing", None),
        ("empty", Some("")),
        ("made up", Some(forged.as_str())),
        ("another session's", Some(foreign.as_str())),
    ] {
        let with = |fields: &[(&'static str, &'static str)]| {
            let mut v: Vec<(&str, &str)> = fields.to_vec();
            if let Some(t) = token {
                v.push(("csrf_token", t));
            }
            v
        };
        let attempts = [
            (
                "/admin/ticks/new",
                with(&[
                    ("time", "2024-07-03T06:26:00Z"),
                    ("symbol", "A"),
                    ("price", "1"),
                    ("volume", "1"),
                ]),
            ),
            (
                "/admin/ticks/edit",
                with(&[
                    ("time", T),
                    ("symbol", "A"),
                    ("price", "6"),
                    ("volume", "1"),
                ]),
            ),
            ("/admin/ticks/delete", with(&[("time", T), ("symbol", "A")])),
        ];
        for (path, form) in attempts {
            let r = post_form(&app, client, path, &form).await;
            assert_eq!(r.status(), 403, "{what} token on {path}");
            let body = r.text().await.unwrap();
            assert!(
                body.contains("security token"),
                "{what} token on {path}: {body}"
            );
        }
    }
    assert_eq!(app.tick_count().await, 1);
    assert_eq!(price_of(&app, T, "A"), "5");
    assert_eq!(
        audit_rows(&app),
        ["api token|insert|A|1"],
        "only the API's insert"
    );
}

#[actix_web::test]
async fn editing_a_tick_changes_it_its_candle_and_the_audit_trail() {
    let app = spawn_app().await;
    api_tick(&app, T, "BTC/USD", 100.0).await;
    let forms = Forms::sign_in(&app).await;
    let client = forms.client;
    let form = page(
        &app,
        client,
        "/admin/ticks/edit?time=2024-07-03T06:25:00Z&symbol=BTC/USD",
        200,
    )
    .await;
    assert!(
        form.contains(r#"name="price" value="100""#),
        "the current price is in the form"
    );
    assert_eq!(
        csrf_of(&form),
        forms.token,
        "the form carries the session's token"
    );

    // Invalid: re-shown, nothing changed.
    let r = forms.edit([T, "BTC/USD", "abc", "1"]).await;
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("price must be a number") && body.contains(r#"value="abc""#),
        "{body}"
    );
    assert_eq!(price_of(&app, T, "BTC/USD"), "100");

    let r = forms.edit([T, "BTC/USD", "150.5", "2"]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/admin");
    assert_eq!(price_of(&app, T, "BTC/USD"), "150.5");
    assert!(
        page(&app, client, "/admin", 200)
            .await
            .contains("Updated the tick for BTC/USD")
    );
    eventually(
        Duration::from_secs(5),
        "the candle follows the edit",
        || async {
            let c = app
                .get_json("/api/candles?symbol=BTC/USD&interval=1m")
                .await;
            (c[0]["high"] == 150.5).then_some(())
        },
    )
    .await;
    let audit = app.psql("SELECT actor, action, before->>'price', after->>'price' FROM audit_log WHERE action = 'update'");
    assert_eq!(audit.trim(), "admin session|update|100.0|150.5");

    // A tick that is not there.
    let r = forms
        .edit(["2020-01-01T00:00:00Z", "BTC/USD", "1", "1"])
        .await;
    assert_eq!(r.status(), 404);
    page(
        &app,
        client,
        "/admin/ticks/edit?time=2020-01-01T00:00:00Z&symbol=BTC/USD",
        404,
    )
    .await;
    page(
        &app,
        client,
        "/admin/ticks/edit?time=garbage&symbol=BTC/USD",
        400,
    )
    .await;
    page(&app, client, "/admin/ticks/edit", 400).await;
}

#[actix_web::test]
async fn deleting_asks_for_confirmation_first() {
    let app = spawn_app().await;
    api_tick(&app, T, "A", 7.0).await;
    let forms = Forms::sign_in(&app).await;
    let client = forms.client;
    let confirm = page(
        &app,
        client,
        "/admin/ticks/delete?time=2024-07-03T06:25:00Z&symbol=A",
        200,
    )
    .await;
    assert!(confirm.contains("Delete this tick?"), "{confirm}");
    assert_eq!(
        app.tick_count().await,
        1,
        "the confirmation page deletes nothing"
    );
    assert_eq!(
        csrf_of(&confirm),
        forms.token,
        "the form carries the session's token"
    );
    let r = forms.delete(T, "A").await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.tick_count().await, 0);
    assert!(
        page(&app, client, "/admin", 200)
            .await
            .contains("Deleted the tick for A at 2024-07-03T06:25:00Z.")
    );
    assert_eq!(
        audit_rows(&app),
        ["api token|insert|A|1", "admin session|delete|A|1"]
    );
    let r = forms.delete(T, "A").await;
    assert_eq!(r.status(), 404, "deleting twice");
    page(
        &app,
        client,
        "/admin/ticks/delete?time=2024-07-03T06:25:00Z&symbol=A",
        404,
    )
    .await;
}

#[actix_web::test]
async fn the_list_filters_by_symbol_and_time_and_pages_by_keyset_newest_first() {
    let app = spawn_app().await;
    let rows: Vec<serde_json::Value> = (0..120)
        .map(|i| serde_json::json!({"time": format!("2024-07-03T06:{:02}:{:02}Z", i / 60, i % 60), "symbol": "AAA", "price": 1.0 + i as f64, "volume": 1.0}))
        .chain((0..5).map(|i| serde_json::json!({"time": format!("2024-07-03T06:00:{:02}Z", i), "symbol": "BBB", "price": 9.0, "volume": 1.0})))
        .collect();
    assert_eq!(
        app.post_ticks_json(&serde_json::Value::Array(rows))
            .await
            .status(),
        201
    );
    let client = admin(&app).await;

    let first = page(&app, client, "/admin?symbol=AAA", 200).await;
    assert!(!first.contains("BBB</td>"), "filtered by symbol");
    let times = |html: &str| -> Vec<String> {
        html.match_indices(r#"<td class="time">"#)
            .map(|(i, m)| html[i + m.len()..i + m.len() + 20].to_owned())
            .collect()
    };
    let older = |html: &str| -> Option<String> {
        let i = html.find(">Older</a>")?;
        let start = html[..i].rfind("href=\"")? + 6;
        Some(unescape(&html[start..i - 1]))
    };
    let mut seen = times(&first);
    assert_eq!(seen.len(), 50);
    assert_eq!(seen[0], "2024-07-03T06:01:59Z", "newest first");
    let mut next = older(&first);
    let mut pages = 1;
    while let Some(link) = next {
        let html = page(&app, client, &link, 200).await;
        seen.extend(times(&html));
        next = older(&html);
        pages += 1;
        assert!(
            html.contains(">Newest</a>"),
            "later pages link back to the newest: {html}"
        );
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 120, "every tick once");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(sorted, seen, "strictly newest first, no repeats");

    let range = page(
        &app,
        client,
        "/admin?symbol=AAA&from=2024-07-03T06:00:10&to=2024-07-03T06:00:20Z",
        200,
    )
    .await;
    assert_eq!(
        times(&range).len(),
        10,
        "from inclusive (datetime-local, UTC), to exclusive"
    );
    let all = page(
        &app,
        client,
        "/admin?from=2024-07-03T06:00:00Z&to=2024-07-03T06:00:01Z",
        200,
    )
    .await;
    assert_eq!(times(&all).len(), 2, "AAA and BBB at 06:00:00");

    for bad in [
        "/admin?from=soon",
        "/admin?symbol=%E2%82%AC",
        "/admin?from=2024-07-03T07:00Z&to=2024-07-03T06:00Z",
        "/admin?before_time=x&before_symbol=y",
    ] {
        let html = page(&app, client, bad, 422).await;
        assert!(
            html.contains("field-error") || html.contains("problem"),
            "{bad}: a message"
        );
    }
}

#[actix_web::test]
async fn script_symbols_render_inert_on_every_admin_page() {
    let app = spawn_app().await;
    let payloads = [
        "<script>alert(1)</script>",
        "'><img src=x onerror=alert(1)>",
        "a&b<i>",
    ];
    for p in payloads {
        api_tick(&app, T, p, 1.0).await;
    }
    let forms = Forms::sign_in(&app).await;
    let client = forms.client;
    // Through the form too: the flash message repeats the symbol.
    let r = forms
        .create(["2024-07-03T06:26:00Z", payloads[0], "2", "1"])
        .await;
    assert_eq!(r.status(), 303);
    let key = |p: &str| {
        format!(
            "time=2024-07-03T06%3A25%3A00Z&symbol={}",
            url::form_urlencoded::byte_serialize(p.as_bytes()).collect::<String>()
        )
    };
    let mut pages = vec![
        page(&app, client, "/admin", 200).await,
        page(&app, client, "/admin/audit", 200).await,
        page(
            &app,
            client,
            &format!(
                "/admin?symbol={}",
                url::form_urlencoded::byte_serialize(payloads[0].as_bytes()).collect::<String>()
            ),
            200,
        )
        .await,
    ];
    for p in payloads {
        pages.push(page(&app, client, &format!("/admin/ticks/edit?{}", key(p)), 200).await);
        pages.push(
            page(
                &app,
                client,
                &format!("/admin/ticks/delete?{}", key(p)),
                200,
            )
            .await,
        );
    }
    // Re-shown forms echo what was typed.
    let r = forms
        .create([
            "<script>alert(1)</script>",
            "<script>alert(2)</script>\n",
            "<b>",
            "1",
        ])
        .await;
    assert_eq!(r.status(), 422);
    pages.push(r.text().await.unwrap());
    assert!(
        unescape(&pages[0]).contains("Added a tick for <script>alert(1)</script>"),
        "the flash"
    );
    for (i, html) in pages.iter().enumerate() {
        for raw in ["<script>alert", "<img src=x", "<i>", "<b>"] {
            assert!(!html.contains(raw), "page {i} contains the raw {raw:?}");
        }
        let shown = unescape(html);
        assert!(
            payloads.iter().any(|p| shown.contains(p)) || shown.contains("<script>alert(2)"),
            "page {i} shows the symbol, escaped"
        );
    }
}

#[actix_web::test]
async fn admin_edits_and_deletes_reach_chart_viewers() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let app = spawn_app().await;
    let t = chrono::Utc::now().timestamp() / 60 * 60 - 120;
    let time = chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    api_tick(&app, &time, "LIVE", 10.0).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(app.ws_url("symbol=LIVE&interval=1m"))
        .await
        .expect("WebSocket");
    // Frames until `pred` holds (pings skipped); panics after a generous timeout.
    async fn frame_where(
        ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let frame = tokio::time::timeout_at(deadline, ws.next())
                .await
                .unwrap_or_else(|_| panic!("no frame with {what}"));
            if let Some(Ok(Message::Text(text))) = frame {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                if pred(&v) {
                    return;
                }
            }
        }
    }
    frame_where(&mut ws, "the snapshot", |v| v["type"] == "snapshot").await;

    let forms = Forms::sign_in(&app).await;
    let r = forms.edit([&time, "LIVE", "12.5", "3"]).await;
    assert_eq!(r.status(), 303);
    frame_where(&mut ws, "the edited candle", |v| {
        v["type"] == "update"
            && v["candles"][0] == serde_json::json!([t, 12.5, 12.5, 12.5, 12.5, 3.0])
    })
    .await;

    let r = forms.delete(&time, "LIVE").await;
    assert_eq!(r.status(), 303);
    frame_where(&mut ws, "the removed bucket", |v| {
        v["type"] == "update" && v["removed"] == serde_json::json!([t])
    })
    .await;
}

#[actix_web::test]
async fn forms_and_addresses_that_cannot_be_read_get_an_html_error_page() {
    let app = spawn_app().await;
    let forms = Forms::sign_in(&app).await;
    let client = forms.client;
    let not_a_form = client
        .post(app.url("/admin/ticks/new"))
        .header("Content-Type", "application/json")
        .body(format!(r#"{{"csrf_token":"{}"}}"#, forms.token))
        .send()
        .await
        .unwrap();
    let too_large = client
        .post(app.url("/admin/ticks/new"))
        .form(&[
            ("csrf_token", forms.token.as_str()),
            ("symbol", &"A".repeat(100_000)),
        ])
        .send()
        .await
        .unwrap();
    let twice = client
        .get(app.url("/admin?symbol=A&symbol=B"))
        .send()
        .await
        .unwrap();
    for (what, r, status) in [
        ("a JSON body", not_a_form, 400),
        ("a form over 64 KiB", too_large, 413),
        ("a query naming a field twice", twice, 400),
    ] {
        assert_eq!(r.status(), status, "{what}");
        let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            content_type.starts_with("text/html"),
            "{what}: {content_type}"
        );
        let body = r.text().await.unwrap();
        assert!(body.contains("<!doctype html>"), "{what}: {body}");
    }
    assert_eq!(app.tick_count().await, 0);
}
