//! The chart page in real headless Chromium: Debian's `chromium`, driven over WebDriver by the
//! `chromedriver` of `chromium-driver` (both installed by `.ci/run`). The page loads without
//! console errors and draws candles, follows an API insert and an admin edit made in another tab
//! within two polls, and reconnects by itself when the server restarts.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, SecondsFormat, TimeDelta, Utc};
use fantoccini::wd::{Capabilities, TimeoutConfiguration};
use fantoccini::{Client, ClientBuilder, Locator};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::helpers::{TOKEN, TestApp, eventually, eventually_ok, spawn_app};

/// How the browser runs, beyond the bench's headless flags.
const CHROMIUM_FLAGS: [&str; 3] = [
    "--disable-dev-shm-usage",
    // Prices are formatted for the browser's locale; pin it so the expected texts hold anywhere.
    "--lang=en-US",
    "--accept-lang=en-US",
];
const PACKAGES: &str = "apt-get install -y chromium chromium-driver";

/// Generous limit for what the page should do within two polls (tests poll every 200 ms); it
/// only keeps a broken page from hanging the run.
pub(crate) const WAIT: Duration = Duration::from_secs(5);
/// Loading, reconnecting (with the page's backoff), sign-in round trips.
pub(crate) const SLOW_WAIT: Duration = Duration::from_secs(30);
/// A whole test never takes longer: a hung browser fails the test instead of blocking CI.
const TEST_DEADLINE: Duration = Duration::from_secs(180);

/// The seeded minute's last tick, and how the page shows its price.
const SEEDED: (f64, &str) = (61_234.5, "61,234.50");

// ---- the browser --------------------------------------------------------------------------

fn program(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: the browser tests need Debian's Chromium and its \
                 WebDriver ({PACKAGES})"
            )
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A chromedriver on a free loopback port. Dropping it ends it and every Chromium it started
/// (also when a test fails half-way).
struct Driver {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Driver {
    /// `env`: variables for chromedriver and the Chromium it starts (e.g. `TZ`).
    async fn start(env: &[(&str, &str)]) -> Driver {
        let chromedriver = program("chromedriver");
        let dir = tempfile::Builder::new()
            .prefix("candlewick-browser-")
            .tempdir()
            .expect("a temp dir");
        let port = free_port();
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // chromedriver leaves Chromium running when it dies; in a process group of their
            // own, `Drop` ends both.
            .process_group(0)
            .envs(env.iter().copied())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} ({PACKAGES}): {e}", chromedriver.display()));
        let mut driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + SLOW_WAIT;
        loop {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("chromedriver exited at start ({status}):\n{}", driver.log());
            }
            let ready = match http.get(format!("{}/status", driver.url)).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["value"]["ready"].as_bool()),
                Err(_) => None,
            };
            if ready == Some(true) {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready within {SLOW_WAIT:?}:\n{}",
                driver.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// One headless Chromium session (fresh profile) on its own chromedriver.
pub(crate) struct Browser {
    pub(crate) client: Client,
    session: String,
    http: reqwest::Client,
    driver: Driver,
}

/// What the chart page shows, read in one script call.
#[derive(Debug, Deserialize)]
pub(crate) struct ChartState {
    /// The connection indicator's text: `live`, `stale` or `reconnecting`.
    pub(crate) connection: Option<String>,
    /// The last price text.
    pub(crate) price: Option<String>,
    /// `<canvas>` elements the chart library drew into `#chart`.
    canvases: usize,
    /// Whether the "no candles" notice is hidden.
    empty_hidden: Option<bool>,
}

const READ_CHART: &str = r#"
    const text = (id) => document.getElementById(id)?.textContent.trim() ?? null;
    return {
        connection: text('connection'),
        price: text('last-price'),
        canvases: document.querySelectorAll('#chart canvas').length,
        empty_hidden: document.getElementById('chart-empty')?.hidden ?? null,
    };
"#;

/// Counts the pixels painted in exactly the up or down candle colour of the page's theme:
/// bodies of drawn candles (a blank or axis-only chart has none).
const COUNT_CANDLE_PIXELS: &str = r#"
    const css = getComputedStyle(document.documentElement);
    const probe = document.createElement('canvas').getContext('2d', { willReadFrequently: true });
    const colours = ['--up', '--down'].map((name) => {
        probe.clearRect(0, 0, 1, 1);
        probe.fillStyle = css.getPropertyValue(name).trim();
        probe.fillRect(0, 0, 1, 1);
        return probe.getImageData(0, 0, 1, 1).data;
    });
    let n = 0;
    for (const canvas of document.querySelectorAll('#chart canvas')) {
        if (!canvas.width || !canvas.height) continue;
        const d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        for (let i = 0; i < d.length; i += 4) {
            if (d[i + 3] !== 255) continue;
            for (const c of colours) if (d[i] === c[0] && d[i + 1] === c[1] && d[i + 2] === c[2]) n++;
        }
    }
    return n;
"#;

impl Browser {
    async fn start() -> Browser {
        Browser::start_with_env(&[]).await
    }

    /// A browser whose environment has `env` (e.g. `TZ`); downloads go to [`Self::downloads`].
    pub(crate) async fn start_with_env(env: &[(&str, &str)]) -> Browser {
        let chromium = program("chromium");
        let driver = Driver::start(env).await;
        let mut args: Vec<String> = crate::chromium_flags::HEADLESS
            .iter()
            .chain(&CHROMIUM_FLAGS)
            .map(|f| (*f).to_owned())
            .collect();
        args.push(format!(
            "--user-data-dir={}",
            driver.dir.path().join("profile").display()
        ));
        let capabilities: Capabilities = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": args,
                "prefs": {
                    "download.default_directory": driver.dir.path().join("downloads"),
                    "download.prompt_for_download": false,
                },
            },
            // Console messages and page errors, read back through the driver's browser log.
            "goog:loggingPrefs": { "browser": "ALL" },
        }))
        .expect("capabilities are a JSON object");
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("starting headless Chromium: {e}\n{}", driver.log()));
        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(Duration::from_secs(10)),
                Some(SLOW_WAIT),
                Some(Duration::ZERO),
            ))
            .await
            .expect("setting WebDriver timeouts");
        let session = client
            .session_id()
            .await
            .expect("the session id")
            .expect("a session");
        Browser {
            client,
            session,
            http: reqwest::Client::new(),
            driver,
        }
    }

    /// Ends the session the polite way (chromedriver closes Chromium); `Drop` does the rest.
    pub(crate) async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    /// Where downloads from the page land.
    pub(crate) fn downloads(&self) -> PathBuf {
        self.driver.dir.path().join("downloads")
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("the current URL")
            .path()
            .to_owned()
    }

    pub(crate) async fn run(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("running a script: {e}"))
    }

    pub(crate) async fn chart(&self) -> ChartState {
        serde_json::from_value(self.run(READ_CHART).await).expect("the chart state")
    }

    /// Polls the chart page until `done` holds; panics after `timeout` with what it showed last.
    /// Returns how long it took.
    pub(crate) async fn wait_chart(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&ChartState) -> bool,
    ) -> Duration {
        let start = Instant::now();
        eventually_ok(
            timeout,
            &format!("the chart page to show {what}"),
            || async {
                let state = self.chart().await;
                if done(&state) { Ok(()) } else { Err(state) }
            },
        )
        .await;
        start.elapsed()
    }

    async fn wait_path(&self, path: &str) {
        eventually_ok(SLOW_WAIT, &format!("the page to be at {path}"), || async {
            let now = self.path().await;
            if now == path { Ok(()) } else { Err(now) }
        })
        .await;
    }

    /// Runs a DevTools command in the session's page (chromedriver's `goog/cdp/execute`): for
    /// observing what the page does without the page exposing anything for tests.
    pub(crate) async fn cdp(&self, cmd: &str, params: Value) -> Value {
        let url = format!(
            "{}/session/{}/goog/cdp/execute",
            self.driver.url, self.session
        );
        let r = self
            .http
            .post(&url)
            .json(&json!({ "cmd": cmd, "params": params }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("DevTools {cmd}: {e}"));
        let body: Value = r.json().await.expect("a JSON DevTools answer");
        assert!(
            body["value"].get("error").is_none(),
            "DevTools {cmd}: {body}"
        );
        body["value"].clone()
    }

    /// Browser log entries (console messages, uncaught errors, failed loads) since the last call.
    async fn console(&self) -> Vec<Value> {
        let url = format!("{}/session/{}/se/log", self.driver.url, self.session);
        let r = self
            .http
            .post(&url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .expect("reading the browser log");
        let body: Value = r.json().await.expect("a JSON browser log");
        body["value"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("no browser log: {body}"))
    }

    /// Fails on any console error (level SEVERE) that `expected` does not excuse.
    pub(crate) async fn assert_no_console_errors(&self, expected: impl Fn(&str) -> bool) {
        let errors: Vec<Value> = self
            .console()
            .await
            .into_iter()
            .filter(|e| {
                e["level"] == "SEVERE" && !expected(e["message"].as_str().unwrap_or_default())
            })
            .collect();
        assert!(errors.is_empty(), "console errors on the page: {errors:#?}");
    }

    /// Opens the chart page and waits until it is live and shows the seeded minute's price.
    pub(crate) async fn open_chart(&self, app: &TestApp) {
        self.goto(&app.url("/")).await;
        self.wait_chart(SLOW_WAIT, "the seeded last price, live", |s| {
            s.connection.as_deref() == Some("live") && s.price.as_deref() == Some(SEEDED.1)
        })
        .await;
    }
}

/// Runs a browser test with an outer limit, so a hang fails instead of blocking the run.
pub(crate) async fn within_deadline(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(TEST_DEADLINE, test)
        .await
        .unwrap_or_else(|_| panic!("the browser test did not finish within {TEST_DEADLINE:?}"));
}

// ---- data ---------------------------------------------------------------------------------

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) async fn post_ticks(app: &TestApp, ticks: &[(DateTime<Utc>, f64, f64)]) {
    let body: Vec<Value> = ticks
        .iter()
        .map(|(t, price, volume)| json!({"time": rfc3339(*t), "symbol": "BTC/USD", "price": price, "volume": volume}))
        .collect();
    let r = app.post_ticks_json(&json!(body)).await;
    assert_eq!(
        r.status(),
        201,
        "POST /api/ticks: {}",
        r.text().await.unwrap_or_default()
    );
}

/// Four minutes of BTC/USD ending in the current minute, whose last tick (`SEEDED`) comes 100 ms
/// after its start. Returns that minute's start.
async fn seed(app: &TestApp) -> DateTime<Utc> {
    let minute = Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .expect("a UTC minute");
    let at = |ms: i64| minute + TimeDelta::milliseconds(ms);
    post_ticks(
        app,
        &[
            (at(-180_000 + 5_000), 61_000.0, 0.4),
            (at(-180_000 + 30_000), 61_010.25, 1.1),
            (at(-120_000 + 5_000), 60_990.0, 0.7),
            (at(-120_000 + 40_000), 61_120.0, 0.2),
            (at(-60_000 + 10_000), 61_005.5, 2.0),
            (at(-60_000 + 50_000), 60_950.0, 0.3),
            (at(0), 61_100.0, 0.5),
            (at(100), SEEDED.0, 0.25),
        ],
    )
    .await;
    minute
}

// ---- the tests ----------------------------------------------------------------------------

#[actix_web::test]
async fn the_chart_page_loads_without_console_errors_draws_candles_and_is_live() {
    within_deadline(async {
        let app = spawn_app().await;
        seed(&app).await;
        let browser = Browser::start().await;
        browser.open_chart(&app).await;

        let state = browser.chart().await;
        assert!(
            state.canvases >= 2,
            "the chart library drew no canvases: {state:?}"
        );
        assert_eq!(
            state.empty_hidden,
            Some(true),
            "the page says it has no candles: {state:?}"
        );
        eventually(
            WAIT,
            "a candle painted in the up or down colour",
            || async {
                let painted = browser.run(COUNT_CANDLE_PIXELS).await.as_u64().unwrap_or(0);
                (painted > 0).then_some(())
            },
        )
        .await;
        browser.assert_no_console_errors(|_| false).await;

        // The check above reads a real log: an error logged now is in the next read.
        browser
            .run("console.error('candlewick log probe'); return null;")
            .await;
        eventually(WAIT, "a console.error to reach the browser log", || async {
            browser
                .console()
                .await
                .iter()
                .any(|e| {
                    e["level"] == "SEVERE"
                        && e["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("candlewick log probe"))
                })
                .then_some(())
        })
        .await;
        browser.close().await;
    })
    .await;
}

#[actix_web::test]
async fn a_tick_posted_through_the_api_moves_the_last_candle_within_two_polls() {
    within_deadline(async {
        let app = spawn_app().await;
        let minute = seed(&app).await;
        let browser = Browser::start().await;
        browser.open_chart(&app).await;

        // A new high in the seeded (current) minute, after its last tick: it becomes the close.
        post_ticks(
            &app,
            &[(minute + TimeDelta::milliseconds(500), 61_500.75, 0.1)],
        )
        .await;
        let took = browser
            .wait_chart(WAIT, "the new last price 61,500.75", |s| {
                s.price.as_deref() == Some("61,500.75")
            })
            .await;
        println!("browser: API insert shown on the chart after {took:?}");
        let state = browser.chart().await;
        assert_eq!(state.connection.as_deref(), Some("live"), "{state:?}");
        browser.assert_no_console_errors(|_| false).await;
        browser.close().await;
    })
    .await;
}

#[actix_web::test]
async fn the_chart_page_reconnects_after_the_server_restarts() {
    within_deadline(async {
        let app = spawn_app().await;
        let minute = seed(&app).await;
        let browser = Browser::start().await;
        browser.open_chart(&app).await;
        browser.assert_no_console_errors(|_| false).await;

        app.stop().await;
        browser
            .wait_chart(SLOW_WAIT, "`reconnecting`", |s| s.connection.as_deref() == Some("reconnecting"))
            .await;
        // The page keeps what it had while the server is away.
        assert_eq!(browser.chart().await.price.as_deref(), Some(SEEDED.1));
        // A tick written meanwhile by another program: the reconnect must not leave a gap.
        let meanwhile = rfc3339(minute + TimeDelta::milliseconds(600));
        app.psql(&format!(
            "INSERT INTO ticks (time, symbol, price, volume) VALUES ('{meanwhile}', 'BTC/USD', 61650, 0.2)"
        ));

        let restarted = app.restart().await;
        assert_eq!(restarted.port, app.port);
        let took = browser
            .wait_chart(SLOW_WAIT, "`live` again with the tick written while it was away", |s| {
                s.connection.as_deref() == Some("live") && s.price.as_deref() == Some("61,650.00")
            })
            .await;
        println!("browser: live again {took:?} after the restart");

        post_ticks(&restarted, &[(minute + TimeDelta::milliseconds(700), 61_777.0, 0.3)]).await;
        browser
            .wait_chart(WAIT, "the tick posted after the restart", |s| s.price.as_deref() == Some("61,777.00"))
            .await;
        // While the server was down the browser logs each refused WebSocket attempt; nothing else.
        let refused = format!("WebSocket connection to 'ws://127.0.0.1:{}/ws", app.port);
        browser.assert_no_console_errors(|m| m.contains(&refused) && m.contains("failed")).await;
        browser.close().await;
    })
    .await;
}

#[actix_web::test]
async fn an_admin_edit_in_another_tab_shows_on_the_chart_within_two_polls() {
    within_deadline(async {
        let app = spawn_app().await;
        seed(&app).await;
        let browser = Browser::start().await;
        browser.open_chart(&app).await;
        let chart_tab = browser.client.window().await.expect("the chart tab");

        // The admin, in a second tab: sign in through the form.
        let admin_tab = browser
            .client
            .new_window(true)
            .await
            .expect("a second tab")
            .handle;
        browser
            .client
            .switch_to_window(admin_tab)
            .await
            .expect("switching to the admin tab");
        browser.goto(&app.url("/admin/sign-in")).await;
        let c = &browser.client;
        c.find(Locator::Id("token"))
            .await
            .expect("the token field")
            .send_keys(TOKEN)
            .await
            .expect("typing");
        c.find(Locator::Css("form button[type=submit]"))
            .await
            .expect("the sign-in button")
            .click()
            .await
            .expect("click");
        browser.wait_path("/admin").await;

        // The newest tick is listed first: the seeded minute's last one. Open its edit form.
        c.find(Locator::Css("a[href^='/admin/ticks/edit?']"))
            .await
            .expect("an Edit link in the tick list")
            .click()
            .await
            .expect("click");
        browser.wait_path("/admin/ticks/edit").await;
        let symbol = c
            .find(Locator::Css("input[name=symbol]"))
            .await
            .expect("the symbol field");
        assert_eq!(
            symbol.prop("value").await.expect("value").as_deref(),
            Some("BTC/USD")
        );
        let price = c.find(Locator::Id("price")).await.expect("the price field");
        let shown: f64 = price
            .prop("value")
            .await
            .expect("value")
            .unwrap_or_default()
            .parse()
            .expect("a price");
        assert_eq!(shown, SEEDED.0, "the edit form is for the newest tick");
        price.clear().await.expect("clearing the price");
        price.send_keys("60876.25").await.expect("typing the price");
        let saved = Instant::now();
        c.find(Locator::Css("main form.card button[type=submit]"))
            .await
            .expect("the Save button")
            .click()
            .await
            .expect("click");
        browser.wait_path("/admin").await;
        let flash = c
            .find(Locator::Css(".flash-success"))
            .await
            .expect("a success message after saving");
        println!(
            "browser: admin flash {:?}",
            flash.text().await.unwrap_or_default()
        );

        // Back on the chart tab: the last candle's close follows the edit.
        browser
            .client
            .switch_to_window(chart_tab)
            .await
            .expect("switching to the chart tab");
        browser
            .wait_chart(WAIT, "the edited last price 60,876.25", |s| {
                s.price.as_deref() == Some("60,876.25")
            })
            .await;
        println!(
            "browser: admin edit shown on the chart {:?} after Save",
            saved.elapsed()
        );
        browser.assert_no_console_errors(|_| false).await;
        browser.close().await;
    })
    .await;
}
