//! Building and running the application over an open database: the poller, the demo feed and
//! the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::Compress;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::config::Settings;
use crate::db::Flavour;
use crate::feed::{self, Feed, FeedSettings};
use crate::health::Health;
use crate::routes::{self, admin::AdminState};
use crate::state::AppState;

pub struct Application {
    port: u16,
    server: Server,
    shutdown: CancellationToken,
    demo: Option<tokio::task::JoinHandle<()>>,
    poller: tokio::task::JoinHandle<()>,
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
        let shutdown = CancellationToken::new();
        let health = Arc::new(Health::default());
        let (feed, poller) = Feed::start(
            pool.clone(),
            FeedSettings {
                flavour,
                poll_interval: settings.poll_interval,
                window: settings.window,
                keep_unwatched: settings.keep_unwatched,
                faults: settings.feed_faults.clone(),
            },
            health.clone(),
            shutdown.clone(),
        );
        let demo = settings
            .demo_enabled()
            .then(|| tokio::spawn(feed::demo::run(pool.clone(), shutdown.clone())));
        let state = AppState {
            pool,
            default_symbol: settings.symbol.clone(),
            feed,
            health,
            metrics: crate::telemetry::metrics_handle(),
            secure_cookies: settings.secure_cookies,
            allowed_origins: Arc::new(settings.allowed_origins.clone()),
            shutdown: shutdown.clone(),
        };
        let auth = web::Data::new(Auth::new(admin_token));
        let admin = web::Data::new(AdminState::new(&settings.db.data_dir));
        let trust_forwarded = settings.trust_forwarded;
        let server = HttpServer::new(move || {
            App::new()
                .wrap(routes::security_headers())
                .wrap(Compress::default())
                .wrap(crate::telemetry::request_logger())
                .app_data(crate::client::TrustForwarded(trust_forwarded))
                .app_data(web::Data::new(state.clone()))
                .app_data(auth.clone())
                .app_data(admin.clone())
                .configure(routes::configure(&state, &auth))
        })
        .on_connect(routes::ws::on_connect)
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
            poller,
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

    /// Serves until the server is stopped; an error when the poller died first (the process
    /// must exit then, so that a supervisor starts it again).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let mut server = self.server;
        let handle = server.handle();
        let res = tokio::select! {
            res = &mut server => res.context("serving HTTP"),
            ended = self.poller => {
                if self.shutdown.is_cancelled() {
                    // A stop: the poller ended as asked.
                    server.await.context("serving HTTP")
                } else {
                    tracing::error!(error = ?ended.err(), "the poller stopped; stopping the server");
                    self.shutdown.cancel();
                    // The server future carries out the stop: keep polling it meanwhile.
                    let _ = tokio::join!(handle.stop(true), &mut server);
                    Err(anyhow::anyhow!("the poller stopped unexpectedly"))
                }
            }
        };
        self.shutdown.cancel();
        if let Some(demo) = self.demo {
            let _ = demo.await;
        }
        res
    }
}

/// Every viewer holds a socket: lift the open-file soft limit to the hard limit (often 1,024
/// soft against many thousands hard), so one process can hold as many viewers as the box allows.
pub fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the open-file limit"),
    }
}
