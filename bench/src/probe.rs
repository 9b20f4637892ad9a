//! Tick → update-frame latency: a probe writes a tick for its own symbol every so often straight
//! into `ticks` (as any writer would), each at a higher price than the last, while a viewer of
//! that symbol reads every update. A tick has arrived once an update shows a close at or above
//! its price; the latency is from its INSERT returning to that frame.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
use crate::setup::Server;
use crate::stats::Summary;

/// (price, when its INSERT returned).
type Commits = Arc<Mutex<Vec<(f64, Instant)>>>;
/// (when an update came, the highest close in it).
type Frames = Arc<Mutex<Vec<(Instant, f64)>>>;

pub struct Probe {
    stop: CancellationToken,
    commits: Commits,
    frames: Frames,
    tasks: Vec<JoinHandle<()>>,
}

/// The probe's ticks of a span.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub ticks: usize,
    /// From the INSERT returning to the first update frame that includes the tick.
    pub tick_to_update: Summary,
    /// Ticks no update showed by the time it was read.
    pub unseen: usize,
}

impl Probe {
    /// Subscribes to `symbol` on `server` (joining as `join` says), then writes a tick for it
    /// every `every` on `db_url`.
    pub async fn start(
        db_url: &SecretString,
        server: &Server,
        symbol: &str,
        every: Duration,
        join: &JoinArgs,
    ) -> anyhow::Result<Self> {
        let ws = joined(&server.ws(&join.query(symbol)))
            .await
            .context("the probe's viewer")?;
        let conn = PgConnection::connect_with(&candlewick::db::connect_options(db_url)?)
            .await
            .context("connecting the probe's writer")?;
        let stop = CancellationToken::new();
        let commits = Commits::default();
        let frames = Frames::default();
        let watch = tokio::spawn(watch(ws, frames.clone(), stop.clone()));
        let write = tokio::spawn(write(
            conn,
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

    /// The probe's ticks written in `[from, to)`.
    pub fn latency(&self, from: Instant, to: Instant) -> Latency {
        let commits: Vec<(f64, Instant)> = lock(&self.commits)
            .iter()
            .filter(|(_, t)| *t >= from && *t < to)
            .copied()
            .collect();
        let frames = lock(&self.frames).clone();
        let mut took = Vec::new();
        for (price, committed) in &commits {
            if let Some((seen, _)) = frames.iter().find(|(_, close)| close >= price) {
                took.push(seen.saturating_duration_since(*committed));
            }
        }
        Latency {
            ticks: commits.len(),
            unseen: commits.len() - took.len(),
            tick_to_update: Summary::of(&took),
        }
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
        let now = Instant::now();
        if let Message::Text(text) = msg
            && let Some(close) = highest_close(&text)
        {
            lock(&frames).push((now, close));
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

/// Writes one tick every `every`, each priced one above the last.
async fn write(
    mut conn: PgConnection,
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
        let done =
            sqlx::query("INSERT INTO ticks (time, symbol, price, volume) VALUES ($1, $2, $3, 1.0)")
                .bind(Utc::now())
                .bind(&symbol)
                .bind(price)
                .execute(&mut conn)
                .await;
        match done {
            Ok(_) => lock(&commits).push((price, Instant::now())),
            Err(e) => crate::say!("probe: {e}"),
        }
    }
    conn.close().await.ok();
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
