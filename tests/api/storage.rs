//! Which storage flavour a database gets: the embedded cluster preloads TimescaleDB where it is
//! installed (unless told `off`), and the migrations use TimescaleDB only where it is preloaded.

use candlewick::config::{DbSettings, EmbeddedTimescaleDb};
use candlewick::db::{self, Flavour};
use candlewick::embedded;

use crate::helpers::fresh_database;

fn installed() -> bool {
    embedded::find_bindir().is_ok_and(|bin| embedded::timescaledb_installed(&bin))
}

/// Opens the database the way `serve` does, on an embedded cluster in a fresh data dir.
async fn open_embedded(mode: EmbeddedTimescaleDb) -> (tempfile::TempDir, db::Database) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let settings = DbSettings {
        database_url: None,
        data_dir: dir.path().to_owned(),
        embedded_timescaledb: mode,
    };
    let database = db::open(&settings)
        .await
        .expect("opening the embedded database");
    (dir, database)
}

#[actix_web::test]
async fn where_timescaledb_is_installed_the_embedded_cluster_uses_it() {
    if !installed() {
        eprintln!("skipped: TimescaleDB is not installed on this machine");
        return;
    }
    let (_dir, database) = open_embedded(EmbeddedTimescaleDb::Auto).await;
    assert_eq!(database.flavour, Flavour::TimescaleDb);
    let hypertable: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM timescaledb_information.hypertables WHERE hypertable_name = 'ticks')",
    )
    .fetch_one(&database.pool)
    .await
    .expect("asking TimescaleDB about ticks");
    assert!(hypertable);
    database.close().await;
}

#[actix_web::test]
async fn with_off_the_embedded_cluster_keeps_to_plain_postgresql() {
    if !installed() {
        eprintln!("skipped: TimescaleDB is not installed on this machine (off is the only way)");
        return;
    }
    let (_dir, database) = open_embedded(EmbeddedTimescaleDb::Off).await;
    assert_eq!(database.flavour, Flavour::Postgres);
    database.close().await;
}

#[actix_web::test]
async fn without_timescaledb_installed_the_embedded_cluster_is_plain_postgresql() {
    if installed() {
        eprintln!("skipped: TimescaleDB is installed on this machine");
        return;
    }
    let (_dir, database) = open_embedded(EmbeddedTimescaleDb::Auto).await;
    assert_eq!(database.flavour, Flavour::Postgres);
    database.close().await;
}

/// The plain test cluster never preloads TimescaleDB: where it is installed, the migration
/// must see that before `CREATE EXTENSION` (which would end the connection) and stay plain.
#[actix_web::test]
async fn a_server_that_has_timescaledb_installed_but_not_preloaded_gets_plain_postgresql() {
    let (_, url) = fresh_database().await;
    let pool = db::build_pool(db::connect_options(&url).expect("URL"));
    assert_eq!(
        db::migrate(&pool).await.expect("migrating again"),
        Flavour::Postgres
    );
    let preloaded: String =
        sqlx::query_scalar("SELECT current_setting('shared_preload_libraries')")
            .fetch_one(&pool)
            .await
            .expect("reading the preload setting");
    assert!(!preloaded.contains("timescaledb"), "{preloaded}");
}

/// A database that applied migration 0002 as first released is accepted by the revised one.
#[actix_web::test]
async fn a_database_migrated_with_the_first_text_of_0002_still_migrates() {
    let (_, url) = fresh_database().await;
    let pool = db::build_pool(db::connect_options(&url).expect("URL"));
    sqlx::query(
        "UPDATE _sqlx_migrations SET checksum = decode($1, 'hex') WHERE version = 2",
    )
    .bind("3861e5b879c7d4ea52ea7bbbae8df76dc8cb4bd68f42c044b54b8d1470193592c8e36fb2694c5eade41e6629e149e406")
    .execute(&pool)
    .await
    .expect("recording the first text's checksum");
    db::migrate(&pool)
        .await
        .expect("migrating over the first text");
    let current = db::MIGRATOR
        .iter()
        .find(|m| m.version == 2)
        .expect("migration 2")
        .checksum
        .to_vec();
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = 2")
            .fetch_one(&pool)
            .await
            .expect("reading the checksum");
    assert_eq!(stored, current);
}
