//! `GET /ws`: a snapshot, then updates, for one symbol and interval at a time.

use std::future::Future;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, get, rt, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use bytestring::ByteString;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::domain::{Interval, Symbol};
use crate::error::AppError;
use crate::feed::{Feed, ServerMsg, Subscription};
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
/// Viewers only send small `subscribe` messages.
const MAX_FRAME_BYTES: usize = 4 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(ws_candles);
}

/// For `HttpServer::on_connect`: every accepted socket gets TCP_USER_TIMEOUT, so a peer that
/// stops reading (a stuck viewer, or any client of a large response) is closed by the kernel.
#[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
pub fn on_connect(conn: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    #[cfg(target_os = "linux")]
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
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
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMsg {
    Subscribe {
        symbol: String,
        interval: Option<String>,
    },
}

fn channel_of(
    symbol: Option<&str>,
    interval: Option<&str>,
    default: &Symbol,
) -> Result<(Symbol, Interval), String> {
    let symbol = match symbol.filter(|s| !s.is_empty()) {
        Some(s) => Symbol::parse(s).map_err(|e| format!("symbol: {e}"))?,
        None => default.clone(),
    };
    let interval = match interval.filter(|s| !s.is_empty()) {
        Some(i) => Interval::parse(i).map_err(|e| e.0)?,
        None => Interval::M1,
    };
    Ok((symbol, interval))
}

#[get("/ws")]
async fn ws_candles(
    req: HttpRequest,
    body: web::Payload,
    q: web::Query<WsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let (symbol, interval) = channel_of(
        q.symbol.as_deref(),
        q.interval.as_deref(),
        &state.default_symbol,
    )
    .map_err(AppError::BadRequest)?;
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| AppError::BadRequest(format!("expected a WebSocket upgrade: {e}")))?;
    let stream = stream
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    let peer = req.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let viewer = Viewer {
        feed: state.feed.clone(),
        default_symbol: state.default_symbol.clone(),
        shutdown: state.shutdown.clone(),
    };
    let span = tracing::info_span!("viewer", %peer, %symbol, %interval);
    // MessageStream is !Send: the session runs on this worker's local task set.
    rt::spawn(
        async move {
            metrics::gauge!("candlewick_ws_sessions").increment(1.0);
            let reason = viewer.run(session.clone(), stream, symbol, interval).await;
            metrics::gauge!("candlewick_ws_sessions").decrement(1.0);
            tracing::debug!(?reason, "viewer disconnected");
            // A viewer that stopped reading has no room for the close frame: don't wait on it.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.close(reason)).await;
        }
        .instrument(span),
    );
    Ok(response)
}

struct Viewer {
    feed: Feed,
    default_symbol: Symbol,
    shutdown: CancellationToken,
}

impl Viewer {
    async fn subscribe(&self, symbol: &Symbol, interval: Interval) -> Option<Subscription> {
        self.feed.subscribe(symbol.as_str(), interval).await
    }

    /// The session loop; returns why it ended.
    async fn run(
        &self,
        mut session: actix_ws::Session,
        mut stream: actix_ws::AggregatedMessageStream,
        mut symbol: Symbol,
        mut interval: Interval,
    ) -> Option<CloseReason> {
        let going_away = Some(CloseReason {
            code: CloseCode::Away,
            description: Some("server shutting down".into()),
        });
        let Some(mut sub) = self.subscribe(&symbol, interval).await else {
            return going_away;
        };
        if !send_snapshot(&mut session, &sub, false).await {
            return None;
        }
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_seen = Instant::now();
        loop {
            // Biased: the peer's own messages (pings, subscribes) are taken before the silence
            // check, also when the loop was held up sending to a slow reader.
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return going_away,
                msg = stream.next() => {
                    let Some(Ok(msg)) = msg else { return None };
                    last_seen = Instant::now();
                    match msg {
                        AggregatedMessage::Ping(bytes) => {
                            if !within_send_timeout(session.pong(&bytes)).await {
                                return None;
                            }
                        }
                        AggregatedMessage::Pong(_) | AggregatedMessage::Binary(_) => {}
                        AggregatedMessage::Close(reason) => return reason,
                        AggregatedMessage::Text(text) => {
                            match parse_subscribe(&text, &self.default_symbol) {
                                Ok((s, i)) => {
                                    let Some(fresh) = self.subscribe(&s, i).await else { return going_away };
                                    (symbol, interval, sub) = (s, i, fresh);
                                    if !send_snapshot(&mut session, &sub, false).await {
                                        return None;
                                    }
                                }
                                Err(e) => {
                                    let frame = serde_json::json!({ "type": "error", "error": e }).to_string();
                                    if !send(&mut session, frame.into()).await {
                                        return None;
                                    }
                                }
                            }
                        }
                    }
                }
                update = sub.updates.recv() => match update {
                    Ok(frame) => {
                        if !send(&mut session, frame).await {
                            return None;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        // Fell behind: a fresh snapshot instead of a backlog.
                        tracing::debug!(missed, "viewer lagged; resending the snapshot");
                        metrics::counter!("candlewick_viewer_resyncs_total").increment(1);
                        let Some(fresh) = self.subscribe(&symbol, interval).await else { return going_away };
                        sub = fresh;
                        // The skipped frames may have held a status change: restate it.
                        if !send_snapshot(&mut session, &sub, true).await {
                            return None;
                        }
                    }
                    Err(RecvError::Closed) => return going_away,
                },
                _ = heartbeat.tick() => {
                    if last_seen.elapsed() > CLIENT_TIMEOUT {
                        return Some(CloseReason { code: CloseCode::Policy, description: Some("no heartbeat".into()) });
                    }
                    if !within_send_timeout(session.ping(b"")).await {
                        return None;
                    }
                }
            }
        }
    }
}

fn parse_subscribe(text: &str, default: &Symbol) -> Result<(Symbol, Interval), String> {
    let msg: ClientMsg = serde_json::from_str(text).map_err(|e| {
        format!("expected {{\"type\":\"subscribe\",\"symbol\":..,\"interval\":..}}: {e}")
    })?;
    match msg {
        ClientMsg::Subscribe { symbol, interval } => {
            channel_of(Some(&symbol), interval.as_deref(), default)
        }
    }
}

fn stale_frame(stale: bool) -> ByteString {
    ServerMsg::Status { stale }.to_frame()
}

/// Sends one frame; false when the viewer is gone or has not read for SEND_TIMEOUT.
async fn send(session: &mut actix_ws::Session, frame: ByteString) -> bool {
    within_send_timeout(session.text(frame)).await
}

/// The snapshot, then the status when stale (or, with `always_status`, in any case).
async fn send_snapshot(
    session: &mut actix_ws::Session,
    sub: &Subscription,
    always_status: bool,
) -> bool {
    send(session, sub.snapshot.clone()).await
        && (!(sub.stale || always_status) || send(session, stale_frame(sub.stale)).await)
}

/// Any frame, pings and pongs included: a viewer whose queue stays full for SEND_TIMEOUT has
/// stopped reading, and waiting on it without a limit would keep its session alive for good.
async fn within_send_timeout(sending: impl Future<Output = Result<(), actix_ws::Closed>>) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, sending).await,
        Ok(Ok(()))
    )
}
