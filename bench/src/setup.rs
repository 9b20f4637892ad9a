//! What the benches run against: a work dir and server binary, an embedded cluster or a given
//! one, scratch databases, candlewick server processes, and weeks of synthetic ticks.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use candlewick::config::EmbeddedTimescaleDb;
use candlewick::db::audit::Author;
use candlewick::db::ticks;
use candlewick::db::{self, Flavour};
use candlewick::domain::{Price, Symbol, Tick, Volume};
use candlewick::embedded::{self, EmbeddedPostgres};
use chrono::{DateTime, Utc};
use clap::Args;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use secrecy::{ExposeSecret, SecretString};
use sqlx::{Connection, PgConnection, PgPool};

/// The admin token the bench gives the servers it starts.
pub const TOKEN: &str = "candlewick-bench-token";
pub const SYMBOL: &str = "BTC/USD";

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Progress for the person running the bench (stdout carries the JSON report).
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => {{
        eprintln!("[bench] {}", format!($($t)*));
    }};
}

/// Refuses anything but loopback: this tool generates load.
pub fn require_loopback(host: &str) -> anyhow::Result<()> {
    let ok = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !ok {
        bail!(
            "{host} is not a loopback address: the bench only targets this machine (127.0.0.0/8, ::1)"
        );
    }
    Ok(())
}

/// Where a run works; every subcommand that starts a cluster or servers takes these.
#[derive(Debug, Clone, Args)]
pub struct WorkArgs {
    /// The candlewick binary to start (default: the one next to this binary).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Where the bench keeps its embedded cluster and its servers' data dirs and logs
    /// (default: candlewick-bench in the temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// A PostgreSQL cluster to make the scratch database in instead of the embedded one (its
    /// user must be able to create databases).
    #[arg(long)]
    pub database_url: Option<SecretString>,
}

impl WorkArgs {
    /// Creates the work dir and finds the server binary (before any long setup can fail on it).
    pub fn open(&self) -> anyhow::Result<Workspace> {
        let dir = self
            .work_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("candlewick-bench"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let bin = match &self.server_bin {
            Some(b) => b.clone(),
            None => default_server_bin()?,
        };
        Ok(Workspace {
            dir,
            bin,
            database_url: self.database_url.clone(),
        })
    }
}

/// The `candlewick` binary next to this one (both come from the same `cargo build`).
fn default_server_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating candlewick-bench")?;
    let bin = me.with_file_name("candlewick");
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release) or pass --server-bin",
            bin.display()
        );
    }
    Ok(bin)
}

/// Which flavours a measurement runs on, and where.
#[derive(Debug, Clone, Args)]
pub struct FlavourArgs {
    /// Beside plain PostgreSQL, TimescaleDB on an embedded cluster when it is installed (`auto`),
    /// or not (`off`).
    #[arg(long, value_enum, default_value_t = EmbeddedTimescaleDb::Auto)]
    pub embedded_timescaledb: EmbeddedTimescaleDb,
    /// Skip plain PostgreSQL.
    #[arg(long)]
    pub no_plain: bool,
    #[command(flatten)]
    pub work: WorkArgs,
}

impl FlavourArgs {
    /// Runs `measure` on plain PostgreSQL (unless `--no-plain`; the embedded cluster or
    /// `--database-url`) and then, when `--embedded-timescaledb auto` and no `--database-url`
    /// was given, on an embedded cluster with TimescaleDB preloaded (or says why not). Both
    /// clusters preload pg_stat_statements. The report has one member per flavour:
    /// `postgresql`, `timescaledb`.
    pub async fn each(
        &self,
        measure: impl AsyncFn(&Workspace, Cluster) -> anyhow::Result<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let no_plain = self.no_plain;
        let timescaledb = self.embedded_timescaledb == EmbeddedTimescaleDb::Auto;
        if no_plain && !timescaledb {
            bail!("--no-plain with --embedded-timescaledb off leaves nothing to measure");
        }
        let ws = self.work.open()?;
        let mut report = serde_json::Map::new();
        if !no_plain {
            let cluster = ws
                .cluster(Embedded {
                    count_statements: true,
                    ..Embedded::PLAIN
                })
                .await?;
            report.insert("postgresql".into(), measure(&ws, cluster).await?);
        }
        if timescaledb && ws.database_url.is_none() {
            let bindir = embedded::find_bindir()?;
            let measured = if embedded::timescaledb_installed(&bindir) {
                let cluster = ws
                    .embedded_cluster(Embedded {
                        timescaledb: EmbeddedTimescaleDb::Auto,
                        count_statements: true,
                    })
                    .await?;
                measure(&ws, cluster).await?
            } else {
                let why = format!("TimescaleDB is not installed for {}", bindir.display());
                say!("{why}: measuring plain PostgreSQL only");
                serde_json::json!({ "skipped": why })
            };
            report.insert("timescaledb".into(), measured);
        }
        Ok(serde_json::Value::Object(report))
    }
}

/// A run's work dir, server binary and database.
pub struct Workspace {
    dir: PathBuf,
    bin: PathBuf,
    database_url: Option<SecretString>,
}

/// How the embedded cluster runs.
#[derive(Debug, Clone, Copy)]
pub struct Embedded {
    pub timescaledb: EmbeddedTimescaleDb,
    /// Preload pg_stat_statements, so that the servers' statements can be counted.
    pub count_statements: bool,
}

impl Embedded {
    /// Plain PostgreSQL, nothing extra loaded: what BENCHMARKS.md measured ingest on.
    pub const PLAIN: Self = Self {
        timescaledb: EmbeddedTimescaleDb::Off,
        count_statements: false,
    };
}

impl Workspace {
    /// Where the bench keeps what it runs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cluster to run on: the one `--database-url` names, or the embedded one.
    pub async fn cluster(&self, embedded: Embedded) -> anyhow::Result<Cluster> {
        match &self.database_url {
            Some(url) => Ok(Cluster::external(url.clone())),
            None => self.embedded_cluster(embedded).await,
        }
    }

    /// The embedded cluster in the work dir, whatever `--database-url` says.
    pub async fn embedded_cluster(&self, embedded: Embedded) -> anyhow::Result<Cluster> {
        Cluster::embedded(&self.dir.join("cluster"), embedded).await
    }

    /// Starts a server named `name` (its data dir and log are named after it) on `db_url`.
    pub async fn spawn_server(&self, db_url: &SecretString, name: &str) -> anyhow::Result<Server> {
        Server::spawn(&self.bin, db_url, &self.dir, name, &[]).await
    }

    /// Starts a server as [`Self::spawn_server`] does, with these settings in its environment
    /// (e.g. `CANDLEWICK_POLL_INTERVAL`).
    pub async fn spawn_server_with(
        &self,
        db_url: &SecretString,
        name: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        Server::spawn(&self.bin, db_url, &self.dir, name, env).await
    }

    /// Starts a server as [`Self::spawn_server`] does, from another binary (e.g. a build to
    /// compare against).
    pub async fn spawn_server_from(
        &self,
        bin: &Path,
        db_url: &SecretString,
        name: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        Server::spawn(bin, db_url, &self.dir, name, env).await
    }

    /// Where the server named `name` writes its log.
    pub fn log_path(&self, name: &str) -> PathBuf {
        log_path(&self.dir, name)
    }
}

fn log_path(work_dir: &Path, name: &str) -> PathBuf {
    work_dir.join(format!("{name}.log"))
}

/// One server on a scratch database holding BTC/USD history, for a measurement that needs
/// nothing else.
pub struct HistoryServer<'a> {
    /// The scratch database's name, and the server's (its data dir and log).
    pub database: &'a str,
    pub server: &'a str,
    pub timescaledb: EmbeddedTimescaleDb,
    pub history: Duration,
    pub history_rate: f64,
    /// Settings in the servers' environment (e.g. `CANDLEWICK_POLL_INTERVAL`).
    pub env: &'a [(&'a str, &'a str)],
    /// Another build to start beside it on the same database (`<server>-baseline`), to
    /// compare against.
    pub baseline_bin: Option<&'a Path>,
}

impl HistoryServer<'_> {
    /// Loads the history, starts the server (and the baseline build, if any), runs `measure`
    /// against them and stops them; the report (a JSON object) gains the storage it ran on.
    pub async fn run(
        self,
        work: &WorkArgs,
        measure: impl AsyncFnOnce(
            &Scratch,
            &Server,
            Option<&Server>,
        ) -> anyhow::Result<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let ws = work.open()?;
        let cluster = ws
            .cluster(Embedded {
                timescaledb: self.timescaledb,
                count_statements: false,
            })
            .await?;
        cluster
            .run_scratch(self.database, async |_, db| {
                load_history(db, Utc::now(), self.history, self.history_rate).await?;
                let storage = db.flavour.describe(&db.pool).await?;
                db.pool.close().await;
                let server = ws.spawn_server_with(&db.url, self.server, self.env).await?;
                let baseline = match self.baseline_bin {
                    Some(bin) => {
                        let name = format!("{}-baseline", self.server);
                        Some(ws.spawn_server_from(bin, &db.url, &name, self.env).await?)
                    }
                    None => None,
                };
                let report = measure(db, &server, baseline.as_ref()).await;
                server.stop().await;
                if let Some(baseline) = baseline {
                    baseline.stop().await;
                }
                let mut report = report?;
                report["storage"] = storage.into();
                Ok(report)
            })
            .await
    }
}

/// A PostgreSQL cluster to make scratch databases in: our embedded one, or one given by URL.
pub struct Cluster {
    pg: Option<EmbeddedPostgres>,
    admin_url: SecretString,
}

impl Cluster {
    /// The embedded cluster under `dir`, with TimescaleDB and pg_stat_statements preloaded
    /// as `embedded` says (both can be).
    pub async fn embedded(dir: &Path, embedded: Embedded) -> anyhow::Result<Self> {
        let dir = dir.to_path_buf();
        let options = embedded::Options {
            timescaledb: embedded.timescaledb == EmbeddedTimescaleDb::Auto,
            preload: embedded
                .count_statements
                .then(|| "pg_stat_statements".to_owned())
                .into_iter()
                .collect(),
            ..embedded::Options::default()
        };
        let pg =
            tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir, &options)).await??;
        Ok(Self {
            admin_url: pg.url("postgres"),
            pg: Some(pg),
        })
    }

    /// A cluster reached by `url` (whose user may create databases).
    pub fn external(url: SecretString) -> Self {
        Self {
            pg: None,
            admin_url: url,
        }
    }

    pub async fn admin(&self) -> anyhow::Result<PgConnection> {
        PgConnection::connect_with(&db::connect_options(&self.admin_url)?)
            .await
            .context("connecting to the cluster's maintenance database")
    }

    fn url_of(&self, database: &str) -> anyhow::Result<SecretString> {
        let mut u =
            url::Url::parse(self.admin_url.expose_secret()).context("parsing the cluster URL")?;
        u.set_path(&format!("/{database}"));
        Ok(u.to_string().into())
    }

    /// Runs `f` on a fresh scratch database `name`; then, however `f` ended, drops the
    /// database and stops the cluster.
    pub async fn run_scratch<T>(
        self,
        name: &str,
        f: impl AsyncFnOnce(&Cluster, &Scratch) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let result = async {
            let db = self.scratch(name).await?;
            let result = f(&self, &db).await;
            db.pool.close().await;
            result
        }
        .await;
        self.drop_database(name).await;
        self.stop().await;
        result
    }

    /// Drops and re-creates `name`, and migrates it.
    async fn scratch(&self, name: &str) -> anyhow::Result<Scratch> {
        let mut conn = self.admin().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
        )))
        .execute(&mut conn)
        .await
        .with_context(|| format!("dropping the scratch database {name}"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating the scratch database {name}"))?;
        conn.close().await.ok();
        let url = self.url_of(name)?;
        let pool = db::build_pool(db::connect_options(&url)?);
        let flavour = db::migrate(&pool).await?;
        Ok(Scratch {
            name: name.to_owned(),
            url,
            pool,
            flavour,
        })
    }

    async fn drop_database(&self, name: &str) {
        if let Ok(mut conn) = self.admin().await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
            )))
            .execute(&mut conn)
            .await;
            conn.close().await.ok();
        }
    }

    async fn stop(self) {
        if let Some(pg) = self.pg {
            let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
        }
    }
}

/// A fresh, migrated database of the bench's own.
pub struct Scratch {
    pub name: String,
    pub url: SecretString,
    pub pool: PgPool,
    pub flavour: Flavour,
}

/// A `candlewick serve` process of ours.
pub struct Server {
    child: tokio::process::Child,
    pub port: u16,
    pub pid: u32,
}

impl Server {
    /// Starts the server on a free port against `db_url` (no demo feed) and waits for /readyz.
    async fn spawn(
        bin: &Path,
        db_url: &SecretString,
        work_dir: &Path,
        name: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let port = embedded::free_port()?;
        let data_dir = work_dir.join(name);
        std::fs::create_dir_all(&data_dir)?;
        let log = std::fs::File::create(log_path(work_dir, name))?;
        let child = tokio::process::Command::new(bin)
            .arg("serve")
            .args([
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--no-demo",
                "--admin-token",
                TOKEN,
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .env("DATABASE_URL", db_url.expose_secret())
            .env("CANDLEWICK_LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let server = Self { child, port, pid };
        server.wait_ready().await.with_context(|| {
            format!("waiting for {name}; see {}/{name}.log", work_dir.display())
        })?;
        Ok(server)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let ready = client.get(format!("{}/readyz", self.http())).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the server was not ready within 180 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws(&self, query: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?{query}", self.port)
    }

    /// SIGTERM, then waits (killed after 15 s).
    pub async fn stop(mut self) {
        use nix::sys::signal::{Signal, kill};
        let _ = kill(nix::unistd::Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A geometric random walk of BTC/USD prices.
pub struct Walk {
    rng: SmallRng,
    price: f64,
    symbol: Symbol,
}

impl Walk {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            price: 61_000.0,
            symbol: Symbol::parse(SYMBOL).expect("a valid symbol"),
        }
    }

    pub fn tick(&mut self, time: DateTime<Utc>) -> Tick {
        let step: f64 = self.rng.random_range(-1.0..1.0);
        self.price = (self.price * (1.0 + 0.0004 * step)).clamp(1_000.0, 1_000_000.0);
        let volume: f64 = self.rng.random_range(0.001..0.5);
        Tick {
            time,
            symbol: self.symbol.clone(),
            price: Price::new((self.price * 100.0).round() / 100.0)
                .expect("a positive finite price"),
            volume: Volume::new((volume * 10_000.0).round() / 10_000.0).expect("a finite volume"),
        }
    }

    /// `n` ticks `gap` apart from `start`.
    pub fn ticks(&mut self, start: DateTime<Utc>, gap: Duration, n: usize) -> Vec<Tick> {
        let gap = chrono::Duration::from_std(gap).unwrap_or(chrono::Duration::milliseconds(100));
        (0..n).map(|i| self.tick(start + gap * i as i32)).collect()
    }
}

/// Loads `span` of history ending just before `end` at `per_sec` ticks per second into `db`,
/// through the bulk (COPY) path in chunks; returns the tick count.
pub async fn load_history(
    db: &Scratch,
    end: DateTime<Utc>,
    span: Duration,
    per_sec: f64,
) -> anyhow::Result<u64> {
    load_quietly(db, async |pool| {
        copy_history(pool, end, span, per_sec).await
    })
    .await
}

/// Runs `load` (which writes history into `ticks`), then vacuums and analyzes.
///
/// On TimescaleDB the history goes in with the journal trigger dropped, and the continuous
/// aggregate is materialized after, as its refresh policy would have done for old ticks:
/// TimescaleDB 2.27 logs no continuous-aggregate invalidation for a COPY into a hypertable
/// that has a statement trigger with a transition table (our journal), so history loaded
/// below the policy's watermark would never be materialized. History needs no journal.
pub async fn load_quietly<T>(
    db: &Scratch,
    load: impl AsyncFnOnce(&PgPool) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let pool = &db.pool;
    let timescale = db.flavour == Flavour::TimescaleDb;
    if timescale {
        sqlx::query("DROP TRIGGER ticks_journal_insert ON ticks")
            .execute(pool)
            .await
            .context("dropping the journal trigger for the history")?;
    }
    let loaded = load(pool).await?;
    if timescale {
        sqlx::query(
            r#"
            CREATE TRIGGER ticks_journal_insert AFTER INSERT ON ticks
                REFERENCING NEW TABLE AS new_rows
                FOR EACH STATEMENT EXECUTE FUNCTION candlewick_ticks_changed()
            "#,
        )
        .execute(pool)
        .await
        .context("restoring the journal trigger")?;
        sqlx::query("CALL refresh_continuous_aggregate('one_min_candle', NULL, NULL)")
            .execute(pool)
            .await
            .context("materializing one_min_candle")?;
    }
    sqlx::query("VACUUM ANALYZE ticks")
        .execute(pool)
        .await
        .context("vacuuming ticks")?;
    sqlx::query("ANALYZE")
        .execute(pool)
        .await
        .context("analyzing")?;
    Ok(loaded)
}

async fn copy_history(
    pool: &PgPool,
    end: DateTime<Utc>,
    span: Duration,
    per_sec: f64,
) -> anyhow::Result<u64> {
    const CHUNK: usize = 200_000;
    let gap = Duration::from_secs_f64(1.0 / per_sec);
    let total = (span.as_secs_f64() * per_sec).floor() as usize;
    let start = end - chrono::Duration::from_std(gap * total as u32).context("history span")?;
    let mut walk = Walk::new(7);
    let started = Instant::now();
    let mut done = 0usize;
    while done < total {
        let n = CHUNK.min(total - done);
        let first =
            start + chrono::Duration::from_std(gap * done as u32).context("history offset")?;
        let chunk = walk.ticks(first, gap, n);
        ticks::insert_ticks(pool, &chunk, Author::CliImport)
            .await
            .map_err(|e| anyhow::anyhow!("loading history: {e}"))?;
        done += n;
        if done % 1_000_000 < CHUNK || done == total {
            crate::say!(
                "history: {done}/{total} ticks ({:.0}/s)",
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(total as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn a_tick_serializes_as_the_api_reads_it() {
        let time = "2024-07-03T08:25:00.123456Z".parse().unwrap();
        let tick = Walk::new(1).tick(time);
        assert_eq!(
            serde_json::to_value(&tick).unwrap(),
            serde_json::json!({
                "time": "2024-07-03T08:25:00.123456Z",
                "symbol": SYMBOL,
                "price": tick.price.get(),
                "volume": tick.volume.get(),
            })
        );
    }
}
