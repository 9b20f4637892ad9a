//! The same guarantees on TimescaleDB (`ticks` a hypertable, `one_min_candle` a continuous
//! aggregate). Runs on `CANDLEWICK_TEST_TIMESCALEDB_URL` when it names a server with the
//! extension preloaded (e.g. postgresql://candlewick:candlewick@127.0.0.1:55432/candlewick),
//! otherwise on an embedded cluster with TimescaleDB preloaded when TimescaleDB is installed on
//! this machine, and says it is skipped when neither is there. Each test gets a fresh database,
//! dropped again when it passes.

use std::sync::atomic::{AtomicU32, Ordering};

use candlewick::db::{self, Flavour};
use candlewick::domain::Candle;
use secrecy::{ExposeSecret, SecretString};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

use crate::candles::{at, stored_candles};
use crate::helpers::{TestApp, spawn_app_on};
use crate::journal::{load_window, poll_changes};

const VAR: &str = "CANDLEWICK_TEST_TIMESCALEDB_URL";
const PREFIX: &str = "cw_test_";

/// The server's URL, or `None` after saying the test is skipped.
pub fn server_url() -> Option<String> {
    match std::env::var(VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => match crate::helpers::timescale_cluster() {
            Some(pg) => Some(pg.url("postgres").expose_secret().to_owned()),
            None => {
                eprintln!("skipped: TimescaleDB is not installed here and {VAR} is not set");
                None
            }
        },
    }
}

fn with_database(url: &str, name: &str) -> SecretString {
    let mut u = url::Url::parse(url).unwrap_or_else(|e| panic!("{VAR} is not a URL: {e}"));
    u.set_path(name);
    u.to_string().into()
}

async fn admin(url: &str) -> PgConnection {
    let opts = db::connect_options(&url.to_owned().into()).expect("a database URL");
    PgConnection::connect_with(&opts)
        .await
        .unwrap_or_else(|e| panic!("connecting to {VAR}: {e}"))
}

/// Drops (once per run) the databases of earlier runs whose process is gone.
async fn drop_leftovers(url: &str) {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let mut conn = admin(url).await;
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1")
                .bind(format!("{PREFIX}%"))
                .fetch_all(&mut conn)
                .await
                .expect("listing test databases");
        for name in names {
            let pid = name
                .trim_start_matches(PREFIX)
                .split('_')
                .next()
                .unwrap_or_default();
            if !pid.is_empty() && std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue; // a running test process (maybe this one) still owns it
            }
            sqlx::query(sqlx::AssertSqlSafe(format!(
                r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
            )))
            .execute(&mut conn)
            .await
            .expect("dropping an old test database");
        }
    })
    .await;
}

/// A fresh database on the TimescaleDB server, migrated; asserts the TimescaleDB flavour.
pub struct TsDatabase {
    server: String,
    name: String,
    url: SecretString,
    pool: PgPool,
}

impl TsDatabase {
    pub async fn create(server: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if std::env::var_os("TEST_LOG").is_some() {
            candlewick::telemetry::init();
        }
        drop_leftovers(server).await;
        let name = format!(
            "{PREFIX}{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = admin(server).await;
        sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE on {VAR} (the role needs CREATEDB): {e}"));
        let url = with_database(server, &name);
        let pool = db::build_pool(db::connect_options(&url).expect("URL"));
        let flavour = db::migrate(&pool)
            .await
            .expect("migrating the TimescaleDB test database");
        assert_eq!(
            flavour,
            Flavour::TimescaleDb,
            "{VAR} names a server without a usable timescaledb extension"
        );
        Self {
            server: server.to_owned(),
            name,
            url,
            pool,
        }
    }

    pub async fn app(&self) -> TestApp {
        spawn_app_on(self.name.clone(), self.url.clone(), &[]).await
    }

    /// A server with these command-line flags (and the tests' defaults) over this database.
    pub async fn app_with_args(&self, extra: &[&str]) -> TestApp {
        spawn_app_on(self.name.clone(), self.url.clone(), extra).await
    }

    /// A server with these settings over this database.
    pub async fn app_with(&self, settings: candlewick::config::Settings) -> TestApp {
        crate::helpers::spawn_app_with_settings(self.name.clone(), self.url.clone(), settings).await
    }

    /// Called at the end of a passing test (a failing one leaves its database to look at).
    pub async fn drop(self, app: Option<TestApp>) {
        if let Some(app) = app {
            app.stop().await;
            app.pool.close().await;
        }
        self.pool.close().await;
        let mut conn = admin(&self.server).await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
            self.name
        )))
        .execute(&mut conn)
        .await
        .expect("dropping the test database");
    }
}

#[actix_web::test]
async fn on_timescaledb_ticks_is_a_hypertable_and_one_min_candle_a_real_time_aggregate() {
    let Some(server) = server_url() else { return };
    let ts = TsDatabase::create(&server).await;
    let hypertables: Vec<String> =
        sqlx::query_scalar("SELECT hypertable_name::text FROM timescaledb_information.hypertables WHERE hypertable_schema = 'public'")
            .fetch_all(&ts.pool)
            .await
            .expect("reading timescaledb_information.hypertables");
    assert_eq!(hypertables, ["ticks"]);
    let caggs: Vec<(String, bool)> = sqlx::query_as(
        "SELECT view_name::text, materialized_only FROM timescaledb_information.continuous_aggregates WHERE view_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&ts.pool)
    .await
    .expect("reading timescaledb_information.continuous_aggregates");
    assert_eq!(
        caggs,
        [
            ("one_day_candle".to_owned(), false),
            ("one_hour_candle".to_owned(), false),
            ("one_min_candle".to_owned(), false)
        ],
        "one_min_candle and its hour and day rollups, with real-time aggregation on"
    );
    let policies: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate'",
    )
    .fetch_one(&ts.pool)
    .await
    .expect("reading timescaledb_information.jobs");
    assert_eq!(policies, 3, "a refresh policy on each aggregate");
    let described = Flavour::TimescaleDb
        .describe(&ts.pool)
        .await
        .expect("describe");
    assert!(described.starts_with("timescaledb 2."), "{described}");

    // Real-time aggregation: a tick in the current minute shows without any refresh.
    sqlx::query("INSERT INTO ticks VALUES (now(), 'NOW/USD', 42.5, 1)")
        .execute(&ts.pool)
        .await
        .expect("INSERT");
    let now_candles: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM one_min_candle WHERE symbol = 'NOW/USD' AND open = 42.5",
    )
    .fetch_one(&ts.pool)
    .await
    .expect("reading one_min_candle");
    assert_eq!(
        now_candles, 1,
        "a fresh tick is not in one_min_candle at once"
    );
    ts.drop(None).await;
}

#[actix_web::test]
async fn on_timescaledb_random_writes_keep_one_min_candle_equal_to_the_ticks() {
    let Some(server) = server_url() else { return };
    let ts = TsDatabase::create(&server).await;
    let app = ts.app().await;
    crate::candles::random_writes_keep_candles_exact(&app, Flavour::TimescaleDb, 500).await;
    ts.drop(Some(app)).await;
}

#[actix_web::test]
async fn on_timescaledb_concurrent_writers_leave_exact_candles() {
    let Some(server) = server_url() else { return };
    let ts = TsDatabase::create(&server).await;
    crate::candles::concurrent_writers_of_one_minute(&ts.pool, Flavour::TimescaleDb).await;
    crate::candles::parallel_writers_keep_candles_exact(&ts.pool, Flavour::TimescaleDb).await;
    crate::candles::concurrent_inserts_into_one_hot_minute(&ts.pool, Flavour::TimescaleDb).await;
    ts.drop(None).await;
}

#[actix_web::test]
async fn on_timescaledb_the_journal_catches_psql_writes_and_late_commits() {
    let Some(server) = server_url() else { return };
    let ts = TsDatabase::create(&server).await;
    crate::journal::psql_writes_reach_the_journal(&ts.pool, &ts.url).await;
    crate::journal::out_of_order_commits_are_not_missed(&ts.pool).await;
    ts.drop(None).await;
}

/// An edit to an already-materialized minute: `one_min_candle` keeps the old value until that
/// range is refreshed, but the journal reports the corrected candle at once.
#[actix_web::test]
async fn on_timescaledb_an_edit_to_a_materialized_minute_is_reported_corrected() {
    let Some(server) = server_url() else { return };
    let ts = TsDatabase::create(&server).await;
    let pool = &ts.pool;
    crate::helpers::psql(
        &ts.url,
        "INSERT INTO ticks VALUES ('2024-07-03 06:25:10+00', 'MAT/USD', 100, 1), ('2024-07-03 06:25:50+00', 'MAT/USD', 110, 2)",
    );
    // Materialize everything (what the refresh policy does; this waits out its runs).
    Flavour::TimescaleDb
        .refresh(pool, at("2024-07-03T06:25:00Z"), chrono::Utc::now())
        .await
        .expect("refresh");
    let key = ("MAT/USD".to_owned(), at("2024-07-03T06:25:00Z").timestamp());
    let close = |c: &std::collections::BTreeMap<(String, i64), crate::candles::Stored>| {
        c.get(&key).map(|s| s.ohlcv.close)
    };
    assert_eq!(
        close(&stored_candles(pool).await),
        Some(110.0),
        "materialized candle"
    );

    let (mut pos, _) = load_window(pool, at("2024-01-01T00:00:00Z"))
        .await
        .expect("load_window");
    crate::helpers::psql(
        &ts.url,
        "UPDATE ticks SET price = 95 WHERE symbol = 'MAT/USD' AND time = '2024-07-03 06:25:50+00'",
    );
    assert_eq!(
        close(&stored_candles(pool).await),
        Some(110.0),
        "TimescaleDB now shows edits to materialized minutes at once; this test's premise changed"
    );
    let (next, changes) = poll_changes(pool, &pos).await.expect("poll_changes");
    pos = next;
    let t = key.1;
    assert!(!changes.reload);
    assert_eq!(changes.minutes.len(), 1, "{changes:?}");
    assert_eq!(changes.minutes[0].symbol, "MAT/USD");
    assert_eq!(changes.minutes[0].t, t);
    assert_eq!(
        changes.minutes[0].candle,
        Some(Candle {
            t,
            open: 100.0,
            high: 100.0,
            low: 95.0,
            close: 95.0,
            volume: 3.0
        }),
        "the journal's candle for the edited minute"
    );

    // The refresh the server's poller makes for such minutes brings one_min_candle in line.
    Flavour::TimescaleDb
        .refresh(pool, at("2024-07-03T06:25:00Z"), at("2024-07-03T06:26:00Z"))
        .await
        .expect("after_changes over the edited minute");
    assert_eq!(
        close(&stored_candles(pool).await),
        Some(95.0),
        "one_min_candle after after_changes"
    );
    crate::candles::assert_candles_match_ticks(pool, "after the refresh").await;

    // A delete of the whole materialized minute: reported as gone, and gone after a refresh.
    crate::helpers::psql(&ts.url, "DELETE FROM ticks WHERE symbol = 'MAT/USD'");
    let (_, changes) = poll_changes(pool, &pos).await.expect("poll_changes");
    assert_eq!(changes.minutes.len(), 1, "{changes:?}");
    assert_eq!(changes.minutes[0].candle, None, "a minute without ticks");
    Flavour::TimescaleDb
        .refresh(pool, at("2024-07-03T06:25:00Z"), at("2024-07-03T06:26:00Z"))
        .await
        .expect("after_changes");
    assert_eq!(
        close(&stored_candles(pool).await),
        None,
        "the emptied minute is still in one_min_candle"
    );
    ts.drop(None).await;
}

/// Refreshing the minutes of one edit must not hide older minutes that were never
/// materialized (real-time aggregation only covers minutes after the refreshed range).
#[actix_web::test]
async fn on_timescaledb_refreshing_an_edited_minute_hides_no_older_minute() {
    let Some(server) = server_url() else { return };
    let ts = TsDatabase::create(&server).await;
    let pool = &ts.pool;
    crate::helpers::psql(
        &ts.url,
        "INSERT INTO ticks VALUES ('2024-07-03 06:25:00+00', 'OLD/USD', 1, 1), ('2024-07-03 07:05:00+00', 'OLD/USD', 2, 1)",
    );
    crate::candles::assert_candles_match_ticks(pool, "before any refresh").await;
    Flavour::TimescaleDb
        .refresh(pool, at("2024-07-03T07:05:00Z"), at("2024-07-03T07:06:00Z"))
        .await
        .expect("after_changes over 07:05");
    crate::candles::assert_candles_match_ticks(pool, "after refreshing only the 07:05 minute")
        .await;
    ts.drop(None).await;
}

/// The server's poller refreshes what the tutorial's UPDATE and DELETE change, so psql readers
/// of `one_min_candle` see the tutorial's candles on TimescaleDB too.
#[actix_web::test]
async fn on_timescaledb_the_tutorials_sql_gives_the_tutorials_candles() {
    let Some(server) = server_url() else { return };
    let ts = TsDatabase::create(&server).await;
    let app = ts.app().await;
    crate::tutorial::tutorial_sql_gives_the_tutorial_candles(&app, Flavour::TimescaleDb).await;
    ts.drop(Some(app)).await;
}

#[actix_web::test]
async fn on_timescaledb_a_copy_into_a_materialized_minute_shows_after_a_refresh() {
    let Some(server) = server_url() else { return };
    let ts = TsDatabase::create(&server).await;
    let pool = &ts.pool;
    crate::helpers::psql(
        &ts.url,
        "INSERT INTO ticks VALUES ('2024-07-03 06:25:10+00', 'CPY/USD', 100, 1)",
    );
    Flavour::TimescaleDb
        .refresh(pool, at("2024-07-03T06:25:00Z"), chrono::Utc::now())
        .await
        .expect("materializing");

    // COPY into the materialized minute, as a bulk loader (or `psql \copy`) would.
    let mut conn = pool.acquire().await.expect("a connection");
    let mut copy = conn
        .copy_in_raw("COPY ticks (time, symbol, price, volume) FROM STDIN WITH (FORMAT csv)")
        .await
        .expect("COPY");
    copy.send(b"2024-07-03T06:25:40Z,CPY/USD,150,2\n".as_slice())
        .await
        .expect("sending a row");
    copy.finish().await.expect("finishing COPY");
    drop(conn);

    Flavour::TimescaleDb
        .refresh(pool, at("2024-07-03T06:25:00Z"), at("2024-07-03T06:26:00Z"))
        .await
        .expect("refreshing the changed minute");
    let key = ("CPY/USD".to_owned(), at("2024-07-03T06:25:00Z").timestamp());
    let stored = stored_candles(pool).await;
    assert_eq!(
        stored.get(&key).map(|s| (s.ohlcv.high, s.ohlcv.close)),
        Some((150.0, 150.0)),
        "one_min_candle after a COPY into a materialized minute and a refresh"
    );
    crate::candles::assert_candles_match_ticks(pool, "after the COPY").await;
    ts.drop(None).await;
}

#[actix_web::test]
async fn on_timescaledb_paging_back_gives_every_candle_once() {
    let Some(server) = server_url() else {
        return;
    };
    let ts = TsDatabase::create(&server).await;
    let app = ts.app().await;
    crate::history::store_history(&app).await;
    // Some of it materialized, some still real-time: pages cross the watermark.
    crate::helpers::refresh_aggregate(&ts.pool, "one_min_candle", "NULL", "'2024-07-01T20:00:00Z'")
        .await;
    crate::history::pages_hold_every_candle_once(&app).await;
    ts.drop(Some(app)).await;
}

#[actix_web::test]
async fn on_timescaledb_a_copy_across_chunks_below_the_watermark_shows_after_a_refresh() {
    // A COPY logs no invalidation by itself: the insert trigger rewrites the rows at each
    // chunk's oldest and newest copied time (migration 0015), and the invalidation of each
    // chunk spans everything copied in between.
    let Some(server) = server_url() else { return };
    let ts = TsDatabase::create(&server).await;
    let pool = &ts.pool;
    // Materialized minutes over three weeks (three or four chunks of `ticks`).
    crate::helpers::psql(
        &ts.url,
        "INSERT INTO ticks \
         SELECT '2024-07-01 00:00:10+00'::timestamptz + d * interval '1 day', 'SPAN/USD', 100, 1 \
         FROM generate_series(0, 20) AS d",
    );
    Flavour::TimescaleDb
        .refresh(pool, at("2024-06-01T00:00:00Z"), chrono::Utc::now())
        .await
        .expect("materializing");

    // COPY a tick into every one of those minutes, in no particular order.
    let mut conn = pool.acquire().await.expect("a connection");
    let mut copy = conn
        .copy_in_raw("COPY ticks (time, symbol, price, volume) FROM STDIN WITH (FORMAT csv)")
        .await
        .expect("COPY");
    let mut rows = String::new();
    for d in [
        10, 0, 20, 5, 15, 1, 19, 7, 13, 3, 17, 9, 11, 2, 18, 4, 16, 6, 14, 8, 12,
    ] {
        rows.push_str(&format!(
            "2024-07-{:02}T00:00:40Z,SPAN/USD,{},2\n",
            d + 1,
            200 + d
        ));
    }
    copy.send(rows.as_bytes()).await.expect("sending the rows");
    copy.finish().await.expect("finishing COPY");
    drop(conn);

    Flavour::TimescaleDb
        .refresh(pool, at("2024-06-01T00:00:00Z"), at("2024-08-01T00:00:00Z"))
        .await
        .expect("refreshing");
    let stored = stored_candles(pool).await;
    for d in 0..=20 {
        let key = (
            "SPAN/USD".to_owned(),
            at(&format!("2024-07-{:02}T00:00:00Z", d + 1)).timestamp(),
        );
        assert_eq!(
            stored.get(&key).map(|s| (s.ohlcv.close, s.trades)),
            Some((f64::from(200 + d), 2)),
            "day {d}'s minute after a COPY across chunks and a refresh"
        );
    }
    crate::candles::assert_candles_match_ticks(pool, "after the COPY").await;
    ts.drop(None).await;
}
