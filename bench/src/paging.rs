//! `paging`: scrolling a chart back through stored history, one page at a time, through
//! `GET /api/candles?before=` (gzip, as the page asks), against fetching the whole range at
//! once the tutorial's way. Per page: the request's time on loopback (the server's time plus a
//! local round trip) and the query's time alone (`db::candles::fetch_candles`); the walk checks
//! that the pages join without a duplicate or a gap and reach the oldest stored candle.

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use candlewick::config::EmbeddedTimescaleDb;
use candlewick::db::candles::{CandleRange, fetch_candles};
use candlewick::domain::Interval;
use chrono::{DateTime, Utc};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::say;
use crate::setup::{self, Embedded, Scratch, Server, WorkArgs};
use crate::stats::{Summary, ratio};
use crate::system;

/// The tutorial's candle query over the whole stored range, at 1m.
const TUTORIAL_FULL_RANGE: &str = r#"
SELECT bucket, open, high, low, close
FROM one_min_candle
WHERE symbol = 'BTC/USD' AND bucket >= NOW() - make_interval(secs => $1)
ORDER BY bucket DESC
"#;
/// The same, rolled up to `$2` seconds per bucket (as a dashboard's wider interval does).
const TUTORIAL_FULL_RANGE_ROLLED_UP: &str = r#"
SELECT date_bin(make_interval(secs => $2), bucket, 'epoch') AS bucket,
       (array_agg(open ORDER BY bucket))[1] AS open,
       max(high) AS high,
       min(low) AS low,
       (array_agg(close ORDER BY bucket DESC))[1] AS close
FROM one_min_candle
WHERE symbol = 'BTC/USD' AND bucket >= NOW() - make_interval(secs => $1)
GROUP BY 1
ORDER BY 1 DESC
"#;
/// Walks stop here whatever the pages say (a month of minutes is 29 pages of 1,500).
const MAX_PAGES_PER_WALK: usize = 10_000;

#[derive(Debug, Clone, Args)]
pub struct PagingArgs {
    /// Ticks stored (spread evenly over --span).
    #[arg(long, default_value_t = 6_048_000)]
    pub ticks: u64,
    /// How much history they cover, ending now.
    #[arg(long, default_value = "30d", value_parser = candlewick::config::parse_duration)]
    pub span: Duration,
    /// Candles per page (the chart page asks for 1,500 on wide screens).
    #[arg(long, default_value_t = 1_500)]
    pub page: usize,
    /// Intervals to page through.
    #[arg(long, value_delimiter = ',', default_value = "1m,1h")]
    pub intervals: Vec<String>,
    /// Walks back through all the history are repeated until this many pages are timed per
    /// interval.
    #[arg(long, default_value_t = 100)]
    pub min_pages: usize,
    /// Runs of each full-range baseline.
    #[arg(long, default_value_t = 10)]
    pub baseline_runs: usize,
    /// The embedded cluster: `auto` (TimescaleDB when installed) or `off` (plain PostgreSQL).
    #[arg(long, value_enum, default_value_t = EmbeddedTimescaleDb::Auto)]
    pub embedded_timescaledb: EmbeddedTimescaleDb,
    #[command(flatten)]
    pub work: WorkArgs,
}

/// One candle as `/api/candles` returns it (only the time is read).
#[derive(Debug, Deserialize)]
struct ApiCandle {
    bucket: DateTime<Utc>,
}

/// Paging one interval back through everything stored.
#[derive(Debug, Serialize)]
struct IntervalReport {
    interval: String,
    walks: usize,
    pages_per_walk: usize,
    candles_per_walk: usize,
    oldest: String,
    /// Request → whole gzip body, per page.
    page_http: Summary,
    /// `fetch_candles` alone, per page.
    page_query: Summary,
    page_wire_bytes_mean: f64,
    /// The whole range in one request (`from` = the span's start, gzip).
    full_range_http: Summary,
    full_range_wire_bytes: usize,
    /// The tutorial-style query over the whole range, straight on the database.
    tutorial_full_range: Summary,
    tutorial_rows: usize,
    /// baseline p50 / page p50.
    tutorial_over_page_query_p50: f64,
    full_range_http_over_page_http_p50: f64,
}

pub async fn run(args: PagingArgs) -> anyhow::Result<Value> {
    if args.page == 0 || args.ticks == 0 {
        bail!("--page and --ticks must be at least 1");
    }
    let intervals = args
        .intervals
        .iter()
        .map(|i| Interval::parse(i).map_err(|e| anyhow::anyhow!("--intervals: {}", e.0)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ws = args.work.open()?;
    let load_before = system::load_average();
    let cluster = ws
        .cluster(Embedded {
            timescaledb: args.embedded_timescaledb,
            count_statements: false,
        })
        .await?;
    cluster
        .run_scratch("candlewick_bench_paging", async |_, db| {
            let storage = db.flavour.describe(&db.pool).await?;
            let per_sec = args.ticks as f64 / args.span.as_secs_f64();
            say!(
                "{storage}: loading {} ticks over {:?}",
                args.ticks,
                args.span
            );
            let started = Instant::now();
            let ticks = setup::load_history(db, Utc::now(), args.span, per_sec).await?;
            let load_seconds = started.elapsed().as_secs_f64();
            let server = ws.spawn_server(&db.url, "paging-server").await?;
            let mut reports = Vec::new();
            for &interval in &intervals {
                match page_through(&server, db, &args, interval).await {
                    Ok(r) => reports.push(r),
                    Err(e) => {
                        server.stop().await;
                        return Err(e);
                    }
                }
            }
            server.stop().await;
            Ok(json!({
                "storage": storage,
                "ticks": ticks,
                "span_seconds": args.span.as_secs_f64(),
                "load_seconds": load_seconds,
                "page": args.page,
                "intervals": reports,
                "load_before": load_before,
                "load_after": system::load_average(),
            }))
        })
        .await
}

/// Walks back from the newest candle to the oldest, page by page, until `min_pages` are
/// timed; then the full-range baselines.
async fn page_through(
    server: &Server,
    db: &Scratch,
    args: &PagingArgs,
    interval: Interval,
) -> anyhow::Result<IntervalReport> {
    let client = reqwest::Client::new();
    let mut http = Vec::new();
    let mut query = Vec::new();
    let mut wire = 0usize;
    let mut walks = 0;
    let (mut pages_per_walk, mut candles_per_walk, mut oldest) = (0, 0, None);
    while http.len() < args.min_pages.max(1) {
        let mut before: Option<DateTime<Utc>> = None;
        let mut pages = 0;
        let mut candles = 0;
        loop {
            let url = page_url(server, interval, args.page, before);
            let (page, bytes, took) = get_gzip(&client, &url).await?;
            http.push(took);
            wire += bytes;
            query.push(time_query(&db.pool, interval, args.page, before).await?);
            let next = check_page(&page, before)?;
            pages += 1;
            candles += page.len();
            if page.len() < args.page || pages >= MAX_PAGES_PER_WALK {
                oldest = next.or(before);
                break;
            }
            before = next;
        }
        walks += 1;
        if walks > 1 && (pages, candles) != (pages_per_walk, candles_per_walk) {
            bail!(
                "{interval}: walk {walks} gave {candles} candles in {pages} pages, the first {candles_per_walk} in {pages_per_walk}"
            );
        }
        (pages_per_walk, candles_per_walk) = (pages, candles);
    }
    let expected = stored_buckets(&db.pool, interval).await?;
    if candles_per_walk as i64 != expected {
        bail!("{interval}: the pages held {candles_per_walk} candles, the database {expected}");
    }
    let page_http = Summary::of(&http);
    let page_query = Summary::of(&query);
    say!(
        "{interval}: {walks} walks of {pages_per_walk} pages ({candles_per_walk} candles); per page http p50 {:.2} p99 {:.2} ms, query p50 {:.2} p99 {:.2} ms",
        page_http.p50_ms,
        page_http.p99_ms,
        page_query.p50_ms,
        page_query.p99_ms
    );

    // The baselines: everything at once.
    let from = Utc::now() - chrono::Duration::from_std(args.span)? - chrono::Duration::hours(1);
    let full_url = format!(
        "{}/api/candles?symbol={}&interval={interval}&from={}&limit=200000",
        server.http(),
        setup::SYMBOL,
        candlewick::domain::time::rfc3339(from)
    );
    let mut full_http = Vec::new();
    let mut full_wire = 0;
    let mut tutorial = Vec::new();
    let mut tutorial_rows = 0;
    let span_secs = args.span.as_secs_f64() + 3_600.0;
    for _ in 0..args.baseline_runs.max(1) {
        let (rows, bytes, took) = get_gzip(&client, &full_url).await?;
        full_http.push(took);
        full_wire = bytes;
        if rows.len() != candles_per_walk {
            bail!(
                "{interval}: the full range held {} candles, the pages {candles_per_walk}",
                rows.len()
            );
        }
        let t = Instant::now();
        let rows = if interval == Interval::M1 {
            sqlx::query(TUTORIAL_FULL_RANGE)
                .bind(span_secs)
                .fetch_all(&db.pool)
                .await
        } else {
            sqlx::query(TUTORIAL_FULL_RANGE_ROLLED_UP)
                .bind(span_secs)
                .bind(interval.seconds() as f64)
                .fetch_all(&db.pool)
                .await
        }
        .context("the tutorial-style full-range query")?;
        tutorial.push(t.elapsed());
        tutorial_rows = rows.len();
    }
    let full_range_http = Summary::of(&full_http);
    let tutorial_full_range = Summary::of(&tutorial);
    say!(
        "{interval}: full range over http p50 {:.1} ms, tutorial-style query p50 {:.1} ms ({tutorial_rows} rows)",
        full_range_http.p50_ms,
        tutorial_full_range.p50_ms
    );
    Ok(IntervalReport {
        interval: interval.to_string(),
        walks,
        pages_per_walk,
        candles_per_walk,
        oldest: oldest.map(|t| t.to_rfc3339()).unwrap_or_default(),
        page_wire_bytes_mean: wire as f64 / http.len().max(1) as f64,
        tutorial_over_page_query_p50: ratio(tutorial_full_range.p50_ms, page_query.p50_ms),
        full_range_http_over_page_http_p50: ratio(full_range_http.p50_ms, page_http.p50_ms),
        page_http,
        page_query,
        full_range_http,
        full_range_wire_bytes: full_wire,
        tutorial_full_range,
        tutorial_rows,
    })
}

fn page_url(
    server: &Server,
    interval: Interval,
    limit: usize,
    before: Option<DateTime<Utc>>,
) -> String {
    let mut url = format!(
        "{}/api/candles?symbol={}&interval={interval}&limit={limit}",
        server.http(),
        setup::SYMBOL
    );
    if let Some(b) = before {
        url.push_str(&format!("&before={}", b.timestamp()));
    }
    url
}

/// GETs `url` asking for gzip: the candles, the bytes on the wire, and the time to the last
/// byte (decompressing and parsing come after the clock stops).
async fn get_gzip(
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<(Vec<ApiCandle>, usize, Duration)> {
    let t = Instant::now();
    let resp = client
        .get(url)
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let gzipped = resp
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let body = resp.bytes().await.context("reading a page")?;
    let took = t.elapsed();
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    let mut json = Vec::new();
    if gzipped {
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut json)
            .context("inflating a page")?;
    } else {
        json.extend_from_slice(&body);
    }
    let candles = serde_json::from_slice(&json).context("parsing a page")?;
    Ok((candles, body.len(), took))
}

/// The query behind one page, timed on its own.
async fn time_query(
    pool: &PgPool,
    interval: Interval,
    limit: usize,
    before: Option<DateTime<Utc>>,
) -> anyhow::Result<Duration> {
    let range = CandleRange {
        symbol: setup::SYMBOL.to_owned(),
        interval,
        from: None,
        to: before,
        limit: limit as i64,
    };
    let t = Instant::now();
    fetch_candles(pool, &range).await?;
    Ok(t.elapsed())
}

/// A page is newest first, strictly older than `before` and than each previous candle (so no
/// duplicate at the seam); returns its oldest time, where the next page starts.
fn check_page(
    page: &[ApiCandle],
    before: Option<DateTime<Utc>>,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let mut newer = before;
    for c in page {
        if newer.is_some_and(|n| c.bucket >= n) {
            bail!(
                "a page is not strictly older than what came before it: {} after {newer:?}",
                c.bucket
            );
        }
        newer = Some(c.bucket);
    }
    Ok(page.last().map(|c| c.bucket))
}

/// How many `interval` buckets the stored 1m candles fill.
async fn stored_buckets(pool: &PgPool, interval: Interval) -> anyhow::Result<i64> {
    sqlx::query_scalar(
        r#"
        SELECT count(DISTINCT date_bin(make_interval(secs => $2), bucket, 'epoch'))
        FROM one_min_candle
        WHERE symbol = $1
        "#,
    )
    .bind(setup::SYMBOL)
    .bind(interval.seconds() as f64)
    .fetch_one(pool)
    .await
    .context("counting the stored buckets")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn page(times: &[i64]) -> Vec<ApiCandle> {
        times
            .iter()
            .map(|&t| ApiCandle {
                bucket: DateTime::from_timestamp(t, 0).unwrap(),
            })
            .collect()
    }

    #[test]
    fn a_page_continues_strictly_below_the_previous_one() {
        let first = page(&[300, 240, 180]);
        let next = check_page(&first, None).unwrap();
        assert_eq!(next.map(|t| t.timestamp()), Some(180));
        assert!(check_page(&page(&[120, 60]), next).is_ok());
        assert!(
            check_page(&page(&[180, 120]), next).is_err(),
            "the seam's candle came twice"
        );
        assert!(
            check_page(&page(&[60, 120]), None).is_err(),
            "not newest first"
        );
    }
}
