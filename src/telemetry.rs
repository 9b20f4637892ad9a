//! Logs and metrics: the tracing subscriber (compact text, or JSON lines with
//! `CANDLEWICK_LOG_FORMAT=json`; filtered by `RUST_LOG`, default `info`) and the process-wide
//! Prometheus recorder behind `/metrics`.

use std::io::IsTerminal;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,actix_server=warn,actix_web=warn"));
    let json = std::env::var("CANDLEWICK_LOG_FORMAT").as_deref() == Ok("json");
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}

/// The process-wide Prometheus recorder (installed once, also when tests build many apps).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle());
            metrics::describe_counter!(
                "candlewick_ticks_inserted_total",
                "Ticks written through candlewick"
            );
            metrics::describe_histogram!(
                "candlewick_poll_seconds",
                "Duration of one poll of the change journal"
            );
            metrics::describe_gauge!("candlewick_viewers", "Connected chart viewers");
            metrics::describe_gauge!("candlewick_ready", "1 while the last poll succeeded");
            metrics::gauge!("candlewick_ready").set(0.0);
            handle
        })
        .clone()
}
