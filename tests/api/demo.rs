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

/// Runs the demo feed until `done` holds of [`stored`], then stops it and waits for it to end.
async fn run_feed_until(pool: &sqlx::PgPool, what: &str, done: impl Fn((i64, f64)) -> bool) {
    let stop = CancellationToken::new();
    let feed = tokio::spawn(candlewick::feed::demo::run(pool.clone(), stop.clone()));
    eventually(WAIT, what, || async {
        done(stored(pool).await).then_some(())
    })
    .await;
    stop.cancel();
    tokio::time::timeout(WAIT, feed)
        .await
        .expect("the feed to end")
        .expect("the feed task");
}

#[tokio::test]
async fn a_stop_ends_the_demo_backfill_and_the_next_start_completes_it() {
    let (_, url) = fresh_database().await;
    let pool = sqlx::PgPool::connect(url.expose_secret())
        .await
        .expect("connecting");

    // First start: stopped as soon as the first day of history is stored.
    run_feed_until(&pool, "the first backfilled day", |(count, _)| count > 0).await;
    let (_, behind) = stored(&pool).await;
    assert!(
        behind > 3600.0,
        "the backfill went on after the stop: its newest tick is {behind} s old"
    );

    // Second start: the history is filled up to now, with no hole where the first was cut.
    run_feed_until(&pool, "history up to now", |(_, behind)| behind < 60.0).await;
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
