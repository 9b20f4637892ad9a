//! `viewers --proxy nginx`: the servers behind a real nginx running the shipped
//! `deploy/nginx.conf` (as the README's deployment has them), and what the proxy costs.
//!
//! nginx names the server it chose in each upgrade response (`X-Candlewick-Upstream`, added
//! for the bench only), so that every viewer is judged against the frames of its own server.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::ViewersReport;
use crate::nginx_conf::{self, Site};
use crate::system;

/// Viewers per nginx worker: each is two connections there (the viewer's and the server's),
/// and a worker holds at most its open-file limit (20,000 here) of them.
const VIEWERS_PER_WORKER: usize = 7_500;
/// Connections per worker: its viewers and room for an uneven spread.
const WORKER_CONNECTIONS: usize = 19_000;
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running nginx in front of the servers.
pub struct Nginx {
    child: tokio::process::Child,
    pub port: u16,
    pub workers: usize,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx on a free port in `dir` in front of the servers on `replicas`, with as
    /// many workers as `viewers` need, and waits until it answers `/healthz`.
    pub async fn start(dir: &Path, replicas: &[u16], viewers: usize) -> anyhow::Result<Self> {
        let nginx = nginx_conf::find_tool("nginx")
            .context("--proxy nginx needs nginx (Debian: apt-get install nginx-light)")?;
        std::fs::create_dir_all(dir)?;
        let port = candlewick::embedded::free_port()?;
        let site = nginx_conf::site(
            include_str!("../../../deploy/nginx.conf"),
            &Site {
                replicas,
                port,
                redirect_port: candlewick::embedded::free_port()?,
                tls: None,
                reuseport: true,
                location_extra: "add_header X-Candlewick-Upstream $upstream_addr always;",
            },
        )
        .map_err(anyhow::Error::msg)?;
        let workers = viewers.div_ceil(VIEWERS_PER_WORKER).max(1);
        let conf = nginx_conf::main_conf(dir, &site, workers, WORKER_CONNECTIONS)
            .context("writing nginx's config")?;
        let child = tokio::process::Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nginx")?;
        let proxy = Self {
            child,
            port,
            workers,
            dir: dir.to_owned(),
        };
        proxy.wait_ready().await?;
        Ok(proxy)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let url = format!("{}/healthz", self.http());
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                bail!("nginx did not come up: {log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws(&self, query: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?{query}", self.port)
    }

    /// The master and its workers.
    pub fn pids(&self) -> Vec<u32> {
        let Some(master) = self.child.id() else {
            return Vec::new();
        };
        let mut pids = vec![master];
        pids.extend(system::children_of(master));
        pids
    }

    /// Stops nginx (SIGTERM: its workers go with it) and waits for it.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// What nginx cost in a run: its processes' memory before the viewers, with them held and at
/// the end of the window, and its CPU during the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProxyReport {
    pub workers: usize,
    pub rss_before_bytes: u64,
    pub rss_held_bytes: u64,
    pub rss_end_bytes: u64,
    /// (RSS at the end of the window − RSS before) / viewers held.
    pub rss_per_viewer_bytes: f64,
    pub cpu_seconds: f64,
    /// CPU during the window per update delivered through it.
    pub cpu_us_per_delivery: f64,
}

impl ProxyReport {
    /// From nginx's samples around a run whose viewers `report` describes.
    pub fn of(
        report: &ViewersReport,
        workers: usize,
        rss_before: u64,
        rss_held: u64,
        rss_end: u64,
        cpu_seconds: f64,
    ) -> Self {
        let per = |total: f64, n: f64| if n > 0.0 { total / n } else { 0.0 };
        Self {
            workers,
            rss_before_bytes: rss_before,
            rss_held_bytes: rss_held,
            rss_end_bytes: rss_end,
            rss_per_viewer_bytes: per(rss_end as f64 - rss_before as f64, report.held as f64),
            cpu_seconds,
            cpu_us_per_delivery: per(cpu_seconds * 1e6, report.deliveries as f64),
        }
    }
}
