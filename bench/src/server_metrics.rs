//! What a server says about its polls on `/metrics`: the running sum and count of the
//! `candlewick_poll_seconds` summary. Read every 100 ms while a server polls once a second,
//! their differences time each poll on its own. (The exporter's own quantiles come from a
//! rolling window that was seen to report p50 = p99 for a minute of varied polls: not used.)

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::stats::percentile;

/// One reading of the poll summary: seconds spent polling since the server started, and polls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PollReading {
    pub sum_seconds: f64,
    pub count: u64,
}

/// The polls of a span.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Polls {
    pub polls: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    /// Polls timed on their own (the rest shared a 100-ms reading with another and count at
    /// their mean).
    pub timed_alone: u64,
}

impl Polls {
    /// From consecutive readings.
    fn of(readings: &[PollReading]) -> Self {
        let mut ms = Vec::new();
        let mut timed_alone = 0;
        for pair in readings.windows(2) {
            let n = pair[1].count.saturating_sub(pair[0].count);
            if n == 0 {
                continue;
            }
            let each = (pair[1].sum_seconds - pair[0].sum_seconds) * 1e3 / n as f64;
            if n == 1 {
                timed_alone += 1;
            }
            ms.extend(std::iter::repeat_n(each, n as usize));
        }
        ms.sort_by(f64::total_cmp);
        let pick = |p: f64| (!ms.is_empty()).then(|| percentile(&ms, p));
        Self {
            polls: ms.len() as u64,
            p50_ms: pick(50.0),
            p99_ms: pick(99.0),
            max_ms: ms.last().copied(),
            mean_ms: (!ms.is_empty()).then(|| ms.iter().sum::<f64>() / ms.len() as f64),
            timed_alone,
        }
    }
}

/// Times a server's polls until stopped.
pub struct PollTimer {
    stop: CancellationToken,
    task: JoinHandle<Vec<PollReading>>,
}

impl PollTimer {
    /// Starts reading `{base}/metrics` (the first reading before this returns).
    pub async fn start(base: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::new();
        let first = read(&client, base).await?;
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (base, stop) = (base.to_owned(), stop.clone());
            async move {
                let mut readings = vec![first];
                let mut every = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = every.tick() => {}
                    }
                    // A missed reading only merges two intervals.
                    if let Ok(r) = read(&client, &base).await {
                        readings.push(r);
                    }
                }
                if let Ok(r) = read(&client, &base).await {
                    readings.push(r);
                }
                readings
            }
        });
        Ok(Self { stop, task })
    }

    pub async fn stop(self) -> anyhow::Result<Polls> {
        self.stop.cancel();
        let readings = self.task.await.context("the poll timer")?;
        Ok(Polls::of(&readings))
    }
}

/// Reads `{base}/metrics`.
pub async fn read(client: &reqwest::Client, base: &str) -> anyhow::Result<PollReading> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .context("GET /metrics")?
        .text()
        .await
        .context("reading /metrics")?;
    Ok(parse(&text))
}

fn parse(text: &str) -> PollReading {
    let mut r = PollReading::default();
    for line in text.lines() {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        match key {
            "candlewick_poll_seconds_sum" => r.sum_seconds = v,
            "candlewick_poll_seconds_count" => r.count = v as u64,
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poll_sum_and_count_are_read_from_the_prometheus_text() {
        let text = "\
# TYPE candlewick_poll_seconds summary
candlewick_poll_seconds{quantile=\"0.5\"} 0.0006
candlewick_poll_seconds_sum 1.5
candlewick_poll_seconds_count 1000
candlewick_viewers 3
";
        assert_eq!(
            parse(text),
            PollReading {
                sum_seconds: 1.5,
                count: 1000
            }
        );
    }

    #[test]
    fn each_poll_is_timed_from_the_readings_around_it() {
        let at = |sum_seconds, count| PollReading { sum_seconds, count };
        // 2 ms, nothing, 4 ms, then two polls of 10 and 20 ms between one pair of readings.
        let readings = [
            at(1.0, 10),
            at(1.002, 11),
            at(1.002, 11),
            at(1.006, 12),
            at(1.036, 14),
        ];
        let p = Polls::of(&readings);
        assert_eq!((p.polls, p.timed_alone), (4, 2));
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-6);
        assert!(close(p.p50_ms, 4.0), "{p:?}");
        assert!(close(p.max_ms, 15.0), "the pair counts at its mean: {p:?}");
        assert!(close(p.mean_ms, 9.0), "{p:?}");
        assert_eq!(Polls::of(&readings[..1]).polls, 0);
    }
}
