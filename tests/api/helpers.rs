//! `spawn_app()`: a candlewick server on port 0 over a fresh database of the shared test cluster.
#![allow(dead_code)] // each test module uses its own subset

use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use candlewick::config::{Cli, Settings};
use candlewick::db;
use candlewick::embedded::{self, EmbeddedPostgres};
use candlewick::startup::Application;
use clap::Parser;
use secrecy::{ExposeSecret, SecretString};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

pub const TOKEN: &str = "test-admin-token";
const TEMPLATE: &str = "candlewick_template";

/// The run's cluster (plain PostgreSQL): started on first use, stopped when the test process
/// exits (its keeper thread dies with the process and PostgreSQL gets a parent-death signal).
fn cluster() -> &'static EmbeddedPostgres {
    static CLUSTER: OnceLock<EmbeddedPostgres> = OnceLock::new();
    CLUSTER.get_or_init(|| start_cluster("test-cluster", false))
}

/// A second cluster with TimescaleDB preloaded, when TimescaleDB is installed on this machine.
pub fn timescale_cluster() -> Option<&'static EmbeddedPostgres> {
    static CLUSTER: OnceLock<Option<EmbeddedPostgres>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let bin = embedded::find_bindir().ok()?;
            embedded::timescaledb_installed(&bin).then(|| start_cluster("test-cluster-ts", true))
        })
        .as_ref()
}

fn start_cluster(name: &str, timescaledb: bool) -> EmbeddedPostgres {
    if std::env::var_os("TEST_LOG").is_some() {
        candlewick::telemetry::init();
    }
    // A fixed place under target/, so later runs reuse the cluster instead of running initdb.
    // Runs at the same time (one target dir, several people) each lock a slot of their own:
    // sharing one would stop the other's cluster and drop its databases mid-test.
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = (0..16)
        .find_map(|slot| {
            let dir = root.join(match slot {
                0 => name.to_owned(),
                n => format!("{name}-{n}"),
            });
            let lock = std::fs::File::create(dir.with_extension("lock")).ok()?;
            let held =
                nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).ok()?;
            std::mem::forget(held); // held until this process exits
            Some(dir)
        })
        .expect("a free test cluster slot (16 runs at once?)");
    std::fs::create_dir_all(&dir).expect("creating the test cluster dir");
    let options = embedded::Options {
        unsafe_fast: true,
        timescaledb,
        ..embedded::Options::default()
    };
    EmbeddedPostgres::start(&dir, &options).expect("starting the test PostgreSQL cluster")
}

async fn admin_connection() -> PgConnection {
    let url = cluster().url("postgres");
    PgConnection::connect_with(&db::connect_options(&url).expect("test URL"))
        .await
        .expect("connecting to the test cluster")
}

/// Creates (once per run) the migrated template database every test database is copied from.
async fn template() {
    static READY: OnceCell<()> = OnceCell::const_new();
    READY
        .get_or_init(|| async {
            let mut conn = admin_connection().await;
            // Leftovers of earlier runs.
            let old: Vec<String> = sqlx::query_scalar(
                "SELECT datname FROM pg_database WHERE datname LIKE 'test\\_%' OR datname = $1",
            )
            .bind(TEMPLATE)
            .fetch_all(&mut conn)
            .await
            .expect("listing old test databases");
            for name in old {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                )))
                .execute(&mut conn)
                .await
                .expect("dropping an old test database");
            }
            sqlx::query(sqlx::AssertSqlSafe(format!(
                r#"CREATE DATABASE "{TEMPLATE}""#
            )))
            .execute(&mut conn)
            .await
            .expect("creating the template database");
            let pool =
                PgPool::connect_with(db::connect_options(&cluster().url(TEMPLATE)).expect("URL"))
                    .await
                    .expect("connecting to the template");
            db::migrate(&pool).await.expect("migrating the template");
            pool.close().await;
        })
        .await;
}

/// A fresh, migrated database; returns its name and URL (with password).
pub async fn fresh_database() -> (String, SecretString) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    template().await;
    let name = format!(
        "test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = admin_connection().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}""#
    )))
    .execute(&mut conn)
    .await
    .expect("creating a test database");
    let url = cluster().url(&name);
    (name, url)
}

/// An empty database (no migrations applied), e.g. to apply earlier migration texts to.
pub async fn blank_database() -> (String, SecretString) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "test_blank_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = admin_connection().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .execute(&mut conn)
        .await
        .expect("creating a blank test database");
    let url = cluster().url(&name);
    (name, url)
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub pool: PgPool,
    pub db_name: String,
    pub db_url: SecretString,
    /// No redirects, a cookie store: for asserting on 303 + Location and sessions.
    pub client: reqwest::Client,
    stop: Box<dyn Fn() -> futures_util::future::BoxFuture<'static, ()>>,
}

/// Settings as the command line would give them, plus test defaults (port 0, fast polls, no demo).
pub fn test_settings(extra: &[&str]) -> Settings {
    let mut args = vec![
        "candlewick",
        "--bind",
        "127.0.0.1:0",
        "--no-demo",
        "--admin-token",
        TOKEN,
    ];
    if !extra.contains(&"--poll-interval") {
        args.extend(["--poll-interval", "200ms"]);
    }
    args.extend_from_slice(extra);
    Cli::try_parse_from(args)
        .expect("test settings parse")
        .serve
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts a server with extra command-line flags (e.g. `["--window", "1d"]`).
pub async fn spawn_app_with(extra: &[&str]) -> TestApp {
    let (db_name, db_url) = fresh_database().await;
    spawn_app_on(db_name, db_url, extra).await
}

/// Starts a server over an existing, migrated database (e.g. one on a TimescaleDB server).
pub async fn spawn_app_on(db_name: String, db_url: SecretString, extra: &[&str]) -> TestApp {
    spawn_app_with_settings(db_name, db_url, test_settings(extra)).await
}

/// Starts a server with these exact settings over an existing, migrated database.
pub async fn spawn_app_with_settings(
    db_name: String,
    db_url: SecretString,
    settings: Settings,
) -> TestApp {
    let pool = db::build_pool(db::connect_options(&db_url).expect("URL"));
    let flavour = db::Flavour::detect(&pool)
        .await
        .expect("detecting the flavour");
    let app = Application::build(&settings, pool.clone(), flavour, TOKEN.to_owned().into())
        .await
        .expect("building the app");
    let port = app.port();
    let stop = app.stopper();
    actix_web::rt::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .expect("building the HTTP client");
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        pool,
        db_name,
        db_url,
        client,
        stop: Box::new(stop),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?{query}", self.port)
    }

    /// Stops the HTTP server (sessions end, the port closes).
    pub async fn stop(&self) {
        (self.stop)().await;
    }

    /// A new server on this one's port over the same database (after `stop`): a restarted
    /// process, as open pages see it.
    pub async fn restart(&self) -> TestApp {
        let mut settings = test_settings(&[]);
        settings.bind = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        spawn_app_with_settings(self.db_name.clone(), self.db_url.clone(), settings).await
    }

    pub async fn post_ticks_json(&self, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/ticks"))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .expect("POST /api/ticks")
    }

    pub async fn post_ticks_raw(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/api/ticks"))
            .bearer_auth(TOKEN)
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST /api/ticks")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.expect("a JSON body")
    }

    /// Runs SQL through the real `psql` binary, as another program would; returns its output.
    pub fn psql(&self, sql: &str) -> String {
        psql(&self.db_url, sql)
    }

    /// [`TestApp::psql`] off the test's thread, which the server's poller shares: a slow
    /// statement must not stall the polls (and the heartbeats of the test's viewers) meanwhile.
    pub async fn psql_async(&self, sql: &str) -> String {
        let (url, sql) = (self.db_url.clone(), sql.to_owned());
        tokio::task::spawn_blocking(move || psql(&url, &sql))
            .await
            .expect("the psql task")
    }

    pub async fn tick_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM ticks")
            .fetch_one(&self.pool)
            .await
            .expect("counting ticks")
    }
}

/// `psql -X -q -At -v ON_ERROR_STOP=1` against `url` (password passed by environment).
pub fn psql(url: &SecretString, sql: &str) -> String {
    let parsed = url::Url::parse(url.expose_secret()).expect("URL");
    let password = parsed.password().unwrap_or_default().to_owned();
    let mut bare = parsed.clone();
    let _ = bare.set_password(None);
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            bare.as_str(),
            "-c",
            sql,
        ])
        .env("PGPASSWORD", password)
        .env("PGTZ", "UTC")
        .output()
        .expect("running psql (install postgresql-client)");
    assert!(
        out.status.success(),
        "psql failed on {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_ok(timeout, what, || {
        let fut = check();
        async move { fut.await.ok_or("nothing yet") }
    })
    .await
}

/// Polls `check` until it returns `Ok`, or panics after `timeout` with `what` and the last
/// `Err`: what was there instead.
pub async fn eventually_ok<T, E, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    E: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last seen: {seen:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `CALL refresh_continuous_aggregate(view, from, to)` (bounds as SQL expressions), tried again
/// while the server's own refresher holds an overlapping window: TimescaleDB refuses a refresh
/// that overlaps one in progress instead of waiting for it.
pub async fn refresh_aggregate(pool: &PgPool, view: &str, from: &str, to: &str) {
    let sql = format!("CALL refresh_continuous_aggregate('{view}', {from}, {to})");
    eventually_ok(Duration::from_secs(30), &sql, || async {
        match sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .execute(pool)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("concurrent refresh") => Err(e.to_string()),
            Err(e) => panic!("{sql}: {e}"),
        }
    })
    .await
}
