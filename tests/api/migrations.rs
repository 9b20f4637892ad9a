//! Databases that applied an earlier text of a released migration still start, and end with
//! the schema every other database has.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::path::Path;

use candlewick::db;
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use crate::helpers::blank_database;

/// Applies the current text of migrations before `first_text`'s version, then `first_text`
/// (a file of tests/fixtures/first-texts), as a database migrated back then has them.
async fn migrated_with_first_text(first_text: &str) -> PgPool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let first = root.join("tests/fixtures/first-texts").join(first_text);
    let version: i64 = first_text[..4].parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root.join("migrations")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.ends_with(".sql") && name[..4].parse::<i64>().unwrap() < version {
            std::fs::copy(&path, dir.path().join(&name)).unwrap();
        }
    }
    std::fs::copy(&first, dir.path().join(first_text)).unwrap();
    let (_, url) = blank_database().await;
    let pool = db::build_pool(db::connect_options(&url).unwrap());
    Migrator::new(dir.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap_or_else(|e| panic!("applying the migrations up to {first_text}: {e}"));
    pool
}

/// After `db::migrate`: the candle function has its eight columns, writes keep the candles
/// exact (insert, update, delete), and the unused candle index is gone.
async fn assert_current_schema(pool: &PgPool, what: &str) {
    let columns: i32 = sqlx::query_scalar(
        "SELECT cardinality(proallargtypes) FROM pg_proc WHERE proname = 'candlewick_minute_candle'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(columns, 10, "{what}: two arguments and eight columns");
    for sql in [
        "INSERT INTO ticks VALUES ('2024-07-03 06:25:01+00', 'OLD', 10, 1), ('2024-07-03 06:25:02+00', 'OLD', 30, 1)",
        "INSERT INTO ticks VALUES ('2024-07-03 06:25:03+00', 'OLD', 20, 1)",
        "UPDATE ticks SET price = 5 WHERE time = '2024-07-03 06:25:02+00'",
        "DELETE FROM ticks WHERE time = '2024-07-03 06:25:01+00'",
    ] {
        sqlx::query(sql)
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("{what}: {sql}: {e}"));
    }
    let candle: (f64, f64, f64, f64, f64, i64) = sqlx::query_as(
        "SELECT open, high, low, close, volume, trades FROM one_min_candle WHERE symbol = 'OLD'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(candle, (5.0, 20.0, 5.0, 20.0, 2.0, 2), "{what}");
    let index: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('one_min_candle_bucket')::text")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(index, None, "{what}: the unused candle index is dropped");
}

#[actix_web::test]
async fn a_database_that_applied_the_first_text_of_0003_starts_with_the_current_schema() {
    let pool = migrated_with_first_text("0003_minute_candle.sql").await;
    db::migrate(&pool)
        .await
        .expect("a database that applied the first 0003 migrates");
    assert_current_schema(&pool, "first 0003").await;
}

#[actix_web::test]
async fn a_database_that_applied_the_first_text_of_0004_starts_with_the_current_schema() {
    let pool = migrated_with_first_text("0004_constant_cost_writes.sql").await;
    db::migrate(&pool)
        .await
        .expect("a database that applied the first 0004 migrates");
    assert_current_schema(&pool, "first 0004").await;
}
