//! What a server says about its polls on `/metrics`: the `candlewick_poll_seconds` summary
//! (quantiles over the last minute or less: the exporter keeps three 20-s buckets) and its
//! running sum and count, from which the mean over any span follows.

use anyhow::Context;
use serde::Serialize;

/// One reading of the poll summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PollReading {
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Seconds spent polling since the server started, and polls.
    pub sum_seconds: f64,
    pub count: u64,
}

/// Polls between two readings.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Polls {
    /// Quantiles as of the later reading (over up to its last 60 s).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Exact over the span: polls, and their mean duration.
    pub polls: u64,
    pub mean_ms: Option<f64>,
}

impl Polls {
    pub fn between(before: &PollReading, after: &PollReading) -> Self {
        let polls = after.count.saturating_sub(before.count);
        Self {
            p50_ms: after.p50_ms,
            p99_ms: after.p99_ms,
            max_ms: after.max_ms,
            polls,
            mean_ms: (polls > 0)
                .then(|| (after.sum_seconds - before.sum_seconds) * 1e3 / polls as f64),
        }
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
        let Some(rest) = line.strip_prefix("candlewick_poll_seconds") else {
            continue;
        };
        let Some((key, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let ms = v.is_finite().then_some(v * 1e3);
        match key.trim() {
            r#"{quantile="0.5"}"# => r.p50_ms = ms,
            r#"{quantile="0.99"}"# => r.p99_ms = ms,
            r#"{quantile="1"}"# => r.max_ms = ms,
            "_sum" => r.sum_seconds = v,
            "_count" => r.count = v as u64,
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poll_summary_is_read_from_the_prometheus_text() {
        let text = "\
# TYPE candlewick_poll_seconds summary
candlewick_poll_seconds{quantile=\"0\"} 0.0003
candlewick_poll_seconds{quantile=\"0.5\"} 0.0006
candlewick_poll_seconds{quantile=\"0.99\"} 0.002
candlewick_poll_seconds{quantile=\"1\"} 0.004
candlewick_poll_seconds_sum 1.5
candlewick_poll_seconds_count 1000
candlewick_viewers 3
";
        let r = parse(text);
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        assert!(close(r.p50_ms, 0.6), "{r:?}");
        assert!(close(r.p99_ms, 2.0), "{r:?}");
        assert!(close(r.max_ms, 4.0), "{r:?}");
        assert_eq!((r.sum_seconds, r.count), (1.5, 1000));
        let later = PollReading {
            sum_seconds: 2.5,
            count: 1500,
            ..r
        };
        let p = Polls::between(&r, &later);
        assert_eq!(p.polls, 500);
        assert!(close(p.mean_ms, 2.0), "{p:?}");
    }
}
