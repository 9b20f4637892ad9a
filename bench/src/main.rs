//! `candlewick-bench`: the measurements behind BENCHMARKS.md.
//!
//! Every subcommand prints progress on stderr and one JSON document on stdout. It only ever
//! talks to loopback addresses, and every loop in it is bounded in count and time.

mod browser;
mod chart_soak;
mod chromium_flags;
mod feed;
mod history;
mod ingest;
mod join_storm;
mod latency;
mod nginx_conf;
mod page;
mod paging;
mod payload;
mod poll_cost;
mod probe;
mod sequence;
mod server_metrics;
mod setup;
mod soak;
mod startup;
mod statements;
mod stats;
mod system;
mod tables;
mod viewers;
mod watchers;
mod writers;
mod wsclient;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "candlewick-bench",
    about = "Benchmarks for candlewick: fan-out, poll cost, ingest, payload, feed, start-up, soak"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Hold N WebSocket viewers on one or more servers; report fan-out spread, missed updates and memory.
    Viewers(viewers::ViewersArgs),
    /// Poll cost against the tutorial's query, and database queries per second by viewer count
    /// (on plain PostgreSQL: --no-plain skips them). With --database-url the TimescaleDB costs
    /// are measured on that cluster instead (reported as `external`).
    PollCost(poll_cost::PollCostArgs),
    /// Ticks per second through single-row INSERTs, the JSON API and COPY, with and without triggers.
    Ingest(ingest::IngestArgs),
    /// Size of a week's snapshot and the time from page load to the first drawn candle.
    Payload(payload::PayloadArgs),
    /// A realistic feed into `ticks` beside a bare table (or the tutorial's schema) while viewers watch.
    Feed(feed::FeedArgs),
    /// Residents' deliveries, snapshots and server memory while many viewers join at once.
    JoinStorm(join_storm::JoinStormArgs),
    /// One server for a long while under viewers and a feed: memory drift, missed updates, log.
    Soak(soak::SoakArgs),
    /// A server starting on many symbols' stored history: time to ready, memory, cold snapshots.
    Startup(startup::StartupArgs),
    /// Paging back through stored history with `/api/candles?before=`, against the full range at once.
    Paging(paging::PagingArgs),
    /// Years of history through `candlewick import`: import rate, aggregates ready, every page back at every interval.
    History(history::HistoryArgs),
    /// A tick's way from the API's answer to every viewer, with many viewers and a feed, at
    /// several poll intervals: latency per viewer, missed updates, the writers' rate, the cost.
    Latency(latency::LatencyArgs),
    /// The chart page in headless Chromium at several updates a second for minutes: does it
    /// keep up (updates, redraws, frames) without growing memory?
    ChartSoak(chart_soak::ChartSoakArgs),
    /// Internal: one process of viewers, driven by `viewers` over stdin/stdout.
    #[command(hide = true)]
    ViewersWorker {
        /// The worker's configuration, as JSON.
        config: String,
    },
}

fn main() -> std::process::ExitCode {
    setup::init_logging();
    // Each viewer is a socket.
    candlewick::startup::raise_open_file_limit();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::ViewersWorker { config } => viewers::worker_main(&config),
        command => runtime().and_then(|rt| {
            rt.block_on(async move {
                let report = match command {
                    Command::Viewers(args) => viewers::run_cli(args).await?,
                    Command::PollCost(args) => poll_cost::run(args).await?,
                    Command::Ingest(args) => ingest::run(args).await?,
                    Command::Payload(args) => payload::run(args).await?,
                    Command::JoinStorm(args) => join_storm::run(args).await?,
                    Command::Feed(args) => feed::run(args).await?,
                    Command::Soak(args) => soak::run(args).await?,
                    Command::Startup(args) => startup::run(args).await?,
                    Command::Paging(args) => paging::run(args).await?,
                    Command::History(args) => history::run(args).await?,
                    Command::Latency(args) => latency::run(args).await?,
                    Command::ChartSoak(args) => chart_soak::run(args).await?,
                    Command::ViewersWorker { .. } => unreachable!("handled above"),
                };
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            })
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}
