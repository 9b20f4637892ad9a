//! The one time range on every route and form: what PostgreSQL stores and RFC 3339 writes back
//! (the years 0001 to 9999 in UTC). Outside it: 422; every time returned is accepted back; ticks
//! another program stored outside it break nothing and can be deleted.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin_support::{admin, audit_rows, csrf, location, page, post_form, unescape};
use crate::helpers::{TOKEN, TestApp, spawn_app};

/// Instants PostgreSQL could store but RFC 3339 cannot write back, or that PostgreSQL cannot
/// store at all, as each kind of input takes them.
const OUT_OF_RANGE_RFC3339: [&str; 3] = [
    // Year 10000 in UTC; once stored and returned as +10000-01-01T23:58:59Z.
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+00:01",
    "0000-06-01T00:00:00Z",
];
const OUT_OF_RANGE_FORM: [&str; 5] = [
    "-5000-01-01T00:00:00",
    "+200000-01-01T00:00:00",
    "+262000-06-01T00:00",
    "+10000-01-01T00:00",
    "9999-12-31T23:59:59-23:59",
];

fn q(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

async fn send(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, String) {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(TOKEN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[actix_web::test]
async fn times_postgresql_cannot_store_are_refused_with_422_on_every_api_route() {
    let app = spawn_app().await;
    for time in OUT_OF_RANGE_RFC3339 {
        let tick = json!({"time": time, "symbol": "A", "price": 1, "volume": 1});
        let ok = json!({"time": "2024-07-03T06:25:00Z", "symbol": "A", "price": 1, "volume": 1});
        let csv = format!("time,symbol,price,volume\n{time},A,1,1\n");
        let t = q(time);
        let cases = [
            (
                "POST one",
                Method::POST,
                "/api/ticks".to_owned(),
                Some(tick.clone()),
            ),
            (
                "POST array",
                Method::POST,
                "/api/ticks".to_owned(),
                Some(json!([ok, tick])),
            ),
            (
                "GET ticks from",
                Method::GET,
                format!("/api/ticks?from={t}"),
                None,
            ),
            (
                "GET ticks to",
                Method::GET,
                format!("/api/ticks?to={t}"),
                None,
            ),
            (
                "GET candles from",
                Method::GET,
                format!("/api/candles?from={t}"),
                None,
            ),
            (
                "GET candles to",
                Method::GET,
                format!("/api/candles?to={t}"),
                None,
            ),
            (
                "GET candles.csv from",
                Method::GET,
                format!("/api/candles.csv?from={t}"),
                None,
            ),
            (
                "PUT",
                Method::PUT,
                format!("/api/ticks?time={t}&symbol=A"),
                Some(json!({"price": 1, "volume": 1})),
            ),
            (
                "DELETE",
                Method::DELETE,
                format!("/api/ticks?time={t}&symbol=A"),
                None,
            ),
        ];
        for (what, method, path, body) in cases {
            let (status, text) = send(&app, method, &path, body).await;
            assert_eq!(status, 422, "{what} {time}: {text}");
            assert!(
                text.contains("0001-01-01T00:00:00Z"),
                "{what} {time}: {text}"
            );
        }
        let r = app.post_ticks_raw("text/csv", csv).await;
        assert_eq!(r.status(), 422, "CSV {time}");
        assert!(r.text().await.unwrap().contains("line 2"), "CSV {time}");
    }
    // Not a time at all is still a malformed request.
    assert_eq!(
        send(&app, Method::GET, "/api/ticks?from=soon", None)
            .await
            .0,
        400
    );
    assert_eq!(app.tick_count().await, 0, "nothing was written");
}

#[actix_web::test]
async fn times_postgresql_cannot_store_are_refused_with_422_on_every_admin_form() {
    let app = spawn_app().await;
    let client = admin(&app).await;
    let token = csrf(&app, client).await;
    for time in OUT_OF_RANGE_FORM {
        let form = [
            ("csrf_token", token.as_str()),
            ("time", time),
            ("symbol", "A"),
            ("price", "1"),
            ("volume", "1"),
        ];
        let r = post_form(&app, client, "/admin/ticks/new", &form).await;
        assert_eq!(r.status(), 422, "new tick at {time}");
        let html = unescape(&r.text().await.unwrap());
        assert!(html.contains("field-error"), "{time}: a field message");
        assert!(html.contains("0001-01-01T00:00:00Z"), "{time}: {html}");
        assert!(html.contains(time), "{time}: the input is shown again");

        let t = q(time);
        for path in [
            format!("/admin?from={t}"),
            format!("/admin?to={t}"),
            format!("/admin/audit?from={t}"),
            format!("/admin/ticks/edit?time={t}&symbol=A"),
            format!("/admin/ticks/delete?time={t}&symbol=A"),
        ] {
            let html = page(&app, client, &path, 422).await;
            assert!(unescape(&html).contains("0001-01-01T00:00:00Z"), "{path}");
        }
        for path in ["/admin/ticks/edit", "/admin/ticks/delete"] {
            let r = post_form(&app, client, path, &form).await;
            assert_eq!(r.status(), 422, "POST {path} at {time}");
        }
    }
    assert_eq!(app.tick_count().await, 0, "nothing was written");
    assert!(audit_rows(&app).is_empty(), "nothing was audited");
}

/// The times of ticks, as `GET /api/ticks` returns them.
async fn listed_times(app: &TestApp, symbol: &str) -> Vec<String> {
    let ticks = app
        .get_json(&format!("/api/ticks?symbol={}", q(symbol)))
        .await;
    ticks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["time"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn every_time_the_api_returns_is_accepted_back_by_its_own_parameters() {
    let app = spawn_app().await;
    let sent = [
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00.000001Z",
        "1999-12-31T23:59:59.999999Z",
        "2024-07-03T06:25:00.5Z",
        "2024-07-03T08:25:00.123456+02:00",
        "2024-07-03T06:25:00.1234567Z",
        "9999-12-31T23:59:59+23:59",
        "9999-12-31T23:59:59.999999Z",
    ];
    for (i, time) in sent.iter().enumerate() {
        let r = app
            .post_ticks_json(
                &json!({"time": time, "symbol": format!("RT{i}"), "price": 1, "volume": 1}),
            )
            .await;
        assert_eq!(r.status(), 201, "{time}: {}", r.text().await.unwrap());
    }
    let client = admin(&app).await;
    for i in 0..sent.len() {
        let symbol = format!("RT{i}");
        let times = listed_times(&app, &symbol).await;
        assert_eq!(times.len(), 1, "{symbol}");
        let t = q(&times[0]);
        // The tick is found again by the time the API gave.
        let from = app
            .get_json(&format!("/api/ticks?symbol={symbol}&from={t}"))
            .await;
        assert_eq!(from.as_array().unwrap().len(), 1, "from={}", times[0]);
        let to = app
            .get_json(&format!("/api/ticks?symbol={symbol}&to={t}"))
            .await;
        assert_eq!(
            to.as_array().unwrap().len(),
            0,
            "to={} is exclusive",
            times[0]
        );
        let (status, body) = send(
            &app,
            Method::PUT,
            &format!("/api/ticks?time={t}&symbol={symbol}"),
            Some(json!({"price": 2, "volume": 2})),
        )
        .await;
        assert_eq!(status, 200, "PUT time={}: {body}", times[0]);
        for bucket_interval in ["1m", "1d"] {
            let candles = app
                .get_json(&format!(
                    "/api/candles?symbol={symbol}&interval={bucket_interval}"
                ))
                .await;
            let bucket = candles[0]["bucket"].as_str().unwrap().to_owned();
            let again = app
                .get_json(&format!(
                    "/api/candles?symbol={symbol}&interval={bucket_interval}&from={}",
                    q(&bucket)
                ))
                .await;
            assert_eq!(again.as_array().unwrap().len(), 1, "from={bucket}");
            let csv = app
                .get(&format!(
                    "/api/candles.csv?symbol={symbol}&interval={bucket_interval}&to={}",
                    q(&bucket)
                ))
                .await;
            assert_eq!(csv.status(), 200, "to={bucket}");
        }
        // The admin pages link to it, and the links work.
        let list = unescape(&page(&app, client, &format!("/admin?symbol={symbol}"), 200).await);
        let key = format!("time={t}&symbol={symbol}");
        assert!(list.contains(&key), "{symbol}: the list links {key}");
        page(&app, client, &format!("/admin/ticks/edit?{key}"), 200).await;
        page(&app, client, &format!("/admin/ticks/delete?{key}"), 200).await;
        let (status, body) = send(
            &app,
            Method::DELETE,
            &format!("/api/ticks?time={t}&symbol={symbol}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "DELETE time={}: {body}", times[0]);
    }
    assert_eq!(
        app.tick_count().await,
        0,
        "every tick was found and deleted"
    );
}

#[actix_web::test]
async fn ticks_another_program_stored_out_of_range_break_nothing_and_can_be_deleted() {
    let app = spawn_app().await;
    app.psql(
        "INSERT INTO ticks (time, symbol, price, volume) VALUES \
         ('2024-07-03 06:25:00+00', 'FAR', 1, 1), \
         ('10000-01-01 23:58:59+00', 'FAR', 2, 1), \
         ('200000-01-01 00:00:00+00', 'FAR', 3, 1), \
         ('290000-01-01 00:00:00+00', 'FAR', 4, 1), \
         ('4714-11-24 00:00:00+00 BC', 'FAR', 5, NULL)",
    );
    assert_eq!(app.tick_count().await, 5);
    for path in [
        "/api/ticks",
        "/api/ticks?symbol=FAR",
        "/api/candles?symbol=FAR",
        "/api/candles?symbol=FAR&interval=1d",
        "/api/candles.csv?symbol=FAR",
        "/api/symbols",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 200, "GET {path}");
    }
    assert_eq!(
        listed_times(&app, "FAR").await,
        ["2024-07-03T06:25:00Z"],
        "the API lists what it can write back"
    );

    let client = admin(&app).await;
    let list = unescape(&page(&app, client, "/admin", 200).await);
    assert!(
        list.contains("4 ticks are stored at times outside"),
        "{list}"
    );
    for shown in [
        "10000-01-01 23:58:59+00",
        "200000-01-01 00:00:00+00",
        "290000-01-01 00:00:00+00",
        "4714-11-24 00:00:00+00 BC",
    ] {
        assert!(list.contains(shown), "{shown} is named");
    }
    page(&app, client, "/admin/audit", 200).await;

    let token = csrf(&app, client).await;
    let delete = |csrf: Option<&str>, stored_time: &str| {
        let mut form = vec![
            ("stored_time", stored_time.to_owned()),
            ("symbol", "FAR".into()),
        ];
        if let Some(csrf) = csrf {
            form.push(("csrf_token", csrf.to_owned()));
        }
        client
            .post(app.url("/admin/ticks/delete-unstorable"))
            .form(&form)
            .send()
    };
    let r = delete(Some(&token), "290000-01-01 00:00:00+00")
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/admin");
    assert_eq!(app.tick_count().await, 4);
    assert_eq!(audit_rows(&app), ["admin session|delete|FAR|1"]);
    let list = unescape(&page(&app, client, "/admin", 200).await);
    assert!(
        list.contains("Deleted the tick for FAR stored at 290000-01-01 00:00:00+00."),
        "{list}"
    );
    assert!(
        list.contains("3 ticks are stored at times outside"),
        "{list}"
    );

    // Without the CSRF token, or naming no such tick: refused, nothing deleted.
    let r = delete(None, "200000-01-01 00:00:00+00").await.unwrap();
    assert_eq!(r.status(), 403);
    let r = delete(Some(&token), "2024-07-03 06:25:00+00")
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "an in-range tick is not deleted this way");
    assert_eq!(app.tick_count().await, 4);
}
