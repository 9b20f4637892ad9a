//! Each `candlewick-bench` subcommand at a tiny size: it runs to the end against real servers
//! and a real cluster and reports sane numbers. The speeds themselves are in BENCHMARKS.md.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

/// The subcommands share one embedded cluster directory: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn bench(args: &[&str]) -> Value {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let work: PathBuf = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-smoke");
    let out = Command::new(env!("CARGO_BIN_EXE_candlewick-bench"))
        .args(args)
        .arg("--server-bin")
        .arg(server_bin())
        .arg("--work-dir")
        .arg(&work)
        .output()
        .expect("running candlewick-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "candlewick-bench {args:?} failed:\n{stderr}"
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON report ({e}):\n{stderr}"))
}

/// The `candlewick` binary of the same build (`cargo test` at the root builds it; a
/// `cargo test -p candlewick-bench` alone builds it here first).
fn server_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let bin =
                PathBuf::from(env!("CARGO_BIN_EXE_candlewick-bench")).with_file_name("candlewick");
            if !bin.exists() {
                let mut cargo = Command::new(env!("CARGO"));
                cargo.args(["build", "-p", "candlewick", "--bin", "candlewick"]);
                if bin.parent().is_some_and(|d| d.ends_with("release")) {
                    cargo.arg("--release");
                }
                let status = cargo.status().expect("running cargo build for the server");
                assert!(status.success(), "building the candlewick server failed");
            }
            bin
        })
        .clone()
}

/// Whether TimescaleDB is installed for this machine's PostgreSQL (then the embedded cluster
/// can preload it).
fn timescaledb_installed() -> bool {
    candlewick::embedded::find_bindir()
        .is_ok_and(|bin| candlewick::embedded::timescaledb_installed(&bin))
}

fn num(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {path} in {v:#}"))
}

fn assert_percentiles(v: &Value, at: &str) {
    let (p50, p99, max) = (
        num(v, &format!("{at}/p50_ms")),
        num(v, &format!("{at}/p99_ms")),
        num(v, &format!("{at}/max_ms")),
    );
    assert!(p50 > 0.0, "{at}: p50 is {p50}");
    assert!(
        p99 >= p50 && max >= p99,
        "{at}: p50 {p50} ≤ p99 {p99} ≤ max {max} does not hold"
    );
}

#[test]
fn twenty_viewers_are_held_and_get_every_update() {
    let r = bench(&[
        "viewers",
        "--spawn-servers",
        "1",
        "--count",
        "20",
        "--rate",
        "200",
        "--duration",
        "4s",
        "--history",
        "2h",
        "--history-rate",
        "1",
    ]);
    assert_eq!(num(&r, "/held"), 20.0, "{r:#}");
    assert_eq!(num(&r, "/connect_failures"), 0.0, "{r:#}");
    assert!(
        num(&r, "/frames_in_window") >= 1.0,
        "no update reached the viewers: {r:#}"
    );
    assert_eq!(num(&r, "/missed_updates"), 0.0, "{r:#}");
    assert_eq!(
        num(&r, "/deliveries"),
        20.0 * num(&r, "/frames_in_window"),
        "{r:#}"
    );
    let (p50, p99) = (num(&r, "/spread/p50_ms"), num(&r, "/spread/p99_ms"));
    assert!(p50 >= 0.0 && p99 >= p50, "spread p50 {p50} p99 {p99}");
    let polls = num(&r, "/during/polls_per_server_per_sec");
    assert!(
        polls > 0.3 && polls < 2.5,
        "the server should poll about once a second: {r:#}"
    );
    assert!(
        num(&r, "/server_rss_before_bytes") > 0.0,
        "the server's memory was not read: {r:#}"
    );
}

#[test]
fn viewers_through_nginx_are_judged_against_their_own_server_and_nginx_is_measured() {
    if !["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .any(|p| std::path::Path::new(p).is_file())
    {
        eprintln!("skipped: nginx is not installed (.ci/run installs nginx-light)");
        return;
    }
    let r = bench(&[
        "viewers",
        "--spawn-servers",
        "2",
        "--proxy",
        "nginx",
        "--count",
        "20",
        "--rate",
        "200",
        "--duration",
        "4s",
        "--history",
        "2h",
        "--history-rate",
        "1",
    ]);
    assert_eq!(num(&r, "/held"), 20.0, "{r:#}");
    assert_eq!(num(&r, "/servers"), 2.0, "{r:#}");
    // Each server sends its own frames; a viewer that was judged against the other server's
    // too would miss about half.
    assert!(num(&r, "/frames_in_window") >= 2.0, "{r:#}");
    assert_eq!(num(&r, "/missed_updates"), 0.0, "{r:#}");
    assert!(num(&r, "/proxy/workers") >= 1.0, "{r:#}");
    assert!(num(&r, "/proxy/rss_end_bytes") > 0.0, "{r:#}");
    assert!(num(&r, "/proxy/cpu_seconds") >= 0.0, "{r:#}");
}

#[test]
fn poll_cost_times_all_three_queries_and_counts_statements() {
    let r = bench(&[
        "poll-cost",
        "--span",
        "1h",
        "--ticks-per-sec",
        "3",
        "--polls",
        "20",
        "--tutorial-runs",
        "5",
        "--raw-runs",
        "2",
        "--viewers",
        "0,20",
        "--qps-window",
        "3s",
    ]);
    assert_eq!(num(&r, "/postgresql/ticks"), 10_800.0);
    for q in ["poll", "tutorial_query", "raw_aggregation"] {
        assert_percentiles(&r, &format!("/postgresql/{q}"));
    }
    assert!(num(&r, "/postgresql/candles_in_week") >= 60.0, "{r:#}");
    let rows = r
        .pointer("/statements/rows")
        .and_then(Value::as_array)
        .expect("statement rows");
    assert_eq!(rows.len(), 2);
    for row in rows {
        let qps = num(row, "/server_statements_per_sec");
        assert!(
            qps > 0.0 && qps < 10.0,
            "the server's statements per second are not sane: {row:#}"
        );
    }
    assert_eq!(num(&rows[1], "/viewers_held"), 20.0, "{:#}", rows[1]);
    assert_eq!(num(&rows[1], "/updates_missed"), 0.0, "{:#}", rows[1]);
    if timescaledb_installed() {
        let storage = r["timescaledb"]["storage"].as_str().unwrap_or_default();
        assert!(storage.starts_with("timescaledb"), "{r:#}");
        assert_eq!(num(&r, "/timescaledb/ticks"), 10_800.0);
        for q in ["poll", "tutorial_query", "raw_aggregation"] {
            assert_percentiles(&r, &format!("/timescaledb/{q}"));
        }
        assert!(num(&r, "/timescaledb/candles_in_week") >= 60.0, "{r:#}");
        assert!(
            num(&r, "/timescaledb/poll_exec_ms") > 0.0,
            "pg_stat_statements is preloaded beside TimescaleDB: {r:#}"
        );
    } else {
        assert!(r["timescaledb"]["skipped"].is_string(), "{r:#}");
    }
}

#[test]
fn ingest_measures_every_path_with_and_without_triggers_and_against_a_bare_table() {
    let r = bench(&[
        "ingest",
        "--single-rows",
        "300",
        "--api-ticks",
        "6000",
        "--api-batch",
        "2000",
        "--bulk-ticks",
        "20000",
        "--bulk-batch",
        "10000",
        "--select-symbols",
        "10",
        "--select-minutes",
        "600",
    ]);
    let runs = r["runs"].as_array().expect("runs");
    assert_eq!(
        runs.len(),
        14,
        "four paths × three trigger settings, two paths into the bare table: {r:#}"
    );
    for run in runs {
        assert!(num(run, "/ticks_per_sec") > 0.0, "{run:#}");
    }
    for c in r["comparisons"].as_array().expect("comparisons") {
        assert!(num(c, "/journal_and_candles_slowdown") > 0.0, "{c:#}");
    }
    let select = &r["comparisons"][1];
    assert_eq!(select["path"], "insert_select", "{r:#}");
    assert!(num(select, "/share_of_bare_table") > 0.0, "{select:#}");
}

#[test]
fn payload_sizes_a_snapshot_raw_and_gzipped() {
    let r = bench(&[
        "payload",
        "--history",
        "6h",
        "--history-rate",
        "0.2",
        "--chromium-runs",
        "0",
    ]);
    let candles = num(&r, "/snapshot_candles");
    assert!(
        candles >= 300.0,
        "six hours of minutes should be on the chart: {r:#}"
    );
    let (raw, gz) = (num(&r, "/snapshot_bytes"), num(&r, "/snapshot_gzip_bytes"));
    assert!(
        raw > candles * 20.0 && gz > 0.0 && gz < raw,
        "raw {raw} gzip {gz}"
    );
    assert_eq!(r["http_candles_encoding"], "gzip", "{r:#}");
    // The page's join: at most 500 of those candles, compressed.
    let join = num(&r, "/page_join_snapshot_bytes");
    assert!(
        join > 0.0 && join < raw,
        "the page's join {join} bytes, raw {raw}"
    );
}

#[test]
fn payload_runs_on_timescaledb_when_asked_and_installed() {
    let r = bench(&[
        "payload",
        "--history",
        "2h",
        "--history-rate",
        "0.2",
        "--chromium-runs",
        "0",
        "--embedded-timescaledb",
        "auto",
    ]);
    // The materialized history reaches the snapshot whichever flavour serves it.
    assert!(num(&r, "/snapshot_candles") >= 100.0, "{r:#}");
    let storage = r["storage"].as_str().unwrap_or_default();
    let expected = if timescaledb_installed() {
        "timescaledb"
    } else {
        "postgresql"
    };
    assert!(storage.starts_with(expected), "{r:#}");
}

#[test]
fn a_join_storm_delivers_every_snapshot_and_residents_miss_nothing() {
    let r = bench(&[
        "join-storm",
        "--residents",
        "10",
        "--resident-rate",
        "200",
        "--joiners",
        "60",
        "--rate",
        "300",
        "--storm-window",
        "4s",
        "--settle",
        "1s",
        "--steady",
        "3s",
        "--history",
        "1h",
        "--history-rate",
        "0.2",
    ]);
    assert_eq!(num(&r, "/storm/snapshots_delivered"), 60.0, "{r:#}");
    assert_eq!(num(&r, "/storm/failed"), 0.0, "{r:#}");
    assert!(num(&r, "/storm/bytes_per_join") > 100.0, "{r:#}");
    assert!(num(&r, "/storm/residents/frames") >= 1.0, "{r:#}");
    assert_eq!(num(&r, "/storm/residents/missed_updates"), 0.0, "{r:#}");
    assert_eq!(num(&r, "/steady/deliveries/held"), 70.0, "{r:#}");
    assert_eq!(num(&r, "/steady/deliveries/missed_updates"), 0.0, "{r:#}");
    assert!(
        num(&r, "/server_rss_peak_bytes") >= num(&r, "/server_rss_before_bytes"),
        "{r:#}"
    );
}

#[test]
fn a_feed_is_measured_beside_its_baseline_on_every_installed_flavour() {
    let r = bench(&[
        "feed",
        "--phase",
        "3s",
        "--symbols",
        "10",
        "--viewers",
        "4",
        "--watched",
        "2",
        "--probe-every",
        "100ms",
    ]);
    let mut flavours = vec![("postgresql", "bare_table", "bare_ticks")];
    if timescaledb_installed() {
        flavours.push(("timescaledb", "tutorial_schema", "tutorial_ticks"));
    } else {
        assert!(r["timescaledb"]["skipped"].is_string(), "{r:#}");
    }
    for (flavour, baseline, table) in flavours {
        let f = &r[flavour];
        assert_eq!(f["baseline"], baseline, "{r:#}");
        let comparisons = f["comparisons"].as_array().expect("comparisons");
        let workloads: Vec<&str> = comparisons
            .iter()
            .filter_map(|c| c["workload"].as_str())
            .collect();
        assert_eq!(workloads, ["one-row", "batches", "hot"], "{f:#}");
        for c in comparisons {
            assert!(num(c, "/rows_per_sec") > 0.0, "{c:#}");
            assert!(num(c, "/share_of_baseline") > 0.0, "{c:#}");
        }
        let phases = f["phases"].as_array().expect("phases");
        assert_eq!(
            phases.len(),
            6,
            "each workload into ticks and the baseline: {f:#}"
        );
        for p in phases {
            assert_eq!(num(p, "/written/errors"), 0.0, "{p:#}");
            assert!(num(p, "/polls/polls") >= 1.0, "{p:#}");
            assert!(num(p, "/server_rss_peak_bytes") > 0.0, "{p:#}");
            assert_eq!(num(p, "/viewers_dropped"), 0.0, "{p:#}");
            assert!(num(p, "/probe/ticks") >= 5.0, "{p:#}");
            assert!(
                num(p, "/probe/tick_to_update/n") >= 1.0,
                "no probe tick reached its viewer: {p:#}"
            );
        }
        assert_eq!(phases[0]["written"]["table"], "ticks", "{f:#}");
        assert_eq!(phases[1]["written"]["table"], table, "{f:#}");
        assert_eq!(num(&phases[2], "/written/batch"), 10.0, "{f:#}");
        assert_eq!(num(&phases[4], "/written/writers"), 1.0, "{f:#}");
    }
}

#[test]
fn latency_times_every_probe_tick_at_every_viewer_on_every_installed_flavour() {
    let r = bench(&[
        "latency",
        "--viewers",
        "30",
        "--poll-intervals",
        "250ms,100ms",
        "--write-rate",
        "200",
        "--symbols",
        "5",
        "--probe-every",
        "100ms",
        "--duration",
        "3s",
        "--settle",
        "500ms",
    ]);
    let mut flavours = vec!["postgresql"];
    if timescaledb_installed() {
        flavours.push("timescaledb");
    } else {
        assert!(r["timescaledb"]["skipped"].is_string(), "{r:#}");
    }
    for flavour in flavours {
        let runs = r[flavour]["runs"].as_array().expect("runs");
        let intervals: Vec<f64> = runs.iter().map(|x| num(x, "/poll_interval_ms")).collect();
        assert_eq!(intervals, [250.0, 100.0], "{r:#}");
        for run in runs {
            let v = &run["viewers"];
            assert_eq!(num(v, "/held"), 30.0, "{run:#}");
            assert!(num(v, "/frames") >= 5.0, "{run:#}");
            assert_eq!(num(v, "/missed_updates"), 0.0, "{run:#}");
            assert_eq!(
                num(v, "/deliveries"),
                30.0 * num(v, "/frames"),
                "every viewer got every frame: {run:#}"
            );
            // Every probe tick the probe's viewer saw, timed at each of the 30.
            assert_eq!(
                num(v, "/tick_to_update/n"),
                30.0 * num(run, "/watched/probe/tick_to_update/n"),
                "{run:#}"
            );
            assert_percentiles(v, "/tick_to_update");
            assert_eq!(num(v, "/viewer_p99/n"), 30.0, "one p99 per viewer: {run:#}");
            assert!(
                num(v, "/viewer_p99/max_ms") <= num(v, "/tick_to_update/max_ms"),
                "{run:#}"
            );
            assert!(num(v, "/server_cpu_us_per_delivery") > 0.0, "{run:#}");
            for phase in ["alone", "watched"] {
                let p = &run[phase];
                assert_eq!(num(p, "/written/errors"), 0.0, "{p:#}");
                assert!(num(p, "/written/rows_per_sec") > 0.0, "{p:#}");
                assert!(num(p, "/database/polls_per_sec") > 0.0, "{p:#}");
                assert!(num(p, "/probe/ticks") >= 5.0, "{p:#}");
                assert_eq!(num(p, "/probe/unseen"), 0.0, "{p:#}");
            }
            assert!(num(run, "/writers_watched_over_alone") > 0.0, "{run:#}");
        }
    }
}

#[test]
fn a_chart_soak_reads_the_live_page_and_its_memory_in_chromium() {
    if which("chromium").is_none() {
        eprintln!("skipped: no chromium on PATH (apt-get install -y chromium)");
        return;
    }
    let r = bench(&[
        "chart-soak",
        "--duration",
        "14s",
        "--warm-up",
        "4s",
        "--sample-every",
        "2s",
        "--ticks-per-sec",
        "20",
        "--history",
        "2h",
    ]);
    assert_eq!(num(&r, "/poll_interval_ms"), 100.0, "{r:#}");
    assert_eq!(num(&r, "/samples_not_live"), 0.0, "{r:#}");
    assert!(num(&r, "/updates_per_sec") > 1.0, "{r:#}");
    assert!(num(&r, "/legend_redraws_per_sec") > 1.0, "{r:#}");
    assert!(num(&r, "/frames_per_sec") > 1.0, "{r:#}");
    assert!(num(&r, "/js_heap_used_last_bytes") > 0.0, "{r:#}");
    assert!(num(&r, "/dom_nodes_last") > 0.0, "{r:#}");
    assert!(
        r["samples"].as_array().is_some_and(|s| s.len() >= 5),
        "{r:#}"
    );
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    })
}

#[test]
fn a_start_on_many_stored_symbols_is_timed_and_cold_symbols_load_on_their_first_viewer() {
    let r = bench(&[
        "startup",
        "--symbols",
        "5",
        "--history",
        "2h",
        "--watched",
        "2",
        "--feed-rate",
        "100",
        "--feed-for",
        "3s",
    ]);
    assert_eq!(
        num(&r, "/stored/rows"),
        600.0,
        "5 symbols × 120 minutes: {r:#}"
    );
    assert!(num(&r, "/stored/insert_select_rows_per_sec") > 0.0, "{r:#}");
    assert!(num(&r, "/seconds_to_readyz") > 0.0, "{r:#}");
    assert!(
        num(&r, "/polls_at_ready") >= 1.0,
        "/readyz waits for a poll: {r:#}"
    );
    assert_eq!(num(&r, "/cold_snapshot/n"), 2.0, "{r:#}");
    assert_percentiles(&r, "/cold_snapshot");
    for rss in [
        "server_rss_at_ready_bytes",
        "server_rss_idle_bytes",
        "server_rss_watched_bytes",
    ] {
        assert!(num(&r, &format!("/{rss}")) > 1e6, "{rss}: {r:#}");
    }
    assert!(num(&r, "/feed/written/rows") > 0.0, "{r:#}");
    assert_eq!(num(&r, "/feed/written/errors"), 0.0, "{r:#}");
    assert!(num(&r, "/feed/polls/polls") >= 1.0, "{r:#}");
    assert_eq!(num(&r, "/viewers_dropped"), 0.0, "{r:#}");
}

#[test]
fn a_short_soak_misses_no_update_and_logs_no_error() {
    let r = bench(&[
        "soak",
        "--duration",
        "8s",
        "--viewers",
        "20",
        "--rate",
        "200",
        "--ticks-per-sec",
        "100",
        "--symbols",
        "5",
        "--sample-every",
        "1s",
        "--warm-up",
        "2s",
        "--window",
        "3s",
        "--history",
        "1h",
        "--embedded-timescaledb",
        "off",
    ]);
    assert_eq!(num(&r, "/deliveries/held"), 20.0, "{r:#}");
    assert_eq!(
        r["windows"].as_array().map(Vec::len),
        Some(3),
        "3 s, 3 s, 2 s: {r:#}"
    );
    let frames = num(&r, "/deliveries/frames");
    assert!(frames >= 3.0, "updates flow about once a second: {r:#}");
    assert_eq!(num(&r, "/expected_deliveries"), 20.0 * frames, "{r:#}");
    assert_eq!(num(&r, "/deliveries/missed_updates"), 0.0, "{r:#}");
    assert!(num(&r, "/sequence/updates") >= 3.0, "{r:#}");
    assert_eq!(num(&r, "/sequence/out_of_order"), 0.0, "{r:#}");
    assert!(num(&r, "/feed/rows") > 0.0, "{r:#}");
    assert_eq!(num(&r, "/feed/errors"), 0.0, "{r:#}");
    assert!(
        r["rss_samples"].as_array().map_or(0, Vec::len) >= 8,
        "one sample a second: {r:#}"
    );
    assert!(num(&r, "/rss/rss_after_warm_up_bytes") > 1e6, "{r:#}");
    assert!(num(&r, "/server_log/lines") >= 1.0, "{r:#}");
    assert_eq!(num(&r, "/server_log/errors"), 0.0, "{r:#}");
}

#[test]
fn paging_walks_back_through_all_history_on_both_flavours_without_a_seam() {
    for flavour in ["off", "auto"] {
        let r = bench(&[
            "paging",
            "--ticks",
            "10800",
            "--span",
            "6h",
            "--page",
            "100",
            "--min-pages",
            "6",
            "--baseline-runs",
            "2",
            "--embedded-timescaledb",
            flavour,
        ]);
        let storage = r["storage"].as_str().unwrap_or_default();
        let expected = if flavour == "auto" && timescaledb_installed() {
            "timescaledb"
        } else {
            "postgresql"
        };
        assert!(storage.starts_with(expected), "{r:#}");
        assert_eq!(num(&r, "/ticks"), 10_800.0, "{r:#}");
        let minutes = &r["intervals"][0];
        assert_eq!(minutes["interval"], "1m", "{r:#}");
        // Six hours of minutes, every one with ticks: four pages of 100, the last one short.
        assert!(num(minutes, "/candles_per_walk") >= 360.0, "{r:#}");
        assert_eq!(num(minutes, "/pages_per_walk"), 4.0, "{r:#}");
        let hours = &r["intervals"][1];
        assert_eq!(hours["interval"], "1h", "{r:#}");
        assert!(
            (6.0..=7.0).contains(&num(hours, "/candles_per_walk")),
            "{r:#}"
        );
        for at in [
            "page_http",
            "page_query",
            "full_range_http",
            "tutorial_full_range",
        ] {
            assert_percentiles(minutes, &format!("/{at}"));
            assert_percentiles(hours, &format!("/{at}"));
        }
        assert!(num(minutes, "/page_wire_bytes_mean") > 100.0, "{r:#}");
    }
}
