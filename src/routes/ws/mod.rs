//! `GET /ws`: a snapshot (or, for a reconnecting viewer, what it missed), then updates, for one
//! symbol and interval at a time. The protocol is in README.md, "The WebSocket protocol".
//!
//! actix-http hands every request that asks to switch protocols to [`upgrade`], with its
//! connection: a `/ws` request that passes the checks gets its 101 and the connection becomes
//! the viewer's session (see [`socket`] for why not actix-ws); anything else gets its error
//! and the connection closes. A `GET /ws` that does not ask to upgrade reaches the app's route,
//! which says what is wrong with it.

mod socket;

use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_codec::Framed;
use actix_http::body::{BodySize, MessageBody};
use actix_http::header::HeaderMap;
use actix_http::{ConnectionType, Request, Response, h1, ws};
use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, ResponseError, web};
use futures_util::SinkExt;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use ws::{CloseCode, CloseReason};

use socket::{Control, Incoming, ReadError, Socket};

use crate::config::AllowedOrigins;
use crate::domain::{Interval, Symbol};
use crate::error::AppError;
use crate::feed::wire::MAX_LIMIT;
use crate::feed::{Feed, Format, Frame, Resume, ServerMsg, Subscription, Update, Want};
use crate::state::AppState;

/// Heartbeat cadence: a viewer sent no update since the last beat is pinged. Keep ≤ a third
/// of CLIENT_TIMEOUT.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// A peer that has not answered a ping (no pong, no message) for this long is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// A viewer that has not taken a frame for this long is closed.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the close frame may wait for room in the socket of a viewer that stopped reading,
/// and how long the viewer then has to close its end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long sent data may stay unacknowledged (the peer's receive window shut) before the
/// kernel drops the connection. Ending the session alone leaves a stuck peer's socket, with
/// megabytes in its buffers, open for as long as the peer likes.
const STALLED_WRITE_TIMEOUT: Duration = SEND_TIMEOUT;
/// Viewers only send small `subscribe` messages.
const MAX_FRAME_BYTES: usize = 4 * 1024;
/// Snapshots a viewer may ask for in a burst, and how fast that allowance comes back: a
/// subscribe beyond it waits (only the latest one waiting is served).
const SUBSCRIBE_BURST: f64 = 5.0;
const SUBSCRIBES_PER_SEC: f64 = 2.0;
/// Messages (text or binary; pings are answered, not counted) a viewer may send per
/// [`FLOOD_WINDOW`] before it is closed as abusive (policy violation).
const FLOOD_MESSAGES: u32 = 120;
const FLOOD_WINDOW: Duration = Duration::from_secs(10);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws", web::get().to(ws_candles));
}

/// For every accepted connection: TCP_USER_TIMEOUT, so a peer that stops reading (a stuck
/// viewer, or any client of a large response) is closed by the kernel; and TCP_NODELAY, so the
/// last small write of a response (a compressed body's tail, the next fragment of a snapshot)
/// leaves at once instead of waiting up to 40 ms for the peer's delayed acknowledgement of the
/// previous one (Nagle's algorithm; actix leaves it on).
pub fn on_connect(tcp: &TcpStream, _: &mut actix_http::Extensions) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "setting TCP_NODELAY");
    }
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{setsockopt, sockopt::TcpUserTimeout};
        let ms = u32::try_from(STALLED_WRITE_TIMEOUT.as_millis()).unwrap_or(u32::MAX);
        if let Err(e) = setsockopt(tcp, TcpUserTimeout, &ms) {
            tracing::debug!(error = %e, "setting TCP_USER_TIMEOUT");
        }
    }
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    symbol: Option<String>,
    interval: Option<String>,
    limit: Option<String>,
    format: Option<String>,
    since: Option<String>,
    epoch: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMsg {
    Subscribe {
        symbol: String,
        interval: Option<String>,
        limit: Option<usize>,
    },
}

/// The channel and snapshot size named by `symbol`, `interval` and `limit` (empty: defaults).
fn want(
    symbol: Option<&str>,
    interval: Option<&str>,
    limit: Option<&str>,
    default: &Symbol,
) -> Result<Want, String> {
    let symbol = match symbol.filter(|s| !s.is_empty()) {
        Some(s) => Symbol::parse(s).map_err(|e| format!("symbol: {e}"))?,
        None => default.clone(),
    };
    let interval = match interval.filter(|s| !s.is_empty()) {
        Some(i) => Interval::parse(i).map_err(|e| e.0)?,
        None => Interval::M1,
    };
    let limit = match limit.filter(|s| !s.is_empty()) {
        None => None,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Some(n),
            _ => {
                return Err(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}; got {n:?}"
                ));
            }
        },
    };
    Ok(Want {
        symbol,
        interval,
        limit,
        format: Format::Json,
        resume: None,
    })
}

impl WsQuery {
    fn want(&self, default: &Symbol) -> Result<Want, String> {
        let mut w = want(
            self.symbol.as_deref(),
            self.interval.as_deref(),
            self.limit.as_deref(),
            default,
        )?;
        if let Some(f) = self.format.as_deref().filter(|f| !f.is_empty()) {
            w.format = Format::parse(f)?;
        }
        // A reconnect names where it left off; anything unusable just means a snapshot.
        if let (Some(since), Some(epoch)) = (&self.since, &self.epoch)
            && let Ok(seq) = since.parse::<u64>()
        {
            w.resume = Some(Resume {
                epoch: epoch.clone(),
                seq,
            });
        }
        Ok(w)
    }
}

/// A `GET /ws` that does not ask to upgrade (those go to [`upgrade`]): what is wrong with it.
async fn ws_candles(
    req: HttpRequest,
    q: web::Query<WsQuery>,
    state: web::Data<AppState>,
) -> Result<actix_web::HttpResponse, AppError> {
    check_origin(req.headers(), &state.allowed_origins)?;
    q.want(&state.default_symbol)
        .map_err(AppError::BadRequest)?;
    Err(AppError::BadRequest(
        "expected a WebSocket upgrade: no Connection: upgrade and Upgrade: websocket headers"
            .into(),
    ))
}

/// What the upgrade service needs, one per worker.
pub struct Upgrades {
    pub state: AppState,
    /// Whether the client's address comes from `Forwarded` / `X-Forwarded-For`.
    pub trust_forwarded: bool,
    /// Viewers' sessions, until their close frame is out (for the drain).
    pub viewers: TaskTracker,
}

/// actix-http's upgrade service: a request that asks to switch protocols, with its connection.
/// A viewer's whole session runs in here, so the connection (and actix's count of them) lasts
/// as long as the viewer.
pub async fn upgrade(
    req: Request,
    mut framed: Framed<TcpStream, h1::Codec>,
    up: Rc<Upgrades>,
) -> Result<(), actix_web::Error> {
    let (want, viewer) = match accept(&req, &up) {
        Ok(accepted) => accepted,
        Err(e) => {
            // As the app's request log says a refused request (it never sees upgrades).
            let client = crate::client_addr::resolve_from(
                req.peer_addr(),
                req.headers(),
                up.trust_forwarded,
            );
            tracing::warn!(
                status = e.status_code().as_u16(),
                http.method = %req.method(),
                http.path = req.path(),
                http.client_ip = %client.map(|ip| ip.to_string()).unwrap_or_default(),
                "upgrade refused: {e}"
            );
            refuse(framed, &e).await;
            return Ok(());
        }
    };
    let response = ws::handshake_response(req.head()).finish();
    drop(req);
    if framed
        .send(h1::Message::Item((response.drop_body(), BodySize::None)))
        .await
        .is_err()
    {
        return Ok(());
    }
    let parts = framed.into_parts();
    // Frames the peer sent right behind its request are in the read buffer.
    let mut socket = Socket::new(parts.io, &parts.read_buf, MAX_FRAME_BYTES);
    // The connection's 8 KiB buffers go now, not when the viewer does.
    drop((parts.read_buf, parts.write_buf));
    let in_session = up.viewers.token();
    metrics::gauge!("candlewick_ws_sessions").increment(1.0);
    let reason = viewer.run(&mut socket, want).await;
    metrics::gauge!("candlewick_ws_sessions").decrement(1.0);
    tracing::debug!(parent: &viewer.span, ?reason, "viewer disconnected");
    // A viewer that stopped reading has no room for the close frame: don't wait on it long
    // (one that is gone fails at once).
    let closed = socket.close(reason, CLOSE_TIMEOUT).await;
    // A stop waits for the close frames, not for the viewers to answer them.
    drop(in_session);
    if closed {
        socket.linger(CLOSE_TIMEOUT).await;
    }
    Ok(())
}

/// A `/ws` upgrade that passes the checks: what it watches, and the viewer.
fn accept(req: &Request, up: &Upgrades) -> Result<(Want, Viewer), AppError> {
    if req.path() != "/ws" {
        return Err(AppError::NotFound(format!(
            "no WebSocket at {:?}: viewers connect to /ws",
            req.uri().to_string()
        )));
    }
    let state = &up.state;
    check_origin(req.headers(), &state.allowed_origins)?;
    let q: WsQuery = serde_urlencoded::from_str(req.uri().query().unwrap_or_default())
        .map_err(|e| AppError::BadRequest(format!("invalid query string: {e}")))?;
    let want = q
        .want(&state.default_symbol)
        .map_err(AppError::BadRequest)?;
    ws::verify_handshake(req.head())
        .map_err(|e| AppError::BadRequest(format!("expected a WebSocket upgrade: {e}")))?;
    let peer = req.peer_addr();
    let viewer = Viewer {
        client: crate::client_addr::resolve_from(peer, req.headers(), up.trust_forwarded),
        feed: state.feed.clone(),
        default_symbol: state.default_symbol.clone(),
        shutdown: state.shutdown.clone(),
        span: tracing::info_span!(
            "viewer",
            peer = %peer.map(|a| a.to_string()).unwrap_or_default(),
            symbol = %want.symbol,
            interval = %want.interval
        ),
    };
    Ok((want, viewer))
}

/// Answers a refused upgrade with its error (JSON, as every other route) and closes.
async fn refuse(mut framed: Framed<TcpStream, h1::Codec>, e: &AppError) {
    let response: Response<_> = e.error_response().into();
    let (mut head, body) = response.into_parts();
    head.head_mut().set_connection_type(ConnectionType::Close);
    let body = body.try_into_bytes().unwrap_or_default();
    // One write: a client may read what came with the head and no more.
    let sent = async {
        framed
            .feed(h1::Message::Item((
                head,
                BodySize::Sized(body.len() as u64),
            )))
            .await?;
        framed.feed(h1::Message::Chunk(Some(body))).await?;
        framed.send(h1::Message::Chunk(None)).await
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sent).await;
}

/// A browser's `Origin` must be this server's own or an allowed one: another site's page may
/// not open viewers in its visitors' browsers. Scripts send no `Origin` and are let in.
fn check_origin(headers: &HeaderMap, allowed: &AllowedOrigins) -> Result<(), AppError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let own = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| {
            url::Url::parse(origin).is_ok_and(|u| {
                let authority = match u.port() {
                    Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
                    None => u.host_str().unwrap_or_default().to_owned(),
                };
                authority.eq_ignore_ascii_case(host)
            })
        });
    if own || allowed.allows(origin) {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "WebSocket connections from the origin {origin:?} are not allowed (see --allowed-origins)"
        )))
    }
}

struct Viewer {
    /// Whose snapshot builds this viewer's count against.
    client: Option<std::net::IpAddr>,
    feed: Feed,
    default_symbol: Symbol,
    shutdown: CancellationToken,
    /// Who and what the viewer watches, for logs: entered by the events of the session and by
    /// the rare paths (a subscribe, a snapshot), not by each update or heartbeat.
    span: tracing::Span,
}

/// Why the session loop ended, as the close frame says it.
fn close(code: CloseCode, why: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code,
        description: Some(why.into()),
    })
}

/// 1012: the page reconnects at once (through a proxy, to another replica).
fn going_away() -> Option<CloseReason> {
    close(CloseCode::Restart, "server restarting")
}

/// What the session loop does after an event: go on, or end with this close reason (`None`:
/// the viewer is gone, no close frame is owed).
type Next = ControlFlow<Option<CloseReason>>;

/// The state of one viewer's session while its loop runs.
struct Conn<'s> {
    socket: &'s mut Socket,
    /// The channel and snapshot size watched now.
    want: Want,
    sub: Subscription,
    /// Since when a ping waits for the peer to send anything (a pong, a message).
    unanswered: Option<Instant>,
    /// Whether an update went out since the last heartbeat.
    updated: bool,
    limits: Limits,
    /// The latest subscribe not yet served (waiting for the rate limit).
    pending: Option<Want>,
}

impl Viewer {
    /// The session loop: waits for the next event and hands it to its handler, which says
    /// whether to go on; returns why it ended.
    async fn run(&self, socket: &mut Socket, mut want: Want) -> Option<CloseReason> {
        let Some(sub) = self
            .feed
            .subscribe(want.clone())
            .instrument(self.span.clone())
            .await
        else {
            return going_away();
        };
        // Later subscribes switch channels; reconnect details only apply to the first.
        want.resume = None;
        let mut conn = Conn {
            socket,
            want,
            sub,
            unanswered: None,
            updated: false,
            limits: Limits::new(),
            pending: None,
        };
        let first = self.send_first(conn.socket, &conn.sub, false);
        if !first.instrument(self.span.clone()).await {
            return None;
        }
        // The first beat one interval after the snapshot, not at once: by then a live channel
        // has sent updates, and its viewer is never pinged.
        let mut heartbeat = tokio::time::interval_at(
            tokio::time::Instant::now() + HEARTBEAT_INTERVAL,
            HEARTBEAT_INTERVAL,
        );
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // Made once: a fresh one per turn would enter and leave the waiter list of the token
        // every session shares, on every update.
        let shutdown = self.shutdown.cancelled();
        tokio::pin!(shutdown);
        // Armed (reset) only while a subscribe waits for its allowance.
        let allowed = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(allowed);
        loop {
            // Biased: the peer's own messages (pings, subscribes) are taken before the silence
            // check, also when the loop was held up sending to a slow reader. The shutdown
            // comes last: its poll locks what every session shares, so it is polled once per
            // turn (when all else waits), not on every wake-up too.
            let next = tokio::select! {
                biased;
                readable = conn.socket.readable() => self.on_readable(&mut conn, readable).await,
                _ = &mut allowed, if conn.pending.is_some() => Next::Continue(()),
                update = conn.sub.updates.recv() => self.on_update(&mut conn, update).await,
                _ = heartbeat.tick() => on_heartbeat(&mut conn).await,
                _ = &mut shutdown => Next::Break(going_away()),
            };
            if let Next::Break(reason) = next {
                return reason;
            }
            if let Next::Break(reason) = self.serve_pending(&mut conn).await {
                return reason;
            }
            if conn.pending.is_some() {
                allowed.as_mut().reset(conn.limits.next_allowed().into());
            }
        }
    }

    /// The peer sent something: its next whole message, if there is one yet.
    async fn on_readable(&self, conn: &mut Conn<'_>, readable: Result<(), ReadError>) -> Next {
        if readable.is_err() {
            return Next::Break(None);
        }
        match conn.socket.try_next() {
            Ok(Some(msg)) => self.on_message(conn, msg).await,
            Ok(None) => Next::Continue(()),
            Err(ReadError::TooLarge(_)) => Next::Break(close(
                CloseCode::Size,
                "messages from viewers are at most 4 KiB",
            )),
            Err(ReadError::NotUtf8) => {
                Next::Break(close(CloseCode::Invalid, "text that is not UTF-8"))
            }
            Err(ReadError::Protocol(e)) => Next::Break(close(CloseCode::Protocol, &e)),
            Err(ReadError::Gone(_)) => Next::Break(None),
        }
    }

    /// A message from the peer.
    async fn on_message(&self, conn: &mut Conn<'_>, msg: Incoming) -> Next {
        conn.unanswered = None;
        let counted = matches!(msg, Incoming::Text(_) | Incoming::Binary(_));
        if counted && conn.limits.flooded() {
            return Next::Break(close(CloseCode::Policy, "too many messages"));
        }
        match msg {
            Incoming::Ping(bytes) => gone_unless(
                conn.socket
                    .send_control(Control::Pong(&bytes), SEND_TIMEOUT)
                    .await
                    .is_ok(),
            ),
            Incoming::Pong | Incoming::Binary(_) => Next::Continue(()),
            Incoming::Close(reason) => Next::Break(reason),
            Incoming::Text(text) => match self.parse_subscribe(&text, &conn.want) {
                // Only the latest subscribe waiting counts.
                Ok(next) => {
                    conn.pending = Some(next);
                    Next::Continue(())
                }
                Err(e) => {
                    let frame = ServerMsg::Error { error: &e }.to_text();
                    gone_unless(send(conn.socket, Frame::Text(frame)).await)
                }
            },
        }
    }

    /// The channel's next update, or word that this viewer fell behind or the feed stopped.
    async fn on_update(&self, conn: &mut Conn<'_>, update: Result<Update, RecvError>) -> Next {
        match update {
            Ok(update) => {
                conn.updated = true;
                gone_unless(send(conn.socket, Frame::Text(update.frame)).await)
            }
            Err(RecvError::Lagged(missed)) => {
                // Fell behind: a fresh snapshot instead of a backlog.
                tracing::debug!(parent: &self.span, missed, "viewer lagged; resending the snapshot");
                metrics::counter!("candlewick_viewer_resyncs_total").increment(1);
                // The skipped frames may have held a status change: restate it.
                self.switch(conn, true).await
            }
            Err(RecvError::Closed) => Next::Break(going_away()),
        }
    }

    /// Serves the subscribe waiting, when the rate limit allows it now.
    async fn serve_pending(&self, conn: &mut Conn<'_>) -> Next {
        if conn.pending.is_none() || !conn.limits.take_subscribe() {
            return Next::Continue(());
        }
        if let Some(next) = conn.pending.take() {
            conn.want = next;
        }
        self.switch(conn, false).await
    }

    /// Subscribes afresh to `conn.want` and sends its first frames.
    async fn switch(&self, conn: &mut Conn<'_>, always_status: bool) -> Next {
        let span = self.span.clone();
        let Some(fresh) = self
            .feed
            .subscribe(conn.want.clone())
            .instrument(span.clone())
            .await
        else {
            return Next::Break(going_away());
        };
        conn.sub = fresh;
        let first = self.send_first(conn.socket, &conn.sub, always_status);
        gone_unless(first.instrument(span).await)
    }

    /// The first frames, then the status when stale (or, with `always_status`, in any case).
    async fn send_first(&self, socket: &Socket, sub: &Subscription, always_status: bool) -> bool {
        for frame in self.feed.first_frames(sub, self.client).await {
            if !send(socket, frame).await {
                return false;
            }
        }
        if sub.stale || always_status {
            let status = ServerMsg::Status { stale: sub.stale }.to_text();
            return send(socket, Frame::Text(status)).await;
        }
        true
    }

    /// A `subscribe` message as the channel to switch to (the connection's format stays).
    fn parse_subscribe(&self, text: &str, current: &Want) -> Result<Want, String> {
        let msg: ClientMsg = serde_json::from_str(text).map_err(|e| {
            format!("expected {{\"type\":\"subscribe\",\"symbol\":..,\"interval\":..,\"limit\":..}}: {e}")
        })?;
        let ClientMsg::Subscribe {
            symbol,
            interval,
            limit,
        } = msg;
        let limit = limit.map(|n| n.to_string());
        let mut next = want(
            Some(&symbol),
            interval.as_deref(),
            limit.as_deref(),
            &self.default_symbol,
        )?;
        next.format = current.format;
        Ok(next)
    }
}

/// The heartbeat: drops a peer that has not answered a ping for too long, pings a quiet one.
///
/// A viewer that took updates since the last beat is not pinged: were it gone, the kernel
/// drops the connection once what was sent stays unacknowledged (`STALLED_WRITE_TIMEOUT`), and
/// a viewer that stops reading fills its socket and times the next send out (`SEND_TIMEOUT`). At 10,000
/// viewers of a live channel that spares 2,000 pings and as many pongs a second, and a server
/// too busy to read the pongs in time no longer drops viewers that are there.
async fn on_heartbeat(conn: &mut Conn<'_>) -> Next {
    let updated = std::mem::take(&mut conn.updated);
    match conn.unanswered {
        Some(since) if since.elapsed() > CLIENT_TIMEOUT => {
            return Next::Break(close(CloseCode::Policy, "no heartbeat"));
        }
        Some(_) => {}
        None if updated => return Next::Continue(()),
        None => conn.unanswered = Some(Instant::now()),
    }
    gone_unless(
        conn.socket
            .send_control(Control::Ping, SEND_TIMEOUT)
            .await
            .is_ok(),
    )
}

/// Goes on after a send that worked; ends without a close frame after one that did not.
fn gone_unless(sent: bool) -> Next {
    if sent {
        Next::Continue(())
    } else {
        Next::Break(None)
    }
}

/// What one viewer may ask of the server: a few snapshots at once, then a steady trickle; and
/// messages at a bounded rate.
struct Limits {
    tokens: f64,
    refilled: Instant,
    window_start: Instant,
    messages: u32,
}

impl Limits {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            tokens: SUBSCRIBE_BURST,
            refilled: now,
            window_start: now,
            messages: 0,
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * SUBSCRIBES_PER_SEC;
        self.tokens = (self.tokens + earned).min(SUBSCRIBE_BURST);
        self.refilled = now;
    }

    /// Takes the allowance for one snapshot, when there is one.
    fn take_subscribe(&mut self) -> bool {
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next snapshot is allowed.
    fn next_allowed(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0) / SUBSCRIBES_PER_SEC;
        self.refilled + Duration::from_secs_f64(missing)
    }

    /// Counts one message; true when the viewer sent too many lately.
    fn flooded(&mut self) -> bool {
        if self.window_start.elapsed() > FLOOD_WINDOW {
            self.window_start = Instant::now();
            self.messages = 0;
        }
        self.messages += 1;
        self.messages > FLOOD_MESSAGES
    }
}

/// Sends one message; false when the viewer is gone or has not read for SEND_TIMEOUT.
async fn send(socket: &Socket, frame: Frame) -> bool {
    let sent = match &frame {
        Frame::Text(text) => socket.send(false, text.as_bytes(), SEND_TIMEOUT).await,
        Frame::Binary(bytes) => socket.send(true, bytes, SEND_TIMEOUT).await,
    };
    sent.is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[actix_web::test]
    async fn an_accepted_socket_sends_small_writes_at_once_and_gives_up_on_a_stalled_peer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, _client) = tokio::join!(listener.accept(), client);
        let (tcp, _) = accepted.unwrap();
        assert!(!tcp.nodelay().unwrap(), "Nagle is on by default");

        on_connect(&tcp, &mut actix_http::Extensions::new());

        assert!(tcp.nodelay().unwrap());
        #[cfg(target_os = "linux")]
        {
            use nix::sys::socket::{getsockopt, sockopt::TcpUserTimeout};
            let ms = getsockopt(&tcp, TcpUserTimeout).unwrap();
            assert_eq!(u128::from(ms), STALLED_WRITE_TIMEOUT.as_millis());
        }
    }
}
