//! `mqadmin bench produce` and `bench consume`: closed-loop producers (each waits for its
//! ack before the next send; with `--rate`, each also waits for its next turn of an evenly
//! paced schedule) and a consumer group of simple consumers; both print
//! HdrHistogram percentiles, a live progress line, `--json` figures for scripts, and with
//! `--record FILE` every acknowledged send and every delivery for `mqadmin check`.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use raftmq_client::{Admin, ClientOptions, Error, Message, Producer, SimpleConsumer, TopicSpec};
use tokio::sync::Mutex;

use super::record::{self, BodyCheck, QueueRef, Recorder, now_us};

/// Most concurrent producers or consumers.
const MAX_CLIENTS: usize = 1024;
/// Largest body (the broker's default limit).
const MAX_BODY_BYTES: usize = 4 << 20;
/// Longest run.
const MAX_SECONDS: u64 = 24 * 3600;
/// Highest `--rate` (messages per second, all producers together).
const MAX_RATE: u64 = 10_000_000;
/// Latencies above this are recorded as this (microseconds).
const MAX_LATENCY_US: u64 = 600_000_000;
/// The user property carrying a message's send time (µs since the epoch), for the
/// end-to-end latency `bench consume` prints.
const SENT_AT: &str = "bench-sent-us";
/// Messages a consumer asks for per receive.
const RECEIVE_BATCH: u32 = 32;
/// How long a receive waits for messages.
const LONG_POLL: Duration = Duration::from_secs(1);

/// Client options of a benchmark.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// How long one call may take before the client abandons it and retries (ms).
    #[arg(long, default_value_t = 3000)]
    request_timeout_ms: u64,
    /// How long the client keeps retrying one operation before it reports a failure (ms).
    #[arg(long, default_value_t = 5000)]
    retry_deadline_ms: u64,
}

impl ClientArgs {
    fn options(&self) -> anyhow::Result<ClientOptions> {
        for (name, v) in
            [("--request-timeout-ms", self.request_timeout_ms), ("--retry-deadline-ms", self.retry_deadline_ms)]
        {
            if !(1..=600_000).contains(&v) {
                bail!("{name} must be within 1..=600000");
            }
        }
        Ok(ClientOptions {
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            retry_deadline: Duration::from_millis(self.retry_deadline_ms),
            ..ClientOptions::default()
        })
    }
}

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
    /// SIGTERM or SIGINT also ends the run (sends in flight finish first).
    #[arg(long)]
    messages: Option<u64>,
    /// Send this many messages per second, all producers together, instead of as fast as
    /// the acks come: each producer sends on its own evenly spaced schedule (open loop),
    /// still with one send in flight; one that falls behind sends the missed messages back
    /// to back until it has caught up.
    #[arg(long, value_name = "MSG_PER_S", value_parser = clap::value_parser!(u64).range(1..=MAX_RATE))]
    rate: Option<u64>,
    /// Write every acknowledged and every failed send to this file (for `mqadmin check`).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Print the figures as one JSON object on stdout (progress lines stay on stderr).
    #[arg(long)]
    json: bool,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Options of `bench consume`.
#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    /// Topic to consume.
    #[arg(long, default_value = "BenchmarkTopic")]
    topic: String,
    /// Consumer group.
    #[arg(long, default_value = "BenchmarkGroup")]
    group: String,
    /// Concurrent simple consumers.
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// Longest run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Stop after this many deliveries.
    #[arg(long)]
    messages: Option<u64>,
    /// Stop once nothing has arrived for this long (seconds), after the first message;
    /// SIGTERM or SIGINT also ends the run this way (drain, then stop).
    #[arg(long)]
    idle_exit: Option<u64>,
    /// How long a received message stays invisible to the group (seconds): long, so that
    /// nothing is delivered twice while the group is healthy; a drill sets it shorter than
    /// its drain, so that a message whose receive answer was lost with a killed leader is
    /// delivered again before the run ends.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=43_200))]
    invisible_secs: u64,
    /// Write every delivery, every confirmed ack and the group's committed offsets (sampled
    /// on every endpoint) to this file (for `mqadmin check`).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Print the figures as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("cannot make a latency histogram")
}

fn record_latency(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, MAX_LATENCY_US));
}

fn check_count(name: &str, n: usize) -> anyhow::Result<()> {
    if n == 0 || n > MAX_CLIENTS {
        bail!("{name} must be within 1..={MAX_CLIENTS}");
    }
    Ok(())
}

fn check_seconds(seconds: u64) -> anyhow::Result<()> {
    if seconds == 0 || seconds > MAX_SECONDS {
        bail!("--seconds must be within 1..={MAX_SECONDS}");
    }
    Ok(())
}

/// Percentiles of a latency histogram in milliseconds, as text and as JSON.
fn percentiles(h: &Histogram<u64>) -> (String, serde_json::Value) {
    let ms = |us: u64| us as f64 / 1000.0;
    let (p50, p99, p999, max) =
        (ms(h.value_at_quantile(0.5)), ms(h.value_at_quantile(0.99)), ms(h.value_at_quantile(0.999)), ms(h.max()));
    let text = format!("p50 {p50:.2} ms  p99 {p99:.2} ms  p999 {p999:.2} ms  max {max:.2} ms");
    let json = serde_json::json!({ "p50_ms": p50, "p99_ms": p99, "p999_ms": p999, "max_ms": max, "count": h.len() });
    (text, json)
}

/// The live progress line: every second, the last second's rate and latency.
struct Progress {
    started: Instant,
    quiet: bool,
    terminal: bool,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        Self { started: Instant::now(), quiet, terminal: std::io::stderr().is_terminal() }
    }

    #[allow(clippy::print_stderr)]
    fn show(&self, what: &str, count: u64, rate: f64, errors: u64, window: &Histogram<u64>) {
        if self.quiet {
            return;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let line = format!(
            "[{:>5.1} s] {what} {count}  {rate:.0}/s  errors {errors}  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            self.started.elapsed().as_secs_f64(),
            ms(window.value_at_quantile(0.5)),
            ms(window.value_at_quantile(0.99)),
            ms(window.max()),
        );
        if self.terminal {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }

    #[allow(clippy::print_stderr)]
    fn done(&self) {
        if !self.quiet && self.terminal {
            eprintln!();
        }
    }
}

/// Latencies shared by the tasks of a run: all of it, and the window since the last
/// progress line.
struct Shared {
    all: Histogram<u64>,
    window: Histogram<u64>,
    count: u64,
    errors: u64,
    first_error: Option<Error>,
}

impl Shared {
    fn new() -> anyhow::Result<Self> {
        Ok(Self { all: new_histogram()?, window: new_histogram()?, count: 0, errors: 0, first_error: None })
    }

    fn ok(&mut self, us: u64) {
        record_latency(&mut self.all, us);
        record_latency(&mut self.window, us);
        self.count += 1;
    }

    fn failed(&mut self, e: Error) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// Prints a progress line every second until `stop` is set.
fn spawn_progress(
    shared: Arc<Mutex<Shared>>,
    progress: Arc<Progress>,
    what: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut s = shared.lock().await;
            let rate = (s.count - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-9);
            last = (Instant::now(), s.count);
            progress.show(what, s.count, rate, s.errors, &s.window);
            s.window.reset();
        }
    })
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

struct ProducerTask {
    producer: Arc<Producer>,
    id: u32,
    topic: Arc<str>,
    body_size: usize,
    until: Instant,
    /// With `--rate`: this producer's time between sends, and its first send's delay.
    pace: Option<(Duration, Duration)>,
    budget: Arc<AtomicU64>,
    shared: Arc<Mutex<Shared>>,
    recorder: Option<Arc<Recorder>>,
    stop: Arc<AtomicBool>,
}

impl ProducerTask {
    async fn run(self) -> anyhow::Result<()> {
        let mut seq = 0u64;
        let mut schedule =
            self.pace.map(|(period, phase)| tokio::time::interval_at((Instant::now() + phase).into(), period));
        while Instant::now() < self.until && !self.stop.load(Ordering::Relaxed) {
            if let Some(schedule) = &mut schedule
                && schedule.tick().await >= self.until.into()
            {
                break;
            }
            // Take one message from the budget; none left: done.
            if self.budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
                break;
            }
            let body = record::pattern_body(self.id, seq, self.body_size);
            let (started, start_us) = (Instant::now(), now_us());
            let message = Message::new(body).with_property(SENT_AT, start_us.to_string());
            let result = self.producer.send(&self.topic, message).await;
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            match result {
                Ok(r) => {
                    if let Some(rec) = &self.recorder {
                        rec.acked(
                            start_us,
                            now_us(),
                            self.id,
                            seq,
                            &QueueRef::new(&r.broker, r.queue_id),
                            r.offset,
                            &r.message_id,
                        )?;
                    }
                    self.shared.lock().await.ok(us);
                }
                Err(e) => {
                    if let Some(rec) = &self.recorder {
                        rec.failed(start_us, now_us(), self.id, seq, &e.to_string())?;
                    }
                    self.shared.lock().await.failed(e);
                }
            }
            seq += 1;
        }
        Ok(())
    }
}

/// `bench produce`.
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub async fn produce(endpoints: &str, args: ProduceArgs) -> anyhow::Result<()> {
    check_count("--producers", args.producers)?;
    if args.body_size == 0 || args.body_size > MAX_BODY_BYTES {
        bail!("--body-size must be within 1..={MAX_BODY_BYTES}");
    }
    check_seconds(args.seconds)?;
    let options = args.client.options()?;
    ensure_topic(endpoints, &args.topic).await?;
    let recorder = args.record.as_deref().map(Recorder::create).transpose()?.map(Arc::new);
    let topic: Arc<str> = Arc::from(args.topic.as_str());
    let budget = Arc::new(AtomicU64::new(args.messages.unwrap_or(u64::MAX)));
    let banner = format!(
        "producing to {} with {} producers, {} byte bodies, for {} s{}{}",
        args.topic,
        args.producers,
        args.body_size,
        args.seconds,
        args.messages.map_or_else(String::new, |m| format!(" or {m} messages")),
        args.rate.map_or_else(String::new, |r| format!(" at {r} msg/s")),
    );
    if args.json {
        eprintln!("{banner}")
    } else {
        println!("{banner}")
    }
    let shared = Arc::new(Mutex::new(Shared::new()?));
    let progress = Arc::new(Progress::new(args.quiet));
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signal(stop.clone())?;
    let ticker = spawn_progress(shared.clone(), progress.clone(), "sent", stop.clone());
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    // Each producer sends every `period`, the producers' schedules spread over it.
    let period = args.rate.map(|r| Duration::from_secs_f64(args.producers as f64 / r as f64));
    let mut tasks = Vec::with_capacity(args.producers);
    for id in 0..args.producers {
        let task = ProducerTask {
            producer: Arc::new(Producer::with_options(endpoints, options.clone())?),
            id: u32::try_from(id).unwrap_or(u32::MAX),
            topic: topic.clone(),
            body_size: args.body_size,
            until,
            pace: period.map(|p| (p, p.mul_f64(id as f64 / args.producers as f64))),
            budget: budget.clone(),
            shared: shared.clone(),
            recorder: recorder.clone(),
            stop: stop.clone(),
        };
        tasks.push(tokio::spawn(task.run()));
    }
    for task in tasks {
        task.await.context("a producer task failed")??;
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    stop.store(true, Ordering::Relaxed);
    ticker.abort();
    progress.done();
    if let Some(r) = &recorder {
        r.finish()?;
    }
    let s = shared.lock().await;
    let (latency, latency_json) = percentiles(&s.all);
    let rate = s.count as f64 / elapsed;
    let mb = s.count as f64 * args.body_size as f64 / elapsed / 1e6;
    if args.json {
        let out = serde_json::json!({
            "topic": args.topic, "producers": args.producers, "body_size": args.body_size,
            "sent": s.count, "errors": s.errors, "elapsed_s": elapsed, "msg_per_s": rate, "mb_per_s": mb,
            "target_rate": args.rate,
            "ack_latency": latency_json,
            "first_error": s.first_error.as_ref().map(ToString::to_string),
        });
        println!("{out}");
    } else {
        println!("messages sent: {}  errors: {}  elapsed: {elapsed:.2} s", s.count, s.errors);
        println!("throughput: {rate:.0} msg/s  {mb:.2} MB/s");
        println!("ack latency: {latency}");
    }
    if let Some(e) = &s.first_error {
        eprintln!("first error: {e}");
    }
    if s.count == 0 {
        bail!("no message was acknowledged");
    }
    Ok(())
}

/// What the consumers saw, beyond latencies.
#[derive(Default)]
struct ConsumeTally {
    delivered: u64,
    redelivered: u64,
    bad_bodies: u64,
    ack_errors: u64,
    last_message: Option<Instant>,
}

struct ConsumerTask {
    consumer: Arc<SimpleConsumer>,
    id: u32,
    shared: Arc<Mutex<Shared>>,
    tally: Arc<Mutex<ConsumeTally>>,
    recorder: Option<Arc<Recorder>>,
    stop: Arc<AtomicBool>,
    invisible: Duration,
}

impl ConsumerTask {
    async fn run(self) -> anyhow::Result<()> {
        while !self.stop.load(Ordering::Relaxed) {
            let batch = match self.consumer.receive(RECEIVE_BATCH, self.invisible, LONG_POLL).await {
                Ok(b) => b,
                Err(e) => {
                    self.shared.lock().await.failed(e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let now = now_us();
            for m in &batch {
                let body = record::check_body(&m.body);
                if let Some(rec) = &self.recorder {
                    let queue = QueueRef::new(&m.broker, m.queue_id);
                    rec.delivered(self.id, &queue, m.offset, &m.message_id, m.delivery_attempt, body)?;
                }
                let sent_at = m.properties.get(SENT_AT).and_then(|t| t.parse::<u64>().ok());
                {
                    let mut t = self.tally.lock().await;
                    t.delivered += 1;
                    t.redelivered += u64::from(m.delivery_attempt > 1);
                    t.bad_bodies += u64::from(body == BodyCheck::Bad);
                    t.last_message = Some(Instant::now());
                }
                {
                    let mut s = self.shared.lock().await;
                    match sent_at {
                        Some(at) => s.ok(now.saturating_sub(at)),
                        None => s.count += 1,
                    }
                }
            }
            // The batch's acks go at once, as the official clients' async acks do; the
            // broker gathers concurrent acks into one entry.
            let acks = futures::future::join_all(batch.iter().map(|m| self.consumer.ack(m))).await;
            for (m, acked) in batch.iter().zip(acks) {
                match acked {
                    Ok(()) => {
                        if let Some(rec) = &self.recorder {
                            rec.ack_confirmed(self.id, &QueueRef::new(&m.broker, m.queue_id), m.offset, &m.message_id)?;
                        }
                    }
                    Err(_) => self.tally.lock().await.ack_errors += 1,
                }
            }
        }
        Ok(())
    }
}

/// Samples the group's committed offsets on each endpoint every half second.
fn spawn_offset_sampler(
    endpoints: &str,
    group: &str,
    topic: &str,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let quick = ClientOptions {
        request_timeout: Duration::from_millis(500),
        retry_deadline: Duration::from_millis(500),
        ..ClientOptions::default()
    };
    let admins = raftmq_client::parse_endpoints(endpoints)?
        .into_iter()
        .map(|e| Admin::with_options(&e, quick.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let (group, topic) = (group.to_string(), topic.to_string());
    Ok(tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            for admin in &admins {
                if let Ok(p) = admin.group_progress(&group).await {
                    for q in p.queues.iter().filter(|q| q.topic == topic) {
                        let queue = QueueRef::new(&p.broker_group, q.queue);
                        recorder.committed(p.node_id, p.applied_index, &queue, q.consumer_offset)?;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }))
}

/// Sets `stop` when SIGTERM or SIGINT arrives.
fn stop_on_signal(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        stop.store(true, Ordering::Relaxed);
    });
    Ok(())
}

/// `bench consume`.
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub async fn consume(endpoints: &str, args: ConsumeArgs) -> anyhow::Result<()> {
    check_count("--consumers", args.consumers)?;
    check_seconds(args.seconds)?;
    let options = args.client.options()?;
    let recorder = args.record.as_deref().map(Recorder::create).transpose()?.map(Arc::new);
    let banner = format!(
        "consuming {} as {} with {} consumers, for up to {} s{}{}",
        args.topic,
        args.group,
        args.consumers,
        args.seconds,
        args.messages.map_or_else(String::new, |m| format!(" or {m} messages")),
        args.idle_exit.map_or_else(String::new, |s| format!(" or until idle for {s} s")),
    );
    if args.json {
        eprintln!("{banner}")
    } else {
        println!("{banner}")
    }
    // `drain`: a signal came; `stop`: the consumers stop.
    let (drain, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    stop_on_signal(drain.clone())?;
    let shared = Arc::new(Mutex::new(Shared::new()?));
    let tally = Arc::new(Mutex::new(ConsumeTally::default()));
    let progress = Arc::new(Progress::new(args.quiet));
    let ticker = spawn_progress(shared.clone(), progress.clone(), "received", stop.clone());
    let sampler = recorder
        .as_ref()
        .map(|r| spawn_offset_sampler(endpoints, &args.group, &args.topic, r.clone(), stop.clone()))
        .transpose()?;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.consumers);
    for id in 0..args.consumers {
        let consumer = SimpleConsumer::with_options(endpoints, &args.group, &args.topic, "*", options.clone())?;
        let task = ConsumerTask {
            consumer: Arc::new(consumer),
            id: u32::try_from(id).unwrap_or(u32::MAX),
            shared: shared.clone(),
            tally: tally.clone(),
            recorder: recorder.clone(),
            stop: stop.clone(),
            invisible: Duration::from_secs(args.invisible_secs),
        };
        tasks.push(tokio::spawn(task.run()));
    }
    // Watch for the end: time, count, or idleness (after a signal, or with --idle-exit).
    let idle_limit = Duration::from_secs(args.idle_exit.unwrap_or(3));
    let mut drain_started = None;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = tally.lock().await;
        let idle = t.last_message.map_or(started.elapsed(), |at| at.elapsed());
        if drain.load(Ordering::Relaxed) && drain_started.is_none() {
            drain_started = Some(Instant::now());
        }
        // Draining: stop once nothing has come for the idle limit since the signal.
        let drained = drain_started.is_some_and(|at| at.elapsed().min(idle) >= idle_limit);
        let done = started.elapsed() >= Duration::from_secs(args.seconds)
            || args.messages.is_some_and(|m| t.delivered >= m)
            || (args.idle_exit.is_some() && t.last_message.is_some() && idle >= idle_limit)
            || drained;
        if done {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.context("a consumer task failed")??;
    }
    if let Some(s) = sampler {
        s.await.context("the offset sampler failed")??;
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    ticker.abort();
    progress.done();
    if let Some(r) = &recorder {
        r.finish()?;
    }
    let (s, t) = (shared.lock().await, tally.lock().await);
    let (latency, latency_json) = percentiles(&s.all);
    let rate = t.delivered as f64 / elapsed;
    if args.json {
        let out = serde_json::json!({
            "topic": args.topic, "group": args.group, "consumers": args.consumers,
            "delivered": t.delivered, "redelivered": t.redelivered, "bad_bodies": t.bad_bodies,
            "receive_errors": s.errors, "ack_errors": t.ack_errors,
            "elapsed_s": elapsed, "msg_per_s": rate, "end_to_end_latency": latency_json,
            "first_error": s.first_error.as_ref().map(ToString::to_string),
        });
        println!("{out}");
    } else {
        println!(
            "messages received: {}  redelivered: {}  altered bodies: {}  receive errors: {}  ack errors: {}  elapsed: {elapsed:.2} s",
            t.delivered, t.redelivered, t.bad_bodies, s.errors, t.ack_errors
        );
        println!("throughput: {rate:.0} msg/s");
        println!("end-to-end latency (send to receive): {latency}");
    }
    if let Some(e) = &s.first_error {
        eprintln!("first error: {e}");
    }
    Ok(())
}
