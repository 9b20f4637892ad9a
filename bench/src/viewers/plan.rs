//! How a run is laid out: the servers, how many worker processes and source addresses, and
//! each worker's share of the viewers.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::bail;

use super::protocol::WorkerConfig;
use crate::system;
use crate::wsclient::Target;

/// Sockets one worker keeps below its open-file limit (stdio, the runtime's own fds).
const FD_MARGIN: u64 = 100;
/// Viewers per source address: below the ~28,000 ephemeral ports of one address.
const PER_SOURCE_IP: usize = 20_000;

/// How a run is set up once the servers exist.
#[derive(Debug, Clone)]
pub struct Plan {
    pub urls: Vec<String>,
    /// When the URLs are a proxy's: the servers behind it (`host:port`), which it names in
    /// each upgrade response.
    pub upstreams: Vec<String>,
    pub count: usize,
    pub rate: f64,
    pub processes: usize,
    pub duration: Duration,
    /// From every viewer joined to the window's start.
    pub settle: Duration,
    pub source_ips: usize,
    pub server_pids: Vec<u32>,
    /// (HTTP base URL, token) to post ticks to.
    pub feed: Option<(String, String)>,
    pub feed_every: Duration,
    pub rcvbuf: u32,
}

/// What a plan comes to on this machine.
pub struct Layout {
    pub targets: Vec<Target>,
    pub processes: usize,
    pub sources: Vec<Ipv4Addr>,
}

impl Layout {
    /// As few processes as the open-file limit allows (or as asked), and one source address
    /// per [`PER_SOURCE_IP`] viewers (or as asked).
    pub fn of(plan: &Plan) -> anyhow::Result<Self> {
        let targets: Vec<Target> = plan
            .urls
            .iter()
            .map(|u| Target::parse(u))
            .collect::<Result<_, _>>()?;
        if plan.count == 0 {
            bail!("--count must be at least 1");
        }
        let per_process = (system::open_file_limit().saturating_sub(FD_MARGIN)).max(1) as usize;
        let processes = match plan.processes {
            0 => plan.count.div_ceil(per_process),
            p => p,
        }
        .clamp(1, plan.count);
        if plan.count.div_ceil(processes) > per_process {
            bail!(
                "{} viewers in {processes} processes exceed {per_process} sockets per process: use more --processes",
                plan.count
            );
        }
        let source_ips = match plan.source_ips {
            0 => plan.count.div_ceil(PER_SOURCE_IP).max(1),
            n => n,
        }
        .min(250);
        let sources = (0..source_ips)
            .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i as u8))
            .collect();
        Ok(Self {
            targets,
            processes,
            sources,
        })
    }

    /// Each worker's share: the viewers and the rate split evenly, the first workers taking
    /// one viewer more when the count does not divide.
    pub fn workers(&self, plan: &Plan) -> Vec<WorkerConfig> {
        let processes = self.processes;
        let max_seconds = (plan.count as f64 / plan.rate
            + plan.settle.as_secs_f64()
            + plan.duration.as_secs_f64()
            + 300.0) as u64;
        let mut offset = 0;
        (0..processes)
            .map(|w| {
                let count = plan.count / processes + usize::from(w < plan.count % processes);
                let cfg = WorkerConfig {
                    urls: plan.urls.clone(),
                    upstreams: plan.upstreams.clone(),
                    count,
                    offset,
                    rate: plan.rate / processes as f64,
                    sources: self.sources.clone(),
                    rcvbuf: plan.rcvbuf,
                    max_seconds,
                };
                offset += count;
                cfg
            })
            .collect()
    }
}
