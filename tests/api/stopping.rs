//! SIGTERM on the built binary, as systemd and a rolling restart send it: the drain finishes a
//! request in flight, closes viewers with 1012, and then exits at once, whatever idle
//! connections are left, without an error in its log.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use secrecy::ExposeSecret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{TOKEN, eventually, fresh_database};

/// Only keeps a broken build from hanging the run.
const WAIT: Duration = Duration::from_secs(20);
/// A stop with nothing to finish waited for a timeout before (actix looks at a stopping
/// worker's connections once a second, and the drain waited up to 5 s): it must not now.
const PROMPT_EXIT: Duration = Duration::from_secs(1);

struct Server {
    port: u16,
    db_url: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        let (_, db_url) = fresh_database().await;
        let dir = tempfile::tempdir().expect("a temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = dir.path().join("server.log");
        let out = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_candlewick"))
            .arg("serve")
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--database-url", db_url.expose_secret()])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--admin-token", TOKEN, "--no-demo"])
            .args(["--poll-interval", "200ms"])
            // The default filter: what an operator sees.
            .env_remove("RUST_LOG")
            .env("CANDLEWICK_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("the log file"))
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("starting candlewick");
        let server = Self {
            port,
            db_url: db_url.expose_secret().to_owned(),
            child,
            log,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/readyz");
        eventually(WAIT, "the server to be ready", || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                client
                    .get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
                    .map(|_| ())
            }
        })
        .await;
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn sigterm(&self) {
        let pid = self.child.id().expect("a running server");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("signalling the server");
    }

    async fn exit_status(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the server to exit")
            .expect("its exit status")
    }
}

fn error_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(r#""level":"ERROR""#))
        .collect()
}

#[tokio::test]
async fn a_stop_with_only_idle_connections_and_viewers_exits_at_once_and_logs_no_error() {
    let mut server = Server::start().await;
    let port = server.port;
    // An idle keep-alive connection (the client's pool keeps it), one that never sent a
    // request, and a viewer.
    let client = reqwest::Client::new();
    let r = client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(r.status(), 200);
    let _silent = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connecting");
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws?symbol=BTC/USD"))
            .await
            .expect("a viewer");
    let first = ws.next().await.expect("a frame").expect("a frame");
    assert!(first.is_text(), "the snapshot: {first:?}");

    let started = Instant::now();
    server.sigterm();
    let mut code = None;
    while let Some(frame) = ws.next().await {
        if let Ok(Message::Close(frame)) = frame {
            code = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    let status = server.exit_status().await;
    let took = started.elapsed();
    println!("stopped in {took:?}");

    let log = server.log();
    assert!(status.success(), "exit: {status}; log: {log}");
    assert_eq!(code, Some(1012), "the viewer closed with 1012");
    assert!(
        took < PROMPT_EXIT,
        "with no request in flight the stop took {took:?}; log: {log}"
    );
    assert_eq!(error_lines(&log), Vec::<&str>::new(), "errors at stop");
    drop(client);
}

/// A request whose body is still arriving when SIGTERM comes is served to the end and its tick
/// stored before the process exits; new connections are refused meanwhile.
#[tokio::test]
async fn a_stop_lets_an_upload_in_flight_finish_and_store_its_tick() {
    let mut server = Server::start().await;
    let port = server.port;
    let body =
        r#"[{"time":"2024-07-03T06:25:00Z","symbol":"STOP/USD","price":61057.0,"volume":0.5}]"#;
    let (head, tail) = body.split_at(body.len() / 2);
    let mut upload = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connecting");
    let request = format!(
        "POST /api/ticks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    upload
        .write_all(request.as_bytes())
        .await
        .expect("sending the head");
    // 100 Continue: the server has the request and is serving it.
    let continued = read_some(&mut upload).await;
    assert!(
        continued.starts_with("HTTP/1.1 100"),
        "expected 100 Continue: {continued}"
    );
    upload
        .write_all(head.as_bytes())
        .await
        .expect("sending half the body");

    server.sigterm();
    eventually(WAIT, "new connections refused", || async {
        TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(
        server
            .child
            .try_wait()
            .expect("the server's state")
            .is_none(),
        "the server exited with a request in flight"
    );
    upload
        .write_all(tail.as_bytes())
        .await
        .expect("sending the rest of the body");
    let response = read_some(&mut upload).await;
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "the upload's answer: {response}"
    );
    let status = server.exit_status().await;
    assert!(status.success(), "exit: {status}; log: {}", server.log());

    let pool = sqlx::PgPool::connect(&server.db_url)
        .await
        .expect("connecting");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM ticks WHERE symbol = 'STOP/USD'")
        .fetch_one(&pool)
        .await
        .expect("counting");
    assert_eq!(stored, 1, "the acknowledged tick is stored");
}

/// Reads what has arrived (one read, waiting for it).
async fn read_some(stream: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .expect("an answer in time")
        .expect("reading");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
