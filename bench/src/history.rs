//! `history`: what a new user meets who loads years of one-minute history through
//! `candlewick import` while the server runs, then looks at it: the import's rate, the time
//! until every aggregate is materialized, and, from one second after the import returned, every
//! page back through all history at each interval (`/api/candles?before=`, gzip, as the chart
//! asks), a 1,500-bar `/ws` snapshot at 1d (first) and, in headless Chromium, the chart page at 1d to
//! its first drawn screen; optionally the same reads of a baseline build on the same database.

use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use candlewick::config::EmbeddedTimescaleDb;
use candlewick::db::Flavour;
use candlewick::domain::Interval;
use chrono::{DateTime, Utc};
use clap::Args;
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::{Value, json};

use crate::say;
use crate::setup::{self, Embedded, Server, WorkArgs};
use crate::stats::Summary;
use crate::system;

/// Every walk stops here whatever the pages say (ten years of minutes are 5,256 pages).
const MAX_PAGES: usize = 20_000;

#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Years of one tick a minute for BTC/USD, ending now (ten years: 5,256,000 ticks).
    #[arg(long, default_value_t = 10.0)]
    pub years: f64,
    /// Other symbols, each with one tick a minute for --symbol-days.
    #[arg(long, default_value_t = 99)]
    pub symbols: usize,
    #[arg(long, default_value_t = 30)]
    pub symbol_days: i64,
    /// Candles per page.
    #[arg(long, default_value_t = 1_000)]
    pub page: usize,
    #[arg(long, value_delimiter = ',', default_value = "1m,5m,15m,1h,4h,1d")]
    pub intervals: Vec<String>,
    /// Bars in the 1d snapshot.
    #[arg(long, default_value_t = 1_500)]
    pub snapshot: usize,
    /// The embedded cluster: `auto` (TimescaleDB when installed) or `off` (plain PostgreSQL).
    #[arg(long, value_enum, default_value_t = EmbeddedTimescaleDb::Auto)]
    pub embedded_timescaledb: EmbeddedTimescaleDb,
    /// Loads of the chart page at 1d to time in Chromium (the first cold; 0: skip).
    #[arg(long, default_value_t = 3)]
    pub chromium_runs: usize,
    #[arg(long, default_value = "chromium")]
    pub chromium: String,
    /// Another candlewick binary (e.g. a build of an older commit) whose reads are measured in
    /// the same run on the same database, after this build's (the import is this build's).
    #[arg(long)]
    pub baseline_bin: Option<PathBuf>,
    /// Pages per interval the baseline walks at most (its slow intervals can take many minutes
    /// through ten years); by default as many as this build's walk.
    #[arg(long)]
    pub baseline_max_pages: Option<usize>,
    #[command(flatten)]
    pub work: WorkArgs,
}

#[derive(Debug, Serialize)]
struct IntervalReport {
    interval: String,
    pages: usize,
    candles: usize,
    page_http: Summary,
}

pub async fn run(args: HistoryArgs) -> anyhow::Result<Value> {
    let intervals = args
        .intervals
        .iter()
        .map(|i| Interval::parse(i).map_err(|e| anyhow::anyhow!("--intervals: {}", e.0)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.page == 0 || args.years <= 0.0 {
        bail!("--page and --years must be above 0");
    }
    let ws = args.work.open()?;
    let bin = args.work.server_bin.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .unwrap_or_default()
            .with_file_name("candlewick")
    });
    let csv = ws.log_path("history-ticks").with_extension("csv");
    let now = Utc::now().timestamp().div_euclid(60) * 60;
    let ticks = write_csv(&csv, &args, now).context("writing the CSV")?;
    say!("{ticks} ticks in {}", csv.display());
    let load_before = system::load_average();
    let cluster = ws
        .cluster(Embedded {
            timescaledb: args.embedded_timescaledb,
            count_statements: false,
        })
        .await?;
    cluster
        .run_scratch("candlewick_bench_history", async |_, db| {
            let storage = db.flavour.describe(&db.pool).await?;
            let server = ws.spawn_server(&db.url, "history-server").await?;
            say!("{storage}: importing");
            let started = Instant::now();
            let out = tokio::process::Command::new(&bin)
                .arg("import")
                .arg(&csv)
                .env("DATABASE_URL", db.url.expose_secret())
                .env("CANDLEWICK_DATA_DIR", ws.log_path("history-import"))
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .context("running candlewick import")?;
            let import_seconds = started.elapsed().as_secs_f64();
            if !out.status.success() {
                server.stop().await;
                bail!(
                    "candlewick import failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            say!(
                "imported in {import_seconds:.1} s ({:.0} ticks/s)",
                ticks as f64 / import_seconds
            );
            let ready = aggregates_ready(db, now).await?;
            let ready_after_import = started.elapsed().as_secs_f64() - import_seconds;
            say!("every aggregate ready {ready_after_import:.1} s after the import returned");
            tokio::time::sleep(
                Duration::from_secs(1).saturating_sub(
                    started
                        .elapsed()
                        .saturating_sub(Duration::from_secs_f64(import_seconds)),
                ),
            )
            .await;
            let ours = match reads(&server, &intervals, &args, MAX_PAGES, "").await {
                Ok(r) => r,
                Err(e) => {
                    server.stop().await;
                    return Err(e);
                }
            };
            let baseline = match &args.baseline_bin {
                Some(bin) => {
                    let base = match ws
                        .spawn_server_from(bin, &db.url, "history-baseline", &[])
                        .await
                    {
                        Ok(b) => b,
                        Err(e) => {
                            server.stop().await;
                            return Err(e);
                        }
                    };
                    let max = args.baseline_max_pages.unwrap_or(MAX_PAGES);
                    let r = reads(&base, &intervals, &args, max, "baseline ").await;
                    let pages = if args.chromium_runs == 0 {
                        json!({ "skipped": "--chromium-runs 0" })
                    } else {
                        first_screen(&args, &[("", &server), ("baseline ", &base)]).await
                    };
                    base.stop().await;
                    Some((r?, pages))
                }
                None => None,
            };
            let page_1d = match &baseline {
                Some((_, pages)) => pages.clone(),
                None if args.chromium_runs == 0 => json!({ "skipped": "--chromium-runs 0" }),
                None => first_screen(&args, &[("", &server)]).await,
            };
            server.stop().await;
            Ok(json!({
                "storage": storage,
                "ticks": ticks,
                "import_seconds": import_seconds,
                "import_ticks_per_second": ticks as f64 / import_seconds,
                "aggregates_ready": ready,
                "aggregates_ready_after_import_seconds": ready_after_import,
                "page": args.page,
                "reads": ours,
                "baseline": baseline.map(|(r, _)| r),
                "chart_page_1d_first_screen": page_1d,
                "load_before": load_before,
                "load_after": system::load_average(),
            }))
        })
        .await
}

/// The 1d snapshot, then every page of every interval, from `server`.
async fn reads(
    server: &Server,
    intervals: &[Interval],
    args: &HistoryArgs,
    max_pages: usize,
    label: &str,
) -> anyhow::Result<Value> {
    // The snapshot first: for this build, one second after the import returned, as a user
    // opening the chart at 1d would meet it.
    let (bars, took) = snapshot(server, args.snapshot, label).await?;
    let mut reports = Vec::new();
    for &interval in intervals {
        reports.push(walk(server, interval, args.page, max_pages, label).await?);
    }
    Ok(json!({
        "intervals": reports,
        "snapshot_1d_bars": bars,
        "snapshot_1d_ms": took.as_secs_f64() * 1e3,
    }))
}

/// The chart page at 1d in headless Chromium, from navigation to its first drawn screen of
/// candles (the payload bench's probe), each server's loads alternating.
async fn first_screen(args: &HistoryArgs, servers: &[(&str, &Server)]) -> Value {
    let urls: Vec<String> = servers
        .iter()
        .map(|(_, s)| format!("{}/?symbol=BTC%2FUSD&interval=1d", s.http()))
        .collect();
    match crate::payload::first_candle(&args.chromium, &urls, args.chromium_runs).await {
        Ok(loads) => {
            let mut out = serde_json::Map::new();
            for ((label, _), loads) in servers.iter().zip(loads) {
                let ms: Vec<f64> = loads
                    .iter()
                    .map(|l| l.first_candle.as_secs_f64() * 1e3)
                    .collect();
                say!("{label}chart page at 1d: first screen drawn after {ms:.0?} ms");
                out.insert(
                    format!("{label}page").trim().replace(' ', "_"),
                    json!({ "first_screen_ms": ms }),
                );
            }
            Value::Object(out)
        }
        Err(e) => {
            say!("chromium: {e:#}");
            json!({ "error": format!("{e:#}") })
        }
    }
}

/// BTC/USD: one tick a minute for --years up to `now`; then the other symbols, each one tick
/// a minute for --symbol-days up to `now`.
fn write_csv(path: &std::path::Path, args: &HistoryArgs, now: i64) -> anyhow::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(out, "time,symbol,price,volume")?;
    let minutes = (args.years * 365.0 * 1_440.0) as i64;
    let mut walk = setup::Walk::new(7);
    let mut n = 0u64;
    let mut row = |out: &mut BufWriter<std::fs::File>,
                   t: i64,
                   symbol: &str,
                   price: f64,
                   volume: f64|
     -> anyhow::Result<()> {
        let time = DateTime::from_timestamp(t, 0).context("a time")?;
        writeln!(
            out,
            "{},{symbol},{price},{volume}",
            time.format("%Y-%m-%dT%H:%M:%SZ")
        )?;
        n += 1;
        Ok(())
    };
    for m in (1..=minutes).rev() {
        let t = now - m * 60;
        let tick = walk.tick(DateTime::from_timestamp(t, 0).context("a time")?);
        row(
            &mut out,
            t,
            setup::SYMBOL,
            tick.price.get(),
            tick.volume.get(),
        )?;
    }
    for s in 0..args.symbols {
        let symbol = format!("SYM{s:02}/USD");
        for m in (1..=args.symbol_days * 1_440).rev() {
            let tick = walk.tick(DateTime::from_timestamp(now, 0).context("a time")?);
            row(
                &mut out,
                now - m * 60,
                &symbol,
                tick.price.get(),
                tick.volume.get(),
            )?;
        }
    }
    out.flush()?;
    Ok(n)
}

/// Waits until the day rollup holds every day of BTC/USD's history (on TimescaleDB: until the
/// aggregates are materialized to the last complete day); returns what was checked.
async fn aggregates_ready(db: &setup::Scratch, now: i64) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(3_600);
    loop {
        let ready = match db.flavour {
            Flavour::Postgres => true,
            Flavour::TimescaleDb => {
                let day: Option<i64> = sqlx::query_scalar(
                    r#"
                    SELECT min(_timescaledb_functions.cagg_watermark(mat_hypertable_id))
                    FROM _timescaledb_catalog.continuous_agg
                    "#,
                )
                .fetch_one(&db.pool)
                .await?;
                day.is_some_and(|w| w / 1_000_000 >= now.div_euclid(86_400) * 86_400)
            }
        };
        if ready {
            return Ok(match db.flavour {
                Flavour::Postgres => "plain: rollups kept in the writing transaction".into(),
                Flavour::TimescaleDb => "every aggregate's watermark at today or later".into(),
            });
        }
        if Instant::now() > deadline {
            bail!("the aggregates were not materialized within an hour");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every page back from the newest bar to the oldest.
async fn walk(
    server: &Server,
    interval: Interval,
    page: usize,
    max_pages: usize,
    label: &str,
) -> anyhow::Result<IntervalReport> {
    let client = reqwest::Client::new();
    let mut times = Vec::new();
    let mut before: Option<i64> = None;
    let mut candles = 0;
    while times.len() < max_pages {
        let mut url = format!(
            "{}/api/candles?symbol={}&interval={interval}&limit={page}",
            server.http(),
            setup::SYMBOL.replace('/', "%2F")
        );
        if let Some(b) = before {
            url.push_str(&format!("&before={b}"));
        }
        let t = Instant::now();
        let resp = client
            .get(&url)
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let body = resp.bytes().await?;
        times.push(t.elapsed());
        if !status.is_success() {
            bail!("GET {url}: {status}");
        }
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut json)
            .or_else(|_| {
                json.clear();
                json.extend_from_slice(&body);
                Ok::<_, anyhow::Error>(0)
            })?;
        let rows: Vec<Value> = serde_json::from_slice(&json).context("parsing a page")?;
        candles += rows.len();
        let oldest = rows
            .last()
            .and_then(|r| r["bucket"].as_str())
            .and_then(|b| DateTime::parse_from_rfc3339(b).ok())
            .map(|b| b.timestamp());
        if rows.len() < page || oldest.is_none() {
            break;
        }
        before = oldest;
    }
    let page_http = Summary::of(&times);
    say!(
        "{label}{interval}: {} pages, {candles} candles; per page p50 {:.2} p99 {:.2} ms",
        times.len(),
        page_http.p50_ms,
        page_http.p99_ms
    );
    Ok(IntervalReport {
        interval: interval.to_string(),
        pages: times.len(),
        candles,
        page_http,
    })
}

/// Connect → the snapshot frame of `/ws?interval=1d&limit=bars`: (bars, time).
async fn snapshot(server: &Server, bars: usize, label: &str) -> anyhow::Result<(usize, Duration)> {
    let url = server.ws(&format!(
        "symbol={}&interval=1d&limit={bars}",
        setup::SYMBOL.replace('/', "%2F")
    ));
    let t = Instant::now();
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    while let Some(msg) = socket.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = msg? {
            let v: Value = serde_json::from_str(&text)?;
            if v["type"] == "snapshot" {
                let took = t.elapsed();
                let n = v["candles"].as_array().map_or(0, Vec::len);
                say!(
                    "{label}1d snapshot: {n} bars in {:.1} ms",
                    took.as_secs_f64() * 1e3
                );
                return Ok((n, took));
            }
        }
    }
    bail!("the socket closed before a snapshot")
}
