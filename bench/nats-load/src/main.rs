//! `nats-load`: the load generator of `bench/compare.sh` for the systems raftmq is compared
//! with: closed-loop NATS JetStream publishers (`publish`) and the disk's raw fsync limit
//! (`fsync`). Each prints its figures as one JSON object line on stdout.

mod fsync;
mod publish;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;

#[derive(Parser, Debug)]
#[command(name = "nats-load", about = "Load generator for bench/compare.sh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Closed-loop publishers to an R3 file-storage JetStream stream, each with exactly one
    /// publish in flight awaiting its PubAck; prints msg/s, MiB/s and ack latency.
    Publish(publish::Args),
    /// One writer: pwrite of one body into a preallocated file, then fdatasync, in a loop;
    /// prints syncs/s and their latency.
    Fsync(fsync::Args),
}

/// Latencies above this are recorded as this (microseconds).
const MAX_LATENCY_US: u64 = 600_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid")
}

fn record_latency(h: &mut Histogram<u64>, elapsed: std::time::Duration) {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    h.saturating_record(us.clamp(1, MAX_LATENCY_US));
}

/// Percentiles in milliseconds, in the shape `mqadmin bench produce --json` prints them.
fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |us: u64| us as f64 / 1000.0;
    serde_json::json!({
        "p50_ms": ms(h.value_at_quantile(0.5)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
        "count": h.len(),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(async {
            match cli.command {
                Command::Publish(args) => publish::run(args).await,
                Command::Fsync(args) => fsync::run(&args),
            }
        }),
        Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match result {
        Ok(figures) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{figures}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("nats-load: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}
