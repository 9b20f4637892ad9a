//! `/ws` with a real WebSocket client: the snapshot, updates after API and psql writes, channel
//! switches, a viewer that stops reading, and a database outage.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{TestApp, eventually_ok, spawn_app, spawn_app_with};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Generous limit for anything the server should do within a poll or two (tests poll every
/// 200 ms); it only keeps a broken server from hanging the run.
const WAIT: Duration = Duration::from_secs(10);
/// A viewer that has not taken a frame for this long is closed by the server.
const SERVER_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long "nothing more arrives" is watched for: several polls.
const QUIET: Duration = Duration::from_millis(1000);

/// A candle as the wire has it: `[t, open, high, low, close, volume]`.
fn candle(t: i64, o: f64, h: f64, l: f64, c: f64, v: f64) -> Value {
    json!([t, o, h, l, c, v])
}

fn rfc3339(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0)
        .expect("a valid time")
        .to_rfc3339()
}

fn tick(t: i64, symbol: &str, price: f64, volume: f64) -> Value {
    json!({ "time": rfc3339(t), "symbol": symbol, "price": price, "volume": volume })
}

fn bucket_of(t: i64, width: i64) -> i64 {
    t.div_euclid(width) * width
}

fn now() -> i64 {
    Utc::now().timestamp()
}

async fn connect(app: &TestApp, query: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(app.ws_url(query))
        .await
        .unwrap_or_else(|e| panic!("WebSocket handshake for /ws?{query}: {e}"));
    ws
}

/// The next JSON text frame (pings and pongs skipped), or `None` when none comes `within`.
async fn recv_within(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.ok()?;
        match frame
            .expect("the server ended the connection")
            .expect("a WebSocket frame")
        {
            Message::Text(text) => {
                return Some(serde_json::from_str(&text).expect("a JSON text frame"));
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn recv(ws: &mut Ws, what: &str) -> Value {
    recv_within(ws, WAIT)
        .await
        .unwrap_or_else(|| panic!("no frame within {WAIT:?} while waiting for {what}"))
}

/// Asserts that no frame arrives for a while.
async fn assert_quiet(ws: &mut Ws, why: &str) {
    if let Some(frame) = recv_within(ws, QUIET).await {
        panic!("{why}, yet this arrived: {frame}");
    }
}

/// Connects until the snapshot has `n` candles (the poller may not have read the latest writes).
async fn snapshot_with(app: &TestApp, query: &str, n: usize) -> (Ws, Value) {
    eventually_ok(
        WAIT,
        &format!("a {query} snapshot of {n} candles"),
        || async {
            let mut ws = connect(app, query).await;
            let snapshot = recv(&mut ws, "the snapshot").await;
            assert_eq!(
                snapshot["type"], "snapshot",
                "the first frame is the snapshot: {snapshot}"
            );
            if snapshot["candles"].as_array().map_or(0, Vec::len) == n {
                return Ok((ws, snapshot));
            }
            let _ = ws.close(None).await;
            Err(snapshot)
        },
    )
    .await
}

/// OHLCV per `width`-second bucket, computed here from the ticks: the reference the server's
/// candles are compared with. Ticks are `(t, price, volume)`, in any order.
fn reference_candles(ticks: &[(i64, f64, f64)], width: i64) -> Vec<Value> {
    let mut sorted = ticks.to_vec();
    sorted.sort_by_key(|t| t.0);
    let mut buckets: BTreeMap<i64, [f64; 5]> = BTreeMap::new();
    for (t, p, v) in sorted {
        buckets
            .entry(bucket_of(t, width))
            .and_modify(|c| {
                c[1] = c[1].max(p);
                c[2] = c[2].min(p);
                c[3] = p;
                c[4] += v;
            })
            .or_insert([p, p, p, p, v]);
    }
    buckets
        .into_iter()
        .map(|(b, [o, h, l, c, v])| candle(b, o, h, l, c, v))
        .collect()
}

/// The frame is an update for `symbol`/`interval` with exactly these candles and removals (and
/// its number, which a reconnect resumes from).
fn assert_update(frame: &Value, symbol: &str, interval: &str, candles: &[Value], removed: &[i64]) {
    let mut frame = frame.clone();
    let seq = frame.as_object_mut().and_then(|f| f.remove("seq"));
    assert!(
        seq.as_ref().is_some_and(Value::is_u64),
        "an update has a seq: {frame}"
    );
    let expected = json!({ "type": "update", "symbol": symbol, "interval": interval, "candles": candles, "removed": removed });
    assert_eq!(frame, expected, "the update after the change");
}

/// The frame is a snapshot for `symbol`/`interval` with exactly these candles (its `seq` and
/// `epoch` aside).
fn assert_snapshot(frame: &Value, symbol: &str, interval: &str, candles: &[Value]) {
    let mut frame = frame.clone();
    if let Some(f) = frame.as_object_mut() {
        assert!(
            f.remove("seq").is_some_and(|s| s.is_u64()),
            "a snapshot has a seq"
        );
        assert!(
            f.remove("epoch").is_some_and(|e| e.is_string()),
            "a snapshot has an epoch"
        );
    }
    let expected =
        json!({ "type": "snapshot", "symbol": symbol, "interval": interval, "candles": candles });
    assert_eq!(frame, expected);
}

#[actix_web::test]
async fn the_snapshot_lists_every_candle_of_the_window_ascending_and_rolled_up() {
    let app = spawn_app().await;
    // Arrange: known ticks over six minutes an hour ago, out of order, plus another symbol.
    let base = bucket_of(now() - 3600, 300);
    let ticks = [
        (base + 60 + 50, 101.0, 0.25),
        (base, 100.0, 1.0),
        (base + 30, 105.0, 0.5),
        (base + 60 + 10, 95.0, 2.0),
        (base + 240 + 5, 110.0, 1.0),
        (base + 300 + 1, 90.0, 0.5),
    ];
    let mut body: Vec<Value> = ticks
        .iter()
        .map(|&(t, p, v)| tick(t, "BTC/USD", p, v))
        .collect();
    body.push(tick(base + 5, "ETH/USD", 3400.0, 1.0));
    assert_eq!(app.post_ticks_json(&json!(body)).await.status(), 201);

    // Act + Assert: every interval, each against candles computed here from the ticks.
    for (interval, width) in [
        ("1m", 60),
        ("5m", 300),
        ("15m", 900),
        ("1h", 3600),
        ("4h", 14_400),
        ("1d", 86_400),
    ] {
        let expected = reference_candles(&ticks, width);
        let (mut ws, snapshot) = snapshot_with(
            &app,
            &format!("symbol=BTC/USD&interval={interval}"),
            expected.len(),
        )
        .await;
        assert_eq!(snapshot["symbol"], "BTC/USD", "{snapshot}");
        assert_eq!(snapshot["interval"], interval, "{snapshot}");
        let candles = snapshot["candles"].as_array().expect("a candles array");
        let mut previous = i64::MIN;
        for c in candles {
            let c = c.as_array().expect("a candle is an array");
            assert_eq!(c.len(), 6, "[t, open, high, low, close, volume]: {c:?}");
            let t = c[0].as_i64().expect("t is an integer");
            assert!(
                c[1..].iter().all(Value::is_f64),
                "prices and volume are numbers: {c:?}"
            );
            assert_eq!(t % width, 0, "t={t} starts a {interval} bucket");
            assert!(t > previous, "strictly ascending: {t} after {previous}");
            previous = t;
        }
        assert_eq!(candles, &expected, "the {interval} snapshot");
        if interval == "1m" {
            // Only when something changed: nothing follows the snapshot while nothing is written.
            assert_quiet(&mut ws, "nothing was written after the snapshot").await;
        }
    }
    let (_, eth) = snapshot_with(&app, "symbol=ETH/USD", 1).await;
    assert_eq!(
        eth["candles"],
        json!([candle(base, 3400.0, 3400.0, 3400.0, 3400.0, 1.0)])
    );
    // The default channel is the configured symbol at 1m.
    let (_, default) = snapshot_with(&app, "", 4).await;
    assert_eq!(
        (&default["symbol"], &default["interval"]),
        (&json!("BTC/USD"), &json!("1m"))
    );
}

#[actix_web::test]
async fn an_api_insert_reaches_viewers_as_one_update_per_interval() {
    let app = spawn_app().await;
    let (mut m1, _) = snapshot_with(&app, "symbol=BTC/USD&interval=1m", 0).await;
    let (mut m5, _) = snapshot_with(&app, "symbol=BTC/USD&interval=5m", 0).await;
    // The minute that just ended: both ticks below are in the past.
    let minute = bucket_of(now(), 60) - 60;

    assert_eq!(
        app.post_ticks_json(&tick(minute + 40, "BTC/USD", 61_057.0, 0.5))
            .await
            .status(),
        201
    );
    let one = candle(minute, 61_057.0, 61_057.0, 61_057.0, 61_057.0, 0.5);
    assert_update(
        &recv(&mut m1, "the 1m update").await,
        "BTC/USD",
        "1m",
        &[one],
        &[],
    );
    let five = candle(
        bucket_of(minute, 300),
        61_057.0,
        61_057.0,
        61_057.0,
        61_057.0,
        0.5,
    );
    assert_update(
        &recv(&mut m5, "the 5m update").await,
        "BTC/USD",
        "5m",
        &[five],
        &[],
    );

    // A second tick in the same minute, earlier than the first: open changes, close does not.
    assert_eq!(
        app.post_ticks_json(&tick(minute + 20, "BTC/USD", 61_000.0, 0.25))
            .await
            .status(),
        201
    );
    let merged = candle(minute, 61_000.0, 61_057.0, 61_000.0, 61_057.0, 0.75);
    assert_update(
        &recv(&mut m1, "the 1m update after the second tick").await,
        "BTC/USD",
        "1m",
        &[merged],
        &[],
    );
    assert_quiet(&mut m1, "one update per change").await;
    // Another symbol's tick is not this channel's business.
    assert_eq!(
        app.post_ticks_json(&tick(minute + 30, "ETH/USD", 3_400.0, 1.0))
            .await
            .status(),
        201
    );
    assert_quiet(&mut m1, "only ETH/USD changed").await;
}

/// Edits made by another program, straight in the database, to a minute three days old: the
/// viewer gets the corrected candle, and `removed` once the minute's last tick is gone.
async fn psql_edits_of_an_old_minute_reach_viewers(app: &TestApp) {
    let minute = bucket_of(now() - 3 * 86_400, 60);
    let hour = bucket_of(minute, 3600);
    let (a, b) = (rfc3339(minute + 10), rfc3339(minute + 40));
    app.psql_async(&format!(
        "INSERT INTO ticks (time, symbol, price, volume) VALUES ('{a}', 'BTC/USD', 200, 1), ('{b}', 'BTC/USD', 210, 2)"
    )).await;
    let timescaledb = app
        .psql_async("SELECT value FROM candlewick_meta WHERE key = 'flavour'")
        .await
        .trim()
        == "timescaledb";
    if timescaledb {
        // Materialize the minute, so the edits below change already-materialized data.
        crate::helpers::refresh_aggregate(
            &app.pool,
            "one_min_candle",
            &format!("'{}'", rfc3339(hour)),
            &format!("'{}'", rfc3339(hour + 3600)),
        )
        .await;
    }
    let (mut m1, snapshot) = snapshot_with(app, "symbol=BTC/USD&interval=1m", 1).await;
    assert_eq!(
        snapshot["candles"],
        json!([candle(minute, 200.0, 210.0, 200.0, 210.0, 3.0)])
    );
    let (mut h1, _) = snapshot_with(app, "symbol=BTC/USD&interval=1h", 1).await;

    app.psql_async(&format!(
        "UPDATE ticks SET price = 190 WHERE symbol = 'BTC/USD' AND time = '{b}'"
    ))
    .await;
    let corrected = candle(minute, 200.0, 200.0, 190.0, 190.0, 3.0);
    assert_update(
        &recv(&mut m1, "the corrected candle").await,
        "BTC/USD",
        "1m",
        &[corrected],
        &[],
    );
    let corrected_hour = candle(hour, 200.0, 200.0, 190.0, 190.0, 3.0);
    assert_update(
        &recv(&mut h1, "the corrected hour").await,
        "BTC/USD",
        "1h",
        &[corrected_hour],
        &[],
    );
    // Readers of `one_min_candle` (the tutorial's SQL) see the correction too.
    let row = format!(
        "SELECT concat_ws(',', open, high, low, close, volume) FROM one_min_candle WHERE bucket = '{}'",
        rfc3339(minute)
    );
    crate::helpers::eventually(WAIT, "the corrected one_min_candle row", || async {
        (app.psql_async(&row).await.trim() == "200,200,190,190,3").then_some(())
    })
    .await;

    app.psql_async(&format!(
        "DELETE FROM ticks WHERE symbol = 'BTC/USD' AND time = '{a}'"
    ))
    .await;
    let rest = candle(minute, 190.0, 190.0, 190.0, 190.0, 2.0);
    assert_update(
        &recv(&mut m1, "the candle without the deleted tick").await,
        "BTC/USD",
        "1m",
        &[rest],
        &[],
    );
    recv(&mut h1, "the hour without the deleted tick").await;

    app.psql_async(&format!(
        "DELETE FROM ticks WHERE symbol = 'BTC/USD' AND time = '{b}'"
    ))
    .await;
    assert_update(
        &recv(&mut m1, "the removal").await,
        "BTC/USD",
        "1m",
        &[],
        &[minute],
    );
    assert_update(
        &recv(&mut h1, "the hour's removal").await,
        "BTC/USD",
        "1h",
        &[],
        &[hour],
    );

    // A new viewer's snapshot agrees, and so does `one_min_candle`.
    let (_, after) = snapshot_with(app, "symbol=BTC/USD&interval=1m", 0).await;
    assert_eq!(after["candles"], json!([]));
    crate::helpers::eventually(
        WAIT,
        "no one_min_candle row for the emptied minute",
        || async { app.psql_async(&row).await.trim().is_empty().then_some(()) },
    )
    .await;
}

#[actix_web::test]
async fn psql_edits_of_an_old_minute_reach_viewers_on_postgresql() {
    let app = spawn_app().await;
    psql_edits_of_an_old_minute_reach_viewers(&app).await;
}

#[actix_web::test]
async fn psql_edits_of_an_old_minute_reach_viewers_on_timescaledb() {
    let Some(server) = crate::timescale::server_url() else {
        return;
    };
    let ts = crate::timescale::TsDatabase::create(&server).await;
    let app = ts.app().await;
    psql_edits_of_an_old_minute_reach_viewers(&app).await;
    ts.drop(Some(app)).await;
}

#[actix_web::test]
async fn subscribing_switches_the_channel_and_the_old_one_falls_silent() {
    let app = spawn_app().await;
    let minute = bucket_of(now(), 60) - 600;
    let body = json!([
        tick(minute + 1, "BTC/USD", 61_000.0, 1.0),
        tick(minute + 2, "ETH/USD", 3_400.0, 2.0)
    ]);
    assert_eq!(app.post_ticks_json(&body).await.status(), 201);
    let (mut ws, _) = snapshot_with(&app, "symbol=BTC/USD&interval=1m", 1).await;

    ws.send(Message::text(
        r#"{"type":"subscribe","symbol":"ETH/USD","interval":"5m"}"#,
    ))
    .await
    .expect("sending");
    let snapshot = recv(&mut ws, "the ETH/USD 5m snapshot").await;
    let eth = candle(
        bucket_of(minute, 300),
        3_400.0,
        3_400.0,
        3_400.0,
        3_400.0,
        2.0,
    );
    assert_snapshot(&snapshot, "ETH/USD", "5m", &[eth]);

    // BTC/USD first, then ETH/USD: only the ETH/USD update may arrive.
    assert_eq!(
        app.post_ticks_json(&tick(minute + 10, "BTC/USD", 62_000.0, 1.0))
            .await
            .status(),
        201
    );
    assert_eq!(
        app.post_ticks_json(&tick(minute + 20, "ETH/USD", 3_500.0, 1.0))
            .await
            .status(),
        201
    );
    let eth = candle(
        bucket_of(minute, 300),
        3_400.0,
        3_500.0,
        3_400.0,
        3_500.0,
        3.0,
    );
    assert_update(
        &recv(&mut ws, "the ETH/USD update").await,
        "ETH/USD",
        "5m",
        &[eth],
        &[],
    );
    assert_quiet(&mut ws, "the BTC/USD channel was left").await;

    // Subscribing without an interval means 1m.
    ws.send(Message::text(r#"{"type":"subscribe","symbol":"BTC/USD"}"#))
        .await
        .expect("sending");
    let snapshot = recv(&mut ws, "the BTC/USD 1m snapshot").await;
    assert_eq!(
        (
            &snapshot["type"],
            &snapshot["symbol"],
            &snapshot["interval"]
        ),
        (&json!("snapshot"), &json!("BTC/USD"), &json!("1m"))
    );
    assert_eq!(
        snapshot["candles"],
        json!([candle(minute, 61_000.0, 62_000.0, 61_000.0, 62_000.0, 2.0)])
    );
}

#[actix_web::test]
async fn an_invalid_channel_is_refused_with_400_before_the_upgrade() {
    let app = spawn_app().await;
    let cases = [
        ("interval=7m", "an unknown interval"),
        ("interval=1M", "a wrongly cased interval"),
        ("symbol=BTC%00USD", "a control character in the symbol"),
        ("symbol=%20BTC", "a symbol with leading whitespace"),
        (
            "symbol=ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
            "a symbol longer than 32 characters",
        ),
        (
            "symbol=BTC%2FUSD&interval=",
            "an empty interval is fine: default 1m",
        ),
    ];
    for (query, why) in cases {
        let res = tokio_tungstenite::connect_async(app.ws_url(query)).await;
        if why.ends_with("default 1m") {
            assert!(res.is_ok(), "{why}: /ws?{query} was refused");
            continue;
        }
        match res {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "{why}: /ws?{query}");
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                        .unwrap_or_else(|e| panic!("{why}: the 400 body is not JSON: {e}"));
                assert!(
                    body["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{why}: {body}"
                );
            }
            Ok(_) => panic!("{why}: /ws?{query} was upgraded"),
            Err(e) => panic!("{why}: /ws?{query} failed with {e}"),
        }
    }
}

#[actix_web::test]
async fn an_invalid_client_message_gets_an_error_frame_and_the_connection_stays_usable() {
    let app = spawn_app().await;
    let (mut ws, _) = snapshot_with(&app, "symbol=BTC/USD", 0).await;
    let cases = [
        ("hello", "not JSON"),
        ("[1,2,3]", "not an object"),
        (r#"{"type":"unsubscribe"}"#, "an unknown type"),
        (r#"{"type":"subscribe"}"#, "no symbol"),
        (
            r#"{"type":"subscribe","symbol":"BTC/USD","interval":"7m"}"#,
            "an unknown interval",
        ),
        (
            r#"{"type":"subscribe","symbol":"BTC\u0007USD"}"#,
            "a control character in the symbol",
        ),
        (
            r#"{"type":"subscribe","symbol":42}"#,
            "a number for a symbol",
        ),
    ];
    for (text, why) in cases {
        ws.send(Message::text(text)).await.expect("sending");
        let frame = recv(&mut ws, why).await;
        assert_eq!(frame["type"], "error", "{why}: {frame}");
        assert!(
            frame["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{why}: {frame}"
        );
    }
    // Still usable: ping/pong, then a valid subscribe.
    ws.send(Message::Ping("are you there".into()))
        .await
        .expect("sending a ping");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a pong in time")
        {
            Some(Ok(Message::Pong(payload))) => {
                assert_eq!(&payload[..], b"are you there");
                break;
            }
            Some(Ok(Message::Ping(_))) => continue,
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    ws.send(Message::text(
        r#"{"type":"subscribe","symbol":"SOL/USD","interval":"1h"}"#,
    ))
    .await
    .expect("sending");
    let snapshot = recv(&mut ws, "the SOL/USD snapshot").await;
    assert_snapshot(&snapshot, "SOL/USD", "1h", &[]);

    // A frame far beyond any subscribe message ends the connection instead of being buffered.
    ws.send(Message::text("x".repeat(64 * 1024)))
        .await
        .expect("sending a large frame");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the server to close in time")
        {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => panic!("expected the connection to end, got {other:?}"),
        }
    }
}

/// Applies snapshot and update frames to a map of candles by `t`, as a chart would.
#[derive(Default)]
struct Chart {
    candles: BTreeMap<i64, Value>,
    snapshots: usize,
    updates: usize,
}

impl Chart {
    fn apply(&mut self, frame: &Value) {
        let t_of = |c: &Value| c[0].as_i64().expect("t is an integer");
        match frame["type"].as_str() {
            Some("snapshot") => {
                self.snapshots += 1;
                self.candles = frame["candles"]
                    .as_array()
                    .expect("candles")
                    .iter()
                    .map(|c| (t_of(c), c.clone()))
                    .collect();
            }
            Some("update") => {
                self.updates += 1;
                for c in frame["candles"].as_array().expect("candles") {
                    self.candles.insert(t_of(c), c.clone());
                }
                for t in frame["removed"].as_array().expect("removed") {
                    self.candles.remove(&t.as_i64().expect("a removed t"));
                }
            }
            Some("status") => assert_eq!(frame["stale"], false, "the database is up: {frame}"),
            _ => panic!("unexpected frame {frame}"),
        }
    }
}

#[actix_web::test]
async fn a_viewer_that_stops_reading_is_resynced_while_another_gets_every_update() {
    // Polls 50 ms apart: overflowing a viewer's queue takes more polls with changes than it holds.
    let app = spawn_app_with(&["--poll-interval", "50ms"]).await;
    // Arrange: a long history, so the snapshot alone overfills the slow viewer's socket buffers.
    app.psql_async(
        "INSERT INTO ticks (time, symbol, price, volume) \
         SELECT g, 'BTC/USD', 61000 + (extract(epoch FROM g)::bigint / 60) % 997, 1 \
         FROM generate_series(date_trunc('minute', now()) - interval '6 days', \
                              date_trunc('minute', now()) - interval '3 hours', interval '1 minute') AS g",
    ).await;
    let history: usize = app
        .psql_async("SELECT count(*) FROM one_min_candle")
        .await
        .trim()
        .parse()
        .expect("a count");
    let (mut healthy, snapshot) = snapshot_with(&app, "symbol=BTC/USD", history).await;
    let mut healthy_chart = Chart::default();
    healthy_chart.apply(&snapshot);

    // The slow viewer: a small receive buffer, and it never reads. It keeps pinging, as a live
    // but stuck client would, so it is not dropped for silence.
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("a small receive buffer");
    let stream = socket
        .connect(([127, 0, 0, 1], app.port).into())
        .await
        .expect("connecting");
    let (slow, _) = tokio_tungstenite::client_async(app.ws_url("symbol=BTC/USD"), stream)
        .await
        .expect("handshake");
    let (mut slow_tx, mut slow_rx) = slow.split();
    let stuck_since = std::time::Instant::now();
    let pinger = actix_web::rt::spawn(async move {
        while slow_tx
            .send(Message::Ping("still here".into()))
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    // Act: first changes to the whole history, each an update as large as the snapshot: the
    // socket buffers (a few megabytes on loopback) fill at once, then the session's queue.
    const BULK: usize = 12;
    for k in 1..=BULK {
        app.psql_async("UPDATE ticks SET volume = volume + 1 WHERE time < date_trunc('minute', now()) - interval '150 minutes'").await;
        let frame = recv(&mut healthy, &format!("whole-history update {k}")).await;
        let candles = frame["candles"]
            .as_array()
            .unwrap_or_else(|| panic!("whole-history update {k} is {frame}"));
        assert_eq!(candles.len(), history, "whole-history update {k}");
        assert!(
            candles.iter().all(|c| c[5] == json!(1.0 + k as f64)),
            "whole-history update {k}: volumes"
        );
        healthy_chart.apply(&frame);
    }
    // Then inserts one poll apart, more than the per-viewer queue holds. The healthy viewer gets
    // each one as its own update, in order, while the slow one is stuck.
    const INSERTS: i64 = 100;
    let base = bucket_of(now() - 2 * 3600, 60);
    for i in 0..INSERTS {
        let (t, price) = (base + i * 60, 1000.0 + i as f64);
        assert_eq!(
            app.post_ticks_json(&tick(t + 7, "BTC/USD", price, 1.0))
                .await
                .status(),
            201
        );
        let frame = recv(&mut healthy, &format!("the update for insert {i}")).await;
        assert_update(
            &frame,
            "BTC/USD",
            "1m",
            &[candle(t, price, price, price, price, 1.0)],
            &[],
        );
        healthy_chart.apply(&frame);
    }
    let expected = (1, BULK + INSERTS as usize);
    assert_eq!(
        (healthy_chart.snapshots, healthy_chart.updates),
        expected,
        "the healthy viewer was never resynced"
    );
    assert_quiet(&mut healthy, "every insert has been seen").await;

    // Assert: once the slow viewer reads again, it is brought up to date by a fresh snapshot
    // rather than the whole backlog. Only if it was stuck for longer than the server's send
    // timeout (a heavily loaded machine) may it have been dropped instead.
    let stuck_for = stuck_since.elapsed();
    let mut slow_chart = Chart::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut dropped = false;
    while slow_chart.snapshots < 2 || slow_chart.candles != healthy_chart.candles {
        let frame = tokio::time::timeout_at(deadline, slow_rx.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the slow viewer did not catch up ({} snapshots, {} updates, {} candles of {})",
                    slow_chart.snapshots,
                    slow_chart.updates,
                    slow_chart.candles.len(),
                    healthy_chart.candles.len()
                )
            });
        match frame {
            Some(Ok(Message::Text(text))) => {
                slow_chart.apply(&serde_json::from_str(&text).expect("JSON"))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            None | Some(Ok(Message::Close(_))) | Some(Err(_)) => {
                dropped = true;
                break;
            }
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
        }
    }
    if dropped {
        assert!(
            stuck_for > SERVER_SEND_TIMEOUT,
            "the slow viewer was dropped after only {stuck_for:?} instead of resynced"
        );
        eprintln!("the slow viewer was stuck for {stuck_for:?} and dropped (machine under load)");
    } else {
        assert!(
            slow_chart.updates < expected.1,
            "the slow viewer got {} updates: no backlog was skipped",
            slow_chart.updates
        );
    }
    pinger.abort();
}

/// A cluster of this test's own, so it can be stopped and started.
struct OwnCluster {
    dir: tempfile::TempDir,
    pg: Option<candlewick::embedded::EmbeddedPostgres>,
}

impl OwnCluster {
    async fn start(dir: tempfile::TempDir, port: u16) -> Self {
        let path = dir.path().to_owned();
        let options = candlewick::embedded::Options {
            unsafe_fast: true,
            port: Some(port),
            ..candlewick::embedded::Options::default()
        };
        let pg = tokio::task::spawn_blocking(move || {
            candlewick::embedded::EmbeddedPostgres::start(&path, &options)
        })
        .await
        .expect("the start-up task")
        .expect("starting the test's own PostgreSQL cluster");
        Self { dir, pg: Some(pg) }
    }

    fn url(&self) -> secrecy::SecretString {
        self.pg
            .as_ref()
            .expect("a running cluster")
            .url(candlewick::embedded::DB_NAME)
    }

    async fn stop(mut self) -> tempfile::TempDir {
        if let Some(pg) = self.pg.take() {
            tokio::task::spawn_blocking(move || pg.stop())
                .await
                .expect("the stop task")
                .expect("stopping the test's own cluster");
        }
        self.dir
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

#[actix_web::test]
async fn a_database_outage_marks_viewers_stale_and_the_missed_changes_arrive_afterwards() {
    use std::os::unix::fs::PermissionsExt;
    // Arrange: a dedicated cluster (the postgres user must reach the dir: the test runs as root).
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod 0755");
    let port = free_port();
    let cluster = OwnCluster::start(dir, port).await;
    candlewick::db::ensure_database(cluster.pg.as_ref().expect("running"))
        .await
        .expect("creating the database");
    let url = cluster.url();
    let pool = sqlx::PgPool::connect_with(candlewick::db::connect_options(&url).expect("URL"))
        .await
        .expect("connecting");
    candlewick::db::migrate(&pool).await.expect("migrating");
    pool.close().await;
    let app =
        crate::helpers::spawn_app_on(candlewick::embedded::DB_NAME.to_owned(), url.clone(), &[])
            .await;

    let minute = bucket_of(now(), 60) - 600;
    let (a, b, c) = (minute, minute + 60, minute + 120);
    let body = json!([
        tick(a + 5, "BTC/USD", 100.0, 1.0),
        tick(b + 5, "BTC/USD", 200.0, 1.0)
    ]);
    assert_eq!(app.post_ticks_json(&body).await.status(), 201);
    let (mut ws, _) = snapshot_with(&app, "symbol=BTC/USD", 2).await;
    eventually_status(&app, "/readyz", 200).await;

    // Act 1: the database goes away.
    let dir = cluster.stop().await;
    assert_eq!(
        recv(&mut ws, "the stale status").await,
        json!({ "type": "status", "stale": true })
    );
    eventually_status(&app, "/readyz", 503).await;
    // The server keeps serving: liveness, and the chart from memory, marked stale.
    assert_eq!(app.get("/healthz").await.status(), 200);
    let (mut late, snapshot) = snapshot_with(&app, "symbol=BTC/USD", 2).await;
    assert_eq!(
        snapshot["candles"][0],
        candle(a, 100.0, 100.0, 100.0, 100.0, 1.0)
    );
    assert_eq!(
        recv(&mut late, "the late viewer's status").await,
        json!({ "type": "status", "stale": true })
    );
    // Once is enough: retries don't repeat it.
    assert_quiet(&mut ws, "stale was already said").await;

    // The database comes back, first where only this test reaches it: changes are written that
    // the poller cannot read yet (its pool points at the usual port).
    let cluster = OwnCluster::start(dir, free_port()).await;
    let direct = cluster.url();
    crate::helpers::psql(
        &direct,
        &format!(
            "UPDATE ticks SET price = 90 WHERE time = '{}'",
            rfc3339(a + 5)
        ),
    );
    crate::helpers::psql(
        &direct,
        &format!("DELETE FROM ticks WHERE time = '{}'", rfc3339(b + 5)),
    );
    crate::helpers::psql(
        &direct,
        &format!(
            "INSERT INTO ticks (time, symbol, price, volume) VALUES ('{}', 'BTC/USD', 300, 2)",
            rfc3339(c + 5)
        ),
    );
    assert_eq!(
        app.get("/readyz").await.status(),
        503,
        "the poller still cannot read"
    );
    let dir = cluster.stop().await;

    // Act 2: back at its own port.
    let cluster = OwnCluster::start(dir, port).await;

    // Assert: the missed changes in one update, then the all-clear; the same for both viewers.
    for viewer in [&mut ws, &mut late] {
        let expected = [
            candle(a, 90.0, 90.0, 90.0, 90.0, 1.0),
            candle(c, 300.0, 300.0, 300.0, 300.0, 2.0),
        ];
        assert_update(
            &recv(viewer, "the missed changes").await,
            "BTC/USD",
            "1m",
            &expected,
            &[b],
        );
        assert_eq!(
            recv(viewer, "the fresh status").await,
            json!({ "type": "status", "stale": false })
        );
    }
    eventually_status(&app, "/readyz", 200).await;
    // And it stays live.
    assert_eq!(
        app.post_ticks_json(&tick(c + 6, "BTC/USD", 310.0, 1.0))
            .await
            .status(),
        201
    );
    let updated = candle(c, 300.0, 310.0, 300.0, 310.0, 3.0);
    assert_update(
        &recv(&mut ws, "a live update").await,
        "BTC/USD",
        "1m",
        &[updated],
        &[],
    );

    app.stop().await;
    app.pool.close().await;
    cluster.stop().await;
}

async fn eventually_status(app: &TestApp, path: &str, status: u16) {
    crate::helpers::eventually(
        Duration::from_secs(20),
        &format!("{path} to answer {status}"),
        || async { (app.get(path).await.status() == status).then_some(()) },
    )
    .await;
}

/// A symbol nobody watches is not kept in memory: its window is dropped once its last viewer
/// has been gone `--resume-grace` and then `--keep-unwatched`, and the next viewer's snapshot
/// is read afresh. (The edit below goes to the candle table behind the journal's back, so only
/// a fresh read shows it.)
#[actix_web::test]
async fn an_unwatched_symbol_is_read_afresh_for_its_next_viewer() {
    let keep = Duration::from_millis(300);
    let app = spawn_app_with(&["--keep-unwatched", "300ms", "--resume-grace", "300ms"]).await;
    let t = bucket_of(now() - 600, 60) + 5;
    let r = app
        .post_ticks_json(&json!([tick(t, "COLD/USD", 10.0, 1.0)]))
        .await;
    assert_eq!(r.status(), 201);
    let (mut first, snapshot) = snapshot_with(&app, "symbol=COLD/USD", 1).await;
    assert_eq!(snapshot["candles"][0][4], json!(10.0));
    first.close(None).await.expect("closing the first viewer");
    drop(first);
    app.psql_async(
        "UPDATE candlewick_candles SET open = 12, high = 12, low = 12, close = 12 \
         WHERE symbol = 'COLD/USD'",
    )
    .await;
    // Nobody watches for a while: that time is what is tested, so it is waited out. The channel
    // is kept for the resume grace and its bars for `keep` after that (both `keep` here),
    // dropped at a poll (200 ms). A look too early is a viewer again, and starts the wait afresh.
    let away = 2 * keep + Duration::from_millis(400);
    let fresh = candle(bucket_of(t, 60), 12.0, 12.0, 12.0, 12.0, 1.0);
    eventually_ok(
        WAIT,
        "the next viewer's snapshot to be read from the database, not from memory",
        || async {
            tokio::time::sleep(away).await;
            let (mut next, snapshot) = snapshot_with(&app, "symbol=COLD/USD", 1).await;
            if snapshot["candles"][0] == fresh {
                return Ok(());
            }
            let _ = next.close(None).await;
            Err(snapshot)
        },
    )
    .await;
}

/// Reads frames until the server closes the connection; returns the close code and the frames
/// (text and binary) that came before it.
async fn until_closed(ws: &mut Ws) -> (Option<u16>, Vec<Message>) {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the server to close in time")
        {
            Some(Ok(Message::Close(frame))) => return (frame.map(|f| f.code.into()), frames),
            None | Some(Err(_)) => return (None, frames),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => frames.push(other),
        }
    }
}

fn ticks_every_minute(symbol: &str, from: i64, n: i64) -> Value {
    Value::Array(
        (0..n)
            .map(|i| tick(from + i * 60 + 5, symbol, 100.0 + i as f64, 1.0))
            .collect(),
    )
}

#[actix_web::test]
async fn a_limit_gives_the_newest_candles_and_updates_still_cover_the_whole_window() {
    let app = spawn_app().await;
    let first = bucket_of(now() - 3600, 60);
    let r = app
        .post_ticks_json(&ticks_every_minute("LIM/USD", first, 30))
        .await;
    assert_eq!(r.status(), 201);
    let (mut ws, snapshot) = snapshot_with(&app, "symbol=LIM/USD&limit=10", 10).await;
    let ts: Vec<i64> = snapshot["candles"]
        .as_array()
        .expect("candles")
        .iter()
        .map(|c| c[0].as_i64().expect("t"))
        .collect();
    assert_eq!(ts, (20..30).map(|i| first + i * 60).collect::<Vec<_>>());
    assert!(
        snapshot["seq"].is_u64() && snapshot["epoch"].is_string(),
        "{snapshot}"
    );

    // An edit to a minute older than the snapshot's first still comes as an update.
    app.psql_async(&format!(
        "UPDATE ticks SET price = 1 WHERE symbol = 'LIM/USD' AND time = '{}'",
        rfc3339(first + 5)
    ))
    .await;
    let update = recv(&mut ws, "the update of an old minute").await;
    assert_update(
        &update,
        "LIM/USD",
        "1m",
        &[candle(first, 1.0, 1.0, 1.0, 1.0, 1.0)],
        &[],
    );

    ws.send(Message::text(
        json!({"type": "subscribe", "symbol": "LIM/USD", "interval": "5m", "limit": 2}).to_string(),
    ))
    .await
    .expect("subscribing");
    let snapshot = recv(&mut ws, "the 5m snapshot").await;
    assert_eq!(
        snapshot["candles"].as_array().map(Vec::len),
        Some(2),
        "{snapshot}"
    );

    for bad in ["0", "10081", "ten", "-1"] {
        let r = app.get(&format!("/ws?symbol=LIM/USD&limit={bad}")).await;
        assert_eq!(r.status(), 400, "limit={bad}");
    }
    ws.send(Message::text(
        json!({"type": "subscribe", "symbol": "LIM/USD", "limit": 0}).to_string(),
    ))
    .await
    .expect("subscribing");
    let error = recv(&mut ws, "the error frame").await;
    assert_eq!(error["type"], "error", "{error}");
}

#[actix_web::test]
async fn a_reconnect_resumes_from_its_last_update_when_the_server_kept_it() {
    let app = spawn_app().await;
    let t = bucket_of(now() - 600, 60);
    let r = app
        .post_ticks_json(&ticks_every_minute("RES/USD", t, 1))
        .await;
    assert_eq!(r.status(), 201);
    let (mut ws, snapshot) = snapshot_with(&app, "symbol=RES/USD", 1).await;
    let r = app
        .post_ticks_json(&ticks_every_minute("RES/USD", t + 60, 1))
        .await;
    assert_eq!(r.status(), 201);
    let update = recv(&mut ws, "the first update").await;
    let (epoch, seq) = (
        snapshot["epoch"].as_str().expect("an epoch").to_owned(),
        update["seq"].as_u64().expect("a seq"),
    );
    // Another viewer stays: when it has the next update, the server has sent (and kept) it.
    let (mut witness, _) = snapshot_with(&app, "symbol=RES/USD", 2).await;
    ws.close(None).await.expect("closing");
    drop(ws);

    // Missed while away: one more update.
    let r = app
        .post_ticks_json(&ticks_every_minute("RES/USD", t + 120, 1))
        .await;
    assert_eq!(r.status(), 201);
    let sent = recv(&mut witness, "the update the viewer misses").await;
    assert_eq!(sent["type"], "update", "{sent}");
    let mut back = connect(&app, &format!("symbol=RES/USD&since={seq}&epoch={epoch}")).await;
    let resume = recv(&mut back, "the resume").await;
    assert_eq!(resume["type"], "resume", "{resume}");
    assert_eq!(resume["seq"], seq);
    let missed = recv(&mut back, "the missed update").await;
    assert_update(
        &missed,
        "RES/USD",
        "1m",
        &[candle(t + 120, 100.0, 100.0, 100.0, 100.0, 1.0)],
        &[],
    );

    // Another server run's numbers mean nothing here: a snapshot.
    let mut other = connect(&app, &format!("symbol=RES/USD&since={seq}&epoch=another")).await;
    assert_eq!(recv(&mut other, "the snapshot").await["type"], "snapshot");
}

#[actix_web::test]
async fn with_format_gzip_the_snapshot_is_one_compressed_binary_frame() {
    use std::io::Read;
    let app = spawn_app().await;
    let t = bucket_of(now() - 600, 60);
    let r = app
        .post_ticks_json(&ticks_every_minute("GZ/USD", t, 5))
        .await;
    assert_eq!(r.status(), 201);
    let (_, plain) = snapshot_with(&app, "symbol=GZ/USD", 5).await;
    let mut ws = connect(&app, "symbol=GZ/USD&format=gzip").await;
    let frame = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a frame in time")
        .expect("a frame")
        .expect("a WebSocket frame");
    let Message::Binary(bytes) = frame else {
        panic!("expected a binary snapshot, got {frame:?}");
    };
    let mut json = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut json)
        .expect("gzip");
    let snapshot: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(snapshot["candles"], plain["candles"]);
    // Updates stay text.
    let r = app
        .post_ticks_json(&ticks_every_minute("GZ/USD", t + 300, 1))
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(recv(&mut ws, "an update").await["type"], "update");
    assert_eq!(app.get("/ws?symbol=GZ/USD&format=zip").await.status(), 400);
}

/// A bare socket that has sent the upgrade request for `/ws?{query}` and nothing else (the
/// response is left unread): what no WebSocket library does for a test.
async fn raw_upgrade(app: &TestApp, query: &str) -> TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut tcp = TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connecting");
    let request = format!(
        "GET /ws?{query} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        app.port
    );
    tcp.write_all(request.as_bytes()).await.expect("handshake");
    tcp
}

/// Frames as they come off the socket, for what a WebSocket library reassembles unseen:
/// `(fin, opcode, payload)` up to and including the first frame with `fin` set.
async fn raw_message(app: &TestApp, query: &str) -> Vec<(bool, u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut tcp = raw_upgrade(app, query).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut frames = Vec::new();
    let mut at = None;
    loop {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("frames in time")
            .expect("reading");
        assert!(n > 0, "closed before the whole message: {frames:?}");
        buf.extend_from_slice(&chunk[..n]);
        let start = match at {
            Some(s) => s,
            None => match buf.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(p) => *at.insert(p + 4),
                None => continue,
            },
        };
        // Server frames are unmasked: a 2-byte head, then a 16- or 64-bit length if flagged.
        let mut pos = start;
        frames.clear();
        while buf.len() >= pos + 2 {
            let (fin, opcode) = (buf[pos] & 0x80 != 0, buf[pos] & 0x0f);
            let (len, head) = match buf[pos + 1] & 0x7f {
                126 if buf.len() >= pos + 4 => {
                    (u16::from_be_bytes([buf[pos + 2], buf[pos + 3]]) as usize, 4)
                }
                127 if buf.len() >= pos + 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[pos + 2..pos + 10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if buf.len() < pos + head + len {
                break;
            }
            frames.push((fin, opcode, buf[pos + head..pos + head + len].to_vec()));
            pos += head + len;
            if fin {
                return frames;
            }
        }
    }
}

/// A snapshot larger than a few KiB leaves as one message in frames of at most 4 KiB, so that
/// no connection's write buffer grows to the snapshot's size and stays that big.
#[actix_web::test]
async fn a_large_snapshot_is_one_message_sent_in_frames_of_at_most_4_kib() {
    let app = spawn_app().await;
    let t = bucket_of(now() - 6 * 3600, 60);
    let r = app
        .post_ticks_json(&ticks_every_minute("FRAG/USD", t, 300))
        .await;
    assert_eq!(r.status(), 201);
    let (_, whole) = snapshot_with(&app, "symbol=FRAG/USD", 300).await;

    let frames = raw_message(&app, "symbol=FRAG/USD").await;

    assert!(frames.len() > 2, "{} frames", frames.len());
    for (i, (fin, opcode, payload)) in frames.iter().enumerate() {
        assert!(payload.len() <= 4096, "frame {i}: {} bytes", payload.len());
        let first = i == 0;
        assert_eq!(
            *opcode,
            if first { 1 } else { 0 },
            "frame {i}: text, then continuations"
        );
        assert_eq!(
            *fin,
            i + 1 == frames.len(),
            "frame {i}: only the last one ends it"
        );
    }
    let text: Vec<u8> = frames.into_iter().flat_map(|(_, _, p)| p).collect();
    let snapshot: Value = serde_json::from_slice(&text).expect("the frames join into JSON");
    assert_eq!(snapshot["candles"], whole["candles"]);
}

/// One connection sending hundreds of subscribes gets a handful of snapshots, not one each,
/// and is closed as abusive.
#[actix_web::test]
async fn a_flood_of_subscribes_gets_few_snapshots_and_a_policy_close() {
    let app = spawn_app().await;
    let t = bucket_of(now() - 6 * 3600, 60);
    let r = app
        .post_ticks_json(&ticks_every_minute("AMP/USD", t, 300))
        .await;
    assert_eq!(r.status(), 201);
    let (mut ws, _) = snapshot_with(&app, "symbol=AMP/USD", 300).await;
    let subscribe = json!({"type": "subscribe", "symbol": "AMP/USD"}).to_string();
    for _ in 0..300 {
        ws.feed(Message::text(subscribe.clone()))
            .await
            .expect("queueing");
    }
    ws.flush().await.expect("sending");
    let (code, frames) = until_closed(&mut ws).await;
    let snapshots = frames
        .iter()
        .filter(|m| matches!(m, Message::Text(t) if t.contains("\"snapshot\"")))
        .count();
    assert!(snapshots <= 6, "{snapshots} snapshots for 300 subscribes");
    assert_eq!(code, Some(1008), "closed with a policy violation");
}

/// Subscribes beyond the burst wait for their allowance (two a second), the latest one
/// only, and are served when it comes back: not at the next heartbeat or message.
#[actix_web::test]
async fn a_subscribe_held_by_the_rate_limit_is_served_when_its_allowance_returns() {
    let app = spawn_app().await;
    let minute = bucket_of(now(), 60) - 600;
    assert_eq!(
        app.post_ticks_json(&tick(minute + 1, "HLD/USD", 10.0, 1.0))
            .await
            .status(),
        201
    );
    let (mut ws, _) = snapshot_with(&app, "symbol=HLD/USD&interval=1m", 1).await;
    // Five at once (the burst), then one held and replaced by the last before it is served.
    let intervals = ["5m", "15m", "1h", "4h", "1d", "1m", "5m"];
    for interval in intervals {
        let msg = json!({"type": "subscribe", "symbol": "HLD/USD", "interval": interval});
        ws.feed(Message::text(msg.to_string()))
            .await
            .expect("queueing");
    }
    ws.flush().await.expect("sending");
    for interval in &intervals[..5] {
        let snapshot = recv(&mut ws, "a snapshot of the burst").await;
        assert_eq!(snapshot["interval"], *interval, "{snapshot}");
    }
    // The allowance is back within half a second; the next heartbeat is 5 s after the join.
    let held = recv_within(&mut ws, Duration::from_millis(2500))
        .await
        .expect("the held subscribe is served once its allowance is back");
    assert_eq!(held["type"], "snapshot", "{held}");
    assert_eq!(
        held["interval"], "5m",
        "only the latest held subscribe: {held}"
    );
    assert_quiet(&mut ws, "the replaced subscribe is never served").await;
}

#[actix_web::test]
async fn a_frame_over_4_kib_closes_the_connection_with_1009() {
    let app = spawn_app().await;
    let mut ws = connect(&app, "symbol=BIG/USD").await;
    recv(&mut ws, "the snapshot").await;
    ws.send(Message::text("x".repeat(5000)))
        .await
        .expect("sending");
    let (code, _) = until_closed(&mut ws).await;
    assert_eq!(code, Some(1009));
}

#[actix_web::test]
async fn a_message_over_4_kib_in_small_fragments_closes_with_1009_too() {
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    let app = spawn_app().await;
    let mut ws = connect(&app, "symbol=BIG/USD").await;
    recv(&mut ws, "the snapshot").await;
    // 8,000 bytes in 1,000-byte fragments: each frame is small, the message is not.
    for i in 0..8 {
        let opcode = if i == 0 { Data::Text } else { Data::Continue };
        let frame = Frame::message("x".repeat(1000), OpCode::Data(opcode), i == 7);
        if ws.send(Message::Frame(frame)).await.is_err() {
            break; // closed already
        }
    }
    let (code, _) = until_closed(&mut ws).await;
    assert_eq!(code, Some(1009));
}

#[actix_web::test]
async fn a_browser_page_from_another_origin_may_not_open_the_websocket() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = spawn_app().await;
    let other = spawn_app_with(&["--allowed-origins", "https://charts.example"]).await;
    let with_origin = |app: &TestApp, origin: &str| {
        let mut req = app
            .ws_url("symbol=ORG/USD")
            .into_client_request()
            .expect("a request");
        req.headers_mut()
            .insert("Origin", origin.parse().expect("a header value"));
        req
    };
    let own = format!("http://127.0.0.1:{}", app.port);
    assert!(
        tokio_tungstenite::connect_async(with_origin(&app, &own))
            .await
            .is_ok(),
        "own origin"
    );
    match tokio_tungstenite::connect_async(with_origin(&app, "https://evil.example")).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("another origin was let in: {other:?}"),
    }
    assert!(
        tokio_tungstenite::connect_async(app.ws_url("symbol=ORG/USD"))
            .await
            .is_ok(),
        "no Origin (a script)"
    );
    assert!(
        tokio_tungstenite::connect_async(with_origin(&other, "https://charts.example"))
            .await
            .is_ok(),
        "an allowed origin"
    );
}

/// SIGTERM's drain as a viewer behind a proxy sees it: by the time the close comes, the server
/// takes no new connections (a reconnect goes to another replica), and the close says 1012
/// (service restart), on which the chart page reconnects at once.
#[actix_web::test]
async fn a_stopping_server_stops_accepting_then_closes_viewers_with_1012() {
    let app = spawn_app().await;
    let mut ws = connect(&app, "symbol=BTC/USD").await;
    assert_eq!(recv(&mut ws, "the snapshot").await["type"], "snapshot");

    let port = app.port;
    let ((), (code, refused)) = tokio::join!(app.stop(), async {
        let (code, _) = until_closed(&mut ws).await;
        (code, TcpStream::connect(("127.0.0.1", port)).await.is_err())
    });
    assert_eq!(code, Some(1012), "closed with 1012 (service restart)");
    assert!(refused, "the listener was closed before the viewers were");
}

/// Another server of the same database (a replica, or this one restarted) resumes a viewer from
/// the journal: just the candles it missed, no snapshot; unless the journal no longer holds
/// them (pruned past the token, or a TRUNCATE), then a snapshot.
#[actix_web::test]
async fn a_reconnect_resumes_on_another_server_of_the_same_database() {
    let app = spawn_app().await;
    let t = bucket_of(now() - 600, 60);
    let r = app
        .post_ticks_json(&ticks_every_minute("REP/USD", t, 2))
        .await;
    assert_eq!(r.status(), 201);
    let (mut ws, snapshot) = snapshot_with(&app, "symbol=REP/USD", 2).await;
    let r = app
        .post_ticks_json(&ticks_every_minute("REP/USD", t + 120, 1))
        .await;
    assert_eq!(r.status(), 201);
    let update = recv(&mut ws, "the first update").await;
    let epoch = snapshot["epoch"].as_str().expect("an epoch").to_owned();
    let seq = update["seq"].as_u64().expect("a seq");
    ws.close(None).await.expect("closing");
    drop(ws);

    // Missed while away: an edit of the first minute and a new one.
    let r = app
        .client
        .put(app.url(&format!(
            "/api/ticks?time={}&symbol=REP/USD",
            rfc3339(t + 5)
        )))
        .bearer_auth(crate::helpers::TOKEN)
        .json(&json!({ "price": 150.0, "volume": 2.0 }))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 200);
    let r = app
        .post_ticks_json(&ticks_every_minute("REP/USD", t + 180, 1))
        .await;
    assert_eq!(r.status(), 201);

    let other = crate::helpers::spawn_app_on(app.db_name.clone(), app.db_url.clone(), &[]).await;
    let query = format!("symbol=REP/USD&since={seq}&epoch={epoch}");
    let mut back = connect(&other, &query).await;
    let resume = recv(&mut back, "the resume").await;
    assert_eq!(resume["type"], "resume", "{resume}");
    assert_eq!(resume["epoch"], epoch.as_str(), "the database's epoch");
    let missed = recv(&mut back, "the missed candles").await;
    assert_update(
        &missed,
        "REP/USD",
        "1m",
        &[
            candle(t, 150.0, 150.0, 150.0, 150.0, 2.0),
            candle(t + 180, 100.0, 100.0, 100.0, 100.0, 1.0),
        ],
        &[],
    );
    // And it is live: the next change arrives as usual.
    let r = other
        .post_ticks_json(&ticks_every_minute("REP/USD", t + 240, 1))
        .await;
    assert_eq!(r.status(), 201);
    let next = recv(&mut back, "the next update").await;
    assert_eq!(next["candles"][0][0], t + 240, "{next}");
    let seq_now = next["seq"].as_u64().expect("a seq");

    // The journal pruned past the token: a snapshot.
    sqlx::query("INSERT INTO candle_changes_marks (oldest_running) VALUES ($1::text::xid8)")
        .bind((seq_now + 1).to_string())
        .execute(&app.pool)
        .await
        .expect("marking a prune");
    let third = crate::helpers::spawn_app_on(app.db_name.clone(), app.db_url.clone(), &[]).await;
    let query = format!("symbol=REP/USD&since={seq_now}&epoch={epoch}");
    let mut late = connect(&third, &query).await;
    assert_eq!(recv(&mut late, "the snapshot").await["type"], "snapshot");
    sqlx::query("DELETE FROM candle_changes_marks")
        .execute(&app.pool)
        .await
        .expect("forgetting the mark");
    let mut again = connect(&third, &query).await;
    assert_eq!(recv(&mut again, "the resume").await["type"], "resume");

    // After a TRUNCATE the journal cannot tell what changed: a snapshot.
    sqlx::query("TRUNCATE ticks")
        .execute(&app.pool)
        .await
        .expect("truncating");
    let fourth = crate::helpers::spawn_app_on(app.db_name.clone(), app.db_url.clone(), &[]).await;
    let mut wiped = connect(&fourth, &query).await;
    let frame = recv(&mut wiped, "the snapshot").await;
    assert_eq!(frame["type"], "snapshot", "{frame}");
    assert_eq!(frame["candles"], json!([]));
}

/// Reads `ws` for `span`, answering pings (tungstenite queues the pong and sends it on the next
/// read); returns how many pings came.
async fn pings_within(ws: &mut Ws, span: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + span;
    let mut pings = 0;
    while let Ok(frame) = tokio::time::timeout_at(deadline, ws.next()).await {
        match frame
            .expect("the server ended the connection")
            .expect("a WebSocket frame")
        {
            Message::Ping(_) => pings += 1,
            Message::Text(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
    pings
}

#[actix_web::test]
async fn only_quiet_viewers_are_pinged_and_one_that_never_answers_is_dropped() {
    use tokio::io::AsyncReadExt;
    // Arrange: a viewer of a live channel (a tick every 400 ms), one of a symbol nobody writes,
    // and one of that symbol that never reads, so never answers a ping.
    let app = spawn_app().await;
    let mut live = connect(&app, "symbol=BTC/USD").await;
    let mut quiet = connect(&app, "symbol=QUIET/USD").await;
    // The mute one is a bare socket: a WebSocket library would answer the pings on any read.
    let mut mute = raw_upgrade(&app, "symbol=QUIET/USD").await;
    let connected = tokio::time::Instant::now();
    let writer = actix_web::rt::spawn({
        let pool = app.pool.clone();
        async move {
            loop {
                sqlx::query("INSERT INTO ticks VALUES (clock_timestamp(), 'BTC/USD', 61000, 0.1)")
                    .execute(&pool)
                    .await
                    .expect("a tick");
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        }
    });

    // Act: watch both for two heartbeats and a bit.
    let span = Duration::from_secs(12);
    let (live_pings, quiet_pings) = futures_util::join!(
        pings_within(&mut live, span),
        pings_within(&mut quiet, span)
    );
    writer.abort();

    // Assert: the live viewer was not pinged (the first beat comes after its first updates);
    // the quiet one at every beat.
    assert_eq!(live_pings, 0, "a viewer taking updates was pinged");
    assert!(
        quiet_pings >= 2,
        "a quiet viewer was pinged {quiet_pings} times"
    );

    // The mute viewer is closed once the first beat's ping (5 s) has gone unanswered for 15 s
    // (CLIENT_TIMEOUT), at the fourth or fifth beat: its socket then ends with the close frame.
    tokio::time::sleep_until(connected + Duration::from_secs(24)).await;
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, mute.read_to_end(&mut received))
        .await
        .expect("the server closed the mute viewer's connection")
        .expect("reading the mute viewer's socket");
    let close = [&[0x88, 14, 0x03, 0xf0][..], b"no heartbeat"].concat();
    assert!(
        received.ends_with(&close),
        "the mute viewer's socket ends with a 1008 \"no heartbeat\" close frame: {:?}",
        String::from_utf8_lossy(&received[received.len().saturating_sub(40)..])
    );
}
