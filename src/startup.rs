//! Building and running the application over an open database: the poller, the demo feed and
//! the HTTP server.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::{Compress, Next, from_fn};
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::config::Settings;
use crate::db::Flavour;
use crate::feed::health::Health;
use crate::feed::{self, Feed, FeedSettings};
use crate::routes::{self, admin::AdminState};
use crate::state::AppState;

/// How long a stop waits for requests in flight before it closes the viewers anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stop waits to see the listener closed (it closes within microseconds).
const UNBIND_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Application {
    port: u16,
    /// The bound address, as a client reaches it (for checking that it stopped accepting).
    local: SocketAddr,
    server: Server,
    shutdown: CancellationToken,
    /// Requests being served (WebSocket sessions are not: their handler returns at the upgrade).
    in_flight: TaskTracker,
    demo: Option<tokio::task::JoinHandle<()>>,
    poller: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Binds the listener, starts the poller (and the demo feed when asked). Needs an actix
    /// System (the `candlewick` main and `#[actix_web::test]` provide one).
    pub async fn build(
        settings: &Settings,
        pool: PgPool,
        flavour: Flavour,
        admin_token: SecretString,
    ) -> anyhow::Result<Self> {
        use secrecy::ExposeSecret;
        crate::config::check_admin_token(admin_token.expose_secret())
            .map_err(anyhow::Error::msg)?;
        let listener = TcpListener::bind(settings.bind)
            .with_context(|| format!("binding {}", settings.bind))?;
        let mut local = listener.local_addr().context("reading the bound address")?;
        let port = local.port();
        if local.ip().is_unspecified() {
            local.set_ip(match local {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let in_flight = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let health = Arc::new(Health::default());
        let (feed, poller) = Feed::start(
            pool.clone(),
            FeedSettings {
                flavour,
                poll_interval: settings.poll_interval,
                window: settings.window,
                resume_grace: settings.resume_grace,
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
            read_pool: crate::db::read_pool(&pool, settings.api_read_timeout),
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
        let tracker = in_flight.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(tracker.clone())
                .wrap(from_fn(track_in_flight))
                .wrap(routes::security_headers())
                .wrap(Compress::default())
                .wrap(crate::telemetry::request_logger())
                .app_data(crate::client_addr::TrustForwarded(trust_forwarded))
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
            local,
            server,
            shutdown,
            in_flight,
            demo,
            poller,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that drains and stops the server when called: it stops accepting (the listener
    /// closes, so a proxy sends new connections to another replica), lets the requests in
    /// flight finish, then closes every viewer with 1012 (service restart), on which the chart
    /// page reconnects at once — to another replica, or to this one once it is back.
    pub fn stopper(&self) -> impl Fn() -> futures_util::future::BoxFuture<'static, ()> + use<> {
        let handle = self.server.handle();
        let shutdown = self.shutdown.clone();
        let in_flight = self.in_flight.clone();
        let local = self.local;
        move || {
            let stopped = handle.stop(true);
            let shutdown = shutdown.clone();
            let in_flight = in_flight.clone();
            Box::pin(async move {
                let stopped = actix_web::rt::spawn(stopped);
                until_refused(local).await;
                in_flight.close();
                if tokio::time::timeout(DRAIN_TIMEOUT, in_flight.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        requests = in_flight.len(),
                        "requests still in flight after {DRAIN_TIMEOUT:?}; closing viewers anyway"
                    );
                }
                shutdown.cancel();
                let _ = stopped.await;
            })
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

/// Counts a request in flight while it is served, for the drain (see [`Application::stopper`]).
async fn track_in_flight(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    match req.app_data::<TaskTracker>().cloned() {
        Some(tracker) => tracker.track_future(next.call(req)).await,
        None => next.call(req).await,
    }
}

/// Waits (briefly) until `addr` refuses connections: the server stopped accepting. The accept
/// thread closes the listener as soon as it takes the stop command.
async fn until_refused(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + UNBIND_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Err(_)) => return,
            Ok(Ok(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    tracing::warn!(%addr, "the listener still accepts after {UNBIND_TIMEOUT:?}");
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
