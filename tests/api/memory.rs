//! The server's memory around a 50 MiB JSON body, measured on a server process of its own
//! (`/proc/<pid>/status`): a large body must not balloon it, and what it took must go back.
//!
//! It runs the test build of the binary; `CANDLEWICK_MEMORY_BIN=target/release/candlewick`
//! measures another (the figures are printed with `--nocapture`).
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::helpers::{TOKEN, eventually, fresh_database};

const MIB: u64 = 1024 * 1024;
/// The size of the bodies sent.
const BODY_BYTES: usize = 50 * MIB as usize;

/// A `candlewick serve` process, killed when dropped.
struct Server {
    child: Child,
    address: String,
    /// Its log so far, told when a request fails.
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start() -> Self {
        let (_, url) = fresh_database().await;
        let binary = std::env::var_os("CANDLEWICK_MEMORY_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_candlewick").into());
        let mut child = Command::new(binary)
            .args(["serve", "--bind", "127.0.0.1:0", "--no-demo"])
            .args(["--database-url", url.expose_secret()])
            .args(["--admin-token", TOKEN])
            .env("RUST_LOG", "info")
            .env_remove("CANDLEWICK_LOG_FORMAT")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the candlewick binary");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&log);
        // Reads the log until the address shows, then keeps draining (and keeping) it.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                if let Some(at) = line.find("listening on http://") {
                    let address = line[at + "listening on ".len()..].trim().to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(address);
                    }
                }
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server's 'listening on' line");
        Self {
            child,
            address,
            log,
        }
    }

    /// `(VmRSS, VmHWM)`: resident memory now and at its peak, in bytes.
    fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{name} in {status}"))
                * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    async fn post(&self, client: &reqwest::Client, body: Vec<u8>) -> u16 {
        let sent = client
            .post(format!("{}/api/ticks", self.address))
            .bearer_auth(TOKEN)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => response.status().as_u16(),
            Err(e) => {
                let log = self.log.lock().unwrap().join("\n");
                panic!("POST /api/ticks: {e:?}; the server's log:\n{log}")
            }
        }
    }

    /// Waits until the resident memory is at most `bound` bytes; returns it.
    async fn settles_below(&self, client: &reqwest::Client, bound: u64, what: &str) -> u64 {
        eventually(Duration::from_secs(30), what, || async {
            // Some traffic, as a live server has: allocators give memory back as they work.
            let _ = client.get(format!("{}/healthz", self.address)).send().await;
            let (rss, _) = self.memory();
            (rss <= bound).then_some(rss)
        })
        .await
    }
}

/// A JSON array of about [`BODY_BYTES`] of distinct ticks; the last one invalid if `bad_last`.
fn big_array(bad_last: bool) -> Vec<u8> {
    let start = chrono::DateTime::parse_from_rfc3339("2001-01-01T00:00:00Z").unwrap();
    let mut body = Vec::with_capacity(BODY_BYTES + 200);
    body.push(b'[');
    let mut i = 0i64;
    while body.len() < BODY_BYTES {
        let time = (start + chrono::Duration::microseconds(i * 1_000_001)).to_rfc3339();
        body.extend_from_slice(
            format!(r#"{{"time":"{time}","symbol":"MEM/USD","price":61057.5,"volume":0.25}},"#)
                .as_bytes(),
        );
        i += 1;
    }
    let last = if bad_last { r#""abc""# } else { "1" };
    body.extend_from_slice(
        format!(
            r#"{{"time":"2000-01-01T00:00:00Z","symbol":"MEM/USD","price":{last},"volume":1}}]"#
        )
        .as_bytes(),
    );
    body
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / MIB as f64)
}

#[actix_web::test]
async fn a_50_mib_json_body_neither_balloons_the_server_nor_stays_in_it() {
    let server = Server::start().await;
    // Each request on a connection of its own: a pooled one the server is closing after its
    // keep-alive would fail the next 50 MiB body half-way, which is not what is measured here.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    // Warm up the paths the big bodies take.
    let small = br#"[{"time":"1999-01-01T00:00:00Z","symbol":"MEM/USD","price":1,"volume":1}]"#;
    assert_eq!(server.post(&client, small.to_vec()).await, 201);
    // The baseline is of a server at work: its pool is open and its poller has run (ready).
    let readyz = format!("{}/readyz", server.address);
    eventually(
        Duration::from_secs(30),
        "the server to be ready",
        || async {
            let r = client.get(&readyz).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    let (baseline, _) = server.memory();

    // Rejected: one bad row at the end, after 50 MiB of good ones.
    assert_eq!(server.post(&client, big_array(true)).await, 422);
    let (_, peak_rejected) = server.memory();
    let after_rejected = server
        .settles_below(
            &client,
            baseline + 32 * MIB,
            "RSS to settle after the rejected body",
        )
        .await;

    // Accepted: the same 50 MiB, valid, written.
    assert_eq!(server.post(&client, big_array(false)).await, 201);
    let (_, peak_accepted) = server.memory();
    let after_accepted = server
        .settles_below(
            &client,
            baseline + 32 * MIB,
            "RSS to settle after the accepted body",
        )
        .await;

    eprintln!(
        "RSS: baseline {}; rejected 50 MiB body: peak {}, after {}; accepted 50 MiB body: peak {}, after {}",
        mib(baseline),
        mib(peak_rejected),
        mib(after_rejected),
        mib(peak_accepted),
        mib(after_accepted)
    );
    // The body is held once while it is parsed; its rows never become a tree of values.
    assert!(
        peak_rejected < baseline + 3 * BODY_BYTES as u64,
        "rejected: peak {} over a baseline of {}",
        mib(peak_rejected),
        mib(baseline)
    );
    assert!(
        peak_accepted < baseline + 4 * BODY_BYTES as u64,
        "accepted: peak {} over a baseline of {}",
        mib(peak_accepted),
        mib(baseline)
    );
}
