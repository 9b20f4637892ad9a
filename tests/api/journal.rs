//! The change journal the poller reads: every write to `ticks` (psql, COPY, any statement) shows
//! up exactly once as the (symbol, minute)s it touched, with the candle as of the poll, also when
//! transactions commit in another order than they began.

use std::time::Duration;

use candlewick::db::Flavour;
use candlewick::db::journal::{self, Changes, MinuteChange, PollRequest, Position, prune};
use candlewick::domain::{Candle, Price, Symbol, Tick, Volume};
use secrecy::SecretString;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::candles::at;
use crate::helpers::{fresh_database, psql};

/// The changes since `pos` of every symbol, however old (the poller's own requests narrow both).
pub async fn poll_changes(pool: &PgPool, pos: &Position) -> anyhow::Result<(Position, Changes)> {
    let flavour = Flavour::detect(pool).await?;
    let request = PollRequest {
        from: Some(pos),
        symbols: None,
        load: &[],
        since: at("0001-01-01T00:00:00Z"),
        old_before: None,
    };
    let polled = journal::poll(pool, flavour, &request).await?;
    Ok((polled.position.expect("a poll's position"), polled.changes))
}

/// A start position and the windows since `since` of every symbol that has ticks.
pub async fn load_window(
    pool: &PgPool,
    since: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<(Position, Vec<(String, Candle)>)> {
    let flavour = Flavour::detect(pool).await?;
    let symbols: Vec<String> = sqlx::query_scalar("SELECT DISTINCT symbol FROM ticks")
        .fetch_all(pool)
        .await?;
    let request = PollRequest {
        from: None,
        symbols: None,
        load: &symbols,
        since,
        old_before: None,
    };
    let polled = journal::poll(pool, flavour, &request).await?;
    let candles = polled
        .windows
        .into_iter()
        .flat_map(|(s, candles)| candles.into_iter().map(move |c| (s.clone(), c)))
        .collect();
    Ok((polled.position.expect("a poll's position"), candles))
}

fn minute(symbol: &str, bucket: &str, candle: Option<[f64; 5]>) -> MinuteChange {
    let t = at(bucket).timestamp();
    MinuteChange {
        symbol: symbol.to_owned(),
        t,
        candle: candle.map(|[open, high, low, close, volume]| Candle {
            t,
            open,
            high,
            low,
            close,
            volume,
        }),
    }
}

/// Polls from `pos`, moves it on, and asserts exactly `want` (in any order) and the reload flag.
async fn expect_poll(
    pool: &PgPool,
    pos: &mut Position,
    want: Vec<MinuteChange>,
    reload: bool,
    after: &str,
) {
    let (
        next,
        Changes {
            mut minutes,
            reload: got_reload,
            ..
        },
    ) = poll_changes(pool, pos)
        .await
        .unwrap_or_else(|e| panic!("polling after {after}: {e:#}"));
    minutes.sort_by(|a, b| (&a.symbol, a.t).cmp(&(&b.symbol, b.t)));
    let mut want = want;
    want.sort_by(|a, b| (&a.symbol, a.t).cmp(&(&b.symbol, b.t)));
    assert_eq!(minutes, want, "changed minutes after {after}");
    assert_eq!(got_reload, reload, "reload flag after {after}");
    *pos = next;
}

fn run_psql(url: &SecretString, sql: &str) {
    psql(url, sql);
}

/// psql's INSERT, UPDATE (of price, of time across minutes), DELETE, a rolled-back transaction,
/// a multi-statement transaction, COPY and TRUNCATE, each seen by the next poll and only by it.
pub async fn psql_writes_reach_the_journal(pool: &PgPool, url: &SecretString) {
    let since = at("2024-01-01T00:00:00Z");
    let (mut pos, window) = load_window(pool, since).await.expect("loading the window");
    assert!(
        window.is_empty(),
        "a fresh database has candles: {window:?}"
    );
    expect_poll(pool, &mut pos, vec![], false, "nothing").await;

    run_psql(
        url,
        "INSERT INTO ticks (time, symbol, price, volume) VALUES \
         ('2024-07-03 06:25:40+00', 'BTC/USD', 105, 2), ('2024-07-03 06:25:10+00', 'BTC/USD', 100, 1), \
         ('2024-07-03 06:30:00+00', 'ETH/USD', 50, 0.5), ('2023-12-31 23:59:59.999999+00', 'OLD/USD', 7, 1)",
    );
    expect_poll(
        pool,
        &mut pos,
        vec![
            minute(
                "BTC/USD",
                "2024-07-03T06:25:00Z",
                Some([100.0, 105.0, 100.0, 105.0, 3.0]),
            ),
            minute(
                "ETH/USD",
                "2024-07-03T06:30:00Z",
                Some([50.0, 50.0, 50.0, 50.0, 0.5]),
            ),
            // Outside the window, still journaled: the poller decides what to keep.
            minute(
                "OLD/USD",
                "2023-12-31T23:59:00Z",
                Some([7.0, 7.0, 7.0, 7.0, 1.0]),
            ),
        ],
        false,
        "a psql INSERT",
    )
    .await;
    expect_poll(pool, &mut pos, vec![], false, "a poll with nothing new").await;

    let (_, window) = load_window(pool, since).await.expect("loading the window");
    let mut symbols: Vec<&str> = window.iter().map(|(s, _)| s.as_str()).collect();
    symbols.sort_unstable();
    assert_eq!(
        symbols,
        ["BTC/USD", "ETH/USD"],
        "load_window({since}) holds the minutes since then only"
    );

    run_psql(
        url,
        "UPDATE ticks SET time = '2024-07-03 06:27:00+00' WHERE symbol = 'BTC/USD' AND time = '2024-07-03 06:25:40+00'",
    );
    expect_poll(
        pool,
        &mut pos,
        vec![
            minute(
                "BTC/USD",
                "2024-07-03T06:25:00Z",
                Some([100.0, 100.0, 100.0, 100.0, 1.0]),
            ),
            minute(
                "BTC/USD",
                "2024-07-03T06:27:00Z",
                Some([105.0, 105.0, 105.0, 105.0, 2.0]),
            ),
        ],
        false,
        "a psql UPDATE moving a tick to another minute",
    )
    .await;

    run_psql(
        url,
        "UPDATE ticks SET price = 99, volume = 0.25 WHERE symbol = 'ETH/USD'",
    );
    expect_poll(
        pool,
        &mut pos,
        vec![minute(
            "ETH/USD",
            "2024-07-03T06:30:00Z",
            Some([99.0, 99.0, 99.0, 99.0, 0.25]),
        )],
        false,
        "a psql UPDATE of a price",
    )
    .await;

    run_psql(url, "UPDATE ticks SET price = price WHERE false");
    expect_poll(pool, &mut pos, vec![], false, "a psql UPDATE of no rows").await;

    run_psql(url, "DELETE FROM ticks WHERE symbol = 'ETH/USD'");
    expect_poll(
        pool,
        &mut pos,
        vec![minute("ETH/USD", "2024-07-03T06:30:00Z", None)],
        false,
        "a psql DELETE",
    )
    .await;

    run_psql(
        url,
        "BEGIN; INSERT INTO ticks VALUES ('2024-07-03 06:40:00+00', 'BTC/USD', 1, 1); ROLLBACK;",
    );
    expect_poll(pool, &mut pos, vec![], false, "a rolled-back psql INSERT").await;

    run_psql(
        url,
        "BEGIN; \
         INSERT INTO ticks VALUES ('2024-07-03 06:27:30+00', 'BTC/USD', 110, 1); \
         DELETE FROM ticks WHERE symbol = 'BTC/USD' AND time = '2024-07-03 06:25:10+00'; \
         COMMIT;",
    );
    expect_poll(
        pool,
        &mut pos,
        vec![
            minute("BTC/USD", "2024-07-03T06:25:00Z", None),
            minute(
                "BTC/USD",
                "2024-07-03T06:27:00Z",
                Some([105.0, 110.0, 105.0, 110.0, 3.0]),
            ),
        ],
        false,
        "a psql transaction of an INSERT and a DELETE",
    )
    .await;

    // COPY, the bulk path: one statement, many minutes.
    let ticks: Vec<Tick> = (0..3)
        .map(|i| Tick {
            time: at("2024-07-03T07:00:30Z") + chrono::Duration::minutes(i),
            symbol: Symbol::parse("SOL/USD").expect("symbol"),
            price: Price::new(10.0 + i as f64).expect("price"),
            volume: Volume::new(1.5).expect("volume"),
        })
        .collect();
    let mut conn = pool.acquire().await.expect("a connection");
    candlewick::db::ticks::copy_all(&mut conn, &ticks)
        .await
        .expect("COPY");
    drop(conn);
    expect_poll(
        pool,
        &mut pos,
        (0..3)
            .map(|i| {
                let p = 10.0 + i as f64;
                let mut m = minute("SOL/USD", "2024-07-03T07:00:00Z", Some([p, p, p, p, 1.5]));
                m.t += 60 * i;
                if let Some(c) = m.candle.as_mut() {
                    c.t = m.t;
                }
                m
            })
            .collect(),
        false,
        "a COPY",
    )
    .await;

    run_psql(url, "TRUNCATE ticks");
    let (_, changes) = poll_changes(pool, &pos)
        .await
        .expect("polling after TRUNCATE");
    assert!(
        changes.reload,
        "a TRUNCATE does not ask for a reload: {changes:?}"
    );
    expect_poll(pool, &mut pos, vec![], true, "a TRUNCATE").await;
    expect_poll(pool, &mut pos, vec![], false, "the poll after the TRUNCATE").await;
}

#[actix_web::test]
async fn the_journal_catches_every_kind_of_psql_write() {
    let (_, url) = fresh_database().await;
    let pool = candlewick::db::build_pool(candlewick::db::connect_options(&url).expect("URL"));
    psql_writes_reach_the_journal(&pool, &url).await;
}

/// `n` consecutive minutes from `first` on, in one hour and day: writers of one symbol's
/// minute share that candle row (plain flavour) and wait on each other's commit, but writers
/// of its other minutes in the same hour and day do not (the hour and day rollups are folded
/// outside the writing transaction, migration 0009).
fn consecutive_minutes(first: &str, n: usize) -> Vec<chrono::DateTime<chrono::Utc>> {
    (0..n as i64)
        .map(|i| at(first) + chrono::Duration::minutes(i))
        .collect()
}

async fn begin_writing(
    pool: &PgPool,
    time: chrono::DateTime<chrono::Utc>,
    symbol: &str,
    price: f64,
) -> (Transaction<'static, Postgres>, i64) {
    let mut tx = pool.begin().await.expect("BEGIN");
    // A guard against a hang should two of these ever wait on each other.
    sqlx::query("SET LOCAL lock_timeout = '20s'")
        .execute(&mut *tx)
        .await
        .expect("SET lock_timeout");
    insert(&mut tx, time, symbol, price).await;
    let xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&mut *tx)
        .await
        .expect("reading the transaction id");
    (tx, xid)
}

async fn insert(
    conn: &mut PgConnection,
    time: chrono::DateTime<chrono::Utc>,
    symbol: &str,
    price: f64,
) {
    sqlx::query("INSERT INTO ticks (time, symbol, price, volume) VALUES ($1, $2, $3, 1)")
        .bind(time)
        .bind(symbol)
        .bind(price)
        .execute(conn)
        .await
        .expect("INSERT INTO ticks");
}

/// T0 is open while the window is read; T1 takes a lower transaction id than T2 but commits
/// after it. Each poll sees exactly the transactions committed since the previous one.
pub async fn out_of_order_commits_are_not_missed(pool: &PgPool) {
    const S: &str = "OOO/USD";
    let m = consecutive_minutes("2024-07-03T06:40:00Z", 3);
    // On TimescaleDB the first insert into a chunk creates it, and other transactions
    // inserting into its range wait for it to commit: have the chunks exist beforehand.
    for t in &m {
        sqlx::query("INSERT INTO ticks VALUES ($1, 'SETUP', 1, 1)")
            .bind(t)
            .execute(pool)
            .await
            .expect("INSERT");
    }
    sqlx::query("DELETE FROM ticks WHERE symbol = 'SETUP'")
        .execute(pool)
        .await
        .expect("DELETE");
    let one = |t: chrono::DateTime<chrono::Utc>, p: f64| MinuteChange {
        symbol: S.to_owned(),
        t: t.timestamp(),
        candle: Some(Candle {
            t: t.timestamp(),
            open: p,
            high: p,
            low: p,
            close: p,
            volume: 1.0,
        }),
    };

    let (t0, _) = begin_writing(pool, m[0], S, 10.0).await;
    let (mut pos, window) = load_window(pool, at("2024-01-01T00:00:00Z"))
        .await
        .expect("loading the window");
    assert!(
        window.is_empty(),
        "the window shows T0's uncommitted tick: {window:?}"
    );

    let (t1, xid1) = begin_writing(pool, m[1], S, 11.0).await;
    let (t2, xid2) = begin_writing(pool, m[2], S, 12.0).await;
    assert!(
        xid1 < xid2,
        "T1 ({xid1}) should hold a lower transaction id than T2 ({xid2})"
    );

    t2.commit().await.expect("COMMIT T2");
    expect_poll(
        pool,
        &mut pos,
        vec![one(m[2], 12.0)],
        false,
        "T2's commit (T0, T1 still open)",
    )
    .await;
    expect_poll(
        pool,
        &mut pos,
        vec![],
        false,
        "nothing new (T0, T1 still open)",
    )
    .await;

    // A reader that kept "the highest id seen" (xid2 now) would skip T1 forever.
    t1.commit().await.expect("COMMIT T1");
    expect_poll(
        pool,
        &mut pos,
        vec![one(m[1], 11.0)],
        false,
        "T1's late commit",
    )
    .await;

    t0.commit().await.expect("COMMIT T0");
    expect_poll(
        pool,
        &mut pos,
        vec![one(m[0], 10.0)],
        false,
        "T0's commit, begun before the window was read",
    )
    .await;
    expect_poll(pool, &mut pos, vec![], false, "everything committed").await;

    // T3 rolls back while T4 commits: only T4 is reported.
    let (t3, _) = begin_writing(pool, m[0] + chrono::Duration::seconds(15), S, 20.0).await;
    let (t4, _) = begin_writing(pool, m[1] + chrono::Duration::seconds(30), S, 21.0).await;
    t4.commit().await.expect("COMMIT T4");
    t3.rollback().await.expect("ROLLBACK T3");
    let mut both = one(m[1], 11.0);
    if let Some(c) = both.candle.as_mut() {
        *c = Candle {
            t: c.t,
            open: 11.0,
            high: 21.0,
            low: 11.0,
            close: 21.0,
            volume: 2.0,
        };
    }
    expect_poll(
        pool,
        &mut pos,
        vec![both],
        false,
        "T4's commit and T3's rollback",
    )
    .await;
}

#[actix_web::test]
async fn transactions_committing_out_of_order_are_each_reported_once() {
    let (_, url) = fresh_database().await;
    let pool = candlewick::db::build_pool(candlewick::db::connect_options(&url).expect("URL"));
    out_of_order_commits_are_not_missed(&pool).await;
}

#[actix_web::test]
async fn pruning_forgets_only_entries_older_than_the_retention() {
    let (_, url) = fresh_database().await;
    let pool = candlewick::db::build_pool(candlewick::db::connect_options(&url).expect("URL"));
    run_psql(
        &url,
        "INSERT INTO ticks VALUES ('2024-07-03 06:25:00+00', 'BTC/USD', 1, 1), ('2024-07-03 06:26:00+00', 'BTC/USD', 2, 1)",
    );
    let entries = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM candle_changes")
            .fetch_one(&pool)
            .await
            .expect("count")
    };
    assert_eq!(entries().await, 2, "one journal entry per changed minute");
    assert_eq!(
        prune(&pool, Duration::from_secs(3600))
            .await
            .expect("prune"),
        0,
        "pruned a fresh entry"
    );
    assert_eq!(entries().await, 2);
    // Other tests' transactions (xids are the cluster's: a long import, say) may hold the
    // horizon back a while.
    crate::helpers::eventually(
        Duration::from_secs(90),
        "the old entries to be pruned",
        || async {
            prune(&pool, Duration::ZERO).await.expect("prune");
            (entries().await == 0).then_some(())
        },
    )
    .await;
}

/// A transaction that stays open longer than the retention commits late: its entry must still
/// reach the pollers, so it is kept until the retention has passed after it ended, not after it
/// began.
#[actix_web::test]
async fn a_long_transaction_is_pruned_by_when_it_ended_not_when_it_began() {
    let (_, url) = fresh_database().await;
    let pool = candlewick::db::build_pool(candlewick::db::connect_options(&url).expect("URL"));
    let keep = Duration::from_secs(1);
    let (long, _) = begin_writing(&pool, at("2024-07-03T06:25:00Z"), "LONG/USD", 1.0).await;
    prune(&pool, keep).await.expect("prune while it runs");
    // The transaction outlives the retention: that time passing is what is tested.
    tokio::time::sleep(keep + Duration::from_millis(300)).await;
    long.commit().await.expect("COMMIT the long transaction");
    prune(&pool, keep)
        .await
        .expect("prune right after it ended");
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM candle_changes WHERE symbol = 'LONG/USD'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(
        kept, 1,
        "the entry of a transaction that just ended was pruned"
    );
}

/// Emptying the tables (`TRUNCATE ticks, candle_changes`, ticks first) while the poller reads
/// them never deadlocks: the poll takes its locks in the same order.
#[actix_web::test]
async fn a_truncate_never_deadlocks_with_the_poll() {
    let app = crate::helpers::spawn_app_with(&["--poll-interval", "10ms"]).await;
    // Someone watches, so each poll reads candles of the changed minutes.
    let (_viewer, _) = tokio_tungstenite::connect_async(app.ws_url("symbol=TRN/USD"))
        .await
        .expect("a viewer");
    for round in 0..30 {
        let tick = serde_json::json!({
            "time": format!("2024-07-03T06:{:02}:00Z", round % 60),
            "symbol": "TRN/USD", "price": 1.0, "volume": 1.0,
        });
        assert_eq!(app.post_ticks_json(&tick).await.status(), 201);
        sqlx::query("TRUNCATE ticks, candle_changes")
            .execute(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("round {round}: TRUNCATE failed: {e}"));
    }
}

/// One statement that changes more minutes than a poll reads (an import of years) is reported
/// as a wholesale change, listing none of them: the poller reloads instead of sorting millions
/// of entries for longer than a poll may take. Fewer are listed one by one, as ever.
#[actix_web::test]
async fn a_poll_reports_more_changed_minutes_than_it_reads_as_a_wholesale_change() {
    let (_, url) = fresh_database().await;
    let pool = candlewick::db::build_pool(candlewick::db::connect_options(&url).expect("URL"));
    let (start, _) = load_window(&pool, at("2024-07-01T00:00:00Z"))
        .await
        .expect("a start position");
    let insert = |symbol: &'static str, minutes: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO ticks (time, symbol, price, volume) \
                 SELECT timestamptz '2020-01-01 00:00:00+00' + m * interval '1 minute', $1, 1, 1 \
                 FROM generate_series(0, $2 - 1) AS m",
            )
            .bind(symbol)
            .bind(minutes)
            .execute(&pool)
            .await
            .expect("INSERT … SELECT");
        }
    };
    insert("FEW/USD", 10).await;
    let (after_few, changes) = poll_changes(&pool, &start).await.expect("a poll");
    assert!(!changes.reload, "ten minutes are no wholesale change");
    assert_eq!(changes.minutes.len(), 10);

    insert("MANY/USD", journal::MAX_CHANGES_PER_POLL + 1).await;
    let (after_many, changes) = poll_changes(&pool, &after_few).await.expect("a poll");
    assert!(
        changes.reload,
        "{} changed minutes read one by one",
        journal::MAX_CHANGES_PER_POLL + 1
    );
    assert!(changes.minutes.is_empty(), "none listed");
    let (_, changes) = poll_changes(&pool, &after_many).await.expect("a poll");
    assert_eq!(changes, Changes::default(), "the position moved past them");
}
