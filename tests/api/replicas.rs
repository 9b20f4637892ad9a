//! The deployment the README describes: three replicas (separate processes of the built binary)
//! on one database behind a real nginx running the shipped `deploy/nginx.conf`, with viewers and
//! a writer going through nginx, while each replica is restarted with SIGTERM in turn and then
//! one is killed with SIGKILL. Also checks the shipped files themselves (`nginx -t`,
//! `systemd-analyze verify`). Each test says it was skipped where its tool is not installed
//! (`.ci/run` installs nginx).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{TOKEN, eventually_ok, fresh_database};
use crate::nginx_conf::{self, find_tool};

const SYMBOL: &str = "REP/USD";
const VIEWERS: usize = 30;
/// The issue's bounds: back after a graceful drop, live again after a crash.
const BACK_AFTER_DRAIN: Duration = Duration::from_secs(1);
const BACK_AFTER_KILL: Duration = Duration::from_secs(5);
/// Only keeps a broken setup from hanging the run.
const WAIT: Duration = Duration::from_secs(20);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// The shipped nginx config made to run on loopback ports, unprivileged: the upstream's
/// `server` addresses become `replicas`, the HTTPS server listens on `port` (with `tls`, the
/// certificate and key paths to use; without, plain HTTP and the TLS lines left out), the
/// redirecting server on `redirect_port`. Every other directive is the shipped one.
fn nginx_site(
    replicas: &[u16],
    port: u16,
    redirect_port: u16,
    tls: Option<(&Path, &Path)>,
) -> String {
    let shipped = std::fs::read_to_string(repo("deploy/nginx.conf")).expect("deploy/nginx.conf");
    let site = nginx_conf::Site {
        replicas,
        port,
        redirect_port,
        tls,
        reuseport: false,
        location_extra: "",
    };
    nginx_conf::site(&shipped, &site).expect("the shipped site, made to run here")
}

/// The main config around the site, with every path in `dir` (nginx runs unprivileged there).
fn nginx_main(dir: &Path, site: &str) -> PathBuf {
    nginx_conf::main_conf(dir, site, 1, 2048).expect("writing nginx's config")
}

#[tokio::test]
async fn the_shipped_nginx_config_is_valid_with_tls_as_shipped() {
    let (Some(nginx), Some(openssl)) = (find_tool("nginx"), find_tool("openssl")) else {
        eprintln!("skipped: nginx or openssl is not installed (.ci/run installs nginx-light)");
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new(openssl)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running openssl");
    assert!(made.success(), "making a test certificate");
    let site = nginx_site(&[1, 2, 3], free_port(), free_port(), Some((&cert, &key)));
    let conf = nginx_main(dir.path(), &site);
    let out = std::process::Command::new(nginx)
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("running nginx -t");
    assert!(
        out.status.success(),
        "nginx -t on deploy/nginx.conf: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = find_tool("systemd-analyze") else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    // The unit as installed, its ExecStart pointing at the binary just built.
    let unit = std::fs::read_to_string(repo("deploy/candlewick.service"))
        .expect("deploy/candlewick.service")
        .replace(
            "/usr/local/bin/candlewick",
            env!("CARGO_BIN_EXE_candlewick"),
        );
    let path = dir.path().join("candlewick.service");
    std::fs::write(&path, unit).expect("writing the unit");
    let out = std::process::Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("running systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

/// One replica process.
struct Replica {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Replica {
    async fn start(port: u16, db_url: &str, dir: &Path) -> Self {
        let data = dir.join(format!("replica-{port}"));
        std::fs::create_dir_all(&data).expect("a data dir");
        let log = dir.join(format!("replica-{port}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_candlewick"))
            .arg("serve")
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--database-url", db_url])
            .arg("--data-dir")
            .arg(&data)
            .args(["--admin-token", TOKEN, "--no-demo", "--trust-forwarded"])
            .args(["--poll-interval", "200ms"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("the log file"))
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("starting a replica");
        let replica = Self {
            port,
            child: Some(child),
            log,
        };
        replica.until_ready().await;
        replica
    }

    async fn until_ready(&self) {
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let what = format!("the replica on {} to be ready", self.port);
        eventually_ok(WAIT, &what, || async {
            match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => Ok(()),
                _ => Err(format!(
                    "its log: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )),
            }
        })
        .await;
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("a running replica");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
            .expect("signalling a replica");
    }

    /// Waits for the process to end; returns how long that took and how it ended.
    async fn exited(&mut self) -> (Duration, std::process::ExitStatus) {
        let started = Instant::now();
        let mut child = self.child.take().expect("a running replica");
        let status = tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("the replica to exit in time")
            .expect("its exit status");
        (started.elapsed(), status)
    }
}

/// What one viewer went through: its candles now, and every reconnect.
#[derive(Default)]
struct ViewerState {
    candles: BTreeMap<i64, Value>,
    seq: Option<u64>,
    epoch: Option<String>,
    /// Connected and its first frame (snapshot or resume) taken.
    live: bool,
    drops: Vec<Dropped>,
    snapshots: usize,
}

#[derive(Debug, Clone)]
struct Dropped {
    at: Instant,
    /// The close code (1012 from a draining replica); `None`: the connection just ended.
    code: Option<u16>,
    /// When its first frame came on the new connection, and whether that was a resume.
    back: Option<(Instant, bool)>,
}

type Shared = Arc<Mutex<ViewerState>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, ViewerState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A viewer as the chart page behaves: keeps its candles, and reconnects with its resume token
/// at once (0–250 ms) on 1012, after the page's backoff on any other drop.
async fn viewer(port: u16, state: Shared) {
    let mut attempt = 0u32;
    loop {
        let mut url = format!("ws://127.0.0.1:{port}/ws?symbol=REP%2FUSD&interval=1m");
        {
            let s = lock(&state);
            if let (Some(seq), Some(epoch)) = (s.seq, &s.epoch) {
                url.push_str(&format!("&since={seq}&epoch={epoch}"));
            }
        }
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
            let ceiling = 500.0 * 2f64.powi(attempt.min(4) as i32);
            attempt += 1;
            tokio::time::sleep(Duration::from_secs_f64(
                (ceiling / 2.0 + rand::random::<f64>() * ceiling / 2.0) / 1000.0,
            ))
            .await;
            continue;
        };
        let mut code = None;
        while let Some(frame) = ws.next().await {
            let text = match frame {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(frame)) => {
                    code = frame.map(|f| u16::from(f.code));
                    break;
                }
                Ok(_) => continue,
                Err(_) => break,
            };
            let msg: Value = serde_json::from_str(&text).expect("a JSON frame");
            let mut s = lock(&state);
            match msg["type"].as_str() {
                Some(first @ ("snapshot" | "resume")) => {
                    attempt = 0;
                    let resumed = first == "resume";
                    if !resumed {
                        s.snapshots += 1;
                        s.candles.clear();
                        for c in msg["candles"].as_array().into_iter().flatten() {
                            s.candles.insert(c[0].as_i64().expect("t"), c.clone());
                        }
                        s.seq = msg["seq"].as_u64();
                    }
                    s.epoch = msg["epoch"].as_str().map(str::to_owned);
                    s.live = true;
                    if let Some(d) = s.drops.last_mut()
                        && d.back.is_none()
                    {
                        d.back = Some((Instant::now(), resumed));
                    }
                }
                Some("update") => {
                    for c in msg["candles"].as_array().into_iter().flatten() {
                        s.candles.insert(c[0].as_i64().expect("t"), c.clone());
                    }
                    for t in msg["removed"].as_array().into_iter().flatten() {
                        s.candles.remove(&t.as_i64().expect("t"));
                    }
                    s.seq = msg["seq"].as_u64();
                }
                _ => {}
            }
        }
        let jitter = {
            let mut s = lock(&state);
            s.live = false;
            s.drops.push(Dropped {
                at: Instant::now(),
                code,
                back: None,
            });
            code == Some(1012)
        };
        let wait = if jitter {
            rand::random::<f64>() * 250.0
        } else {
            let ceiling = 500.0 * 2f64.powi(attempt.min(4) as i32);
            attempt += 1;
            ceiling / 2.0 + rand::random::<f64>() * ceiling / 2.0
        };
        tokio::time::sleep(Duration::from_secs_f64(wait / 1000.0)).await;
    }
}

/// What the writer did: ticks acknowledged (time → price), and writes that failed.
#[derive(Default)]
struct Writes {
    acked: Vec<(i64, f64)>,
    replayed: usize,
    failed: Vec<String>,
}

/// Posts one tick at a time through nginx, as a client that knows its tick: a 409 after a
/// proxy replay (the first attempt was written before its replica died) counts as written when
/// the stored tick is this one.
async fn writer(
    port: u16,
    pool: sqlx::PgPool,
    start: i64,
    writes: Arc<Mutex<Writes>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/ticks");
    let mut i = 0i64;
    while !stop.is_cancelled() {
        // One tick every second of time from `start`: candles change and new ones appear.
        let t = start + i;
        let price = 100.0 + (i % 37) as f64 + (i % 7) as f64 / 10.0;
        i += 1;
        let time = chrono::DateTime::from_timestamp(t, 0)
            .expect("a time")
            .to_rfc3339();
        let body = json!({ "time": time, "symbol": SYMBOL, "price": price, "volume": 1.0 });
        let result = client
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await;
        let outcome = match result.map(|r| r.status().as_u16()) {
            Ok(201) => Ok(false),
            Ok(409) => {
                let stored: Option<f64> = sqlx::query_scalar(
                    "SELECT price FROM ticks WHERE symbol = $1 AND time = to_timestamp($2)",
                )
                .bind(SYMBOL)
                .bind(t as f64)
                .fetch_optional(&pool)
                .await
                .expect("reading the tick back");
                if stored == Some(price) {
                    Ok(true)
                } else {
                    Err(format!("tick {t}: 409 and not stored"))
                }
            }
            Ok(status) => Err(format!("tick {t}: {status}")),
            Err(e) => Err(format!("tick {t}: {e}")),
        };
        {
            let mut w = writes.lock().unwrap_or_else(|e| e.into_inner());
            match outcome {
                Ok(replayed) => {
                    w.acked.push((t, price));
                    w.replayed += usize::from(replayed);
                }
                Err(e) => w.failed.push(e),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The WebSocket sessions a replica holds (its `/metrics`).
async fn sessions(client: &reqwest::Client, port: u16) -> u64 {
    metric(client, port, "candlewick_ws_sessions ").await
}

/// The ticks a replica has written through the API (its `/metrics`).
async fn api_writes(client: &reqwest::Client, port: u16) -> u64 {
    metric(
        client,
        port,
        r#"candlewick_ticks_inserted_total{via="api"} "#,
    )
    .await
}

/// The value of the replica's `/metrics` line that starts with `prefix` (0 when absent).
async fn metric(client: &reqwest::Client, port: u16, prefix: &str) -> u64 {
    let text = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// The database's 1m candles of the symbol, as the wire has them.
async fn db_candles(pool: &sqlx::PgPool) -> BTreeMap<i64, Value> {
    let rows: Vec<(i64, f64, f64, f64, f64, f64)> = sqlx::query_as(
        "SELECT extract(epoch FROM bucket)::bigint, open, high, low, close, volume \
         FROM one_min_candle WHERE symbol = $1 ORDER BY bucket",
    )
    .bind(SYMBOL)
    .fetch_all(pool)
    .await
    .expect("reading candles");
    rows.into_iter()
        .map(|(t, o, h, l, c, v)| (t, json!([t, o, h, l, c, v])))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_nginx_restart_one_by_one_and_viewers_resume_without_losing_a_write() {
    let Some(nginx) = find_tool("nginx") else {
        eprintln!("skipped: nginx is not installed (.ci/run installs nginx-light)");
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let (_, db_url) = fresh_database().await;
    let url = db_url.expose_secret().to_owned();
    let pool = sqlx::PgPool::connect(&url).await.expect("connecting");

    // Three replicas, and nginx in front with the shipped directives.
    let ports = [free_port(), free_port(), free_port()];
    let mut replicas = Vec::new();
    for port in ports {
        replicas.push(Replica::start(port, &url, dir.path()).await);
    }
    let front = free_port();
    let conf = nginx_main(dir.path(), &nginx_site(&ports, front, free_port(), None));
    let mut proxy = Command::new(nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting nginx");
    let client = reqwest::Client::new();
    let health = format!("http://127.0.0.1:{front}/healthz");
    eventually_ok(WAIT, "nginx to come up", || async {
        match client.get(&health).send().await {
            Ok(r) if r.status() == 200 => Ok(()),
            _ => Err(std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()),
        }
    })
    .await;

    // A writer and the viewers, all through nginx.
    let start = chrono::Utc::now().timestamp() / 60 * 60 - 3600;
    let writes = Arc::new(Mutex::new(Writes::default()));
    let stop_writing = tokio_util::sync::CancellationToken::new();
    let writing = tokio::spawn(writer(
        front,
        pool.clone(),
        start,
        writes.clone(),
        stop_writing.clone(),
    ));
    let states: Vec<Shared> = (0..VIEWERS).map(|_| Shared::default()).collect();
    let viewing: Vec<_> = states
        .iter()
        .map(|s| tokio::spawn(viewer(front, s.clone())))
        .collect();
    let all_live = || states.iter().all(|s| lock(s).live);
    until("every viewer's snapshot", WAIT, all_live).await;
    let acked = || writes.lock().unwrap_or_else(|e| e.into_inner()).acked.len();
    let before = acked();
    until("writes before the restarts", WAIT, || {
        acked() >= before + 20
    })
    .await;

    // Each replica in turn: SIGTERM, wait for it to exit, start it again on its port.
    for i in 0..replicas.len() {
        let drops_before: Vec<usize> = states.iter().map(|s| lock(s).drops.len()).collect();
        replicas[i].signal(nix::sys::signal::Signal::SIGTERM);
        let (took, status) = replicas[i].exited().await;
        println!("replica {i}: drained and exited in {took:?}");
        assert!(
            status.success(),
            "a SIGTERM ends the replica cleanly: {status}"
        );
        replicas[i] = Replica::start(ports[i], &url, dir.path()).await;
        until("every viewer live again", WAIT, || {
            states.iter().zip(&drops_before).all(|(s, n)| {
                let s = lock(s);
                s.live && s.drops[*n..].iter().all(|d| d.back.is_some())
            })
        })
        .await;
        let before = acked();
        until("writes after the restart", WAIT, || acked() >= before + 10).await;
        // As the README's rolling upgrade says: the next restart waits until the proxy sends
        // this replica requests again (nginx skips a refusing one for `fail_timeout`); three
        // restarts inside that time would leave it none to send to.
        let deadline = Instant::now() + WAIT;
        while api_writes(&client, ports[i]).await == 0 {
            assert!(
                Instant::now() < deadline,
                "nginx never sent replica {i} a write again"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let graceful: Vec<Dropped> = states.iter().flat_map(|s| lock(s).drops.clone()).collect();

    // A crash: SIGKILL, no drain, of the replica holding the most viewers.
    let mut held = Vec::new();
    for r in &replicas {
        held.push(sessions(&client, r.port).await);
    }
    let victim = (0..held.len()).max_by_key(|i| held[*i]).unwrap_or(0);
    println!("viewers per replica before the kill: {held:?}");
    let drops_before: Vec<usize> = states.iter().map(|s| lock(s).drops.len()).collect();
    let killed_at = Instant::now();
    replicas[victim].signal(nix::sys::signal::Signal::SIGKILL);
    replicas[victim].exited().await;
    // The viewers learn of the kill only when nginx passes the closed upstream on: wait for
    // that before asking whether they are live again.
    let dropped_since = || {
        states
            .iter()
            .zip(&drops_before)
            .map(|(s, n)| lock(s).drops.len() - n)
            .sum::<usize>()
    };
    until("the killed replica's viewers to notice", WAIT, || {
        dropped_since() as u64 >= held[victim]
    })
    .await;
    until("every viewer live after the kill", WAIT, || {
        states.iter().zip(&drops_before).all(|(s, n)| {
            let s = lock(s);
            s.live && s.drops[*n..].iter().all(|d| d.back.is_some())
        })
    })
    .await;
    let after_kill: Vec<Dropped> = states
        .iter()
        .zip(&drops_before)
        .flat_map(|(s, n)| lock(s).drops[*n..].to_vec())
        .collect();
    let before = acked();
    until("writes after the kill", WAIT, || acked() >= before + 10).await;
    stop_writing.cancel();
    writing.await.expect("the writer");

    // Every viewer ends with the database's candles.
    let expected = db_candles(&pool).await;
    eventually_ok(WAIT, "every viewer to hold the database's candles", || {
        let differ = states
            .iter()
            .filter(|s| lock(s).candles != expected)
            .count();
        async move {
            if differ == 0 {
                Ok(())
            } else {
                Err(format!("{differ} of {VIEWERS} differ"))
            }
        }
    })
    .await;
    for v in viewing {
        v.abort();
    }

    // No write failed or was lost.
    let w = std::mem::take(&mut *writes.lock().unwrap_or_else(|e| e.into_inner()));
    assert!(
        w.failed.is_empty(),
        "failed writes: {:?}; nginx said: {}",
        w.failed,
        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
    );
    let stored: Vec<(i64, f64)> = sqlx::query_as(
        "SELECT extract(epoch FROM time)::bigint, price FROM ticks WHERE symbol = $1 ORDER BY time",
    )
    .bind(SYMBOL)
    .fetch_all(&pool)
    .await
    .expect("reading the ticks");
    let mut acked = w.acked.clone();
    acked.sort_by_key(|(t, _)| *t);
    assert_eq!(
        stored, acked,
        "every acknowledged tick is stored, and only those"
    );

    // Graceful drops: every viewer back within 1 s, by a resume (the journal holds it all).
    let drained: Vec<&Dropped> = graceful.iter().collect();
    assert!(
        drained.len() >= VIEWERS,
        "every viewer was on some restarted replica: {} drops",
        drained.len()
    );
    let slowest = drained
        .iter()
        .filter_map(|d| Some(d.back?.0 - d.at))
        .max()
        .unwrap_or_default();
    let not_1012 = drained.iter().filter(|d| d.code != Some(1012)).count();
    let snapshots = drained
        .iter()
        .filter(|d| d.back.is_some_and(|b| !b.1))
        .count();
    println!(
        "graceful: {} drops, slowest back in {slowest:?}, {not_1012} not 1012, {snapshots} snapshots; \
         kill: {} drops, live again within {:?}; writes: {} acknowledged ({} replayed by nginx)",
        drained.len(),
        after_kill.len(),
        after_kill
            .iter()
            .filter_map(|d| Some(d.back?.0 - killed_at))
            .max()
            .unwrap_or_default(),
        w.acked.len(),
        w.replayed,
    );
    assert_eq!(not_1012, 0, "a draining replica closes viewers with 1012");
    assert!(
        slowest <= BACK_AFTER_DRAIN,
        "back {slowest:?} after a graceful drop"
    );
    assert_eq!(
        snapshots, 0,
        "reconnects after a drain resume, without a snapshot"
    );

    // The kill: its viewers live again within 5 s, resumed too.
    assert!(!after_kill.is_empty(), "the killed replica had viewers");
    for d in &after_kill {
        let (back, resumed) = d.back.expect("back");
        assert!(
            back - killed_at <= BACK_AFTER_KILL,
            "live again {:?} after the kill",
            back - killed_at
        );
        assert!(
            resumed,
            "a reconnect after a crash resumes from the journal too"
        );
    }
    // SIGTERM: nginx's master takes its workers with it (a SIGKILL leaves them running).
    if let Some(pid) = proxy.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(WAIT, proxy.wait()).await.is_err() {
        let _ = proxy.start_kill();
        let _ = proxy.wait().await;
    }
}
