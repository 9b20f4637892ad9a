//! Headless Chromium, driven over the DevTools protocol: started with a fresh profile on a free
//! port, one page, calls answered in turn (events in between are skipped).

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::chromium_flags;

type Cdp =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Browser {
    child: tokio::process::Child,
    profile: std::path::PathBuf,
    cdp: Cdp,
    id: u64,
}

impl Browser {
    /// Starts `chromium` (the binary) headless on `about:blank` and connects to its page.
    pub async fn start(chromium: &str) -> anyhow::Result<Self> {
        let port = candlewick::embedded::free_port()?;
        let profile = std::env::temp_dir().join(format!(
            "candlewick-bench-chromium-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&profile)?;
        let child = tokio::process::Command::new(chromium)
            .args(chromium_flags::HEADLESS)
            .arg("--remote-debugging-address=127.0.0.1")
            .arg(format!("--remote-debugging-port={port}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {chromium} (apt-get install -y chromium)"))?;
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let ws_url = loop {
            if let Ok(r) = client
                .get(format!("http://127.0.0.1:{port}/json/list"))
                .send()
                .await
                && let Ok(targets) = r.json::<Vec<Value>>().await
                && let Some(u) = targets
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                break u.to_owned();
            }
            if Instant::now() > deadline {
                let _ = std::fs::remove_dir_all(&profile);
                bail!("chromium's DevTools endpoint did not come up");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let (cdp, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .context("connecting to DevTools")?;
        Ok(Self {
            child,
            profile,
            cdp,
            id: 0,
        })
    }

    /// Chromium's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// One DevTools call; its result.
    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.id += 1;
        let id = self.id;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.cdp.send(Message::Text(msg.to_string().into())).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let next = tokio::time::timeout_at(deadline.into(), self.cdp.next())
                .await
                .with_context(|| format!("{method}: no answer"))?;
            let Some(frame) = next else {
                bail!("DevTools closed")
            };
            if let Message::Text(t) = frame? {
                let v: Value = serde_json::from_str(&t)?;
                if v["id"].as_u64() == Some(id) {
                    if let Some(e) = v.get("error") {
                        bail!("{method}: {e}");
                    }
                    return Ok(v["result"].clone());
                }
            }
        }
    }

    /// The value of `expression`, evaluated in the page.
    pub async fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expression}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Stops Chromium and removes its profile.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
