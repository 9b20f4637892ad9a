//! The poller under faults: a panicking poll never stops polling, a dead poller stops the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use candlewick::feed::{Faults, Task};
use candlewick::startup::Application;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{
    TOKEN, TestApp, eventually, fresh_database, spawn_app_with_settings, test_settings,
};

const WAIT: Duration = Duration::from_secs(15);

async fn readyz_becomes(app: &TestApp, status: u16) {
    eventually(WAIT, &format!("/readyz to answer {status}"), || async {
        (app.get("/readyz").await.status() == status).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn a_panicking_poll_is_not_ready_and_polling_resumes_once_it_stops_panicking() {
    // Arrange: polls panic while `failing` is set.
    let failing = Arc::new(AtomicBool::new(false));
    let mut settings = test_settings(&[]);
    let flag = failing.clone();
    settings.feed_faults = Faults::new(move |task| {
        if task == Task::Poll && flag.load(Ordering::SeqCst) {
            panic!("injected: a poll panics");
        }
    });
    let (name, url) = fresh_database().await;
    let app = spawn_app_with_settings(name, url, settings).await;
    readyz_becomes(&app, 200).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(app.ws_url("symbol=P/ANIC"))
        .await
        .expect("WebSocket handshake");
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");

    // Act: every poll panics for a while.
    failing.store(true, Ordering::SeqCst);

    // Assert: not ready while no poll succeeds, and viewers are told the data is stale.
    readyz_becomes(&app, 503).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "status", "stale": true})
    );

    // Act: polls stop panicking; a tick is written.
    failing.store(false, Ordering::SeqCst);
    readyz_becomes(&app, 200).await;
    let t = chrono::Utc::now().timestamp() / 60 * 60;
    let time = chrono::DateTime::from_timestamp(t, 0)
        .expect("a time")
        .to_rfc3339();
    let r = app
        .post_ticks_json(&json!({"time": time, "symbol": "P/ANIC", "price": 5.0, "volume": 1.0}))
        .await;
    assert_eq!(r.status(), 201);

    // Assert: polling resumed: the viewer is live again and gets the update.
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "status", "stale": false})
    );
    let update = next_json(&mut ws).await;
    assert_eq!(update["type"], "update", "{update}");
    assert_eq!(update["candles"], json!([[t, 5.0, 5.0, 5.0, 5.0, 1.0]]));
}

#[actix_web::test]
async fn the_server_stops_with_an_error_when_the_poller_itself_dies() {
    // Arrange: the poller's own loop panics once it is asked to poll.
    let mut settings = test_settings(&[]);
    settings.feed_faults = Faults::new(|task| {
        if task == Task::Poller {
            panic!("injected: the poller dies");
        }
    });
    let (_, url) = fresh_database().await;
    let pool = candlewick::db::build_pool(candlewick::db::connect_options(&url).expect("URL"));
    let flavour = candlewick::db::Flavour::detect(&pool)
        .await
        .expect("flavour");
    let app = Application::build_with_pool(&settings, pool, flavour, TOKEN.to_owned().into())
        .await
        .expect("building the app");

    // Act
    let served = tokio::time::timeout(WAIT, app.run_until_stopped()).await;

    // Assert: the server did not go on without its poller.
    let err = served
        .expect("the server stops by itself")
        .expect_err("an error, so the process exits non-zero");
    assert!(err.to_string().contains("poller"), "{err:#}");
}

async fn next_json(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("the connection open")
            .expect("a WebSocket frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}
