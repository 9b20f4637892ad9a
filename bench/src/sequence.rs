//! One viewer of our own that reads every update's number (`seq`) and counts those that do not
//! rise. The server numbers updates by the database's journal position (the xmin of the poll's
//! snapshot, the same on every replica), so numbers rise but are not consecutive: missed
//! updates are counted by the deliveries, not by gaps here.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::probe;

/// What the viewer saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub updates: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Updates numbered at or below one already seen.
    pub out_of_order: u64,
    /// Snapshots after the first (the server resends one to a viewer that lagged).
    pub resyncs: u64,
    /// Whether the connection ended before it was stopped.
    pub dropped: bool,
}

impl Seen {
    /// Takes in one text message.
    fn read(&mut self, text: &str) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
            return;
        };
        match v["type"].as_str() {
            Some("snapshot") => self.resyncs += 1,
            Some("update") => {
                let Some(seq) = v["seq"].as_u64() else {
                    return;
                };
                self.updates += 1;
                match self.last_seq {
                    Some(last) if seq <= last => self.out_of_order += 1,
                    Some(_) => self.last_seq = Some(seq),
                    None => {
                        self.first_seq = Some(seq);
                        self.last_seq = Some(seq);
                    }
                }
            }
            _ => {}
        }
    }
}

pub struct Sequence {
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Sequence {
    /// Joins `url` (a `ws://` URL), waits for the snapshot, then reads updates until stopped.
    pub async fn watch(url: &str) -> anyhow::Result<Self> {
        let mut ws = probe::joined(url).await.context("the numbered viewer")?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (seen, stop) = (seen.clone(), stop.clone());
            async move {
                loop {
                    let m = tokio::select! {
                        _ = stop.cancelled() => break,
                        m = ws.next() => m,
                    };
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    match m {
                        Some(Ok(Message::Text(t))) => seen.read(&t),
                        Some(Ok(Message::Binary(_))) => seen.resyncs += 1,
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => {
                            seen.dropped = true;
                            return;
                        }
                    }
                }
                let _ = ws.close(None).await;
            }
        });
        Ok(Self { seen, stop, task })
    }

    pub async fn stop(self) -> Seen {
        self.stop.cancel();
        let _ = self.task.await;
        *self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_that_do_not_rise_are_counted() {
        let mut seen = Seen::default();
        for seq in [5, 6, 9, 9, 10] {
            seen.read(&format!(
                r#"{{"type":"update","symbol":"A","interval":"1m","candles":[],"removed":[],"seq":{seq}}}"#
            ));
        }
        seen.read(r#"{"type":"status","stale":false}"#);
        assert_eq!(seen.updates, 5);
        assert_eq!((seen.first_seq, seen.last_seq), (Some(5), Some(10)));
        assert_eq!(seen.out_of_order, 1);
    }
}
