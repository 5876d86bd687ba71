//! `nats-load publish`: closed-loop JetStream publishers. The stream (file storage,
//! `--replicas` copies) is created once the cluster takes it; every publisher has its own
//! connection to the server leading the stream, as raftmq's producers each have their own
//! connection and send to the group's leader, and keeps exactly one publish in flight: it
//! publishes, awaits the PubAck, then publishes the next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::sync::Barrier;

use crate::{latency_json, new_histogram, record_latency};

/// Most concurrent publishers.
const MAX_PUBLISHERS: usize = 1024;
/// Largest body (NATS's default max_payload is 1 MiB).
const MAX_BODY_BYTES: usize = 1 << 20;
/// Longest run.
const MAX_SECONDS: u64 = 24 * 3600;
/// Pause between two looks at a cluster that is not ready yet.
const POLL: Duration = Duration::from_millis(200);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of `publish`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Server URLs, comma-separated (`nats://127.0.0.1:4222,...`).
    #[arg(long, value_delimiter = ',', required = true)]
    servers: Vec<String>,
    /// Stream to create (if missing) and publish to.
    #[arg(long, default_value = "BENCH")]
    stream: String,
    /// Subject published to (the stream takes `<subject>`).
    #[arg(long, default_value = "bench.load")]
    subject: String,
    /// Copies of the stream.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Concurrent publishers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// How long to publish (after the warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Messages sent before the clock starts, spread over the publishers.
    #[arg(long, default_value_t = 1000)]
    warmup_messages: u64,
    /// How long to wait for the cluster to take the stream and elect its leader (seconds).
    #[arg(long, default_value_t = 60)]
    ready_secs: u64,
}

impl Args {
    fn check(&self) -> anyhow::Result<()> {
        if self.publishers == 0 || self.publishers > MAX_PUBLISHERS {
            bail!("--publishers must be within 1..={MAX_PUBLISHERS}");
        }
        if self.body_size == 0 || self.body_size > MAX_BODY_BYTES {
            bail!("--body-size must be within 1..={MAX_BODY_BYTES}");
        }
        if self.seconds == 0 || self.seconds > MAX_SECONDS {
            bail!("--seconds must be within 1..={MAX_SECONDS}");
        }
        if !(1..=5).contains(&self.replicas) {
            bail!("--replicas must be within 1..=5 (JetStream's limit)");
        }
        Ok(())
    }
}

async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(CONNECT_TIMEOUT)
        .ignore_discovered_servers()
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

/// Retries `attempt` every [`POLL`] until it succeeds or `deadline` passes; then returns
/// its last error with `what`.
async fn until_ready<T, F, Fut>(deadline: Instant, what: &str, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e.context(format!("{what}: gave up"))),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Creates the stream once the cluster takes it, waits for its leader and every replica
/// to be current, and returns the URL of the leader's server.
async fn prepare_stream(args: &Args) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(args.ready_secs);
    let admin = until_ready(deadline, "connecting", || connect(&args.servers[0])).await?;
    let js = jetstream::new(admin);
    let config = stream::Config {
        name: args.stream.clone(),
        subjects: vec![args.subject.clone()],
        storage: stream::StorageType::File,
        num_replicas: args.replicas,
        ..Default::default()
    };
    until_ready(deadline, "creating the stream", || async {
        js.get_or_create_stream(config.clone()).await.context("the cluster refused the stream")
    })
    .await?;
    let leader = until_ready(deadline, "waiting for the stream's replicas", || async {
        let info = js.get_stream(&args.stream).await?.get_info().await?;
        let cluster = info.cluster.context("the stream has no cluster info")?;
        let current = cluster.replicas.iter().filter(|r| r.current && !r.offline).count();
        match cluster.leader {
            Some(leader) if current + 1 >= args.replicas => Ok(leader),
            _ => bail!("the stream has no leader or {current} of {} replicas current", args.replicas - 1),
        }
    })
    .await?;
    for url in &args.servers {
        if connect(url).await?.server_info().server_name == leader {
            return Ok(url.clone());
        }
    }
    bail!("the stream's leader {leader} is none of --servers")
}

/// What one publisher saw.
struct Tally {
    latency: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Publishes `warmup` messages untimed, waits at `ready` for the others, then publishes
/// one at a time, each awaited, for `run`.
async fn publisher(
    js: jetstream::Context,
    subject: String,
    body: Bytes,
    warmup: u64,
    ready: Arc<Barrier>,
    run: Duration,
) -> Tally {
    let mut tally = Tally { latency: new_histogram(), errors: 0, first_error: None };
    for _ in 0..warmup {
        let _ = publish_one(&js, &subject, &body).await;
    }
    ready.wait().await;
    let until = Instant::now() + run;
    while Instant::now() < until {
        let t = Instant::now();
        match publish_one(&js, &subject, &body).await {
            Ok(()) => record_latency(&mut tally.latency, t.elapsed()),
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    tally
}

async fn publish_one(js: &jetstream::Context, subject: &str, body: &Bytes) -> anyhow::Result<()> {
    let ack = js.publish(subject.to_string(), body.clone()).await.context("publish")?;
    ack.await.context("PubAck")?;
    Ok(())
}

/// Runs the benchmark and returns its figures.
pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    args.check()?;
    let leader_url = prepare_stream(&args).await?;
    let body = Bytes::from((0..args.body_size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let warmup = args.warmup_messages.div_ceil(args.publishers as u64);
    let run = Duration::from_secs(args.seconds);
    // The clock starts once every publisher has warmed up.
    let ready = Arc::new(Barrier::new(args.publishers + 1));
    let mut tasks = Vec::with_capacity(args.publishers);
    for _ in 0..args.publishers {
        let js = jetstream::new(connect(&leader_url).await?);
        let task = publisher(js, args.subject.clone(), body.clone(), warmup, ready.clone(), run);
        tasks.push(tokio::spawn(task));
    }
    ready.wait().await;
    let started = Instant::now();
    let mut all = new_histogram();
    let (mut errors, mut first_error) = (0u64, None);
    for task in tasks {
        let tally = task.await.context("a publisher task failed")?;
        all.add(&tally.latency).context("cannot merge latency histograms")?;
        errors += tally.errors;
        first_error = first_error.or(tally.first_error);
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let acked = all.len();
    if acked == 0 {
        bail!("no publish was acknowledged (first error: {})", first_error.as_deref().unwrap_or("none"));
    }
    Ok(serde_json::json!({
        "system": "nats", "publishers": args.publishers, "body_size": args.body_size,
        "leader": leader_url, "acked": acked, "errors": errors, "elapsed_s": elapsed,
        "msg_per_s": acked as f64 / elapsed,
        "mib_per_s": (acked * args.body_size as u64) as f64 / elapsed / f64::from(1u32 << 20),
        "ack_latency": latency_json(&all),
        "first_error": first_error,
    }))
}
