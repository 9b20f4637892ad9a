//! The chart page's trader features in real headless Chromium (the harness is in browser.rs):
//! the crosshair legend, indicators and panes, theme, correction markers, export, time zones
//! and keyboard shortcuts. Scripts reach the page's chart through its own module
//! (`import('/static/chart.js')` returns the instance the page runs).
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use fantoccini::Locator;
use fantoccini::actions::{InputSource, KeyAction, KeyActions, MouseActions, PointerAction};
use fantoccini::key::Key;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::browser::{Browser, SLOW_WAIT, WAIT, post_ticks, rfc3339, within_deadline};
use crate::helpers::{TOKEN, TestApp, eventually, eventually_ok, spawn_app};

// ---- data ---------------------------------------------------------------------------------

/// `n` one-minute BTC/USD candles ending with the current minute, loaded as one batch (history,
/// not corrections): a wave with a drift, two ticks a minute (at :05 and :45, the current
/// minute's at its first 200 ms). Returns the minutes, oldest first.
pub(crate) async fn seed_minutes(app: &TestApp, n: i64) -> Vec<DateTime<Utc>> {
    let now = Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap();
    let minutes: Vec<DateTime<Utc>> = (0..n)
        .map(|i| now - TimeDelta::minutes(n - 1 - i))
        .collect();
    let mut ticks = Vec::new();
    for (i, m) in minutes.iter().enumerate() {
        let x = i as f64;
        let base = 61_000.0 + 60.0 * (x * 0.45).sin() + 4.0 * x;
        let (first, second) = if *m == now { (0, 200) } else { (5_000, 45_000) };
        let open = (base * 100.0).round() / 100.0;
        let close = ((base + 25.0 * (x * 1.3).cos()) * 100.0).round() / 100.0;
        ticks.push((*m + TimeDelta::milliseconds(first), open, 0.25 + x / 100.0));
        ticks.push((*m + TimeDelta::milliseconds(second), close, 0.5));
    }
    // The API takes up to 10,000 ticks a request; these are far fewer.
    post_ticks(app, &ticks).await;
    minutes
}

/// One hourly BTC/USD tick (at :30) for each of the last `hours` hours, as one batch.
async fn seed_hours(app: &TestApp, hours: i64) -> Vec<DateTime<Utc>> {
    let now = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let starts: Vec<DateTime<Utc>> = (0..hours)
        .map(|i| now - TimeDelta::hours(hours - 1 - i))
        .collect();
    let ticks: Vec<(DateTime<Utc>, f64, f64)> = starts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let at = (*h + TimeDelta::minutes(30)).min(Utc::now());
            (at, 61_000.0 + 200.0 * (i as f64 * 0.3).sin(), 1.0)
        })
        .collect();
    post_ticks(app, &ticks).await;
    starts
}

/// One candle of `/api/candles`, by its start.
async fn api_candle(app: &TestApp, interval: &str, t: DateTime<Utc>, seconds: i64) -> Value {
    let path = format!(
        "/api/candles?symbol=BTC%2FUSD&interval={interval}&from={}&to={}",
        rfc3339(t),
        rfc3339(t + TimeDelta::seconds(seconds))
    );
    let rows = app.get_json(&path).await;
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{path}: {rows}");
    rows[0].clone()
}

/// `61,234.50` → 61234.5 (the page's locale is pinned to en-US).
fn number(text: &str) -> f64 {
    text.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

// ---- the page -----------------------------------------------------------------------------

/// Runs `body` in the page as an async function with `chart`, `plots`, `corrections` and
/// `pages` (older bars) in scope (the page's own instances) and returns its result.
pub(crate) async fn eval(browser: &Browser, body: &str) -> Value {
    let script = format!(
        "return (async () => {{
            const {{ chart, plots, corrections, pages }} = await import('/static/chart.js'); {body}
        }})();"
    );
    browser.run(&script).await
}

/// Polls `body` (as in [`eval`]) until it returns something other than null or false.
pub(crate) async fn wait_for(
    browser: &Browser,
    timeout: Duration,
    what: &str,
    body: &str,
) -> Value {
    eventually(
        timeout,
        &format!("the chart page to show {what}"),
        || async {
            let v = eval(browser, body).await;
            (!v.is_null() && v != Value::Bool(false)).then_some(v)
        },
    )
    .await
}

/// Opens `path` and waits until the chart is live with a price.
pub(crate) async fn open(browser: &Browser, app: &TestApp, path: &str) {
    browser.goto(&app.url(path)).await;
    browser
        .wait_chart(SLOW_WAIT, "a live chart with a price", |s| {
            s.connection.as_deref() == Some("live") && s.price.as_deref().is_some_and(|p| p != "—")
        })
        .await;
}

async fn click(browser: &Browser, css: &str) {
    browser
        .client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

/// Opens the `<details>` menu `id` unless it is open.
async fn open_menu(browser: &Browser, id: &str) {
    let open = browser
        .run(&format!("return document.getElementById('{id}').open;"))
        .await;
    if open != Value::Bool(true) {
        click(browser, &format!("#{id} > summary")).await;
    }
}

pub(crate) async fn move_pointer(browser: &Browser, x: f64, y: f64) {
    let mouse = MouseActions::new("mouse".into()).then(PointerAction::MoveTo {
        duration: Some(Duration::from_millis(20)),
        x: x.round(),
        y: y.round(),
    });
    browser
        .client
        .perform_actions(mouse)
        .await
        .expect("moving the pointer");
}

/// Waits until the page has drawn two more frames: what it does on a frame after an event
/// (the crosshair's handlers, a newly set range) is done by then.
pub(crate) async fn next_frames(browser: &Browser) {
    browser
        .run(
            "return new Promise((done) =>
                requestAnimationFrame(() => requestAnimationFrame(() => done(null))));",
        )
        .await;
}

async fn press(browser: &Browser, key: char) {
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: key })
        .then(KeyAction::Up { value: key });
    browser
        .client
        .perform_actions(keys)
        .await
        .expect("pressing a key");
}

/// Puts the pointer over bar `t`, halfway down the candle pane, until the legend shows that
/// bar; returns the legend. A new minute's bar (or a page of older ones) scrolls the chart under
/// a still pointer, so each try finds the bar again and moves onto it (a pixel aside every
/// other time, so the chart sees a move).
pub(crate) async fn hover_bar(browser: &Browser, t: DateTime<Utc>) -> Legend {
    let find = format!(
        "const x = chart.timeScale().timeToCoordinate({});
         if (x === null) return null;
         const r = document.getElementById('chart').getBoundingClientRect();
         return {{ x: r.left + x, y: r.top + chart.paneSize(0).height / 2 }};",
        t.timestamp()
    );
    let mut tries = 0u32;
    eventually_ok(
        WAIT,
        &format!("the legend to show the hovered bar {t}"),
        || {
            tries += 1;
            let (find, nudge) = (&find, f64::from(tries % 2));
            async move {
                let at = eval(browser, find).await;
                let (Some(x), Some(y)) = (at["x"].as_f64(), at["y"].as_f64()) else {
                    return Err(format!("bar {t} is not on the time axis"));
                };
                move_pointer(browser, x + nudge, y).await;
                next_frames(browser).await;
                let shown = legend(browser).await;
                if shown.time == Some(t.timestamp()) {
                    Ok(shown)
                } else {
                    Err(format!(
                        "with the pointer at {x:.0},{y:.0} the legend shows {shown:?}"
                    ))
                }
            }
        },
    )
    .await
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Legend {
    pub(crate) time: Option<i64>,
    text: String,
    open: String,
    high: String,
    low: String,
    close: String,
    volume: String,
    corrected: bool,
    studies: BTreeMap<String, String>,
}

const READ_LEGEND: &str = r#"
    const legend = document.getElementById('legend');
    const f = (name) => legend.querySelector(`[data-field="${name}"]`);
    return {
        time: legend.dataset.time ? Number(legend.dataset.time) : null,
        text: f('time').textContent,
        open: f('open').textContent, high: f('high').textContent, low: f('low').textContent,
        close: f('close').textContent, volume: f('volume').textContent,
        corrected: !f('corrected').hidden,
        studies: Object.fromEntries([...legend.querySelectorAll('[data-indicator]')]
            .map((s) => [s.dataset.indicator, s.querySelector('b').textContent])),
    };
"#;

pub(crate) async fn legend(browser: &Browser) -> Legend {
    serde_json::from_value(browser.run(READ_LEGEND).await).expect("the legend")
}

/// Polls the legend until `done` holds.
async fn wait_legend(browser: &Browser, what: &str, done: impl Fn(&Legend) -> bool) -> Legend {
    eventually_ok(WAIT, &format!("the legend to show {what}"), || async {
        let l = legend(browser).await;
        if done(&l) { Ok(l) } else { Err(l) }
    })
    .await
}

/// How many series each pane holds, top to bottom, and which pane each indicator is in.
async fn panes(browser: &Browser) -> (Vec<usize>, BTreeMap<String, usize>) {
    let v = eval(
        browser,
        "return [chart.panes().map((p) => p.getSeries().length),
                 Object.fromEntries(plots.studies().map((s) => [s.id, s.pane]))];",
    )
    .await;
    serde_json::from_value(v).expect("panes")
}

/// Waits until a file ending in `ext` has been downloaded completely; returns its path.
async fn downloaded(dir: &Path, ext: &str) -> PathBuf {
    let what = format!("a .{ext} file downloaded into {}", dir.display());
    eventually(SLOW_WAIT, &what, || async {
        std::fs::read_dir(dir).ok().and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == ext))
        })
    })
    .await
}

/// Width and height of a PNG, from its IHDR chunk; panics when `bytes` is not a PNG.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR",
        "not a PNG ({} bytes)",
        bytes.len()
    );
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

// ---- the tests ----------------------------------------------------------------------------

#[actix_web::test]
async fn hovering_two_bars_shows_each_ones_candle_in_the_legend() {
    within_deadline(async {
        let app = spawn_app().await;
        let minutes = seed_minutes(&app, 12).await;
        let browser = Browser::start_with_env(&[]).await;
        open(&browser, &app, "/").await;

        // Off the chart, the legend shows the newest candle.
        let newest = minutes.last().unwrap().timestamp();
        wait_legend(&browser, "the newest candle", |l| l.time == Some(newest)).await;

        let mut seen = Vec::new();
        for t in [minutes[3], minutes[8]] {
            let shown = hover_bar(&browser, t).await;
            let api = api_candle(&app, "1m", t, 60).await;
            for (name, text) in [
                ("open", &shown.open),
                ("high", &shown.high),
                ("low", &shown.low),
                ("close", &shown.close),
            ] {
                let want = api[name].as_f64().unwrap();
                assert!(
                    (number(text) - want).abs() < 0.005 + 1e-9,
                    "{name} of {t}: legend {text}, /api/candles {want}"
                );
            }
            let volume = api["volume"].as_f64().unwrap();
            assert!(
                (number(&shown.volume) - volume).abs() < 0.00005 + 1e-12,
                "volume of {t}: legend {}, /api/candles {volume}",
                shown.volume
            );
            assert!(
                shown.text.contains(&t.format("%H:%M").to_string()),
                "the legend's time {:?} is {t} in UTC",
                shown.text
            );
            seen.push(shown);
        }
        assert_ne!(seen[0], seen[1], "two bars, two legends");
        browser.assert_no_console_errors(|_| false).await;
        browser.close().await;
    })
    .await;
}

#[actix_web::test]
async fn each_indicator_adds_its_series_survives_a_reload_and_follows_new_and_corrected_bars() {
    within_deadline(async {
        let app = spawn_app().await;
        let minutes = seed_minutes(&app, 60).await;
        let browser = Browser::start_with_env(&[]).await;
        open(&browser, &app, "/").await;
        assert_eq!(
            panes(&browser).await,
            (vec![1, 1], BTreeMap::new()),
            "candles and volume"
        );

        open_menu(&browser, "indicators-menu").await;
        let indicators: [(&str, &[&str]); 5] = [
            ("ind-sma", &["sma"]),
            ("ind-ema", &["ema"]),
            ("ind-vwap", &["vwap"]),
            ("ind-bb", &["bb-upper", "bb-middle", "bb-lower"]),
            ("ind-rsi", &["rsi"]),
        ];
        for (checkbox, ids) in indicators {
            click(&browser, &format!("#{checkbox}")).await;
            eventually_ok(WAIT, &format!("{checkbox} to add {ids:?}"), || async {
                let (_, shown) = panes(&browser).await;
                if ids.iter().all(|id| shown.contains_key(*id)) { Ok(()) } else { Err(shown) }
            })
            .await;
        }
        let want = (
            vec![7, 1, 1],
            BTreeMap::from(
                [
                    ("sma", 0),
                    ("ema", 0),
                    ("vwap", 0),
                    ("bb-upper", 0),
                    ("bb-middle", 0),
                    ("bb-lower", 0),
                    ("rsi", 2),
                ]
                .map(|(id, pane)| (id.to_owned(), pane)),
            ),
        );
        assert_eq!(panes(&browser).await, want, "RSI in a pane of its own");
        let ind = browser
            .run("return new URL(location.href).searchParams.get('ind');")
            .await;
        assert_eq!(ind, json!("sma20,ema50,vwap,bb,rsi"));

        // The link alone brings them back; so does a plain visit (the stored view).
        browser.client.refresh().await.expect("reloading");
        browser
            .wait_chart(SLOW_WAIT, "live again", |s| {
                s.connection.as_deref() == Some("live")
            })
            .await;
        assert_eq!(panes(&browser).await, want, "after a reload");
        open(&browser, &app, "/").await;
        assert_eq!(panes(&browser).await, want, "on a plain visit");

        // The legend (pointer off the chart) shows each indicator's value at the newest bar.
        let before = wait_legend(&browser, "every indicator's value", |l| {
            l.studies.len() == 7 && l.studies.values().all(|v| v != "—")
        })
        .await;
        let sma = sma20(&app).await;
        assert!(
            (number(&before.studies["sma"]) - sma).abs() < 0.005 + 1e-9,
            "SMA 20 on the page {}, from /api/candles {sma}",
            before.studies["sma"]
        );

        // A new last trade in the newest bar, far from the others: every indicator moves.
        let last = *minutes.last().unwrap();
        post_ticks(
            &app,
            &[(last + TimeDelta::milliseconds(300), 61_900.0, 3.0)],
        )
        .await;
        let after = wait_legend(&browser, "new indicator values", |l| {
            l.close == "61,900.00"
                && l.studies
                    .iter()
                    .all(|(k, v)| before.studies.get(k) != Some(v))
        })
        .await;
        println!(
            "browser: indicators {:?} → {:?}",
            before.studies, after.studies
        );
        // The lines drawn end where the legend says.
        let drawn: BTreeMap<String, f64> = serde_json::from_value(
            eval(
                &browser,
                "return Object.fromEntries(plots.studies().map((s) => [s.id, s.series.data().at(-1).value]));",
            )
            .await,
        )
        .unwrap();
        assert_eq!(drawn.len(), 7, "{drawn:?}");
        for (id, value) in &drawn {
            assert!(
                (value - number(&after.studies[id])).abs() < 0.005 + 1e-9,
                "{id}: drawn {value}, legend {}",
                after.studies[id]
            );
        }

        // A correction of an older bar inside the SMA's window: the indicators follow it too.
        let older = minutes[minutes.len() - 5] + TimeDelta::seconds(45);
        let r = app
            .client
            .put(app.url(&format!(
                "/api/ticks?time={}&symbol=BTC%2FUSD",
                rfc3339(older)
            )))
            .bearer_auth(TOKEN)
            .json(&json!({ "price": 60_000.0, "volume": 0.5 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let sma = sma20(&app).await;
        wait_legend(&browser, "the SMA after the correction", |l| {
            (number(&l.studies["sma"]) - sma).abs() < 0.005 + 1e-9
        })
        .await;
        browser.assert_no_console_errors(|_| false).await;
        browser.close().await;
    })
    .await;
}

/// The mean close of the newest 20 one-minute candles, from `/api/candles`.
async fn sma20(app: &TestApp) -> f64 {
    let closes: Vec<f64> = app
        .get_json("/api/candles?symbol=BTC%2FUSD&interval=1m&limit=20")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["close"].as_f64().unwrap())
        .collect();
    assert_eq!(closes.len(), 20);
    closes.iter().sum::<f64>() / 20.0
}

const READ_THEME: &str = r#"
    const css = getComputedStyle(document.documentElement);
    const shot = chart.takeScreenshot(false, false);
    const data = shot.getContext('2d').getImageData(0, 0, shot.width, shot.height).data;
    // The colour most of the drawn chart is painted in: its background.
    const counts = new Map();
    for (let i = 0; i < data.length; i += 4 * 97) {
        const key = `rgb(${data[i]}, ${data[i + 1]}, ${data[i + 2]})`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    const painted = [...counts].sort((a, b) => b[1] - a[1])[0][0];
    const probe = document.createElement('div');
    probe.style.color = css.getPropertyValue('--chart-bg');
    document.body.append(probe);
    const expected = getComputedStyle(probe).color;
    probe.remove();
    return {
        theme: document.documentElement.dataset.theme,
        page: getComputedStyle(document.body).backgroundColor,
        painted,
        expected,
    };
"#;

#[actix_web::test]
async fn the_theme_toggle_changes_the_background_and_is_kept() {
    within_deadline(async {
        let app = spawn_app().await;
        seed_minutes(&app, 5).await;
        let browser = Browser::start_with_env(&[]).await;
        open(&browser, &app, "/").await;
        let first = eval(&browser, READ_THEME).await;
        assert_eq!(first["painted"], first["expected"], "{first}");

        click(&browser, "#theme").await;
        let toggled = wait_for(
            &browser,
            WAIT,
            "the other theme",
            &format!(
                "const now = await (async () => {{ {READ_THEME} }})();
                 return now.theme !== {theme} && now.painted === now.expected ? now : null;",
                theme = first["theme"]
            ),
        )
        .await;
        assert_ne!(
            toggled["page"], first["page"],
            "the page background changed"
        );
        assert_ne!(
            toggled["painted"], first["painted"],
            "the chart background changed"
        );
        let url_theme = browser
            .run("return new URL(location.href).searchParams.get('theme');")
            .await;
        assert_eq!(url_theme, toggled["theme"]);

        // A plain visit keeps the choice (localStorage), painted before the chart loads too.
        open(&browser, &app, "/").await;
        let again = eval(&browser, READ_THEME).await;
        assert_eq!(
            (&again["theme"], &again["page"], &again["painted"]),
            (&toggled["theme"], &toggled["page"], &toggled["painted"])
        );
        browser.assert_no_console_errors(|_| false).await;
        browser.close().await;
    })
    .await;
}

/// Finds the marker of bar `t` by its colour on the chart's canvases; its centre in page pixels.
const FIND_MARKER: &str = r#"
    const css = getComputedStyle(document.documentElement);
    const probe = document.createElement('canvas').getContext('2d', { willReadFrequently: true });
    probe.fillStyle = css.getPropertyValue('--marker').trim();
    probe.fillRect(0, 0, 1, 1);
    const [r, g, b] = probe.getImageData(0, 0, 1, 1).data;
    const x = chart.timeScale().timeToCoordinate(T);
    if (x === null) return null;
    const ratio = window.devicePixelRatio;
    let sx = 0, sy = 0, n = 0;
    for (const canvas of document.querySelectorAll('#chart canvas')) {
        const box = canvas.getBoundingClientRect();
        if (!canvas.width || box.width < 100) continue;
        const chartBox = document.getElementById('chart').getBoundingClientRect();
        const left = Math.max(0, Math.floor((chartBox.left + x - 8 - box.left) * ratio));
        const width = Math.min(canvas.width - left, Math.ceil(16 * ratio));
        if (width <= 0) continue;
        const data = canvas.getContext('2d').getImageData(left, 0, width, canvas.height).data;
        for (let i = 0; i < data.length; i += 4) {
            if (data[i] === r && data[i + 1] === g && data[i + 2] === b && data[i + 3] === 255) {
                const p = i / 4;
                sx += box.left + (left + (p % width)) / ratio;
                sy += box.top + Math.floor(p / width) / ratio;
                n++;
            }
        }
    }
    return n ? { x: sx / n, y: sy / n, pixels: n } : null;
"#;

#[actix_web::test]
async fn an_api_correction_of_an_old_bar_shows_a_marker_there_that_explains_it() {
    within_deadline(async {
        let app = spawn_app().await;
        let minutes = seed_minutes(&app, 12).await;
        let browser = Browser::start_with_env(&[]).await;
        open(&browser, &app, "/").await;

        // Correct the opening trade of a bar ten minutes back.
        let old = minutes[2];
        let tick = rfc3339(old + TimeDelta::seconds(5));
        let r = app
            .client
            .put(app.url(&format!("/api/ticks?time={tick}&symbol=BTC%2FUSD")))
            .bearer_auth(TOKEN)
            .json(&json!({ "price": 60_500.0, "volume": 0.25 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);

        let t = old.timestamp();
        // Two polls for the update, up to a second of spreading, then the request.
        let marked = wait_for(
            &browser,
            WAIT + Duration::from_secs(2),
            "a marker on the corrected bar",
            "const m = corrections.markers(); return m.length ? m.map((x) => x.time) : null;",
        )
        .await;
        assert_eq!(marked, json!([t]), "one marker, on the corrected bar only");

        // A new minute's bar scrolls the marker away, and a redraw may hide the tooltip: each
        // try finds the marker again and moves onto it (a pixel aside every other time, so the
        // chart sees a move).
        let find = FIND_MARKER.replace("T)", &format!("{t})"));
        let mut tries = 0u32;
        let tip = eventually_ok(WAIT * 2, "the marker's tooltip", || {
            tries += 1;
            let (browser, find, nudge) = (&browser, &find, f64::from(tries % 2));
            async move {
                let at = eval(browser, find).await;
                let (Some(x), Some(y)) = (at["x"].as_f64(), at["y"].as_f64()) else {
                    return Err("the marker is not drawn".to_owned());
                };
                move_pointer(browser, x + nudge, y).await;
                next_frames(browser).await;
                let tip = eval(
                    browser,
                    "const tip = document.getElementById('marker-tip');
                     return tip.hidden ? null : tip.textContent;",
                )
                .await;
                let Some(tip) = tip.as_str() else {
                    return Err(format!("no tooltip with the pointer at {x:.0},{y:.0}"));
                };
                let shown = legend(browser).await;
                if shown.time != Some(t) {
                    return Err(format!("the tooltip, but the legend shows {shown:?}"));
                }
                Ok((tip.to_owned(), shown))
            }
        })
        .await;
        let (tip, shown) = (tip.0.as_str(), tip.1);
        // The seeded open of bar 2 (see `seed_minutes`).
        let was = format!(
            "{:.2}",
            ((61_000.0 + 60.0 * (2.0f64 * 0.45).sin() + 8.0) * 100.0).round() / 100.0
        );
        assert!(tip.contains("api token"), "{tip}");
        assert!(tip.contains("→ 60,500.00"), "{tip}");
        assert!(tip.contains(&number_text(&was)), "the old price {was}: {tip}");
        assert!(
            tip.contains(&(old + TimeDelta::seconds(5)).format("%H:%M:%S").to_string()),
            "{tip}"
        );
        assert!(shown.corrected, "the legend says the bar was corrected");

        // The option hides them.
        open_menu(&browser, "indicators-menu").await;
        click(&browser, "#show-markers").await;
        wait_for(
            &browser,
            WAIT,
            "no markers",
            "return corrections.markers().length === 0 && document.getElementById('marker-tip').hidden;",
        )
        .await;
        browser.assert_no_console_errors(|_| false).await;
        browser.close().await;
    })
    .await;
}

/// `61005.02` → `61,005.02`.
fn number_text(plain: &str) -> String {
    let (int, frac) = plain.split_once('.').unwrap_or((plain, ""));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{grouped}.{frac}")
}

#[actix_web::test]
async fn the_exports_download_a_png_of_the_chart_and_the_visible_candles_as_csv() {
    within_deadline(async {
        let app = spawn_app().await;
        seed_minutes(&app, 12).await;
        let browser = Browser::start_with_env(&[]).await;
        open(&browser, &app, "/").await;

        open_menu(&browser, "export-menu").await;
        click(&browser, "#export-png").await;
        let png = downloaded(&browser.downloads(), "png").await;
        let bytes = std::fs::read(&png).unwrap();
        let size = png_size(&bytes);
        let chart = eval(
            &browser,
            "const r = document.getElementById('chart').getBoundingClientRect(); return [r.width, r.height];",
        )
        .await;
        let on_screen = (chart[0].as_f64().unwrap(), chart[1].as_f64().unwrap());
        assert!(
            (f64::from(size.0) - on_screen.0).abs() <= 1.0
                && (f64::from(size.1) - on_screen.1).abs() <= 1.0,
            "the image ({size:?}) is the chart at its size on screen ({on_screen:?})"
        );

        // Every seeded bar is in view, so the CSV is all of them.
        click(&browser, "#export-csv").await;
        let csv = downloaded(&browser.downloads(), "csv").await;
        let want = app
            .get("/api/candles.csv?symbol=BTC%2FUSD&interval=1m")
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&csv).unwrap(), want);
        assert_eq!(want.lines().count(), 13, "a header and 12 candles");
        browser.assert_no_console_errors(|_| false).await;
        browser.close().await;
    })
    .await;
}

/// The day marks the axis draws: the library asks the page's formatter for each label, so a
/// formatter wrapped around the page's records them. Returns `[t, local hour, UTC hour]`.
const RECORD_DAY_MARKS: &str = r#"
    const { TickMarkType } = window.LightweightCharts;
    const page = chart.options().timeScale.tickMarkFormatter;
    window.__days = [];
    chart.applyOptions({ timeScale: { tickMarkFormatter: (t, type, locale) => {
        if (type === TickMarkType.DayOfMonth) window.__days.push(t);
        return page(t, type, locale);
    } } });
    chart.timeScale().fitContent();
    return true;
"#;

const READ_DAY_MARKS: &str = r#"
    const days = window.__days ?? [];
    if (!days.length) return null;
    return [...new Set(days)].map((t) => {
        const d = new Date(t * 1000);
        return [t, d.getHours() * 60 + d.getMinutes(), d.getUTCHours() * 60 + d.getUTCMinutes()];
    });
"#;

#[actix_web::test]
async fn local_time_puts_day_marks_on_local_midnights_and_the_legend_in_local_time() {
    within_deadline(async {
        let app = spawn_app().await;
        seed_hours(&app, 96).await;
        let browser = Browser::start_with_env(&[("TZ", "America/New_York")]).await;
        open(&browser, &app, "/?interval=1h").await;
        let zone = browser
            .run("return Intl.DateTimeFormat().resolvedOptions().timeZone;")
            .await;
        assert_eq!(zone, json!("America/New_York"), "the browser runs in New York time");

        // UTC (the default): day marks at UTC midnight, which is evening in New York.
        eval(&browser, RECORD_DAY_MARKS).await;
        let utc = wait_for(&browser, WAIT, "day marks", READ_DAY_MARKS).await;
        for mark in utc.as_array().unwrap() {
            assert_eq!(mark[2], 0, "a UTC day mark at UTC midnight: {mark}");
            assert_ne!(mark[1], 0, "UTC midnight is not New York's: {mark}");
        }
        let utc_legend = legend(&browser).await;

        click(&browser, "#timezone").await;
        wait_for(
            &browser,
            WAIT,
            "local time",
            "return document.getElementById('timezone').textContent === 'Local time';",
        )
        .await;
        eval(&browser, RECORD_DAY_MARKS).await;
        let local = wait_for(&browser, WAIT, "day marks", READ_DAY_MARKS).await;
        for mark in local.as_array().unwrap() {
            assert_eq!(mark[1], 0, "a local day mark at local midnight: {mark}");
            assert_ne!(mark[2], 0, "New York's midnight is not UTC's: {mark}");
        }

        let local_legend = legend(&browser).await;
        assert_eq!(local_legend.time, utc_legend.time, "the same newest bar");
        let t = local_legend.time.unwrap();
        let expected = browser
            .run(&format!(
                "const d = new Date({t} * 1000);
                 return [d.getHours(), d.getMinutes()].map((n) => String(n).padStart(2, '0')).join(':');"
            ))
            .await;
        let expected = expected.as_str().unwrap();
        assert!(
            local_legend.text.contains(expected),
            "the legend shows New York time {expected}: {:?} (UTC: {:?})",
            local_legend.text,
            utc_legend.text
        );
        assert_ne!(local_legend.text, utc_legend.text);
        browser.assert_no_console_errors(|_| false).await;
        browser.close().await;
    })
    .await;
}

#[actix_web::test]
async fn keys_pick_the_interval_show_the_help_and_reset_the_view() {
    within_deadline(async {
        let app = spawn_app().await;
        seed_minutes(&app, 30).await;
        let browser = Browser::start_with_env(&[]).await;
        open(&browser, &app, "/").await;

        press(&browser, '4').await;
        wait_for(
            &browser,
            SLOW_WAIT,
            "the 1h chart",
            "return document.getElementById('interval').value === '1h'
                && new URL(location.href).searchParams.get('interval') === '1h'
                && document.getElementById('connection').dataset.state === 'live';",
        )
        .await;

        press(&browser, '?').await;
        wait_for(
            &browser,
            WAIT,
            "the help",
            "return document.getElementById('help').open;",
        )
        .await;
        press(&browser, Key::Escape.into()).await;
        wait_for(
            &browser,
            WAIT,
            "the help closed",
            "return !document.getElementById('help').open;",
        )
        .await;

        press(&browser, '1').await;
        wait_for(
            &browser,
            SLOW_WAIT,
            "the 1m chart",
            "return document.getElementById('interval').value === '1m';",
        )
        .await;
        eval(
            &browser,
            "chart.timeScale().scrollToPosition(-15, false); return true;",
        )
        .await;
        press(&browser, Key::Escape.into()).await;
        wait_for(
            &browser,
            WAIT,
            "the view reset to the newest bars",
            "return Math.abs(chart.timeScale().scrollPosition()) < 1;",
        )
        .await;
        browser.assert_no_console_errors(|_| false).await;
        browser.close().await;
    })
    .await;
}

/// The README's screenshot (`docs/chart.png`): set `CANDLEWICK_UPDATE_SCREENSHOT=1` to write it
/// from this run. Without it the test checks that the committed one is a small PNG of the size
/// this scene renders at.
#[actix_web::test]
async fn the_readme_screenshot_is_a_small_png_of_the_chart_page() {
    const MAX_BYTES: usize = 100 * 1024;
    within_deadline(async {
        let app = spawn_app().await;
        let minutes = seed_minutes(&app, 150).await;
        // One corrected bar, so the picture shows a marker.
        let fixed = rfc3339(minutes[130] + TimeDelta::seconds(45));
        let r = app
            .client
            .put(app.url(&format!("/api/ticks?time={fixed}&symbol=BTC%2FUSD")))
            .bearer_auth(TOKEN)
            .json(&json!({ "price": 61_150.0, "volume": 0.5 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let browser = Browser::start_with_env(&[]).await;
        browser
            .client
            .set_window_size(1000, 600)
            .await
            .expect("sizing the window");
        open(&browser, &app, "/?ind=sma20,ema50,bb,rsi&theme=dark").await;
        wait_for(
            &browser,
            WAIT,
            "the correction marker",
            "return corrections.markers().length > 0;",
        )
        .await;
        hover_bar(&browser, minutes[122]).await;
        let shot = browser.client.screenshot().await.expect("a screenshot");
        let size = png_size(&shot);

        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/chart.png");
        if std::env::var_os("CANDLEWICK_UPDATE_SCREENSHOT").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &shot).unwrap();
            println!("wrote {} ({} bytes)", path.display(), shot.len());
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; write it with CANDLEWICK_UPDATE_SCREENSHOT=1",
                path.display()
            )
        });
        assert_eq!(
            png_size(&committed),
            size,
            "docs/chart.png is not the size the page renders at; regenerate it"
        );
        assert!(
            committed.len() <= MAX_BYTES,
            "docs/chart.png is {} bytes; keep it under {MAX_BYTES}",
            committed.len()
        );
        browser.assert_no_console_errors(|_| false).await;
        browser.close().await;
    })
    .await;
}
