//! Every way the JSON API refuses a request: the right 4xx, a JSON `{"error": "..."}` that says
//! what was wrong, and nothing written. Plus a broken database (a generic 500) and the exact
//! candles, CSV and symbols for a small known set of ticks.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::candles::{RawTick, raw_ticks};
use crate::helpers::{TOKEN, TestApp, eventually, spawn_app};

const ERR: &str = "ERR/USD";
/// The tick every test here starts with.
const EXISTING_TIME: &str = "2024-07-03T05:50:00Z";

fn tick(time: &str) -> Value {
    json!({ "time": time, "symbol": ERR, "price": 100.0, "volume": 1.0 })
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().expect("an object").remove(key);
    v
}

enum Body {
    None,
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

enum Auth {
    Token,
    Missing,
    Header(&'static str),
}

struct Case {
    label: String,
    method: Method,
    path: String,
    body: Body,
    auth: Auth,
    status: u16,
    /// Substrings the error message must contain (case-insensitive).
    mentions: Vec<String>,
}

fn case(label: impl Into<String>, method: Method, path: &str, body: Body, status: u16) -> Case {
    Case {
        label: label.into(),
        method,
        path: path.to_owned(),
        body,
        auth: Auth::Token,
        status,
        mentions: vec![],
    }
}

impl Case {
    fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }
    fn mentions(mut self, words: &[&str]) -> Self {
        self.mentions = words.iter().map(|w| w.to_string()).collect();
        self
    }
}

fn post(label: impl Into<String>, body: Value, status: u16) -> Case {
    case(label, Method::POST, "/api/ticks", Body::Json(body), status)
}

fn post_raw(
    label: impl Into<String>,
    content_type: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
) -> Case {
    case(
        label,
        Method::POST,
        "/api/ticks",
        Body::Raw(content_type, body.into()),
        status,
    )
}

fn tick_path(time: &str, symbol: &str) -> String {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("time", time)
        .append_pair("symbol", symbol)
        .finish();
    format!("/api/ticks?{q}")
}

/// Everything a refused request must leave alone.
async fn snapshot(app: &TestApp) -> (Vec<RawTick>, i64) {
    let mut ticks = raw_ticks(&app.pool).await;
    ticks.sort_by(|a, b| (a.time, &a.symbol).cmp(&(b.time, &b.symbol)));
    let audit: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&app.pool)
        .await
        .expect("audit count");
    (ticks, audit)
}

/// The body is JSON with a non-empty string "error"; returns it.
async fn error_message(r: reqwest::Response, label: &str) -> String {
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = r.text().await.expect("a body");
    assert!(
        ct.starts_with("application/json"),
        "{label}: error Content-Type is {ct:?}: {text}"
    );
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{label}: the error body is not JSON ({e}): {text}"));
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{label}: no string \"error\" in {text}"));
    assert!(!msg.trim().is_empty(), "{label}: empty error message");
    msg.to_owned()
}

async fn send(app: &TestApp, c: &Case) -> reqwest::Response {
    let mut req = app.client.request(c.method.clone(), app.url(&c.path));
    req = match c.auth {
        Auth::Token => req.bearer_auth(TOKEN),
        Auth::Missing => req,
        Auth::Header(v) => req.header("Authorization", v),
    };
    req = match &c.body {
        Body::None => req,
        Body::Json(v) => req.json(v),
        Body::Raw(ct, s) => req.header("Content-Type", *ct).body(s.clone()),
    };
    req.send()
        .await
        .unwrap_or_else(|e| panic!("{}: sending: {e}", c.label))
}

async fn run_cases(app: &TestApp, cases: Vec<Case>) -> usize {
    let before = snapshot(app).await;
    for c in &cases {
        let r = send(app, c).await;
        let status = r.status().as_u16();
        if status != c.status {
            let text = r.text().await.unwrap_or_default();
            panic!(
                "{}: {} {} answered {status}, expected {}: {text}",
                c.label, c.method, c.path, c.status
            );
        }
        let msg = error_message(r, &c.label).await;
        let lower = msg.to_lowercase();
        for m in &c.mentions {
            assert!(
                lower.contains(&m.to_lowercase()),
                "{}: the message does not mention {m:?}: {msg}",
                c.label
            );
        }
        assert!(
            snapshot(app).await == before,
            "{}: something was written",
            c.label
        );
    }
    cases.len()
}

async fn app_with_one_tick() -> TestApp {
    let app = spawn_app().await;
    let r = app
        .post_ticks_json(
            &json!({ "time": EXISTING_TIME, "symbol": ERR, "price": 61000.5, "volume": 0.5 }),
        )
        .await;
    assert_eq!(r.status(), 201, "the setup insert");
    app
}

#[actix_web::test]
async fn writes_without_a_valid_token_are_refused() {
    let app = app_with_one_tick().await;
    let existing = tick_path(EXISTING_TIME, ERR);
    let a = tick("2024-07-03T05:51:00Z");
    let put = || Body::Json(json!({ "price": 5.0, "volume": 1.0 }));
    let cases = vec![
        post("POST without a token", a.clone(), 401)
            .auth(Auth::Missing)
            .mentions(&["bearer"]),
        post("POST with a wrong token", a.clone(), 403).auth(Auth::Header("Bearer not-the-token")),
        post("POST with an empty bearer token", a.clone(), 401).auth(Auth::Header("Bearer ")),
        post("POST with the token but no Bearer", a.clone(), 401).auth(Auth::Header(TOKEN)),
        post("POST with Basic auth", a.clone(), 401).auth(Auth::Header("Basic Zm9vOmJhcg==")),
        post("POST with the token and a suffix", a.clone(), 403)
            .auth(Auth::Header("Bearer test-admin-token2")),
        post("POST with a token prefix", a.clone(), 403).auth(Auth::Header("Bearer test-admin")),
        case("PUT without a token", Method::PUT, &existing, put(), 401).auth(Auth::Missing),
        case("PUT with a wrong token", Method::PUT, &existing, put(), 403)
            .auth(Auth::Header("Bearer nope")),
        case(
            "DELETE without a token",
            Method::DELETE,
            &existing,
            Body::None,
            401,
        )
        .auth(Auth::Missing),
        case(
            "DELETE with a wrong token",
            Method::DELETE,
            &existing,
            Body::None,
            403,
        )
        .auth(Auth::Header("Bearer nope")),
        // Auth comes before validation: an invalid body without a token is still a 401.
        post_raw("bad JSON without a token", "application/json", "{", 401).auth(Auth::Missing),
    ];
    run_cases(&app, cases).await;
}

#[actix_web::test]
async fn invalid_ticks_are_refused_with_422_naming_the_problem() {
    let app = app_with_one_tick().await;
    let t = "2024-07-03T05:52:00Z";
    let ok = tick("2024-07-03T05:52:30Z");
    let bad_rows: Vec<(&'static str, Value, &'static [&'static str])> = vec![
        (
            "price \"abc\"",
            with(tick(t), "price", json!("abc")),
            &["price"],
        ),
        (
            "price \"NaN\"",
            with(tick(t), "price", json!("NaN")),
            &["price", "finite"],
        ),
        (
            "price \"Infinity\"",
            with(tick(t), "price", json!("Infinity")),
            &["price", "finite"],
        ),
        (
            "price \"-Infinity\"",
            with(tick(t), "price", json!("-Infinity")),
            &["price", "finite"],
        ),
        (
            "price \"1e999\"",
            with(tick(t), "price", json!("1e999")),
            &["price", "finite"],
        ),
        ("price -5", with(tick(t), "price", json!(-5)), &["price"]),
        ("price 0", with(tick(t), "price", json!(0)), &["price"]),
        (
            "price true",
            with(tick(t), "price", json!(true)),
            &["price"],
        ),
        (
            "price null",
            with(tick(t), "price", Value::Null),
            &["price"],
        ),
        ("price missing", without(tick(t), "price"), &["price"]),
        ("volume -1", with(tick(t), "volume", json!(-1)), &["volume"]),
        (
            "volume \"abc\"",
            with(tick(t), "volume", json!("abc")),
            &["volume"],
        ),
        ("volume missing", without(tick(t), "volume"), &["volume"]),
        ("symbol missing", without(tick(t), "symbol"), &["symbol"]),
        (
            "symbol empty",
            with(tick(t), "symbol", json!("")),
            &["symbol"],
        ),
        (
            "symbol of 33 characters",
            with(tick(t), "symbol", json!("A".repeat(33))),
            &["symbol", "32"],
        ),
        (
            "symbol with a newline",
            with(tick(t), "symbol", json!("BTC\nUSD")),
            &["symbol"],
        ),
        (
            "symbol with leading space",
            with(tick(t), "symbol", json!(" BTC")),
            &["symbol"],
        ),
        (
            "symbol a number",
            with(tick(t), "symbol", json!(5)),
            &["symbol"],
        ),
        ("time missing", without(tick(t), "time"), &["time"]),
        (
            "time \"yesterday\"",
            with(tick(t), "time", json!("yesterday")),
            &["time"],
        ),
        (
            "time without an offset",
            with(tick(t), "time", json!("2024-07-03T05:52:00")),
            &["time"],
        ),
        (
            "time 2024-13-45T99:00:00Z",
            with(tick(t), "time", json!("2024-13-45T99:00:00Z")),
            &["time"],
        ),
        (
            "time a number",
            with(tick(t), "time", json!(1720000000)),
            &["time"],
        ),
        (
            "an unknown field",
            with(tick(t), "exchange", json!("x")),
            &["exchange"],
        ),
    ];
    let mut cases = Vec::new();
    for (label, row, words) in &bad_rows {
        cases.push(post(*label, row.clone(), 422).mentions(words));
        // In an array, the message names the row.
        let mut words: Vec<&str> = words.to_vec();
        words.push("row 2");
        cases.push(
            post(
                format!("{label}, second in an array"),
                json!([ok.clone(), row.clone()]),
                422,
            )
            .mentions(&words),
        );
    }
    cases.extend([
        post(
            "3 valid rows and a 4th invalid",
            json!([
                tick("2024-07-03T05:53:00Z"),
                tick("2024-07-03T05:53:01Z"),
                tick("2024-07-03T05:53:02Z"),
                with(tick("2024-07-03T05:53:03Z"), "price", json!("abc"))
            ]),
            422,
        )
        .mentions(&["row 4", "nothing was written"]),
        post(
            "two bad rows among good ones",
            json!([
                ok.clone(),
                with(tick(t), "price", json!(-1)),
                ok.clone(),
                without(tick(t), "time")
            ]),
            422,
        )
        .mentions(&["row 2", "row 4"]),
        post("a number in an array", json!([ok.clone(), 5]), 422).mentions(&["row 2"]),
        post("an empty array", json!([]), 422),
        post("a JSON string", json!("tick"), 422),
        post("JSON null", Value::Null, 422),
    ]);
    run_cases(&app, cases).await;
}

#[actix_web::test]
async fn bodies_that_are_not_json_are_refused_with_400() {
    let app = app_with_one_tick().await;
    let t = "2024-07-03T05:54:00Z";
    let raw = |label: &str, body: String| post_raw(label, "application/json", body, 400);
    let cases = vec![
        raw(
            "price NaN literal",
            format!(r#"{{"time":"{t}","symbol":"{ERR}","price":NaN,"volume":1}}"#),
        ),
        raw(
            "price Infinity literal",
            format!(r#"{{"time":"{t}","symbol":"{ERR}","price":Infinity,"volume":1}}"#),
        ),
        raw(
            "price -Infinity literal",
            format!(r#"{{"time":"{t}","symbol":"{ERR}","price":-Infinity,"volume":1}}"#),
        ),
        raw(
            "price 1e999",
            format!(r#"{{"time":"{t}","symbol":"{ERR}","price":1e999,"volume":1}}"#),
        ),
        raw("truncated JSON", format!(r#"{{"time":"{t}","symbol":"#)),
        raw(
            "truncated array",
            format!(r#"[{{"time":"{t}","symbol":"{ERR}","price":1,"volume":1}}"#),
        ),
        raw("not JSON", "hello".into()),
        raw("an empty body", String::new()),
        raw(
            "trailing garbage",
            format!(r#"{{"time":"{t}","symbol":"{ERR}","price":1,"volume":1}} x"#),
        ),
        post_raw(
            "invalid UTF-8",
            "application/json",
            b"{\"time\":\"\xff\"}".to_vec(),
            400,
        ),
        post_raw(
            "a lone surrogate escape",
            "application/json",
            r#"{"time":"\ud800","symbol":"A","price":1,"volume":1}"#,
            400,
        ),
        post_raw(
            "an octet-stream body is read as JSON, and this one is bad",
            "application/octet-stream",
            "{",
            400,
        ),
    ];
    run_cases(&app, cases).await;
}

#[actix_web::test]
async fn bad_csv_is_refused_naming_the_line() {
    let app = app_with_one_tick().await;
    let csv = |label: &str, body: &str, status| post_raw(label, "text/csv", body, status);
    let cases = vec![
        csv(
            "a bad price on line 4",
            &format!("time,symbol,price,volume\n2024-07-03T05:55:00Z,{ERR},100.5,1\n2024-07-03T05:55:01Z,{ERR},101.5,1\n2024-07-03T05:55:02Z,{ERR},abc,1\n"),
            422,
        )
        .mentions(&["line 4", "price"]),
        csv(
            "a bad time on line 2, a bad volume on line 3",
            &format!("time,symbol,price,volume\nnot-a-time,{ERR},1,1\n2024-07-03T05:55:01Z,{ERR},1,-2\n"),
            422,
        )
        .mentions(&["line 2", "line 3"]),
        csv("a short row", &format!("time,symbol,price,volume\n2024-07-03T05:55:00Z,{ERR},1\n"), 422).mentions(&["line 2"]),
        csv("a wrong header", &format!("when,what\n2024-07-03T05:55:00Z,{ERR}\n"), 422).mentions(&["header"]),
        csv("a header missing volume", &format!("time,symbol,price\n2024-07-03T05:55:00Z,{ERR},1\n"), 422).mentions(&["header"]),
        csv("no header", &format!("2024-07-03T05:55:00Z,{ERR},1,1\n"), 422).mentions(&["header"]),
        csv("an empty body", "", 422),
        csv("a header and no rows", "time,symbol,price,volume\n", 422),
        csv("NaN in CSV", &format!("time,symbol,price,volume\n2024-07-03T05:55:00Z,{ERR},NaN,1\n"), 422).mentions(&["line 2"]),
        csv("inf in CSV", &format!("time,symbol,price,volume\n2024-07-03T05:55:00Z,{ERR},inf,1\n"), 422).mentions(&["line 2"]),
    ];
    run_cases(&app, cases).await;
}

#[actix_web::test]
async fn duplicates_are_refused_with_409_naming_the_tick() {
    let app = app_with_one_tick().await;
    let existing = json!({ "time": EXISTING_TIME, "symbol": ERR, "price": 1.0, "volume": 1.0 });
    let also = |t: &str| tick(t);
    let cases = vec![
        post("the existing (time, symbol)", existing.clone(), 409).mentions(&[ERR, "05:50:00"]),
        post("the existing tick with another offset", with(existing.clone(), "time", json!("2024-07-03T07:50:00+02:00")), 409)
            .mentions(&[ERR, "05:50:00"]),
        post("a new row and the existing one", json!([also("2024-07-03T05:56:00Z"), existing.clone()]), 409)
            .mentions(&[ERR, "05:50:00"]),
        post("the same tick twice in one batch", json!([also("2024-07-03T05:57:00Z"), also("2024-07-03T05:57:00Z")]), 409)
            .mentions(&["rows 1 and 2", ERR, "05:57:00"]),
        post_raw(
            "the existing tick in CSV",
            "text/csv",
            format!("time,symbol,price,volume\n2024-07-03T05:58:00Z,{ERR},1,1\n{EXISTING_TIME},{ERR},1,1\n"),
            409,
        )
        .mentions(&[ERR, "05:50:00"]),
        post_raw(
            "the same tick twice in CSV",
            "text/csv",
            format!("time,symbol,price,volume\n2024-07-03T05:59:00Z,{ERR},1,1\n2024-07-03T05:59:00.000Z,{ERR},2,1\n"),
            409,
        )
        .mentions(&[ERR, "05:59:00"]),
    ];
    run_cases(&app, cases).await;
}

#[actix_web::test]
async fn edits_of_missing_ticks_or_with_bad_input_are_refused() {
    let app = app_with_one_tick().await;
    let existing = tick_path(EXISTING_TIME, ERR);
    let missing = tick_path("2024-07-03T05:49:59Z", ERR);
    let body = || Body::Json(json!({ "price": 5.0, "volume": 1.0 }));
    let put =
        |label: &str, path: &str, body: Body, status| case(label, Method::PUT, path, body, status);
    let raw = |s: &str| Body::Raw("application/json", s.as_bytes().to_vec());
    let cases = vec![
        put("PUT a missing tick", &missing, body(), 404).mentions(&[ERR, "05:49:59"]),
        case(
            "DELETE a missing tick",
            Method::DELETE,
            &missing,
            Body::None,
            404,
        )
        .mentions(&[ERR]),
        put(
            "PUT a missing symbol",
            &tick_path(EXISTING_TIME, "NOPE/USD"),
            body(),
            404,
        )
        .mentions(&["NOPE/USD"]),
        put(
            "PUT one microsecond off",
            &tick_path("2024-07-03T05:50:00.000001Z", ERR),
            body(),
            404,
        ),
        put(
            "PUT price \"abc\"",
            &existing,
            Body::Json(json!({ "price": "abc", "volume": 1.0 })),
            422,
        )
        .mentions(&["price"]),
        put(
            "PUT price -1",
            &existing,
            Body::Json(json!({ "price": -1, "volume": 1.0 })),
            422,
        )
        .mentions(&["price"]),
        put(
            "PUT price missing",
            &existing,
            Body::Json(json!({ "volume": 1.0 })),
            422,
        )
        .mentions(&["price"]),
        put(
            "PUT volume missing",
            &existing,
            Body::Json(json!({ "price": 1.0 })),
            422,
        )
        .mentions(&["volume"]),
        put(
            "PUT an unknown field",
            &existing,
            Body::Json(json!({ "price": 1.0, "volume": 1.0, "symbol": "X" })),
            422,
        )
        .mentions(&["symbol"]),
        put("PUT an array", &existing, Body::Json(json!([1, 2])), 422),
        put(
            "PUT a NaN literal",
            &existing,
            raw(r#"{"price":NaN,"volume":1}"#),
            400,
        ),
        put(
            "PUT 1e999",
            &existing,
            raw(r#"{"price":1e999,"volume":1}"#),
            400,
        ),
        put("PUT truncated JSON", &existing, raw(r#"{"price":1,"#), 400),
        put("PUT an empty body", &existing, raw(""), 400),
        put("PUT a bad time", &tick_path("not-a-time", ERR), body(), 400).mentions(&["time"]),
        put(
            "PUT a bad symbol",
            &tick_path(EXISTING_TIME, &"B".repeat(40)),
            body(),
            400,
        )
        .mentions(&["symbol"]),
        put(
            "PUT without time",
            &format!("/api/ticks?symbol={}", ERR.replace('/', "%2F")),
            body(),
            400,
        )
        .mentions(&["time"]),
        put(
            "PUT without symbol",
            &format!("/api/ticks?time={EXISTING_TIME}"),
            body(),
            400,
        )
        .mentions(&["symbol"]),
        case(
            "DELETE a bad time",
            Method::DELETE,
            &tick_path("2024-07-03", ERR),
            Body::None,
            400,
        )
        .mentions(&["time"]),
        case(
            "DELETE without a query",
            Method::DELETE,
            "/api/ticks",
            Body::None,
            400,
        ),
    ];
    run_cases(&app, cases).await;
}

#[actix_web::test]
async fn bad_query_parameters_are_refused_with_400() {
    let app = app_with_one_tick().await;
    let get = |label: &str, path: &str| {
        case(label, Method::GET, path, Body::None, 400).auth(Auth::Missing)
    };
    let cases = vec![
        get("ticks limit=abc", "/api/ticks?limit=abc").mentions(&["limit"]),
        get("ticks limit=-1", "/api/ticks?limit=-1").mentions(&["limit"]),
        get("ticks limit=0", "/api/ticks?limit=0").mentions(&["limit"]),
        get("ticks limit=10001", "/api/ticks?limit=10001").mentions(&["limit"]),
        get("ticks limit=1.5", "/api/ticks?limit=1.5").mentions(&["limit"]),
        get("ticks from=garbage", "/api/ticks?from=garbage").mentions(&["from"]),
        get("ticks to=garbage", "/api/ticks?to=garbage").mentions(&["to"]),
        get(
            "ticks from without an offset",
            "/api/ticks?from=2024-07-03T05:00:00",
        )
        .mentions(&["from"]),
        get(
            "ticks symbol too long",
            &format!("/api/ticks?symbol={}", "S".repeat(33)),
        )
        .mentions(&["symbol"]),
        get("candles interval=7m", "/api/candles?interval=7m").mentions(&["interval"]),
        get("candles interval=banana", "/api/candles?interval=banana").mentions(&["interval"]),
        get("candles interval=1M", "/api/candles?interval=1M").mentions(&["interval"]),
        get("candles from=garbage", "/api/candles?from=garbage").mentions(&["from"]),
        get("candles to=x", "/api/candles?to=x").mentions(&["to"]),
        get("candles limit=0", "/api/candles?limit=0").mentions(&["limit"]),
        get("candles symbol with a tab", "/api/candles?symbol=A%09B").mentions(&["symbol"]),
        get("candles.csv to=x", "/api/candles.csv?to=x").mentions(&["to"]),
        get("candles.csv interval=2h", "/api/candles.csv?interval=2h").mentions(&["interval"]),
        get("candles.csv limit=many", "/api/candles.csv?limit=many").mentions(&["limit"]),
    ];
    run_cases(&app, cases).await;
}

#[actix_web::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let app = app_with_one_tick().await;
    let before = snapshot(&app).await;
    let limit = candlewick::ingest::MAX_BODY_BYTES;
    // Valid-looking CSV rows, so only the size is wrong.
    let row = format!("2024-07-03T06:00:00Z,{ERR},1,1\n");
    let mut body = String::with_capacity(limit + row.len() + 64);
    body.push_str("time,symbol,price,volume\n");
    while body.len() <= limit {
        body.push_str(&row);
    }
    let r = app.post_ticks_raw("text/csv", body).await;
    assert_eq!(r.status(), 413, "a CSV body of more than {limit} bytes");
    error_message(r, "CSV over the limit").await;
    assert!(
        snapshot(&app).await == before,
        "the oversized CSV wrote something"
    );

    let mut json_body = String::from("[");
    let item =
        format!(r#"{{"time":"2024-07-03T06:00:00Z","symbol":"{ERR}","price":1,"volume":1}},"#);
    while json_body.len() <= limit {
        json_body.push_str(&item);
    }
    let r = app.post_ticks_raw("application/json", json_body).await;
    assert_eq!(r.status(), 413, "a JSON body of more than {limit} bytes");
    error_message(r, "JSON over the limit").await;

    let put = app
        .client
        .put(app.url(&tick_path(EXISTING_TIME, ERR)))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .body(format!(
            r#"{{"price":1,"volume":1,"pad":"{}"}}"#,
            "x".repeat(1 << 20)
        ))
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status(), 413, "a 1 MiB PUT body");
    error_message(put, "PUT over the limit").await;
    assert!(
        snapshot(&app).await == before,
        "an oversized body wrote something"
    );
}

#[actix_web::test]
async fn a_broken_database_gives_a_generic_500_that_leaks_nothing() {
    let app = app_with_one_tick().await;
    app.psql("ALTER TABLE ticks RENAME TO ticks_gone");
    let requests = [
        (
            Method::POST,
            "/api/ticks".to_owned(),
            Some(tick("2024-07-03T06:01:00Z")),
        ),
        (Method::GET, "/api/ticks".to_owned(), None),
        (Method::GET, "/api/symbols".to_owned(), None),
        (
            Method::PUT,
            tick_path(EXISTING_TIME, ERR),
            Some(json!({ "price": 1.0, "volume": 1.0 })),
        ),
        (Method::DELETE, tick_path(EXISTING_TIME, ERR), None),
    ];
    for (method, path, body) in requests {
        let label = format!("{method} {path} with ticks renamed away");
        let mut req = app
            .client
            .request(method, app.url(&path))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("a response");
        assert_eq!(r.status(), 500, "{label}");
        let msg = error_message(r, &label).await.to_lowercase();
        for leak in [
            "ticks_gone",
            "relation",
            "does not exist",
            "42p01",
            "sqlx",
            "database error",
            "postgres",
            "select",
            "insert",
        ] {
            assert!(
                !msg.contains(leak),
                "{label}: the 500 leaks {leak:?}: {msg}"
            );
        }
    }
    // The poller fails too, so the server is not ready; liveness still holds.
    eventually(Duration::from_secs(15), "/readyz to answer 503", || async {
        (app.get("/readyz").await.status() == 503).then_some(())
    })
    .await;
    assert_eq!(app.get("/healthz").await.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// Exact reads of a small known set.

const CDL: &str = "CDL/USD";

/// Nine ticks over minutes 06:00, 06:01, 06:03 and 06:05, posted out of order as JSON and CSV.
async fn app_with_known_candles() -> TestApp {
    let app = app_with_one_tick().await;
    let t = |s: &str, p: f64, v: f64| json!({ "time": format!("2024-07-03T06:{s}Z"), "symbol": CDL, "price": p, "volume": v });
    let json_part = json!([
        t("00:40", 15.25, 2.0),
        t("05:30", 29.5, 2.0),
        t("00:05", 10.0, 1.0),
        t("00:59.5", 12.5, 4.0)
    ]);
    let r = app.post_ticks_json(&json_part).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<Value>().await.expect("JSON"),
        json!({ "inserted": 4 })
    );
    let csv = format!(
        "symbol,time,volume,price\n{CDL},2024-07-03T06:01:01Z,0.5,20\n{CDL},2024-07-03T06:03:59Z,0.75,7\n\
         {CDL},2024-07-03T08:03:00+02:00,1.25,7\n{CDL},2024-07-03T06:05:00Z,1,30.5\n{CDL},2024-07-03T06:00:20Z,3,8.75\n"
    );
    let r = app.post_ticks_raw("text/csv", csv).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<Value>().await.expect("JSON"),
        json!({ "inserted": 5 })
    );
    app
}

fn candle(bucket: &str, o: f64, h: f64, l: f64, c: f64, v: f64) -> Value {
    json!({ "bucket": bucket, "open": o, "high": h, "low": l, "close": c, "volume": v })
}

#[actix_web::test]
async fn candles_read_back_exactly_as_json_and_csv() {
    let app = app_with_known_candles().await;
    let q = |extra: &str| format!("/api/candles?symbol=CDL%2FUSD{extra}");
    let m5 = candle("2024-07-03T06:05:00Z", 30.5, 30.5, 29.5, 29.5, 3.0);
    let m3 = candle("2024-07-03T06:03:00Z", 7.0, 7.0, 7.0, 7.0, 2.0);
    let m1 = candle("2024-07-03T06:01:00Z", 20.0, 20.0, 20.0, 20.0, 0.5);
    let m0 = candle("2024-07-03T06:00:00Z", 10.0, 15.25, 8.75, 12.5, 10.0);
    let cases: Vec<(String, Value)> = vec![
        (q(""), json!([m5, m3, m1, m0])),
        (q("&interval=1m"), json!([m5, m3, m1, m0])),
        (
            q("&interval=5m"),
            json!([
                candle("2024-07-03T06:05:00Z", 30.5, 30.5, 29.5, 29.5, 3.0),
                candle("2024-07-03T06:00:00Z", 10.0, 20.0, 7.0, 7.0, 12.5)
            ]),
        ),
        (
            q("&interval=15m"),
            json!([candle("2024-07-03T06:00:00Z", 10.0, 30.5, 7.0, 29.5, 15.5)]),
        ),
        (
            q("&interval=1h"),
            json!([candle("2024-07-03T06:00:00Z", 10.0, 30.5, 7.0, 29.5, 15.5)]),
        ),
        (
            q("&interval=4h"),
            json!([candle("2024-07-03T04:00:00Z", 10.0, 30.5, 7.0, 29.5, 15.5)]),
        ),
        (
            q("&interval=1d"),
            json!([candle("2024-07-03T00:00:00Z", 10.0, 30.5, 7.0, 29.5, 15.5)]),
        ),
        (
            q("&from=2024-07-03T06:01:00Z&to=2024-07-03T06:04:00Z"),
            json!([m3, m1]),
        ),
        (
            q("&from=2024-07-03T08:01:00%2B02:00&to=2024-07-03T06:05:00Z"),
            json!([m3, m1]),
        ),
        (q("&limit=2"), json!([m5, m3])),
        (q("&from=2024-07-03T06:06:00Z"), json!([])),
        ("/api/candles?symbol=NONE".into(), json!([])),
        // Without a symbol: the default (BTC/USD), which has no ticks here.
        ("/api/candles".into(), json!([])),
    ];
    for (path, want) in cases {
        assert_eq!(app.get_json(&path).await, want, "GET {path}");
    }

    let r = app
        .get("/api/candles.csv?symbol=CDL%2FUSD&interval=1m")
        .await;
    assert_eq!(r.status(), 200);
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        ct.starts_with("text/csv"),
        "candles.csv Content-Type {ct:?}"
    );
    assert_eq!(
        r.text().await.expect("CSV"),
        "bucket,open,high,low,close,volume\n\
         2024-07-03T06:05:00Z,30.5,30.5,29.5,29.5,3\n\
         2024-07-03T06:03:00Z,7,7,7,7,2\n\
         2024-07-03T06:01:00Z,20,20,20,20,0.5\n\
         2024-07-03T06:00:00Z,10,15.25,8.75,12.5,10\n"
    );
    let r = app
        .get("/api/candles.csv?symbol=CDL%2FUSD&interval=5m")
        .await;
    assert_eq!(
        r.text().await.expect("CSV"),
        "bucket,open,high,low,close,volume\n2024-07-03T06:05:00Z,30.5,30.5,29.5,29.5,3\n2024-07-03T06:00:00Z,10,20,7,7,12.5\n"
    );
    let r = app.get("/api/candles.csv?symbol=NONE").await;
    assert_eq!(
        r.text().await.expect("CSV"),
        "bucket,open,high,low,close,volume\n"
    );
}

#[actix_web::test]
async fn symbols_and_ticks_read_back_exactly() {
    let app = app_with_known_candles().await;
    assert_eq!(app.get_json("/api/symbols").await, json!([CDL, ERR]));

    let ticks = app.get_json("/api/ticks?symbol=CDL%2FUSD&limit=3").await;
    assert_eq!(
        ticks,
        json!([
            { "time": "2024-07-03T06:05:30Z", "symbol": CDL, "price": 29.5, "volume": 2.0 },
            { "time": "2024-07-03T06:05:00Z", "symbol": CDL, "price": 30.5, "volume": 1.0 },
            { "time": "2024-07-03T06:03:59Z", "symbol": CDL, "price": 7.0, "volume": 0.75 },
        ]),
        "GET /api/ticks newest first"
    );
    let all = app.get_json("/api/ticks").await;
    assert_eq!(
        all.as_array().map(Vec::len),
        Some(10),
        "every tick of every symbol: {all}"
    );
    let window = app
        .get_json("/api/ticks?symbol=CDL%2FUSD&from=2024-07-03T06:00:20Z&to=2024-07-03T06:01:01Z")
        .await;
    let times: Vec<&str> = window
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["time"].as_str())
        .collect();
    assert_eq!(
        times,
        [
            "2024-07-03T06:00:59.500Z",
            "2024-07-03T06:00:40Z",
            "2024-07-03T06:00:20Z"
        ],
        "from inclusive, to exclusive"
    );

    let r = app
        .client
        .put(app.url(&tick_path("2024-07-03T06:05:30Z", CDL)))
        .bearer_auth(TOKEN)
        .json(&json!({ "price": 31.0, "volume": 2.0 }))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .delete(app.url(&tick_path("2024-07-03T06:01:01Z", CDL)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.get_json("/api/candles?symbol=CDL%2FUSD&from=2024-07-03T06:01:00Z")
            .await,
        json!([
            candle("2024-07-03T06:05:00Z", 30.5, 31.0, 30.5, 31.0, 3.0),
            candle("2024-07-03T06:03:00Z", 7.0, 7.0, 7.0, 7.0, 2.0)
        ]),
        "candles after a PUT and a DELETE"
    );
}
