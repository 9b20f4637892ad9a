//! The seed tutorial's own SQL, run unchanged through psql: its sample ticks, UPDATE and DELETE
//! give its candles in `one_min_candle` (5, 5, then 4), and its chart query runs.

use std::time::Duration;

use candlewick::db::Flavour;

use crate::helpers::{TestApp, eventually, eventually_ok, spawn_app};

const INSERT: &str = "PREPARE insert_ticks AS
INSERT INTO ticks (time, symbol, price, volume)
VALUES ($1, $2, $3, $4);
EXECUTE insert_ticks('2024-07-03 06:25:00+00:00', 'BTC', 61057.0, 0.5);
EXECUTE insert_ticks('2024-07-03 06:24:30+00:00', 'BTC', 61058.8, 0.2);
EXECUTE insert_ticks('2024-07-03 06:23:45+00:00', 'BTC', 61061.4, 0.1);
EXECUTE insert_ticks('2024-07-03 06:22:30+00:00', 'BTC', 61072.7, 0.3);
EXECUTE insert_ticks('2024-07-03 06:21:15+00:00', 'BTC', 61026.4, 0.4);
";
const UPDATE: &str = "PREPARE update_tick AS
UPDATE ticks
SET price = $3, volume = $4
WHERE time = $1 AND symbol = $2;
EXECUTE update_tick('2024-07-03 06:25:00+00:00', 'BTC', 62000.0, 0.6);
";
const DELETE: &str = "PREPARE delete_tick AS DELETE FROM ticks WHERE time = $1 AND symbol = $2;
EXECUTE delete_tick('2024-07-03 06:25:00+00:00', 'BTC');
";
const SELECT_TICKS: &str = "SELECT * FROM ticks ORDER BY time DESC";
const SELECT_CANDLES: &str = "SELECT * FROM one_min_candle ORDER BY bucket DESC";
const CHART: &str = "SELECT bucket, open, high, low, close
FROM one_min_candle
WHERE symbol = 'BTC/USD'
AND bucket >= NOW() - INTERVAL '1 week'
ORDER BY bucket DESC;";

/// psql off the test's thread, which also runs the server's poller.
async fn psql(app: &TestApp, sql: &str) -> String {
    let (url, sql) = (app.db_url.clone(), sql.to_owned());
    tokio::task::spawn_blocking(move || crate::helpers::psql(&url, &sql))
        .await
        .expect("the psql task")
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.is_empty()).collect()
}

/// Waits (on TimescaleDB, where the server's poller refreshes edited minutes) or asserts at
/// once (plain PostgreSQL, where the candle table changes with the write) that psql's
/// `SELECT * FROM one_min_candle` prints `want`.
async fn expect_candles(app: &TestApp, flavour: Flavour, want: &[&str], after: &str) {
    if flavour == Flavour::Postgres {
        assert_eq!(
            lines(&psql(app, SELECT_CANDLES).await),
            want,
            "one_min_candle right after {after}"
        );
        return;
    }
    let what = format!("one_min_candle after {after} to be\n{}", want.join("\n"));
    eventually_ok(Duration::from_secs(15), &what, || async {
        let now = psql(app, SELECT_CANDLES).await;
        if lines(&now) == want {
            Ok(())
        } else {
            Err(now)
        }
    })
    .await;
}

/// The tutorial's CRUD walk, for either flavour.
pub async fn tutorial_sql_gives_the_tutorial_candles(app: &TestApp, flavour: Flavour) {
    // The server is running (its poller has read the window) before anyone writes.
    eventually(Duration::from_secs(15), "/readyz to answer 200", || async {
        (app.get("/readyz").await.status() == 200).then_some(())
    })
    .await;
    psql(app, INSERT).await;
    assert_eq!(
        lines(&psql(app, SELECT_TICKS).await),
        [
            "2024-07-03 06:25:00+00|BTC|61057|0.5",
            "2024-07-03 06:24:30+00|BTC|61058.8|0.2",
            "2024-07-03 06:23:45+00|BTC|61061.4|0.1",
            "2024-07-03 06:22:30+00|BTC|61072.7|0.3",
            "2024-07-03 06:21:15+00|BTC|61026.4|0.4",
        ],
        "the tutorial's read_ticks after its INSERT"
    );
    // bucket | symbol | open | high | low | close | volume | trades
    let older = [
        "2024-07-03 06:24:00+00|BTC|61058.8|61058.8|61058.8|61058.8|0.2|1",
        "2024-07-03 06:23:00+00|BTC|61061.4|61061.4|61061.4|61061.4|0.1|1",
        "2024-07-03 06:22:00+00|BTC|61072.7|61072.7|61072.7|61072.7|0.3|1",
        "2024-07-03 06:21:00+00|BTC|61026.4|61026.4|61026.4|61026.4|0.4|1",
    ];
    let with_first =
        |first: &'static str| -> Vec<&str> { std::iter::once(first).chain(older).collect() };
    expect_candles(
        app,
        flavour,
        &with_first("2024-07-03 06:25:00+00|BTC|61057|61057|61057|61057|0.5|1"),
        "the INSERT",
    )
    .await;
    if flavour == Flavour::TimescaleDb {
        // Materialize, as the refresh policy would have by the time someone edits: the UPDATE
        // and DELETE below then show only through the server's refresh of what they changed.
        // (after_changes refreshes everything up to `to`, waiting out the server's own refreshes.)
        flavour
            .refresh(&app.pool, chrono::Utc::now(), chrono::Utc::now())
            .await
            .expect("materializing one_min_candle");
    }

    psql(app, UPDATE).await;
    assert_eq!(
        lines(&psql(app, SELECT_TICKS).await)[0],
        "2024-07-03 06:25:00+00|BTC|62000|0.6",
        "the tutorial's read_ticks after its UPDATE"
    );
    expect_candles(
        app,
        flavour,
        &with_first("2024-07-03 06:25:00+00|BTC|62000|62000|62000|62000|0.6|1"),
        "the UPDATE",
    )
    .await;

    psql(app, DELETE).await;
    assert_eq!(
        lines(&psql(app, SELECT_TICKS).await).len(),
        4,
        "ticks after the tutorial's DELETE"
    );
    expect_candles(app, flavour, &older, "the DELETE").await;

    // The chart query runs as written; with a recent BTC/USD tick it shows that tick's candle.
    assert_eq!(
        psql(app, CHART).await,
        "",
        "the chart query over no BTC/USD ticks"
    );
    // The minute is read back from the row itself: `now()` may have moved on to the next one.
    let want = psql(
        app,
        "INSERT INTO ticks VALUES (date_trunc('minute', now()) - INTERVAL '1 hour' + INTERVAL '5 seconds', 'BTC/USD', 61000.25, 1) \
         RETURNING to_char(date_trunc('minute', time), 'YYYY-MM-DD HH24:MI:SS+00')",
    )
    .await;
    let chart = eventually(
        Duration::from_secs(15),
        "the chart query to show the new tick",
        || async {
            let out = psql(app, CHART).await;
            (!out.is_empty()).then_some(out)
        },
    )
    .await;
    assert_eq!(
        lines(&chart),
        [format!(
            "{}|61000.25|61000.25|61000.25|61000.25",
            want.trim()
        )],
        "the chart query"
    );
}

#[actix_web::test]
async fn the_tutorials_sql_gives_the_tutorials_candles() {
    let app = spawn_app().await;
    let flavour = Flavour::detect(&app.pool).await.expect("flavour");
    tutorial_sql_gives_the_tutorial_candles(&app, flavour).await;
}
