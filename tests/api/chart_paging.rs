//! The chart page's join and history in real headless Chromium (harness in browser.rs): a
//! screen-sized snapshot as one gzip binary frame, older pages loaded when dragged back, edits
//! to loaded older bars, and a dropped socket that resumes instead of reloading. The page's
//! WebSockets are watched by a recorder that DevTools installs before the page's own scripts.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::browser::{Browser, SLOW_WAIT, WAIT, post_ticks, rfc3339, within_deadline};
use crate::chart_page::{eval, hover_bar, next_frames, open, seed_minutes, wait_for};
use crate::helpers::{TOKEN, TestApp, spawn_app};

/// The snapshot size the page asks for in the harness's 1280-px window.
const SCREEN_LIMIT: usize = 500;

/// Notes every WebSocket the page opens (its URL and the kind of each frame it receives) in a
/// property of `window`, and keeps the socket so a test can drop it. While
/// `window.__refuseSockets` is set, new sockets are closed while still connecting (and not
/// noted): the page stays away from the server for as long as a test needs.
const RECORDER: &str = r#"
(() => {
  const Native = window.WebSocket;
  const sockets = [];
  Object.defineProperty(window, '__recordedSockets', { value: sockets });
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      if (window.__refuseSockets) return this.close();
      const seen = { url: String(args[0]), frames: [], socket: this };
      sockets.push(seen);
      this.addEventListener('message', (ev) => {
        if (typeof ev.data !== 'string') return seen.frames.push('binary');
        let type = 'unreadable';
        try { type = JSON.parse(ev.data).type; } catch {}
        seen.frames.push(type);
      });
    }
  };
})();
"#;

#[derive(Debug, Deserialize)]
struct Socket {
    url: String,
    /// `binary`, or the `type` of a text frame, in order of arrival.
    frames: Vec<String>,
}

impl Socket {
    fn param(&self, name: &str) -> Option<String> {
        url::Url::parse(&self.url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

async fn recording_browser() -> Browser {
    let browser = Browser::start_with_env(&[]).await;
    browser
        .cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": RECORDER }),
        )
        .await;
    browser
}

async fn sockets(browser: &Browser) -> Vec<Socket> {
    let v = browser
        .run("return window.__recordedSockets.map(({ url, frames }) => ({ url, frames }));")
        .await;
    serde_json::from_value(v).unwrap()
}

/// The candle series as drawn: `(time, close)`, in the series' order.
async fn series(browser: &Browser) -> Vec<(i64, f64)> {
    let v = eval(
        browser,
        "return plots.candles.data().map((b) => [b.time, b.close]);",
    )
    .await;
    serde_json::from_value(v).unwrap()
}

fn times(bars: &[(i64, f64)]) -> Vec<i64> {
    bars.iter().map(|(t, _)| *t).collect()
}

fn starts(minutes: &[DateTime<Utc>]) -> Vec<i64> {
    minutes.iter().map(|m| m.timestamp()).collect()
}

/// Waits until the series holds more than `n` bars, no page is on its way and none was asked
/// for in the two frames after (a drawn page may bring the view near the oldest bar again);
/// returns them.
async fn wait_beyond(browser: &Browser, n: usize) -> Vec<(i64, f64)> {
    wait_for(
        browser,
        WAIT,
        &format!("more than {n} bars and no page on its way"),
        &format!(
            "if (plots.candles.data().length <= {n} || pages.loading()) return null;
             await new Promise((done) =>
                 requestAnimationFrame(() => requestAnimationFrame(done)));
             return !pages.loading();"
        ),
    )
    .await;
    series(browser).await
}

/// The `before` of every history page the page requested, in order.
async fn pages_requested(browser: &Browser) -> Vec<String> {
    let v = browser
        .run(
            "return performance.getEntriesByType('resource')
                .map((e) => new URL(e.name))
                .filter((u) => u.pathname === '/api/candles')
                .map((u) => u.searchParams.get('before'));",
        )
        .await;
    serde_json::from_value(v).unwrap()
}

/// Drags the candle pane `dx` pixels to the right (back in time) with the mouse.
async fn drag(browser: &Browser, dx: f64) {
    let at = eval(
        browser,
        "const r = document.getElementById('chart').getBoundingClientRect();
         return { x: r.left + r.width / 4, y: r.top + chart.paneSize(0).height / 2 };",
    )
    .await;
    let (x, y) = (at["x"].as_f64().unwrap(), at["y"].as_f64().unwrap());
    let step = |x| PointerAction::MoveTo {
        duration: Some(Duration::from_millis(20)),
        x,
        y,
    };
    let mut mouse = MouseActions::new("mouse".into())
        .then(step(x))
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        });
    // Small steps, as a hand moves: the chart starts scrolling from the first move it sees.
    for i in 1..=12 {
        mouse = mouse.then(step(x + dx * f64::from(i) / 12.0));
    }
    let mouse = mouse.then(PointerAction::Up {
        button: MOUSE_BUTTON_LEFT,
    });
    browser
        .client
        .perform_actions(mouse)
        .await
        .expect("dragging the chart");
    browser
        .client
        .release_actions()
        .await
        .expect("releasing the mouse");
}

/// The visible time range once the chart has laid it out: it applies a new range (ours or a
/// prepended page's shift) on a later frame, so a read straight after may see a passing state.
/// Settled is the same range two frames apart.
async fn settled_range(browser: &Browser) -> Value {
    wait_for(
        browser,
        WAIT,
        "the visible range to hold still",
        "const read = () => JSON.stringify(chart.timeScale().getVisibleRange());
         const before = read();
         await new Promise((done) =>
             requestAnimationFrame(() => requestAnimationFrame(done)));
         return read() === before ? chart.timeScale().getVisibleRange() : null;",
    )
    .await
}

/// Puts the view's left edge `from` bars after the oldest loaded one, keeping its width.
async fn show_from(browser: &Browser, from: f64) {
    eval(
        browser,
        &format!(
            "const s = chart.timeScale(); const r = s.getVisibleLogicalRange();
             s.setVisibleLogicalRange({{ from: {from}, to: {from} + (r.to - r.from) }});
             return null;"
        ),
    )
    .await;
}

#[actix_web::test]
async fn the_chart_joins_with_a_gzip_snapshot_of_a_screen_and_dragging_back_loads_all_history() {
    within_deadline(async {
        let app = spawn_app().await;
        let minutes = seed_minutes(&app, 3_000).await;
        let browser = recording_browser().await;
        open(&browser, &app, "/?ind=sma20").await;

        // The join: one socket asking for a screen's worth, compressed; it draws the binary frame.
        let joined = sockets(&browser).await;
        assert_eq!(joined.len(), 1, "{joined:?}");
        let join = &joined[0];
        assert_eq!(join.param("limit").as_deref(), Some("500"), "{}", join.url);
        assert_eq!(
            join.param("format").as_deref(),
            Some("gzip"),
            "{}",
            join.url
        );
        assert_eq!(
            join.param("since"),
            None,
            "a first join has nothing to resume"
        );
        assert_eq!(join.frames.first().map(String::as_str), Some("binary"));
        let first = minutes.len() - SCREEN_LIMIT;
        assert_eq!(times(&series(&browser).await), starts(&minutes[first..]));
        assert!(
            pages_requested(&browser).await.is_empty(),
            "the first screen needs no older page"
        );

        // Dragging back with the mouse: past the oldest snapshot bar, a page is loaded.
        let asked =
            format!("return pages.loading() || plots.candles.data().length > {SCREEN_LIMIT};");
        let mut dragged = 0;
        loop {
            assert!(dragged < 8, "no older page after {dragged} drags");
            drag(&browser, 600.0).await;
            dragged += 1;
            next_frames(&browser).await;
            if eval(&browser, &asked).await == json!(true) {
                break;
            }
        }
        let bars = wait_beyond(&browser, SCREEN_LIMIT).await;
        assert_eq!(
            times(&bars),
            starts(&minutes[first - SCREEN_LIMIT..]),
            "one page of {SCREEN_LIMIT} older bars in front, none twice, none missing"
        );

        // A page arriving does not move the view: the same bars stay on screen.
        show_from(&browser, 20.0).await;
        let before = settled_range(&browser).await;
        let bars = wait_beyond(&browser, 2 * SCREEN_LIMIT).await;
        assert_eq!(bars.len(), 3 * SCREEN_LIMIT);
        let after = settled_range(&browser).await;
        assert_eq!(
            after, before,
            "the view kept its bars while a page was prepended"
        );

        // Keep going back: every stored bar, once, in order, then no more requests.
        while series(&browser).await.len() < minutes.len() {
            let n = series(&browser).await.len();
            show_from(&browser, -5.0).await;
            wait_beyond(&browser, n).await;
        }
        let bars = series(&browser).await;
        assert_eq!(times(&bars), starts(&minutes), "all of history, seamless");
        let lengths = eval(
            &browser,
            "return [plots.studies()[0].series.data().length,
                     chart.panes()[1].getSeries()[0].data().length];",
        )
        .await;
        assert_eq!(
            lengths,
            // The SMA has a value from its 20th bar on.
            json!([minutes.len() - 19, minutes.len()]),
            "the SMA and the volume cover the older bars too"
        );
        show_from(&browser, -50.0).await;
        wait_for(
            &browser,
            WAIT,
            "the request that finds nothing older",
            "return pages.complete();",
        )
        .await;
        // Further back still: nothing is asked (a request would be on its way at once).
        show_from(&browser, -80.0).await;
        next_frames(&browser).await;
        assert_eq!(
            eval(&browser, "return pages.loading();").await,
            json!(false),
            "no request after the end"
        );
        let befores = pages_requested(&browser).await;
        let expected: Vec<String> = (0..6)
            .map(|page| minutes[first - page * SCREEN_LIMIT].timestamp().to_string())
            .collect();
        assert_eq!(
            befores, expected,
            "one request per page, each before the oldest loaded bar; none after the end"
        );

        // The legend reads the oldest bar, older than anything the snapshot had (`hover_bar`
        // waits until it shows that bar).
        show_from(&browser, 0.0).await;
        hover_bar(&browser, minutes[3]).await;
        browser.assert_no_console_errors(|_| false).await;
        browser.close().await;
    })
    .await;
}

async fn edit(app: &TestApp, method: reqwest::Method, tick: DateTime<Utc>, price: f64) {
    let url = app.url(&format!(
        "/api/ticks?time={}&symbol=BTC%2FUSD",
        rfc3339(tick)
    ));
    let r = app
        .client
        .request(method.clone(), url)
        .bearer_auth(TOKEN)
        .json(&json!({ "price": price, "volume": 0.5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{method} {tick}");
}

#[actix_web::test]
async fn api_edits_of_loaded_bars_older_than_the_snapshot_reach_the_chart() {
    within_deadline(async {
        let app = spawn_app().await;
        let minutes = seed_minutes(&app, 800).await;
        let browser = recording_browser().await;
        open(&browser, &app, "/").await;
        show_from(&browser, -5.0).await;
        let bars = wait_beyond(&browser, SCREEN_LIMIT).await;
        assert_eq!(times(&bars), starts(&minutes));

        // A bar 700 minutes back: its closing trade repriced, then another bar's two deleted.
        let repriced = minutes[100];
        edit(
            &app,
            reqwest::Method::PUT,
            repriced + TimeDelta::seconds(45),
            59_111.5,
        )
        .await;
        let t = repriced.timestamp();
        wait_for(
            &browser,
            WAIT,
            "the repriced close of the old bar",
            &format!("return plots.candles.data().find((b) => b.time === {t})?.close === 59111.5;"),
        )
        .await;
        let gone = minutes[150];
        for at in [5, 45] {
            edit(
                &app,
                reqwest::Method::DELETE,
                gone + TimeDelta::seconds(at),
                0.0,
            )
            .await;
        }
        let t = gone.timestamp();
        wait_for(
            &browser,
            WAIT,
            "the old bar without ticks gone",
            &format!("return !plots.candles.data().some((b) => b.time === {t});"),
        )
        .await;
        let bars = series(&browser).await;
        assert_eq!(bars.len(), minutes.len() - 1);
        assert!(times(&bars).is_sorted(), "still in order");
        browser.assert_no_console_errors(|_| false).await;
        browser.close().await;
    })
    .await;
}

#[actix_web::test]
async fn a_dropped_socket_resumes_where_it_left_off_without_a_new_snapshot() {
    within_deadline(async {
        let app = spawn_app().await;
        let minutes = seed_minutes(&app, 30).await;
        let browser = recording_browser().await;
        open(&browser, &app, "/").await;
        let now = *minutes.last().unwrap();
        post_ticks(
            &app,
            &[(now + TimeDelta::milliseconds(400), 61_400.25, 0.1)],
        )
        .await;
        browser
            .wait_chart(WAIT, "the first update", |s| {
                s.price.as_deref() == Some("61,400.25")
            })
            .await;

        // A viewer that stays connected, to know when the next tick has gone out.
        let (mut watcher, _) =
            tokio_tungstenite::connect_async(app.ws_url("symbol=BTC/USD&interval=1m"))
                .await
                .expect("WebSocket");
        // Drop the socket from the page's side and keep it away while a tick is written and
        // broadcast, then let it back.
        browser
            .run(
                "window.__refuseSockets = true; window.__recordedSockets[0].socket.close();
                 return null;",
            )
            .await;
        post_ticks(
            &app,
            &[(now + TimeDelta::milliseconds(500), 61_555.75, 0.1)],
        )
        .await;
        let broadcast = tokio::time::timeout(SLOW_WAIT, async {
            use futures_util::StreamExt;
            while let Some(Ok(frame)) = watcher.next().await {
                if frame.to_text().is_ok_and(|t| t.contains("61555.75")) {
                    return;
                }
            }
            panic!("the watching socket closed before the tick went out");
        })
        .await;
        assert!(
            broadcast.is_ok(),
            "the tick was not broadcast within {SLOW_WAIT:?}"
        );
        assert_eq!(
            browser.chart().await.price.as_deref(),
            Some("61,400.25"),
            "the page was away when the tick went out"
        );
        browser
            .run("window.__refuseSockets = false; return null;")
            .await;
        browser
            .wait_chart(SLOW_WAIT, "the tick written during the drop, live", |s| {
                s.connection.as_deref() == Some("live") && s.price.as_deref() == Some("61,555.75")
            })
            .await;
        let seen = sockets(&browser).await;
        assert_eq!(seen.len(), 2, "one reconnect: {seen:?}");
        assert!(
            seen[0].frames.len() >= 2,
            "a snapshot and an update first: {seen:?}"
        );
        let back = &seen[1];
        assert!(back.param("since").is_some(), "{}", back.url);
        assert!(back.param("epoch").is_some(), "{}", back.url);
        assert_eq!(
            back.frames.get(..2),
            Some(&["resume".to_owned(), "update".to_owned()][..]),
            "a resume, then the update missed: {back:?}"
        );
        assert!(
            !back.frames.iter().any(|f| f == "binary" || f == "snapshot"),
            "no snapshot after a resume: {back:?}"
        );
        assert_eq!(
            times(&series(&browser).await),
            starts(&minutes),
            "the bars on screen are kept"
        );
        // The browser logs each attempt closed while connecting; nothing else.
        browser
            .assert_no_console_errors(|m| m.contains("closed before the connection is established"))
            .await;
        browser.close().await;
    })
    .await;
}
