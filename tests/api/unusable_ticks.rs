//! Ticks another program stores that candlewick cannot use (±infinity times, NaN or infinite
//! prices and volumes) make no candle and stop no poll, on both flavours.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

use crate::admin_support::{admin, csrf_of, page};
use crate::helpers::{TestApp, spawn_app};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON text frame that satisfies `want`, or a panic naming `what` after 10 s.
async fn frame_where(ws: &mut Ws, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("the server closed while waiting for {what}"))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if let tungstenite::Message::Text(text) = frame {
            let v: Value = serde_json::from_str(&text).expect("a JSON frame");
            if want(&v) {
                return v;
            }
        }
    }
}

async fn viewer(app: &TestApp, symbol: &str) -> (Ws, Value) {
    let url = app.ws_url(&format!("symbol={symbol}&interval=1m"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("a viewer");
    let snapshot = frame_where(&mut ws, "the snapshot", |v| v["type"] == "snapshot").await;
    (ws, snapshot)
}

/// No `null` anywhere in a candle list (`[[t, o, h, l, c, v], ..]` or API objects).
fn assert_no_nulls(what: &str, v: &Value) {
    assert!(!v.to_string().contains("null"), "{what}: {v}");
}

/// Another program stores ticks at ±infinity and with NaN or infinite prices and volumes:
/// every chart keeps updating, those ticks make no candle, the admin list names them.
async fn unusable_ticks_leave_every_chart_working(app: &TestApp, flavour: &str) {
    let minute = (chrono::Utc::now().timestamp() / 60 - 5) * 60;
    let at = |s: i64| chrono::DateTime::from_timestamp(minute + s, 0).unwrap();
    let (mut good, _) = viewer(app, "GOOD").await;
    let (mut watched, _) = viewer(app, "INF3").await;
    let mut infinite = 0;
    for time in ["infinity", "-infinity"] {
        let done = sqlx::query("INSERT INTO ticks VALUES ($1::text::timestamptz, 'INF3', 1, 1)")
            .bind(time)
            .execute(&app.pool)
            .await;
        // A hypertable may refuse an infinite time; a plain table takes it.
        assert!(
            done.is_ok() || flavour == "timescaledb",
            "{flavour}: {done:?}"
        );
        infinite += usize::from(done.is_ok());
    }
    for (offset, price, volume) in [
        (1, f64::NAN, 1.0),
        (2, f64::INFINITY, 1.0),
        (3, f64::NEG_INFINITY, 1.0),
        (4, 7.0, f64::NAN),
        (5, 5.0, 2.0),
    ] {
        sqlx::query("INSERT INTO ticks VALUES ($1, 'NAN', $2, $3)")
            .bind(at(offset))
            .bind(price)
            .bind(volume)
            .execute(&app.pool)
            .await
            .expect("another writer's tick");
    }
    // A usable tick of INF3 in the same minute as nothing unusable: the watched viewer gets it.
    sqlx::query("INSERT INTO ticks VALUES ($1, 'INF3', 3, 1), ($1, 'GOOD', 42, 1)")
        .bind(at(10))
        .execute(&app.pool)
        .await
        .unwrap();

    let update = frame_where(&mut good, "GOOD's update", |v| {
        v["type"] == "update" && v["candles"].to_string().contains("42")
    })
    .await;
    assert_no_nulls("GOOD's update", &update);
    let update = frame_where(&mut watched, "INF3's update", |v| v["type"] == "update").await;
    assert_eq!(
        update["candles"],
        json!([[minute, 3.0, 3.0, 3.0, 3.0, 1.0]]),
        "{flavour}"
    );
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200, "{flavour}: ready");

    // New viewers, and the API: the finite tick only.
    let (_, snapshot) = viewer(app, "NAN").await;
    assert_eq!(
        snapshot["candles"],
        json!([[minute, 5.0, 5.0, 5.0, 5.0, 2.0]]),
        "{flavour}: NaN/Infinity ticks make no candle"
    );
    let (_, snapshot) = viewer(app, "INF3").await;
    assert_eq!(
        snapshot["candles"],
        json!([[minute, 3.0, 3.0, 3.0, 3.0, 1.0]])
    );
    for interval in ["1m", "1h"] {
        let candles = app
            .get_json(&format!("/api/candles?symbol=NAN&interval={interval}"))
            .await;
        assert_no_nulls(interval, &candles);
        assert_eq!(
            candles.as_array().map(Vec::len),
            Some(1),
            "{interval}: {candles}"
        );
        assert_eq!(candles[0]["open"], 5.0, "{interval}: {candles}");
    }
    let csv = app
        .get("/api/candles.csv?symbol=NAN&interval=1m")
        .await
        .text()
        .await
        .unwrap();
    assert!(!csv.contains("NaN") && !csv.contains("inf"), "{csv}");

    // The admin list names them, and deletes them.
    let client = admin(app).await;
    let list = page(app, client, "/admin", 200).await;
    assert!(list.contains("price not a finite number"), "{list}");
    assert!(list.contains("volume not a finite number"), "{list}");
    let count = 4 + infinite;
    assert!(
        list.contains(&format!("{count} ticks are stored")),
        "{list}"
    );
    let nan_time = app.psql("SELECT time::text FROM ticks WHERE symbol = 'NAN' AND price = 'NaN'");
    let r = client
        .post(app.url("/admin/ticks/delete-unstorable"))
        .form(&[
            ("csrf_token", csrf_of(&list).as_str()),
            ("stored_time", nan_time.trim()),
            ("symbol", "NAN"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "deleting the NaN tick");
    assert_eq!(
        app.psql("SELECT count(*) FROM ticks WHERE symbol = 'NAN' AND price = 'NaN'")
            .trim(),
        "0"
    );
}

#[actix_web::test]
async fn ticks_at_infinity_or_with_nan_prices_leave_every_chart_working() {
    let app = spawn_app().await;
    unusable_ticks_leave_every_chart_working(&app, "postgresql").await;
}

#[actix_web::test]
async fn on_timescaledb_ticks_at_infinity_or_with_nan_prices_leave_every_chart_working() {
    let Some(server) = crate::timescale::server_url() else {
        return;
    };
    let ts = crate::timescale::TsDatabase::create(&server).await;
    let app = ts.app().await;
    unusable_ticks_leave_every_chart_working(&app, "timescaledb").await;
    ts.drop(Some(app)).await;
}
