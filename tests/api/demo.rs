//! The demo feed's backfill ends with a stop (the stop does not wait for it), and the next start
//! completes the history from where it was cut.

use std::time::Duration;

use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::helpers::{eventually, fresh_database};

/// Only keeps a broken feed from hanging the run.
const WAIT: Duration = Duration::from_secs(120);

async fn stored(pool: &sqlx::PgPool) -> (i64, f64) {
    sqlx::query_as(
        "SELECT count(*), coalesce(extract(epoch FROM now() - max(time))::float8, 1e9) FROM ticks",
    )
    .fetch_one(pool)
    .await
    .expect("counting ticks")
}

#[tokio::test]
async fn a_stop_ends_the_demo_backfill_and_the_next_start_completes_it() {
    let (_, url) = fresh_database().await;
    let pool = sqlx::PgPool::connect(url.expose_secret())
        .await
        .expect("connecting");

    // First start: stopped as soon as the first day of history is stored.
    let stop = CancellationToken::new();
    let feed = tokio::spawn(candlewick::feed::demo::run(pool.clone(), stop.clone()));
    eventually(WAIT, "the first backfilled day", || async {
        (stored(&pool).await.0 > 0).then_some(())
    })
    .await;
    stop.cancel();
    tokio::time::timeout(WAIT, feed)
        .await
        .expect("the feed to end")
        .expect("the feed task");
    let (_, behind) = stored(&pool).await;
    assert!(
        behind > 3600.0,
        "the backfill went on after the stop: its newest tick is {behind} s old"
    );

    // Second start: the history is filled up to now, with no hole where the first was cut.
    let stop = CancellationToken::new();
    let feed = tokio::spawn(candlewick::feed::demo::run(pool.clone(), stop.clone()));
    eventually(WAIT, "history up to now", || async {
        (stored(&pool).await.1 < 60.0).then_some(())
    })
    .await;
    stop.cancel();
    tokio::time::timeout(WAIT, feed)
        .await
        .expect("the feed to end")
        .expect("the feed task");
    let (first, widest): (f64, f64) = sqlx::query_as(
        "SELECT extract(epoch FROM now() - min(time))::float8, \
                extract(epoch FROM max(gap))::float8 \
         FROM (SELECT time, time - lag(time) OVER (ORDER BY time) AS gap \
               FROM ticks WHERE symbol = 'BTC/USD') g",
    )
    .fetch_one(&pool)
    .await
    .expect("reading the history");
    assert!(first > 6.9 * 86_400.0, "history starts {first} s ago");
    assert!(widest < 600.0, "a {widest} s hole in the history");
}
