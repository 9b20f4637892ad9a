//! Building and running the application: database, poller, demo feed and HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::{Actor, Addr};
use actix_web::dev::Server;
use actix_web::middleware::{Compress, DefaultHeaders};
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tracing_actix_web::TracingLogger;

use crate::config::Settings;
use crate::db::{self, Flavour};
use crate::domain::Symbol;
use crate::embedded::{self, EmbeddedPostgres};
use crate::feed::{self, Poller};

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub default_symbol: Symbol,
    pub auth: Arc<Auth>,
    pub poller: Addr<Poller>,
    pub health: Arc<Health>,
    pub metrics: PrometheusHandle,
    pub secure_cookies: bool,
    /// Cancelled when the server stops: long-lived sessions end themselves.
    pub shutdown: CancellationToken,
    /// Sign-in rate limits and running CSV imports of the admin pages.
    pub admin: Arc<crate::routes::admin::AdminState>,
}

/// The admin token, compared in constant time.
pub struct Auth {
    token: SecretString,
}

impl Auth {
    pub fn new(token: SecretString) -> Self {
        Self { token }
    }

    pub fn token_matches(&self, candidate: &str) -> bool {
        let expected = self.token.expose_secret().as_bytes();
        // Length is not secret; contents are compared without early exit.
        expected.len() == candidate.len() && bool::from(expected.ct_eq(candidate.as_bytes()))
    }

    /// Key material for the session cookie, derived from the token: rotating it signs everyone out.
    pub fn cookie_key(&self) -> actix_web::cookie::Key {
        let mut material = self.token.expose_secret().as_bytes().to_vec();
        material.extend_from_slice(
            b"candlewick session cookie key, v1, padded to at least 64 bytes.......",
        );
        actix_web::cookie::Key::derive_from(&material)
    }
}

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Health {
    poll_ok: AtomicBool,
}

impl Health {
    pub fn set_poll_ok(&self, ok: bool) {
        self.poll_ok.store(ok, Ordering::Relaxed);
    }
    pub fn last_poll_ok(&self) -> bool {
        self.poll_ok.load(Ordering::Relaxed)
    }
    pub fn record_gauges(&self) {
        metrics::gauge!("candlewick_ready").set(if self.last_poll_ok() { 1.0 } else { 0.0 });
    }
}

/// The process-wide Prometheus recorder (installed once, also when tests build many apps).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle());
            metrics::describe_counter!(
                "candlewick_ticks_inserted_total",
                "Ticks written through candlewick"
            );
            metrics::describe_histogram!(
                "candlewick_poll_seconds",
                "Duration of one poll of the change journal"
            );
            metrics::describe_gauge!("candlewick_viewers", "Connected chart viewers");
            metrics::describe_gauge!("candlewick_ready", "1 while the last poll succeeded");
            metrics::gauge!("candlewick_ready").set(0.0);
            handle
        })
        .clone()
}

/// A database ready for the server: the pool, its flavour and, if we started it, the cluster.
pub struct Database {
    pub pool: PgPool,
    pub flavour: Flavour,
    pub display_url: String,
    pub embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects to `--database-url` or starts the embedded cluster; applies the migrations.
    pub async fn open(settings: &crate::config::DbSettings) -> anyhow::Result<Self> {
        let (url, display_url, embedded) = match &settings.database_url {
            Some(url) => (url.clone(), db::display_url(url), None),
            None => {
                let data_dir = settings.data_dir.clone();
                let pg = tokio::task::spawn_blocking(move || {
                    EmbeddedPostgres::start(&data_dir, &embedded::Options::default())
                })
                .await
                .context("starting the embedded PostgreSQL")??;
                ensure_database(&pg).await?;
                (
                    pg.url(embedded::DB_NAME),
                    pg.display_url(embedded::DB_NAME),
                    Some(pg),
                )
            }
        };
        tracing::info!("database: {display_url}");
        let pool = db::build_pool(db::connect_options(&url)?);
        let flavour = db::migrate(&pool).await?;
        let described = flavour.describe(&pool).await?;
        tracing::info!("storage: {described}");
        Ok(Self {
            pool,
            flavour,
            display_url,
            embedded,
        })
    }

    /// Closes the pool, then stops the embedded cluster (if any).
    pub async fn close(self) {
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            match tokio::task::spawn_blocking(move || pg.stop()).await {
                Ok(Ok(())) => tracing::info!("embedded PostgreSQL stopped"),
                Ok(Err(e)) => {
                    tracing::error!(error.cause_chain = ?e, "stopping the embedded PostgreSQL")
                }
                Err(e) => tracing::error!(error = %e, "stopping the embedded PostgreSQL"),
            }
        }
    }
}

/// Creates the `candlewick` database in a fresh embedded cluster.
pub async fn ensure_database(pg: &EmbeddedPostgres) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect_with(&db::connect_options(&pg.url("postgres"))?)
        .await
        .context("connecting to the embedded PostgreSQL")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
            .bind(embedded::DB_NAME)
            .fetch_one(&mut conn)
            .await
            .context("checking for the candlewick database")?;
    if !exists {
        sqlx::query(r#"CREATE DATABASE "candlewick""#)
            .execute(&mut conn)
            .await
            .context("creating the candlewick database")?;
    }
    conn.close().await.ok();
    Ok(())
}

pub struct Application {
    port: u16,
    server: Server,
    shutdown: CancellationToken,
    demo: Option<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Binds the listener, starts the poller (and the demo feed when asked). Needs an actix
    /// System (the `candlewick` main and `#[actix_web::test]` provide one).
    pub async fn build_with_pool(
        settings: &Settings,
        pool: PgPool,
        flavour: Flavour,
        admin_token: SecretString,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.bind)
            .with_context(|| format!("binding {}", settings.bind))?;
        let port = listener
            .local_addr()
            .context("reading the bound address")?
            .port();
        let health = Arc::new(Health::default());
        let poller = Poller::new(
            pool.clone(),
            flavour,
            settings.poll_interval,
            settings.window,
            health.clone(),
        )
        .start();
        let shutdown = CancellationToken::new();
        let demo = settings
            .demo_enabled()
            .then(|| tokio::spawn(feed::demo::run(pool.clone(), shutdown.clone())));
        let state = AppState {
            pool,
            default_symbol: settings.symbol.clone(),
            auth: Arc::new(Auth::new(admin_token)),
            poller,
            health,
            metrics: metrics_handle(),
            secure_cookies: settings.secure_cookies,
            shutdown: shutdown.clone(),
            admin: Arc::default(),
        };
        let server = HttpServer::new(move || {
            App::new()
                .wrap(security_headers())
                .wrap(Compress::default())
                .wrap(TracingLogger::default())
                .app_data(web::Data::new(state.clone()))
                .app_data(crate::error::json_config())
                .app_data(crate::error::query_config())
                .app_data(crate::error::form_config())
                .configure(crate::routes::configure)
                .configure(crate::routes::admin::configure(&state))
                .default_service(web::to(not_found))
        })
        .on_connect(crate::routes::ws::on_connect)
        .listen(listener)
        .context("listening")?
        // Viewers hold long-lived sockets; sessions end themselves on `shutdown`.
        .shutdown_timeout(5)
        .disable_signals()
        .max_connections(50_000)
        .backlog(4096)
        .run();
        Ok(Self {
            port,
            server,
            shutdown,
            demo,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that stops the server (and ends viewer sessions) when called.
    pub fn stopper(&self) -> impl Fn() -> futures_util::future::BoxFuture<'static, ()> + use<> {
        let handle = self.server.handle();
        let shutdown = self.shutdown.clone();
        move || {
            shutdown.cancel();
            let handle = handle.clone();
            Box::pin(async move { handle.stop(true).await })
        }
    }

    /// Serves until the server is stopped.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let res = self.server.await.context("serving HTTP");
        self.shutdown.cancel();
        if let Some(demo) = self.demo {
            let _ = demo.await;
        }
        res
    }
}

/// Headers every response carries (pages, API and assets alike).
fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("Content-Security-Policy", content_security_policy()))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Referrer-Policy", "same-origin"))
}

/// Scripts and styles only from us, plus the one `<style>` the chart library injects (by hash).
fn content_security_policy() -> String {
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self' {}; img-src 'self' data:; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        crate::routes::assets::LIBRARY_STYLE_HASH
    )
}

async fn not_found() -> Result<actix_web::HttpResponse, crate::error::AppError> {
    Err(crate::error::AppError::NotFound("no such page".into()))
}
