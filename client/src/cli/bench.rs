//! `mqadmin bench produce`: N producers, each sending one message at a time and waiting
//! for its ack, for a while or up to a message count; prints throughput and ack latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use raftmq_client::{Admin, Error, Message, Producer, TopicSpec};

/// Most concurrent producers.
const MAX_PRODUCERS: usize = 1024;
/// Largest body (the broker's default limit).
const MAX_BODY_BYTES: usize = 4 << 20;
/// Longest run.
const MAX_SECONDS: u64 = 24 * 3600;
/// Latencies above this are recorded as this (microseconds).
const MAX_LATENCY_US: u64 = 60_000_000;

/// Options of `bench produce`.
#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    /// Topic to send to (created if missing).
    #[arg(long, default_value = "BenchmarkTopic")]
    topic: String,
    /// Concurrent producers.
    #[arg(long, default_value_t = 8)]
    producers: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// How long to send.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Stop after this many messages (sent or failed), even before the time is up.
    #[arg(long)]
    messages: Option<u64>,
}

/// What one producer saw.
struct Tally {
    latencies: Histogram<u64>,
    sent: u64,
    errors: u64,
    first_error: Option<Error>,
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("cannot make a latency histogram")
}

async fn one_producer(
    producer: Producer,
    topic: Arc<str>,
    body: Bytes,
    until: Instant,
    budget: Arc<AtomicU64>,
) -> anyhow::Result<Tally> {
    let mut tally = Tally { latencies: new_histogram()?, sent: 0, errors: 0, first_error: None };
    while Instant::now() < until {
        // Take one message from the budget; none left: done.
        if budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
            break;
        }
        let started = Instant::now();
        match producer.send(&topic, Message::new(body.clone())).await {
            Ok(_) => {
                let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                tally.latencies.saturating_record(us.clamp(1, MAX_LATENCY_US));
                tally.sent += 1;
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(e);
            }
        }
    }
    Ok(tally)
}

/// Creates the topic unless it exists.
async fn ensure_topic(endpoints: &str, topic: &str) -> anyhow::Result<()> {
    let admin = Admin::new(endpoints)?;
    match admin.create_topic(TopicSpec::new(topic)).await {
        Ok(_) => Ok(()),
        Err(e) if e.grpc_code() == Some(tonic::Code::AlreadyExists) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create the benchmark topic {topic}")),
    }
}

/// `bench produce`.
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub async fn produce(endpoints: &str, args: ProduceArgs) -> anyhow::Result<()> {
    if args.producers == 0 || args.producers > MAX_PRODUCERS {
        bail!("--producers must be within 1..={MAX_PRODUCERS}");
    }
    if args.body_size == 0 || args.body_size > MAX_BODY_BYTES {
        bail!("--body-size must be within 1..={MAX_BODY_BYTES}");
    }
    if args.seconds == 0 || args.seconds > MAX_SECONDS {
        bail!("--seconds must be within 1..={MAX_SECONDS}");
    }
    ensure_topic(endpoints, &args.topic).await?;
    let body = Bytes::from((0..args.body_size).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>());
    let topic: Arc<str> = Arc::from(args.topic.as_str());
    let budget = Arc::new(AtomicU64::new(args.messages.unwrap_or(u64::MAX)));
    println!(
        "producing to {} with {} producers, {} byte bodies, for {} s{}",
        args.topic,
        args.producers,
        args.body_size,
        args.seconds,
        args.messages.map_or_else(String::new, |m| format!(" or {m} messages"))
    );
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::with_capacity(args.producers);
    for _ in 0..args.producers {
        let producer = Producer::new(endpoints)?;
        tasks.push(tokio::spawn(one_producer(producer, topic.clone(), body.clone(), until, budget.clone())));
    }
    let mut all = Tally { latencies: new_histogram()?, sent: 0, errors: 0, first_error: None };
    for task in tasks {
        let t = task.await.context("a producer task failed")??;
        all.latencies.add(&t.latencies).context("cannot merge latency histograms")?;
        all.sent += t.sent;
        all.errors += t.errors;
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let ms = |us: u64| us as f64 / 1000.0;
    println!("messages sent: {}  errors: {}  elapsed: {elapsed:.2} s", all.sent, all.errors);
    println!(
        "throughput: {:.0} msg/s  {:.2} MB/s",
        all.sent as f64 / elapsed,
        (all.sent as f64 * args.body_size as f64) / elapsed / 1e6
    );
    println!(
        "ack latency: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        ms(all.latencies.value_at_quantile(0.5)),
        ms(all.latencies.value_at_quantile(0.99)),
        ms(all.latencies.max())
    );
    if let Some(e) = &all.first_error {
        eprintln!("first error: {e}");
    }
    if all.sent == 0 {
        bail!("no message was acknowledged");
    }
    Ok(())
}
