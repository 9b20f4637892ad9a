//! `candlewick import FILE.csv`: the bulk path the command line uses.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::io::Write;
use std::process::Command;
use std::sync::Arc;

use candlewick::db::WriteError;
use candlewick::db::audit::Author;
use candlewick::ingest::import::{Progress, import_path};
use secrecy::ExposeSecret;

use crate::helpers::spawn_app;

/// A CSV of `n` ticks, one per second from 2024-01-01, cycling over three symbols.
fn write_csv(n: usize) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".csv")
        .tempfile()
        .expect("a temp file");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file.as_file_mut());
    out.write_all(b"time,symbol,price,volume\n").unwrap();
    let start = 1_704_067_200i64; // 2024-01-01T00:00:00Z
    let symbols = ["BTC/USD", "ETH/USD", "SOL/USD"];
    for i in 0..n {
        let t = chrono::DateTime::from_timestamp(start + i as i64, 0).unwrap();
        writeln!(
            out,
            "{},{},{}.25,0.5",
            t.format("%Y-%m-%dT%H:%M:%SZ"),
            symbols[i % 3],
            1000 + i % 977
        )
        .unwrap();
    }
    out.flush().unwrap();
    drop(out);
    file
}

#[actix_web::test]
async fn a_million_good_lines_are_imported_in_one_go() {
    let app = spawn_app().await;
    const N: usize = 1_000_000;
    let file = write_csv(N);
    let progress = Arc::new(Progress::new(Some(
        file.as_file().metadata().unwrap().len(),
    )));
    let rows = import_path(&app.pool, file.path(), Author::CliImport, progress.clone())
        .await
        .expect("the import");
    assert_eq!(rows, N as u64);
    assert_eq!(app.tick_count().await, N as i64);
    assert_eq!(progress.rows_read(), N as u64);
    assert_eq!(progress.rows_written(), N as u64);
    assert_eq!(progress.percent(), Some(100));
    let audit = app.psql("SELECT actor, action, rows FROM audit_log");
    assert_eq!(audit.trim(), "cli import|import|1000000");
    // one_min_candle follows: 1M seconds is 16,667 minutes, each symbol in each minute.
    let buckets = app.psql("SELECT count(*) FROM one_min_candle WHERE symbol = 'BTC/USD'");
    assert_eq!(buckets.trim(), "16667");
}

#[actix_web::test]
async fn a_file_with_bad_lines_imports_nothing_and_reports_line_numbers() {
    let app = spawn_app().await;
    let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    write!(
        file,
        "time,symbol,price,volume\n\
         2024-07-03T06:25:00Z,A,1,1\n\
         2024-07-03T06:25:01Z,A,0,1\n\
         2024-07-03T06:25:02Z,,1,1\n\
         2024-07-03T06:25:03Z,A,1,-1\n\
         2024-07-03T06:25:04Z,A,1,1\n"
    )
    .unwrap();
    let err = import_path(&app.pool, file.path(), Author::CliImport, Arc::default())
        .await
        .unwrap_err();
    let WriteError::Invalid(invalid) = err else {
        panic!("expected invalid lines, got {err}")
    };
    assert_eq!((invalid.total(), invalid.row_count()), (3, 5));
    assert_eq!(
        invalid.shown(),
        [
            "line 3: price must be greater than 0",
            "line 4: symbol must not be empty",
            "line 5: volume must not be negative"
        ]
    );
    assert_eq!(app.tick_count().await, 0);
    assert_eq!(app.psql("SELECT count(*) FROM audit_log").trim(), "0");

    // A duplicate inside the file: COPY refuses it, nothing is written.
    let mut dup = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    write!(
        dup,
        "time,symbol,price,volume\n2024-07-03T06:25:00Z,A,1,1\n2024-07-03T06:25:00Z,A,2,1\n"
    )
    .unwrap();
    let err = import_path(&app.pool, dup.path(), Author::CliImport, Arc::default())
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Duplicate(_)), "{err}");
    assert!(
        err.to_string().contains("2024-07-03 06:25:00+00, A"),
        "{err}"
    );
    assert_eq!(app.tick_count().await, 0);
}

#[actix_web::test]
async fn the_command_line_imports_a_file_and_fails_clearly_on_a_bad_one() {
    let app = spawn_app().await;
    let good = write_csv(1_000);
    let run = |path: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_candlewick"))
            .arg("import")
            .arg(path)
            .args(["--database-url", app.db_url.expose_secret()])
            .env_remove("DATABASE_URL")
            .output()
            .expect("running candlewick import")
    };
    let out = run(good.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(app.tick_count().await, 1_000);

    let mut bad = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    write!(
        bad,
        "time,symbol,price,volume\n2025-01-01T00:00:00Z,A,x,1\n"
    )
    .unwrap();
    let out = run(bad.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2: price must be a number"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(
        !stderr.contains(app.db_url.expose_secret()),
        "the password stays out of the output"
    );
    assert_eq!(app.tick_count().await, 1_000);
}
