//! The live feed: snapshots at every interval from the database, updates of any age, snapshot
//! storms, and a poller under faults (a panicking poll never stops polling, a dead one stops
//! the server).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    let app = Application::build(&settings, pool, flavour, TOKEN.to_owned().into())
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

async fn next_json(ws: &mut Ws) -> Value {
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

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const DAY: i64 = 86_400;

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .expect("a time")
        .to_rfc3339()
}

/// One tick at noon of each of the last `days` days (today's included), price = day number.
async fn one_tick_a_day(app: &TestApp, symbol: &str, days: i64) -> i64 {
    let today = chrono::Utc::now().timestamp().div_euclid(DAY) * DAY;
    let ticks: Vec<Value> = (0..days)
        .map(|i| {
            let day = today - (days - 1 - i) * DAY;
            json!({"time": rfc3339(day + DAY / 2), "symbol": symbol, "price": (i + 1) as f64, "volume": 1.0})
        })
        .collect();
    let r = app.post_ticks_json(&json!(ticks)).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    today
}

#[actix_web::test]
async fn a_1d_snapshot_holds_limit_bars_and_an_edit_400_days_old_reaches_its_day_on_postgresql() {
    let app = crate::helpers::spawn_app().await;
    a_1d_snapshot_holds_limit_bars_and_an_edit_400_days_old_reaches_its_day(&app).await;
}

#[actix_web::test]
async fn a_1d_snapshot_holds_limit_bars_and_an_edit_400_days_old_reaches_its_day_on_timescaledb() {
    let Some(server) = crate::timescale::server_url() else {
        return;
    };
    let ts = crate::timescale::TsDatabase::create(&server).await;
    let app = ts.app().await;
    a_1d_snapshot_holds_limit_bars_and_an_edit_400_days_old_reaches_its_day(&app).await;
    ts.drop(Some(app)).await;
}

#[actix_web::test]
async fn a_panicking_refresh_is_started_again_and_edits_to_materialized_days_still_reach_viewers() {
    // Arrange: refreshes of the aggregate panic while `failing` is set; ten days of history,
    // materialized, so that an edit to an old day shows only after a refresh.
    let Some(server) = crate::timescale::server_url() else {
        return;
    };
    let failing = Arc::new(AtomicBool::new(true));
    let panics = Arc::new(AtomicUsize::new(0));
    let mut settings = test_settings(&[]);
    let (flag, count) = (failing.clone(), panics.clone());
    settings.feed_faults = Faults::new(move |task| {
        if task == Task::Refresh && flag.load(Ordering::SeqCst) {
            count.fetch_add(1, Ordering::SeqCst);
            panic!("injected: a refresh panics");
        }
    });
    let ts = crate::timescale::TsDatabase::create(&server).await;
    let app = ts.app_with(settings).await;
    let today = one_tick_a_day(&app, "DAYS", 10).await;
    crate::helpers::refresh_aggregate(
        &app.pool,
        "one_min_candle",
        "NULL",
        "now() - interval '1 day'",
    )
    .await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(app.ws_url("symbol=DAYS&interval=1d&limit=500"))
            .await
            .expect("WebSocket handshake");
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");

    // Act: an old tick is corrected while refreshes panic; then they stop panicking.
    let old = today - 3 * DAY;
    let r = app
        .client
        .put(app.url(&format!(
            "/api/ticks?time={}&symbol=DAYS",
            urlencode(&rfc3339(old + DAY / 2))
        )))
        .bearer_auth(TOKEN)
        .json(&json!({"price": 7.5, "volume": 2.0}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 200);
    let before = panics.load(Ordering::SeqCst);
    eventually(WAIT, "two more refreshes to panic", || async {
        (panics.load(Ordering::SeqCst) >= before + 2).then_some(())
    })
    .await;
    failing.store(false, Ordering::SeqCst);

    // Assert: refreshing resumed, and the edit reached its day's candle.
    let update = next_json(&mut ws).await;
    assert_eq!(
        update["candles"],
        json!([[old, 7.5, 7.5, 7.5, 7.5, 2.0]]),
        "{update}"
    );
    ts.drop(Some(app)).await;
}

async fn a_1d_snapshot_holds_limit_bars_and_an_edit_400_days_old_reaches_its_day(app: &TestApp) {
    // Arrange: 600 days of history, far more than the live window.
    let today = one_tick_a_day(app, "DAYS", 600).await;

    // Act
    let (mut ws, _) =
        tokio_tungstenite::connect_async(app.ws_url("symbol=DAYS&interval=1d&limit=500"))
            .await
            .expect("WebSocket handshake");
    let snapshot = next_json(&mut ws).await;

    // Assert: the newest 500 days, ascending.
    assert_eq!(snapshot["type"], "snapshot");
    let candles = snapshot["candles"].as_array().expect("candles");
    assert_eq!(
        candles.len(),
        500,
        "a 1d snapshot with limit=500 holds 500 bars"
    );
    assert_eq!(candles[0][0], today - 499 * DAY);
    assert_eq!(
        candles[499],
        json!([today, 600.0, 600.0, 600.0, 600.0, 1.0])
    );

    // Act: a tick 400 days old is corrected.
    let old = today - 400 * DAY;
    let r = app
        .client
        .put(app.url(&format!(
            "/api/ticks?time={}&symbol=DAYS",
            urlencode(&rfc3339(old + DAY / 2))
        )))
        .bearer_auth(TOKEN)
        .json(&json!({"price": 7.5, "volume": 2.0}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());

    // Assert: its day's candle arrives as an update.
    let update = next_json(&mut ws).await;
    assert_eq!(update["type"], "update", "{update}");
    assert_eq!(update["candles"], json!([[old, 7.5, 7.5, 7.5, 7.5, 2.0]]));
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// Storm sockets, and how long they keep asking (the storm: 20 sockets for 8 s).
const STORM_SOCKETS: usize = 20;
const STORM: Duration = Duration::from_secs(6);
/// Each storm socket asks for a snapshot with a new limit this often (within the per-viewer
/// allowance of two a second).
const STORM_EVERY: Duration = Duration::from_millis(500);

#[actix_web::test]
async fn a_snapshot_storm_never_holds_up_another_viewers_updates() {
    // Arrange: a symbol with 9,000 bars whose uncached gzip snapshots cost real work, and a
    // viewer of another symbol that a writer changes many times per poll.
    // The default poll: two of them leave room for a busy test machine, while a storm that
    // holds up the poller (as snapshots built on it did) keeps the viewer waiting for seconds.
    let poll = Duration::from_secs(1);
    let app = crate::helpers::spawn_app_with(&["--poll-interval", "1s"]).await;
    let start = chrono::Utc::now().timestamp() / 60 * 60 - 9_000 * 60;
    let ticks: Vec<Value> = (0..9_000)
        .map(|i| {
            json!({"time": rfc3339(start + i * 60), "symbol": "STORM", "price": 100.0 + (i % 97) as f64, "volume": 1.0})
        })
        .collect();
    assert_eq!(app.post_ticks_json(&json!(ticks)).await.status(), 201);
    let (mut calm, _) = tokio_tungstenite::connect_async(app.ws_url("symbol=CALM"))
        .await
        .expect("WebSocket handshake");
    assert_eq!(next_json(&mut calm).await["type"], "snapshot");
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (client, url, writing) = (app.client.clone(), app.url("/api/ticks"), writing.clone());
        tokio::spawn(async move {
            // When each write was acknowledged, by its price (1, 2, 3, …).
            let mut acks = Vec::new();
            while writing.load(Ordering::SeqCst) {
                let n = acks.len() + 1;
                let time = chrono::Utc::now().to_rfc3339();
                let tick =
                    json!({"time": time, "symbol": "CALM", "price": n as f64, "volume": 1.0});
                let sent = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .json(&tick)
                    .send()
                    .await;
                if sent.is_ok_and(|r| r.status() == 201) {
                    acks.push(tokio::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            acks
        })
    };
    // Updates flow before the storm.
    assert_eq!(next_json(&mut calm).await["type"], "update");

    // Act: the storm (its clients on a thread of their own, so that their work does not slow
    // this test's thread, which the server's poller shares), while the calm viewer records
    // when it learns of each write.
    let url = app.ws_url("symbol=STORM&format=gzip&limit=1");
    let storm = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime for the storm");
        runtime.block_on(async {
            let sockets: Vec<_> = (0..STORM_SOCKETS)
                .map(|i| tokio::spawn(storm_socket(url.clone(), i)))
                .collect();
            let mut snapshots = 0;
            for socket in sockets {
                snapshots += socket.await.expect("a storm socket");
            }
            snapshots
        })
    });
    let from = tokio::time::Instant::now();
    let until = from + STORM;
    // (highest price seen, when)
    let mut seen: Vec<(usize, tokio::time::Instant)> = Vec::new();
    while let Ok(frame) = tokio::time::timeout_at(until, next_json(&mut calm)).await {
        let newest = frame["candles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c[4].as_f64())
            .fold(0.0, f64::max);
        seen.push((newest as usize, tokio::time::Instant::now()));
    }
    writing.store(false, Ordering::SeqCst);
    let acks = writer.await.expect("the writer");
    let snapshots = tokio::task::spawn_blocking(move || storm.join().expect("the storm"))
        .await
        .expect("the storm thread");

    // Assert: the storm was real (more uncached snapshots were built than there are storm
    // sockets; how many more depends on how busy the machine is, since building is bounded
    // server-wide), and
    // every write acknowledged during it reached the calm viewer within two polls.
    assert!(
        snapshots > STORM_SOCKETS,
        "the storm sockets got {snapshots} snapshots"
    );
    let latencies: Vec<Duration> = acks
        .iter()
        .enumerate()
        .filter(|(_, at)| **at >= from && **at + 2 * poll <= until)
        .map(|(i, at)| {
            let shown = seen.iter().find(|(n, _)| *n > i).map_or(until, |(_, t)| *t);
            shown.saturating_duration_since(*at)
        })
        .collect();
    let longest = latencies.iter().max().copied().unwrap_or_default();
    let polls = longest.as_secs_f64() / poll.as_secs_f64();
    eprintln!(
        "storm: {snapshots} snapshots; calm viewer: {} updates, {} writes, longest wait {longest:?} ({polls:.1} polls)",
        seen.len(),
        latencies.len()
    );
    assert!(latencies.len() > 10, "the writer kept writing");
    assert!(
        polls <= 2.0,
        "a write reached the viewer {longest:?} ({polls:.1} polls) after it was acknowledged"
    );
}

/// One storm socket: a subscribe with a new limit every [`STORM_EVERY`] for [`STORM`]; returns
/// the snapshots it got.
async fn storm_socket(url: String, i: usize) -> usize {
    use futures_util::SinkExt;
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("WebSocket handshake");
    let until = tokio::time::Instant::now() + STORM;
    let mut snapshots = 0;
    let mut limit = 8_000 + i * 50;
    while tokio::time::Instant::now() < until {
        limit += 1;
        let ask = json!({"type": "subscribe", "symbol": "STORM", "limit": limit}).to_string();
        if ws.send(Message::Text(ask.into())).await.is_err() {
            break;
        }
        let next = tokio::time::Instant::now() + STORM_EVERY;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(next, ws.next()).await {
            if matches!(frame, Message::Binary(_)) {
                snapshots += 1;
            }
        }
    }
    snapshots
}

/// An import of more minutes than one poll reads (see `journal::MAX_CHANGES_PER_POLL`) while a
/// chart is open: the poller reloads the bars it holds, the viewer gets the imported days as an
/// update and the feed stays live.
#[actix_web::test]
async fn after_more_changed_minutes_than_a_poll_reads_a_viewer_gets_the_new_days() {
    // Arrange: a 1d viewer of three days.
    let app = crate::helpers::spawn_app().await;
    let today = one_tick_a_day(&app, "BIG", 3).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(app.ws_url("symbol=BIG&interval=1d&limit=500"))
            .await
            .expect("WebSocket handshake");
    let snapshot = next_json(&mut ws).await;
    assert_eq!(snapshot["candles"].as_array().map(Vec::len), Some(3));

    // Act: one statement writes a minute more than a poll reads, 200 days back and on.
    let minutes = candlewick::db::journal::MAX_CHANGES_PER_POLL + 1;
    let first = today - 200 * DAY;
    sqlx::query(
        "INSERT INTO ticks (time, symbol, price, volume) \
         SELECT to_timestamp($1) + m * interval '1 minute', 'BIG', 2, 1 \
         FROM generate_series(0, $2 - 1) AS m",
    )
    .bind(first as f64)
    .bind(minutes)
    .execute(&app.pool)
    .await
    .expect("INSERT … SELECT");

    // Assert: the first imported day arrives whole, with the others.
    let days = minutes.div_euclid(1_440);
    let mut got: Vec<Value> = Vec::new();
    while got.len() < days as usize {
        let msg = next_json(&mut ws).await;
        if msg["type"] == "update" {
            got.extend(msg["candles"].as_array().cloned().unwrap_or_default());
        }
    }
    let first_day = got
        .iter()
        .find(|c| c[0] == first)
        .unwrap_or_else(|| panic!("no bar for the first imported day in {} bars", got.len()));
    assert_eq!(*first_day, json!([first, 2.0, 2.0, 2.0, 2.0, 1_440.0]));
    readyz_becomes(&app, 200).await;
}
