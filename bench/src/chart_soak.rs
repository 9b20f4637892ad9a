//! `chart-soak`: the chart page in headless Chromium for a long while at several updates a
//! second — does it keep up? A server polls every `--poll-interval` while the bench posts
//! `--ticks-per-sec` BTC/USD ticks through the API; the page watches BTC/USD with every
//! indicator on. A script in the page counts the update messages it gets, the legend's and the
//! price's redraws, animation frames and the gaps between them, and long tasks; every
//! `--sample-every` the bench reads those, the page's JS heap after a forced garbage collection
//! and its DOM nodes and event listeners (DevTools). The first `--warm-up` is left out.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use candlewick::config::{EmbeddedTimescaleDb, parse_duration};
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};

use crate::browser::Browser;
use crate::say;
use crate::setup::{self, HistoryServer, Server, WorkArgs};
use crate::stats::slope;
use crate::system;
use crate::viewers::Feed;

#[derive(Debug, Clone, Args)]
pub struct ChartSoakArgs {
    /// How long the page is watched, warm-up included.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub duration: Duration,
    /// Left out of the figures: the page's first load and settling.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub warm_up: Duration,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub sample_every: Duration,
    /// The server's poll interval.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// BTC/USD ticks posted per second (more than one per poll: every poll has an update).
    #[arg(long, default_value_t = 20.0)]
    pub ticks_per_sec: f64,
    /// How much history the chart starts with.
    #[arg(long, default_value = "1d", value_parser = parse_duration)]
    pub history: Duration,
    #[arg(long, default_value = "chromium")]
    pub chromium: String,
    #[arg(long, value_enum, default_value_t = EmbeddedTimescaleDb::Off)]
    pub embedded_timescaledb: EmbeddedTimescaleDb,
    #[command(flatten)]
    pub work: WorkArgs,
}

/// Counts kept by the page (see [`PROBE`]).
const PROBE: &str = r#"
(() => {
  const s = window.__cwSoak = {
    updates: 0, frames: 0, over33: 0, over50: 0, over100: 0, maxGap: 0,
    longTasks: 0, longTaskMs: 0, legend: 0, price: 0, studies: 0,
  };
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (ev) => {
        if (typeof ev.data === 'string' && ev.data.startsWith('{"type":"update"')) s.updates++;
      });
    }
  };
  let last = 0;
  const frame = (t) => {
    if (last) {
      const gap = t - last;
      s.frames++;
      if (gap > 33.4) s.over33++;
      if (gap > 50) s.over50++;
      if (gap > 100) s.over100++;
      if (gap > s.maxGap) s.maxGap = gap;
    }
    last = t;
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) { s.longTasks++; s.longTaskMs += e.duration; }
    }).observe({ type: 'longtask', buffered: true });
  } catch (e) { /* no long-task timing here */ }
  const watch = (selector, key) => {
    const el = document.querySelector(selector);
    if (el) new MutationObserver(() => { s[key]++; }).observe(el, { subtree: true, childList: true, characterData: true });
  };
  document.addEventListener('DOMContentLoaded', () => {
    watch('#legend [data-field="close"]', 'legend');
    watch('#last-price', 'price');
    watch('#legend [data-field="studies"]', 'studies');
  });
})();
"#;

/// Turns every indicator on, as a trader watching closely would.
const ALL_INDICATORS: &str = r#"
(() => {
  for (const id of ['ind-sma', 'ind-ema', 'ind-vwap', 'ind-bb', 'ind-rsi']) {
    const el = document.getElementById(id);
    if (el && !el.checked) el.click();
  }
  return ['ind-sma', 'ind-ema', 'ind-vwap', 'ind-bb', 'ind-rsi']
    .filter((id) => document.getElementById(id)?.checked).length;
})()
"#;

/// One reading of the page.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    seconds: f64,
    /// The page's counts so far (see [`PROBE`]).
    counts: Value,
    js_heap_used_bytes: f64,
    dom_nodes: f64,
    js_event_listeners: f64,
    /// The connection badge: `live` while the page is up to date.
    state: String,
    /// CPU seconds of Chromium's processes so far.
    browser_cpu_seconds: f64,
}

pub async fn run(args: ChartSoakArgs) -> anyhow::Result<Value> {
    if args.warm_up + args.sample_every * 2 > args.duration {
        bail!("--duration must leave two samples after --warm-up");
    }
    let poll = format!("{}ms", args.poll_interval.as_millis());
    let env = [("CANDLEWICK_POLL_INTERVAL", poll.as_str())];
    let server = HistoryServer {
        database: "candlewick_bench_chart_soak",
        server: "chart-soak-server",
        timescaledb: args.embedded_timescaledb,
        history: args.history,
        history_rate: 0.2,
        env: &env,
        baseline_bin: None,
    };
    server
        .run(&args.work, async |_, server, _| soak(server, &args).await)
        .await
}

async fn soak(server: &Server, args: &ChartSoakArgs) -> anyhow::Result<Value> {
    let feed = Feed::start(
        Some((server.http(), setup::TOKEN.to_owned())),
        Duration::from_secs_f64(1.0 / args.ticks_per_sec.max(0.1)),
    );
    let mut browser = Browser::start(&args.chromium).await?;
    let samples = watch(&mut browser, server, args).await;
    browser.stop().await;
    let posted = feed.join().await;
    let samples = samples?;
    summary(&samples, posted, args)
}

/// Loads the page, turns the indicators on and reads it every `--sample-every`.
async fn watch(
    browser: &mut Browser,
    server: &Server,
    args: &ChartSoakArgs,
) -> anyhow::Result<Vec<Sample>> {
    for domain in ["Page.enable", "Performance.enable", "HeapProfiler.enable"] {
        browser.call(domain, json!({})).await?;
    }
    browser
        .call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": PROBE }),
        )
        .await?;
    let url = format!("{}/?symbol=BTC/USD", server.http());
    browser.call("Page.navigate", json!({ "url": url })).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while browser
        .eval("document.querySelector('#connection')?.dataset.state")
        .await?
        != "live"
    {
        if Instant::now() > deadline {
            bail!("the chart page was not live within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let on = browser.eval(ALL_INDICATORS).await?;
    say!(
        "chart page live, {on} indicators on; watching for {:?}",
        args.duration
    );
    let started = Instant::now();
    let pids = browser.pid().map(browser_pids).unwrap_or_default();
    let cpu0 = cpu(&pids);
    let mut samples = Vec::new();
    let mut every = tokio::time::interval(args.sample_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    while started.elapsed() < args.duration {
        every.tick().await;
        let sample = read(browser, started, cpu(&pids) - cpu0).await?;
        if samples.len() % 6 == 0 {
            say!(
                "{:.0} s: {} updates, heap {:.1} MB, {} nodes, {}",
                sample.seconds,
                sample.counts["updates"],
                sample.js_heap_used_bytes / 1e6,
                sample.dom_nodes,
                sample.state
            );
        }
        samples.push(sample);
    }
    Ok(samples)
}

/// Chromium and every process it started (renderer, GPU, utility).
fn browser_pids(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        all.extend(system::children_of(all[i]));
        i += 1;
    }
    all
}

fn cpu(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| system::cpu_seconds(*p)).sum()
}

async fn read(browser: &mut Browser, started: Instant, cpu: f64) -> anyhow::Result<Sample> {
    browser
        .call("HeapProfiler.collectGarbage", json!({}))
        .await?;
    let heap = browser.call("Runtime.getHeapUsage", json!({})).await?;
    let metrics = browser.call("Performance.getMetrics", json!({})).await?;
    let metric = |name: &str| {
        metrics["metrics"]
            .as_array()
            .and_then(|all| all.iter().find(|m| m["name"] == name))
            .and_then(|m| m["value"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let counts = browser.eval("window.__cwSoak").await?;
    let state = browser
        .eval("document.querySelector('#connection')?.dataset.state")
        .await?;
    Ok(Sample {
        seconds: started.elapsed().as_secs_f64(),
        js_heap_used_bytes: heap["usedSize"].as_f64().context("no heap usage")?,
        dom_nodes: metric("Nodes"),
        js_event_listeners: metric("JSEventListeners"),
        counts,
        state: state.as_str().unwrap_or_default().to_owned(),
        browser_cpu_seconds: cpu,
    })
}

/// The figures over the samples after the warm-up.
fn summary(samples: &[Sample], posted: u64, args: &ChartSoakArgs) -> anyhow::Result<Value> {
    let warm = args.warm_up.as_secs_f64();
    let kept: Vec<&Sample> = samples.iter().filter(|s| s.seconds >= warm).collect();
    let (Some(first), Some(last)) = (kept.first(), kept.last()) else {
        bail!("no sample after the warm-up");
    };
    let span = last.seconds - first.seconds;
    let delta = |key: &str| {
        last.counts[key].as_f64().unwrap_or(0.0) - first.counts[key].as_f64().unwrap_or(0.0)
    };
    let per_sec = |key: &str| if span > 0.0 { delta(key) / span } else { 0.0 };
    let heap: Vec<(f64, f64)> = kept
        .iter()
        .map(|s| (s.seconds / 60.0, s.js_heap_used_bytes))
        .collect();
    let not_live = kept.iter().filter(|s| s.state != "live").count();
    let updates = delta("updates");
    let report = json!({
        "poll_interval_ms": args.poll_interval.as_millis(),
        "ticks_posted": posted,
        "seconds_measured": span,
        "updates_per_sec": per_sec("updates"),
        "legend_redraws_per_sec": per_sec("legend"),
        "price_redraws_per_sec": per_sec("price"),
        "indicator_redraws_per_sec": per_sec("studies"),
        "frames_per_sec": per_sec("frames"),
        "frames_over_33ms": delta("over33"),
        "frames_over_50ms": delta("over50"),
        "frames_over_100ms": delta("over100"),
        // Over the whole run, the page's load included.
        "longest_frame_ms": last.counts["maxGap"],
        "long_tasks": delta("longTasks"),
        "long_task_ms": delta("longTaskMs"),
        "js_heap_used_first_bytes": first.js_heap_used_bytes,
        "js_heap_used_last_bytes": last.js_heap_used_bytes,
        "js_heap_used_max_bytes": kept.iter().map(|s| s.js_heap_used_bytes).fold(0.0, f64::max),
        "js_heap_slope_bytes_per_min": slope(&heap),
        "dom_nodes_first": first.dom_nodes,
        "dom_nodes_last": last.dom_nodes,
        "js_event_listeners_first": first.js_event_listeners,
        "js_event_listeners_last": last.js_event_listeners,
        "samples_not_live": not_live,
        "browser_cpu_ms_per_update": if updates > 0.0 {
            (last.browser_cpu_seconds - first.browser_cpu_seconds) * 1e3 / updates
        } else {
            0.0
        },
        "load_after": system::load_average(),
        "samples": samples,
    });
    say!(
        "{:.1} updates/s, legend {:.1}/s, {:.1} frames/s ({} over 50 ms, longest {} ms), heap {:.2} → {:.2} MB, nodes {} → {}",
        report["updates_per_sec"].as_f64().unwrap_or(0.0),
        report["legend_redraws_per_sec"].as_f64().unwrap_or(0.0),
        report["frames_per_sec"].as_f64().unwrap_or(0.0),
        report["frames_over_50ms"],
        report["longest_frame_ms"],
        first.js_heap_used_bytes / 1e6,
        last.js_heap_used_bytes / 1e6,
        first.dom_nodes,
        last.dom_nodes
    );
    Ok(report)
}
