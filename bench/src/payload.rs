//! `payload`: the bytes of a week's snapshot (WebSocket frame raw and gzipped, and the same
//! candles over HTTP with gzip), the chart page's own join (a screen of candles, gzip), and in
//! headless Chromium, driven over the DevTools protocol, the time from page load to the first
//! drawn candle and the bytes the page received until then; optionally beside a baseline build.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use candlewick::config::EmbeddedTimescaleDb;
use chrono::Utc;
use clap::Args;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::browser::Browser;
use crate::say;
use crate::setup::{HistoryServer, Server, WorkArgs};
use crate::stats::Summary;
use crate::system;

#[derive(Debug, Clone, Args)]
pub struct PayloadArgs {
    /// How much history the chart shows.
    #[arg(long, default_value = "7d", value_parser = candlewick::config::parse_duration)]
    pub history: Duration,
    /// Ticks per second in that history (every minute gets a candle either way).
    #[arg(long, default_value_t = 0.2)]
    pub history_rate: f64,
    /// Page loads to time in Chromium (0: skip).
    #[arg(long, default_value_t = 5)]
    pub chromium_runs: usize,
    #[arg(long, default_value = "chromium")]
    pub chromium: String,
    #[command(flatten)]
    pub work: WorkArgs,
    /// Another candlewick binary (e.g. a build of an older commit) whose page is measured in
    /// the same run, on the same database, each load alternating with this build's.
    #[arg(long)]
    pub baseline_bin: Option<PathBuf>,
    /// The embedded cluster: `off` keeps to plain PostgreSQL (as BENCHMARKS.md measured),
    /// `auto` preloads TimescaleDB when it is installed.
    #[arg(long, value_enum, default_value_t = EmbeddedTimescaleDb::Off)]
    pub embedded_timescaledb: EmbeddedTimescaleDb,
}

pub async fn run(args: PayloadArgs) -> anyhow::Result<Value> {
    let server = HistoryServer {
        database: "candlewick_bench_payload",
        server: "payload-server",
        timescaledb: args.embedded_timescaledb,
        history: args.history,
        history_rate: args.history_rate,
        env: &[],
        baseline_bin: args.baseline_bin.as_deref(),
    };
    server
        .run(&args.work, async |_, server, baseline| {
            measure(server, baseline, &args).await
        })
        .await
}

/// The first frame `/ws?query` sends (text or binary), as bytes.
async fn first_frame(server: &Server, query: &str) -> anyhow::Result<Vec<u8>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws(query))
        .await
        .context("connecting to /ws")?;
    let frame = loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("waiting for the snapshot")?
        {
            Some(Ok(Message::Text(t))) => break t.as_bytes().to_vec(),
            Some(Ok(Message::Binary(b))) => break b.to_vec(),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("reading the snapshot"),
            None => bail!("closed before the snapshot"),
        }
    };
    let _ = ws.close(None).await;
    Ok(frame)
}

async fn measure(
    server: &Server,
    baseline: Option<&Server>,
    args: &PayloadArgs,
) -> anyhow::Result<Value> {
    // The WebSocket snapshot, as a viewer gets it.
    let snapshot = String::from_utf8(first_frame(server, "symbol=BTC/USD&interval=1m").await?)
        .context("a text snapshot")?;
    let parsed: Value = serde_json::from_str(&snapshot).context("parsing the snapshot")?;
    let candles = parsed["candles"].as_array().map(Vec::len).unwrap_or(0);
    let gzipped = gzip(snapshot.as_bytes())?;
    say!(
        "snapshot: {candles} candles, {} bytes, {} gzipped",
        snapshot.len(),
        gzipped
    );

    // The same week over HTTP, as the server compresses it.
    let from =
        candlewick::domain::time::rfc3339(Utc::now() - chrono::Duration::from_std(args.history)?);
    let candles_url = format!(
        "{}/api/candles?symbol=BTC/USD&interval=1m&from={from}",
        server.http()
    );
    let client = reqwest::Client::new();
    let plain = client.get(&candles_url).send().await?.bytes().await?.len();
    let resp = client
        .get(&candles_url)
        .header("Accept-Encoding", "gzip")
        .send()
        .await?;
    let encoding = resp
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .to_owned();
    let over_http = resp.bytes().await?.len();
    // The chart page's join on a screen up to ~1,500 px wide.
    let page_join = first_frame(server, "symbol=BTC/USD&interval=1m&limit=500&format=gzip")
        .await?
        .len();
    say!("the page's join: a 500-candle gzip snapshot of {page_join} bytes");

    let mut pages = vec![("", server)];
    pages.extend(baseline.map(|b| ("baseline ", b)));
    let browser = if args.chromium_runs == 0 {
        json!({ "skipped": "--chromium-runs 0" })
    } else {
        let urls: Vec<String> = pages
            .iter()
            .map(|(_, s)| format!("{}/?symbol=BTC/USD", s.http()))
            .collect();
        match first_candle(&args.chromium, &urls, args.chromium_runs).await {
            Ok(loads) => {
                let mut out = serde_json::Map::new();
                for ((label, _), loads) in pages.iter().zip(loads) {
                    out.insert(
                        format!("{label}page").trim().replace(' ', "_"),
                        summarize(label, &loads),
                    );
                }
                Value::Object(out)
            }
            Err(e) => {
                say!("chromium: {e:#}");
                json!({ "error": format!("{e:#}") })
            }
        }
    };
    Ok(json!({
        "page_join_snapshot_bytes": page_join,
        "snapshot_candles": candles,
        "snapshot_bytes": snapshot.len(),
        "snapshot_gzip_bytes": gzipped,
        "gzip_ratio": (snapshot.len() as f64 / gzipped.max(1) as f64 * 10.0).round() / 10.0,
        "http_candles_bytes": plain,
        "http_candles_transfer_bytes": over_http,
        "http_candles_encoding": encoding,
        "first_candle": browser,
        "load": system::load_average(),
    }))
}

fn gzip(data: &[u8]) -> anyhow::Result<usize> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)?;
    Ok(enc.finish()?.len())
}

/// One page load: time to the first drawn candle and the data bytes received until then.
pub(crate) struct Load {
    pub(crate) first_candle: Duration,
    ws_bytes: u64,
    api_bytes: u64,
}

/// The first (cold) load and the median of the warm ones, time and bytes.
fn summarize(label: &str, loads: &[Load]) -> Value {
    let Some((cold, warm)) = loads.split_first() else {
        return json!({ "error": "no page loads" });
    };
    let warm = if warm.is_empty() { loads } else { warm };
    let s = Summary::of(&warm.iter().map(|l| l.first_candle).collect::<Vec<_>>());
    let mut bytes: Vec<u64> = warm.iter().map(|l| l.ws_bytes + l.api_bytes).collect();
    bytes.sort_unstable();
    let median = bytes[bytes.len() / 2];
    say!(
        "{label}page: first candle drawn cold {:.0} ms, warm p50 {:.0} ms; received on join {} bytes \
         (WebSocket {} + /api/ {}; warm median {median})",
        cold.first_candle.as_secs_f64() * 1e3,
        s.p50_ms,
        cold.ws_bytes + cold.api_bytes,
        cold.ws_bytes,
        cold.api_bytes,
    );
    json!({
        "cold_ms": cold.first_candle.as_secs_f64() * 1e3,
        "warm": s,
        "join_bytes_cold": { "websocket": cold.ws_bytes, "api": cold.api_bytes },
        "join_bytes_warm_median": median,
    })
}

/// Marks when the page has its snapshot on screen: the chart shows `data-state="live"` right
/// after drawing the snapshot, and the candles are painted by the next animation frames. Until
/// then it counts the data the page receives: WebSocket message payloads (frame headers
/// aside) and `/api/` responses as transferred (headers and compressed body).
const PROBE: &str = r#"
(() => {
  let wsBytes = 0;
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (ev) => {
        if (window.__cwFirstCandle) return;
        const d = ev.data;
        wsBytes += typeof d === 'string' ? new TextEncoder().encode(d).length : (d.byteLength ?? d.size);
      });
    }
  };
  const seen = () => document.querySelector('[data-state="live"]') && document.querySelector('canvas');
  const mark = () => requestAnimationFrame(() => requestAnimationFrame(() => {
    if (window.__cwFirstCandle) return;
    const now = performance.now();
    const api = performance.getEntriesByType('resource')
      .filter((e) => new URL(e.name).pathname.startsWith('/api/') && e.responseEnd <= now)
      .reduce((n, e) => n + e.transferSize, 0);
    window.__cwJoinBytes = { ws: wsBytes, api };
    window.__cwFirstCandle = now;
  }));
  const obs = new MutationObserver(() => { if (seen()) { obs.disconnect(); mark(); } });
  obs.observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'] });
})();
"#;

/// Loads each of `pages` `runs` times (alternating, in one browser) to the first drawn
/// candle; returns each page's loads, the first one cold.
pub(crate) async fn first_candle(
    chromium: &str,
    pages: &[String],
    runs: usize,
) -> anyhow::Result<Vec<Vec<Load>>> {
    let mut browser = Browser::start(chromium).await?;
    let result = async {
        browser.call("Page.enable", json!({})).await?;
        browser
            .call(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": PROBE }),
            )
            .await?;
        let mut loads: Vec<Vec<Load>> = pages.iter().map(|_| Vec::new()).collect();
        for _ in 0..runs {
            for (page, loads) in pages.iter().zip(&mut loads) {
                browser.call("Page.navigate", json!({ "url": page })).await?;
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let v = browser
                        .eval("window.__cwFirstCandle ? [window.__cwFirstCandle, window.__cwJoinBytes] : 0")
                        .await?;
                    if let Some(ms) = v[0].as_f64() {
                        loads.push(Load {
                            first_candle: Duration::from_secs_f64(ms / 1e3),
                            ws_bytes: v[1]["ws"].as_u64().unwrap_or(0),
                            api_bytes: v[1]["api"].as_u64().unwrap_or(0),
                        });
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!("no candle drawn within 30 s of navigating to {page}");
                    }
                }
            }
        }
        anyhow::Ok(loads)
    }
    .await;
    browser.stop().await;
    result
}
