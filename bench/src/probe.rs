//! Tick → update-frame latency: a probe writes a tick for its own symbol every so often (straight
//! into `ticks`, as any writer would, or through `POST /api/ticks`), each at a higher price than
//! the last, while a viewer of that symbol reads every update. A tick has arrived once an update
//! shows a close at or above its price; the latency is from its INSERT returning (or the API's
//! answer) to that frame. Times are CLOCK_MONOTONIC nanoseconds, the clock the `viewers` workers
//! stamp their receipts with, and each frame keeps the hash they name it by: the probe's ticks
//! can be timed at every other viewer of the symbol too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use futures_util::StreamExt;
use secrecy::SecretString;
use serde::Serialize;
use sqlx::{Connection, PgConnection};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::page::JoinArgs;
use crate::setup::{self, Server};
use crate::stats::Summary;
use crate::system::now_ns;
use crate::viewers::Receipt;
use crate::wsclient::message_hash;

/// (price, when its write was acknowledged).
type Commits = Arc<Mutex<Vec<(f64, u64)>>>;
/// (when an update came, its hash, the highest close in it).
type Frames = Arc<Mutex<Vec<(u64, u64, f64)>>>;

pub struct Probe {
    stop: CancellationToken,
    commits: Commits,
    frames: Frames,
    tasks: Vec<JoinHandle<()>>,
}

/// How the probe writes its ticks.
#[derive(Clone, Copy)]
pub enum Via<'a> {
    /// One-row INSERTs on its own connection to this database.
    Database(&'a SecretString),
    /// `POST /api/ticks` to the server it watches, as the admin.
    Api,
}

/// The probe's ticks of a span.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub ticks: usize,
    /// From the write's acknowledgement to the first update frame that includes the tick.
    pub tick_to_update: Summary,
    /// Ticks no update showed by the time it was read.
    pub unseen: usize,
}

impl Probe {
    /// Subscribes to `symbol` on `server` (joining as `join` says), then writes a tick for it
    /// every `every` as `via` says.
    pub async fn start(
        via: Via<'_>,
        server: &Server,
        symbol: &str,
        every: Duration,
        join: &JoinArgs,
    ) -> anyhow::Result<Self> {
        let ws = joined(&server.ws(&join.query(symbol)))
            .await
            .context("the probe's viewer")?;
        let writer = match via {
            Via::Database(url) => Writer::Database(
                PgConnection::connect_with(&candlewick::db::connect_options(url)?)
                    .await
                    .context("connecting the probe's writer")?,
            ),
            Via::Api => Writer::Api {
                client: reqwest::Client::new(),
                url: format!("{}/api/ticks", server.http()),
            },
        };
        let stop = CancellationToken::new();
        let commits = Commits::default();
        let frames = Frames::default();
        let watch = tokio::spawn(watch(ws, frames.clone(), stop.clone()));
        let write = tokio::spawn(write(
            writer,
            symbol.to_owned(),
            every,
            commits.clone(),
            stop.clone(),
        ));
        Ok(Self {
            stop,
            commits,
            frames,
            tasks: vec![watch, write],
        })
    }

    /// The probe's ticks acknowledged in `[from, to)` (CLOCK_MONOTONIC nanoseconds).
    pub fn latency(&self, from: u64, to: u64) -> Latency {
        self.timed(from, to).0
    }

    /// The probe's ticks acknowledged in `[from, to)`, and for each tick an update showed, the
    /// frame that first did as seen from `server` (its index among the viewers' servers) with
    /// the tick's acknowledgement as its reference time: what the other viewers are judged on.
    pub fn references(&self, server: u16, from: u64, to: u64) -> (Latency, Vec<Receipt>) {
        let (latency, shown) = self.timed(from, to);
        let refs = shown
            .into_iter()
            .map(|(hash, acked)| (server, hash, acked))
            .collect();
        (latency, refs)
    }

    /// The ticks of `[from, to)`, and (frame hash, acknowledgement) of each one shown.
    fn timed(&self, from: u64, to: u64) -> (Latency, Vec<(u64, u64)>) {
        let commits: Vec<(f64, u64)> = lock(&self.commits)
            .iter()
            .filter(|(_, t)| (from..to).contains(t))
            .copied()
            .collect();
        let frames = lock(&self.frames).clone();
        let mut took = Vec::new();
        let mut shown = Vec::new();
        for (price, acked) in &commits {
            if let Some((seen, hash, _)) = frames.iter().find(|(_, _, close)| close >= price) {
                took.push(Duration::from_nanos(seen.saturating_sub(*acked)));
                shown.push((*hash, *acked));
            }
        }
        let latency = Latency {
            ticks: commits.len(),
            unseen: commits.len() - took.len(),
            tick_to_update: Summary::of(&took),
        };
        (latency, shown)
    }

    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A whole-message WebSocket client (tungstenite), for the few viewers that read updates.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to `url` (a `ws://` URL) and waits for the snapshot (30 s at most).
pub async fn joined(url: &str) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("connecting")?;
    let snapshot = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(m) = ws.next().await {
            match m? {
                Message::Binary(_) => return anyhow::Ok(()),
                Message::Text(t) if t.starts_with(r#"{"type":"snapshot""#) => return Ok(()),
                _ => {}
            }
        }
        bail!("closed before the snapshot")
    });
    snapshot.await.context("waiting for the snapshot")??;
    Ok(ws)
}

/// Records the highest close of every update.
async fn watch(mut ws: Ws, frames: Frames, stop: CancellationToken) {
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            m = ws.next() => m,
        };
        let Some(Ok(msg)) = msg else { break };
        let now = now_ns();
        if let Message::Text(text) = msg
            && let Some(close) = highest_close(&text)
        {
            lock(&frames).push((now, message_hash(text.as_bytes()), close));
        }
    }
    let _ = ws.close(None).await;
}

/// The highest close of an update's candles (`[t, open, high, low, close, volume]`).
fn highest_close(text: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    if v["type"] != "update" {
        return None;
    }
    v["candles"]
        .as_array()?
        .iter()
        .filter_map(|c| c.get(4)?.as_f64())
        .reduce(f64::max)
}

/// Where the probe's ticks go.
enum Writer {
    Database(PgConnection),
    Api {
        client: reqwest::Client,
        url: String,
    },
}

impl Writer {
    /// Writes one tick and waits for its acknowledgement.
    async fn tick(&mut self, symbol: &str, price: f64) -> anyhow::Result<()> {
        match self {
            Self::Database(conn) => {
                sqlx::query(
                    "INSERT INTO ticks (time, symbol, price, volume) VALUES ($1, $2, $3, 1.0)",
                )
                .bind(Utc::now())
                .bind(symbol)
                .bind(price)
                .execute(&mut *conn)
                .await?;
            }
            Self::Api { client, url } => {
                let answer = client
                    .post(url.as_str())
                    .bearer_auth(setup::TOKEN)
                    .json(&serde_json::json!({
                        "time": Utc::now(),
                        "symbol": symbol,
                        "price": price,
                        "volume": 1.0,
                    }))
                    .send()
                    .await?;
                if !answer.status().is_success() {
                    bail!("{}: {}", answer.status(), answer.text().await?);
                }
            }
        }
        Ok(())
    }

    async fn close(self) {
        if let Self::Database(conn) = self {
            conn.close().await.ok();
        }
    }
}

/// Writes one tick every `every`, each priced one above the last.
async fn write(
    mut writer: Writer,
    symbol: String,
    every: Duration,
    commits: Commits,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut price = 100.0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        price += 1.0;
        match writer.tick(&symbol, price).await {
            Ok(()) => lock(&commits).push((price, now_ns())),
            Err(e) => crate::say!("probe: {e:#}"),
        }
    }
    writer.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_shows_its_highest_close_and_other_messages_none() {
        let update = r#"{"type":"update","symbol":"P","interval":"1m","candles":[[60,1,5,1,3,1],[120,3,7,3,7,1]],"removed":[],"seq":4}"#;
        assert_eq!(highest_close(update), Some(7.0));
        assert_eq!(highest_close(r#"{"type":"status","stale":true}"#), None);
    }
}
