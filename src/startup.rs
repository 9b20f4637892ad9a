//! Building and running the application over an open database: the poller, the demo feed and
//! the HTTP server.

use std::net::TcpListener;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use actix_codec::Framed;
use actix_http::{Extensions, HttpService, Request, h1};
use actix_server::Server;
use actix_service::{IntoServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{AppConfig, ServiceRequest, ServiceResponse};
use actix_web::middleware::{Compress, Next, from_fn};
use actix_web::{App, web};
use anyhow::Context;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

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
/// How long a stop waits for the viewers' close frames to be handed to their sockets.
const CLOSE_VIEWERS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a stop then lets connections close by themselves (actix closes idle ones at once on
/// a stop, and a viewer's once its close frame is out) before it drops what is left.
const LINGER_TIMEOUT: Duration = Duration::from_millis(250);

pub struct Application {
    port: u16,
    /// The listening socket, to see when the server has closed it.
    listener: ListenerFd,
    server: Server,
    shutdown: CancellationToken,
    /// What a stop waits for: requests being served, and viewers' sockets.
    trackers: Trackers,
    /// Cancelled once a stop has drained everything; the server's workers are then stopped
    /// without waiting for idle connections.
    drained: CancellationToken,
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
        let port = listener
            .local_addr()
            .context("reading the bound address")?
            .port();
        let listener_fd = ListenerFd::of(&listener);
        let trackers = Trackers::default();
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
        let tracker = trackers.clone();
        let connections = trackers.connections.clone();
        let local_addr = listener.local_addr().context("reading the bound address")?;
        // actix-web's HttpServer, but for the upgrade service `/ws` needs (see routes::ws).
        let server = actix_server::Server::build()
            .listen("candlewick", listener, move || {
                let app = App::new()
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
                    .into_factory()
                    .map_err(|e| e.error_response());
                let upgrades = Rc::new(routes::ws::Upgrades {
                    state: state.clone(),
                    trust_forwarded,
                    viewers: tracker.viewers.clone(),
                });
                let connections = connections.clone();
                HttpService::build()
                    .client_request_timeout(Duration::from_secs(5))
                    .client_disconnect_timeout(Duration::from_secs(1))
                    .local_addr(local_addr)
                    .on_connect_ext(move |io: &TcpStream, ext: &mut Extensions| {
                        routes::ws::on_connect(io, ext);
                        // Dropped with the connection.
                        ext.insert(Connection(connections.token()));
                    })
                    .upgrade(fn_service(
                        move |(req, framed): (Request, Framed<TcpStream, h1::Codec>)| {
                            routes::ws::upgrade(req, framed, upgrades.clone())
                        },
                    ))
                    .finish(map_config(app, move |()| AppConfig::default()))
                    .tcp()
            })
            .context("listening")?
            // The drain (see `stopper`) does the graceful part; this only bounds a stop that did not
            // go through it.
            .shutdown_timeout(5)
            .disable_signals()
            .max_concurrent_connections(50_000)
            .backlog(4096)
            .run();
        Ok(Self {
            port,
            listener: listener_fd,
            server,
            shutdown,
            trackers,
            drained: CancellationToken::new(),
            demo,
            poller,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that drains and stops the server when called: it stops accepting (the listener
    /// closes, so a proxy sends new connections to another replica), lets the requests in
    /// flight finish (their whole response), then closes every viewer with 1012 (service
    /// restart), on which the chart page reconnects at once — to another replica, or to this
    /// one once it is back. Connections left then are idle: they are closed without waiting.
    pub fn stopper(&self) -> impl Fn() -> futures_util::future::BoxFuture<'static, ()> + use<> {
        let handle = self.server.handle();
        let shutdown = self.shutdown.clone();
        let trackers = self.trackers.clone();
        let listener = self.listener.clone();
        let drained = self.drained.clone();
        move || {
            // The accept thread closes the listener as soon as it takes this command.
            let stopped = handle.stop(true);
            let (shutdown, trackers) = (shutdown.clone(), trackers.clone());
            let (listener, drained) = (listener.clone(), drained.clone());
            Box::pin(async move {
                let stopped = actix_web::rt::spawn(stopped);
                listener.until_closed().await;
                let Trackers {
                    requests,
                    viewers,
                    connections,
                } = trackers;
                requests.close();
                if tokio::time::timeout(DRAIN_TIMEOUT, requests.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        requests = requests.len(),
                        "requests still in flight after {DRAIN_TIMEOUT:?}; closing viewers anyway"
                    );
                }
                shutdown.cancel();
                viewers.close();
                if tokio::time::timeout(CLOSE_VIEWERS_TIMEOUT, viewers.wait())
                    .await
                    .is_err()
                {
                    tracing::debug!(
                        viewers = viewers.len(),
                        "viewers not closed after {CLOSE_VIEWERS_TIMEOUT:?}; dropping them"
                    );
                }
                connections.close();
                if tokio::time::timeout(LINGER_TIMEOUT, connections.wait())
                    .await
                    .is_err()
                {
                    tracing::debug!(
                        connections = connections.len(),
                        "connections still open after {LINGER_TIMEOUT:?}; dropping them"
                    );
                }
                // `run_until_stopped` now drops the server, which closes what is left at once
                // (actix's own graceful stop would look again only a second later).
                drained.cancel();
                let _ = stopped.await;
            })
        }
    }

    /// Serves until the server is stopped; an error when the poller died first (the process
    /// must exit then, so that a supervisor starts it again).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let mut server = self.server;
        let handle = server.handle();
        let mut poller = self.poller;
        let mut poller_ended = false;
        let res = tokio::select! {
            res = &mut server => res.context("serving HTTP"),
            // A stop has drained everything: dropping the server (below) stops its workers at
            // once, closing the idle connections left.
            _ = self.drained.cancelled() => Ok(()),
            ended = &mut poller => {
                poller_ended = true;
                if self.shutdown.is_cancelled() {
                    // A stop: the poller ended as asked.
                    tokio::select! {
                        res = &mut server => res.context("serving HTTP"),
                        _ = self.drained.cancelled() => Ok(()),
                    }
                } else {
                    tracing::error!(error = ?ended.err(), "the poller stopped; stopping the server");
                    self.shutdown.cancel();
                    // The server future carries out the stop: keep polling it meanwhile.
                    let _ = tokio::join!(handle.stop(true), &mut server);
                    Err(anyhow::anyhow!("the poller stopped unexpectedly"))
                }
            }
        };
        // Now, not after the demo feed's last write: what is left of the server stops at once.
        drop(server);
        self.shutdown.cancel();
        if !poller_ended {
            let _ = poller.await;
        }
        if let Some(demo) = self.demo {
            let _ = demo.await;
        }
        res
    }
}

/// What a stop waits for (see [`Application::stopper`]).
#[derive(Clone, Default)]
struct Trackers {
    /// Requests being served, until the last byte of their response is handed to the socket.
    requests: TaskTracker,
    /// Viewers' sessions (which never pass through the app: see `routes::ws::upgrade`), until
    /// the session has sent its close frame.
    viewers: TaskTracker,
    /// Open connections, until they close.
    connections: TaskTracker,
}

/// A connection's place in [`Trackers::connections`], kept in its extensions.
struct Connection(#[allow(dead_code)] TaskTrackerToken);

/// Counts a request in flight while it is served and its response is written, for the drain
/// (see [`Application::stopper`]).
async fn track_in_flight(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<Tracked>, actix_web::Error> {
    let token = req.app_data::<Trackers>().map(|t| t.requests.token());
    let res = next.call(req).await?;
    Ok(res.map_body(|_, body| Tracked {
        body: body.boxed(),
        _token: token,
    }))
}

/// A response body that holds its request's place in a [`TaskTracker`] until it is all sent
/// (or dropped with its connection).
struct Tracked {
    body: BoxBody,
    _token: Option<TaskTrackerToken>,
}

impl MessageBody for Tracked {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<bytes::Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }

    fn try_into_bytes(self) -> Result<bytes::Bytes, Self> {
        let Self { body, _token } = self;
        body.try_into_bytes().map_err(|body| Self { body, _token })
    }
}

/// The listening socket as `/proc/self/fd` names it (`socket:[inode]`). The server's accept
/// thread closes it when it takes the stop command; reading the link shows when that has
/// happened without connecting to it (a probe connection taken after the workers stopped made
/// actix log an error).
#[derive(Clone)]
struct ListenerFd {
    path: PathBuf,
    /// `None` where there is no `/proc` (then a stop does not wait to see it closed).
    link: Option<PathBuf>,
}

impl ListenerFd {
    fn of(listener: &TcpListener) -> Self {
        use std::os::fd::AsRawFd;
        // actix takes the listener over with this same descriptor.
        let path = PathBuf::from(format!("/proc/self/fd/{}", listener.as_raw_fd()));
        let link = std::fs::read_link(&path).ok();
        Self { path, link }
    }

    /// Whether the descriptor still names the listening socket (once closed, its number is
    /// either unused or names something else).
    fn is_open(&self) -> bool {
        self.link.is_some() && std::fs::read_link(&self.path).ok() == self.link
    }

    /// Waits (briefly) until the listener is closed: new connections are refused from then on.
    async fn until_closed(&self) {
        let deadline = tokio::time::Instant::now() + UNBIND_TIMEOUT;
        while self.is_open() {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("the listener is still open after {UNBIND_TIMEOUT:?}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
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
