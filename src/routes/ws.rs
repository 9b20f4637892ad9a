//! `GET /ws`: a snapshot (or, for a reconnecting viewer, what it missed), then updates, for one
//! symbol and interval at a time. The protocol is in README.md, "The WebSocket protocol".

use std::future::Future;
use std::ops::ControlFlow;
use std::task::Poll;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, rt, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Item, ProtocolError};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::AllowedOrigins;
use crate::domain::{Interval, Symbol};
use crate::error::AppError;
use crate::feed::wire::MAX_LIMIT;
use crate::feed::{Feed, Format, Frame, Resume, ServerMsg, Subscription, Update, Want};
use crate::state::AppState;

/// Ping cadence; keep ≤ a third of CLIENT_TIMEOUT.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// A peer silent (no pong, no message) this long is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// A viewer that has not taken a frame for this long is closed.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the close frame may wait for room in the queue of a viewer that stopped reading.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long sent data may stay unacknowledged (the peer's receive window shut) before the
/// kernel drops the connection. Ending the session alone leaves a stuck peer's socket, with
/// megabytes in its buffers, open for as long as the peer likes.
const STALLED_WRITE_TIMEOUT: Duration = SEND_TIMEOUT;
/// The largest WebSocket frame sent; a larger message (a snapshot) goes out in fragments. The
/// connection's write buffer starts at 8 KiB and, once a frame has grown it, keeps the grown
/// capacity (up to 128 KiB) for as long as the viewer stays: frames under a page keep it small.
const FRAGMENT_BYTES: usize = 4096 - 16;
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

/// For `HttpServer::on_connect`: every accepted socket gets TCP_USER_TIMEOUT, so a peer that
/// stops reading (a stuck viewer, or any client of a large response) is closed by the kernel;
/// and TCP_NODELAY, so the last small write of a response (a compressed body's tail, the next
/// fragment of a snapshot) leaves at once instead of waiting up to 40 ms for the peer's
/// delayed acknowledgement of the previous one (Nagle's algorithm; actix leaves it on).
pub fn on_connect(conn: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
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

async fn ws_candles(
    req: HttpRequest,
    body: web::Payload,
    q: web::Query<WsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    check_origin(&req, &state.allowed_origins)?;
    let want = q
        .want(&state.default_symbol)
        .map_err(AppError::BadRequest)?;
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| AppError::BadRequest(format!("expected a WebSocket upgrade: {e}")))?;
    let stream = stream
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    let peer = req.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let viewer = Viewer {
        client: crate::client_addr::resolve(&req),
        feed: state.feed.clone(),
        default_symbol: state.default_symbol.clone(),
        shutdown: state.shutdown.clone(),
        span: tracing::info_span!("viewer", %peer, symbol = %want.symbol, interval = %want.interval),
    };
    // MessageStream is !Send: the session runs on this worker's local task set. Not
    // instrumented as a whole: entering the span on every wake-up of every viewer cost more
    // than the rest of the session loop; the rare paths enter it (see `Viewer::span`).
    rt::spawn(async move {
        metrics::gauge!("candlewick_ws_sessions").increment(1.0);
        let reason = viewer.run(session.clone(), stream, want).await;
        metrics::gauge!("candlewick_ws_sessions").decrement(1.0);
        tracing::debug!(parent: &viewer.span, ?reason, "viewer disconnected");
        // A viewer that stopped reading has no room for the close frame: don't wait on it.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.close(reason)).await;
    });
    Ok(response)
}

/// A browser's `Origin` must be this server's own or an allowed one: another site's page may
/// not open viewers in its visitors' browsers. Scripts send no `Origin` and are let in.
fn check_origin(req: &HttpRequest, allowed: &AllowedOrigins) -> Result<(), AppError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let own = req
        .headers()
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
struct Conn {
    session: actix_ws::Session,
    /// The channel and snapshot size watched now.
    want: Want,
    sub: Subscription,
    /// When the peer last sent anything (a pong, a message).
    last_seen: Instant,
    limits: Limits,
    /// The latest subscribe not yet served (waiting for the rate limit).
    pending: Option<Want>,
}

impl Viewer {
    /// The session loop: waits for the next event and hands it to its handler, which says
    /// whether to go on; returns why it ended.
    async fn run(
        &self,
        session: actix_ws::Session,
        mut stream: actix_ws::AggregatedMessageStream,
        mut want: Want,
    ) -> Option<CloseReason> {
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
            session,
            want,
            sub,
            last_seen: Instant::now(),
            limits: Limits::new(),
            pending: None,
        };
        let first = self.send_first(&mut conn.session, &conn.sub, false);
        if !first.instrument(self.span.clone()).await {
            return None;
        }
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
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
                msg = stream.next() => self.on_message(&mut conn, msg).await,
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

    /// A message from the peer (or the end of its stream).
    async fn on_message(
        &self,
        conn: &mut Conn,
        msg: Option<Result<AggregatedMessage, ProtocolError>>,
    ) -> Next {
        let msg = match msg {
            Some(Ok(msg)) => msg,
            Some(Err(e)) if too_large(&e) => {
                return Next::Break(close(
                    CloseCode::Size,
                    "messages from viewers are at most 4 KiB",
                ));
            }
            _ => return Next::Break(None),
        };
        conn.last_seen = Instant::now();
        let counted = matches!(
            msg,
            AggregatedMessage::Text(_) | AggregatedMessage::Binary(_)
        );
        if counted && conn.limits.flooded() {
            return Next::Break(close(CloseCode::Policy, "too many messages"));
        }
        match msg {
            AggregatedMessage::Ping(bytes) => {
                gone_unless(within_send_timeout(conn.session.pong(&bytes)).await)
            }
            AggregatedMessage::Pong(_) | AggregatedMessage::Binary(_) => Next::Continue(()),
            AggregatedMessage::Close(reason) => Next::Break(reason),
            AggregatedMessage::Text(text) => match self.parse_subscribe(&text, &conn.want) {
                // Only the latest subscribe waiting counts.
                Ok(next) => {
                    conn.pending = Some(next);
                    Next::Continue(())
                }
                Err(e) => {
                    let frame = ServerMsg::Error { error: &e }.to_text();
                    gone_unless(send(&mut conn.session, Frame::Text(frame)).await)
                }
            },
        }
    }

    /// The channel's next update, or word that this viewer fell behind or the feed stopped.
    async fn on_update(&self, conn: &mut Conn, update: Result<Update, RecvError>) -> Next {
        match update {
            Ok(update) => gone_unless(send(&mut conn.session, Frame::Text(update.frame)).await),
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
    async fn serve_pending(&self, conn: &mut Conn) -> Next {
        if conn.pending.is_none() || !conn.limits.take_subscribe() {
            return Next::Continue(());
        }
        if let Some(next) = conn.pending.take() {
            conn.want = next;
        }
        self.switch(conn, false).await
    }

    /// Subscribes afresh to `conn.want` and sends its first frames.
    async fn switch(&self, conn: &mut Conn, always_status: bool) -> Next {
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
        let first = self.send_first(&mut conn.session, &conn.sub, always_status);
        gone_unless(first.instrument(span).await)
    }

    /// The first frames, then the status when stale (or, with `always_status`, in any case).
    async fn send_first(
        &self,
        session: &mut actix_ws::Session,
        sub: &Subscription,
        always_status: bool,
    ) -> bool {
        for frame in self.feed.first_frames(sub, self.client).await {
            if !send(session, frame).await {
                return false;
            }
        }
        if sub.stale || always_status {
            let status = ServerMsg::Status { stale: sub.stale }.to_text();
            return send(session, Frame::Text(status)).await;
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

/// The heartbeat: drops a peer silent for too long, else pings it.
async fn on_heartbeat(conn: &mut Conn) -> Next {
    if conn.last_seen.elapsed() > CLIENT_TIMEOUT {
        return Next::Break(close(CloseCode::Policy, "no heartbeat"));
    }
    gone_unless(within_send_timeout(conn.session.ping(b"")).await)
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

/// Whether the stream ended on a frame, or a message in fragments, over [`MAX_FRAME_BYTES`].
/// actix-ws 0.4 reports the fragments' case only as an I/O error with this text (its
/// `aggregated.rs`); the test of 1009 on fragments catches a change of it.
fn too_large(e: &ProtocolError) -> bool {
    match e {
        ProtocolError::Overflow => true,
        ProtocolError::Io(io) => io.to_string() == "Exceeded maximum continuation size",
        _ => false,
    }
}

/// Sends one message; false when the viewer is gone or has not read for SEND_TIMEOUT.
async fn send(session: &mut actix_ws::Session, frame: Frame) -> bool {
    let (bytes, binary) = match frame {
        Frame::Text(text) if text.len() <= FRAGMENT_BYTES => {
            return within_send_timeout(session.text(text)).await;
        }
        Frame::Binary(bytes) if bytes.len() <= FRAGMENT_BYTES => {
            return within_send_timeout(session.binary(bytes)).await;
        }
        Frame::Text(text) => (text.into_bytes(), false),
        Frame::Binary(bytes) => (bytes, true),
    };
    for (i, item) in fragments(bytes, binary).enumerate() {
        if i > 0 {
            // Lets the connection write the previous fragment out before this one is queued.
            tokio::task::yield_now().await;
        }
        if !within_send_timeout(session.continuation(item)).await {
            return false;
        }
    }
    true
}

/// `bytes` as one fragmented message (RFC 6455 §5.4): a first frame, continuations and a last
/// one, each at most [`FRAGMENT_BYTES`].
fn fragments(bytes: Bytes, binary: bool) -> impl Iterator<Item = Item> {
    let count = bytes.len().div_ceil(FRAGMENT_BYTES);
    (0..count).map(move |i| {
        let part = bytes.slice(i * FRAGMENT_BYTES..((i + 1) * FRAGMENT_BYTES).min(bytes.len()));
        match i {
            0 if binary => Item::FirstBinary(part),
            0 => Item::FirstText(part),
            _ if i + 1 == count => Item::Last(part),
            _ => Item::Continue(part),
        }
    })
}

/// Any frame, pings and pongs included: a viewer whose queue stays full for SEND_TIMEOUT has
/// stopped reading, and waiting on it without a limit would keep its session alive for good.
/// A viewer that reads has room in its queue: that send is done at the first poll, and only a
/// send that has to wait gets a timer.
async fn within_send_timeout(sending: impl Future<Output = Result<(), actix_ws::Closed>>) -> bool {
    let mut sending = std::pin::pin!(sending);
    let first = std::future::poll_fn(|cx| Poll::Ready(sending.as_mut().poll(cx))).await;
    if let Poll::Ready(sent) = first {
        return sent.is_ok();
    }
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, sending).await,
        Ok(Ok(()))
    )
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

        on_connect(&tcp, &mut actix_web::dev::Extensions::new());

        assert!(tcp.nodelay().unwrap());
        #[cfg(target_os = "linux")]
        {
            use nix::sys::socket::{getsockopt, sockopt::TcpUserTimeout};
            let ms = getsockopt(&tcp, TcpUserTimeout).unwrap();
            assert_eq!(u128::from(ms), STALLED_WRITE_TIMEOUT.as_millis());
        }
    }
}
