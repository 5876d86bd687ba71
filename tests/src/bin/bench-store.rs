//! The store benchmark: what holding many messages costs a `mqbroker dev` group (three nodes
//! in one process). It fills a fresh group with a warm-up that fills every bounded cache,
//! then with N small messages over 8 queues, then with D delay messages due in an hour (spread
//! over 60 minutes), and prints the process's RSS after each, each node's snapshot,
//! ConsumeQueue, IndexFile and timer store bytes, the time from a restart of the group to its
//! first acknowledged send and first received message, and a query by key, each beside its
//! goal.
//!
//! `cargo run --release -p raftmq-tests --bin bench-store` (5 million messages and 1 million
//! delay messages by default; `--messages 20000 --warmup 2000 --delayed 2000` for a smoke
//! run).

#![allow(clippy::print_stdout)] // a benchmark prints its figures

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raftmq_client::{Admin, ClientOptions, Message, MessageQuery, Producer, SimpleConsumer, TopicSpec};

const TOPIC: &str = "store-bench";
const QUEUES: u32 = 8;
/// Messages per send request.
const BATCH: usize = 32;

/// Command-line settings.
#[derive(Debug)]
struct Args {
    messages: u64,
    warmup: u64,
    delayed: u64,
    producers: u64,
    binary: PathBuf,
    data_dir: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench-store [--messages N (5000000)] [--warmup N (250000)] [--delayed N (1000000)] [--producers N (32)] \
         [--binary PATH (target/release/mqbroker)] [--data-dir DIR (a temporary one)]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        messages: 5_000_000,
        warmup: 250_000,
        delayed: 1_000_000,
        producers: 32,
        binary: PathBuf::from("target/release/mqbroker"),
        data_dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage());
        let number = || value.parse::<u64>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--messages" => args.messages = number(),
            "--warmup" => args.warmup = number(),
            "--delayed" => args.delayed = number(),
            "--producers" => args.producers = number().max(1),
            "--binary" => args.binary = PathBuf::from(&value),
            "--data-dir" => args.data_dir = Some(PathBuf::from(&value)),
            _ => usage(),
        }
    }
    args
}

/// A `mqbroker dev` process on free ports.
struct Group {
    binary: PathBuf,
    data: PathBuf,
    ports: (u16, u16, u16),
    child: Option<Child>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Group {
    fn start(binary: &Path, data: &Path) -> anyhow::Result<Group> {
        // Three consecutive free ports for each kind: try a few bases.
        for _ in 0..50 {
            let bases = (free_port()?, free_port()?, free_port()?);
            let all_free = |base: u16| (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
            if all_free(bases.0) && all_free(bases.1) && bases.2 > 0 {
                let mut group = Group { binary: binary.into(), data: data.into(), ports: bases, child: None };
                group.spawn()?;
                return Ok(group);
            }
        }
        anyhow::bail!("no free ports for the group")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.data.join("group.log"))?;
        let child = Command::new(&self.binary)
            .args(["dev", "--data-dir"])
            .arg(&self.data)
            .args(["--client-port", &self.ports.0.to_string(), "--raft-port", &self.ports.1.to_string()])
            .args(["--namesrv-port", &self.ports.2.to_string()])
            .env("RUST_LOG", "warn,broker::node=info,broker::store=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    fn endpoints(&self) -> String {
        (0..3).map(|i| format!("127.0.0.1:{}", self.ports.0 + i)).collect::<Vec<_>>().join(";")
    }

    fn rss_bytes(&self) -> anyhow::Result<u64> {
        let pid = self.child.as_ref().map(Child::id).ok_or_else(|| anyhow::anyhow!("not running"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))?;
        Ok(kib * 1024)
    }

    /// Stops the process (SIGTERM, then waits) so that it can be started again on its data.
    fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    child.kill()?;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Bytes allocated on disk under `path` (a file or a directory).
fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.blocks() * 512;
    }
    std::fs::read_dir(path).map_or(0, |dir| dir.filter_map(Result::ok).map(|e| disk_bytes(&e.path())).sum())
}

fn options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(10),
        retry_deadline: Duration::from_secs(30),
        ..ClientOptions::default()
    }
}

/// Message `n` of a plain fill: every 1000th carries the key `key-<n>`.
fn plain(n: u64, body_bytes: usize) -> Message {
    let m = Message::new(vec![b'x'; body_bytes]);
    if n.is_multiple_of(1000) { m.with_key(format!("key-{n}")) } else { m }
}

/// Message `n` of the delay fill: due an hour from now, spread over 60 minutes.
fn delayed(n: u64, body_bytes: usize) -> Message {
    static START: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::SystemTime::now);
    Message::new(vec![b'd'; body_bytes]).with_delivery_time(start + Duration::from_secs(3600 + n % 3600))
}

/// Sends `count` messages of `body_bytes` made by `make` with `producers` concurrent batch
/// senders. Prints progress; returns msg/s.
async fn fill(
    endpoints: &str,
    count: u64,
    body_bytes: usize,
    producers: u64,
    what: &str,
    make: fn(u64, usize) -> Message,
) -> anyhow::Result<f64> {
    let producer = Arc::new(Producer::with_options(endpoints, options())?);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let (producer, next) = (producer.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(BATCH as u64, Ordering::Relaxed);
                if first >= count {
                    return anyhow::Ok(());
                }
                let batch: Vec<Message> =
                    (first..count.min(first + BATCH as u64)).map(|n| make(n, body_bytes)).collect();
                let mut tries = 0;
                while let Err(e) = producer.send_batch(TOPIC, batch.clone()).await {
                    tries += 1;
                    anyhow::ensure!(tries < 10, "a batch failed 10 times: {e}");
                }
            }
        }));
    }
    let progress = tokio::spawn({
        let (next, what) = (next.clone(), what.to_string());
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let done = next.load(Ordering::Relaxed).min(count);
                let rate = done as f64 / started.elapsed().as_secs_f64();
                eprintln!("  {what}: {done}/{count} sent, {rate:.0} msg/s");
            }
        }
    });
    for t in tasks {
        t.await??;
    }
    progress.abort();
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Retries `f` until it succeeds or `deadline` passes; returns the time it took.
async fn first_success<F, Fut, T>(deadline: Duration, mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let started = Instant::now();
    loop {
        if let Ok(Some(_)) = f().await {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < deadline, "no success within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args();
    let temp = tempfile_dir(&args)?;
    let data = temp.path().to_path_buf();
    let mut group = Group::start(&args.binary, &data)?;
    let endpoints = group.endpoints();
    let admin = Admin::with_options(&endpoints, options())?;
    first_success(Duration::from_secs(30), || async {
        Ok(admin.create_topic(TopicSpec::new(TOPIC).with_queues(QUEUES)).await.ok())
    })
    .await?;
    eprintln!("group on {endpoints}, data in {}", data.display());

    let warm_rate = fill(&endpoints, args.warmup, 1024, args.producers, "warm-up (1 KiB)", plain).await?;
    let rss_warm = group.rss_bytes()?;
    let rate = fill(&endpoints, args.messages, 256, args.producers, "fill (256 B)", plain).await?;
    let rss_full = group.rss_bytes()?;
    let delay_rate =
        fill(&endpoints, args.delayed, 256, args.producers, "delay fill (256 B, due in 1 h)", delayed).await?;
    let rss_delayed = group.rss_bytes()?;
    let total = args.warmup + args.messages + args.delayed;

    println!(
        "\nstore benchmark: {} warm-up messages of 1 KiB ({warm_rate:.0} msg/s), then {} of 256 B ({rate:.0} msg/s), 8 queues",
        args.warmup, args.messages
    );
    println!("process RSS after the warm-up   {:>10.1} MiB", mib(rss_warm));
    println!("process RSS after the messages  {:>10.1} MiB", mib(rss_full));
    let growth = rss_full.saturating_sub(rss_warm);
    println!(
        "RSS growth over {} messages  {:>10.1} MiB ({:.1} bytes per message, all three nodes)   goal <= 64 MiB  {}",
        args.messages,
        mib(growth),
        growth as f64 / args.messages.max(1) as f64,
        verdict(growth <= 64 << 20)
    );
    // Pending timers cost disk, not memory: no more per message than a plain one.
    // Signed: the process may also give memory back meanwhile.
    let timer_growth = rss_delayed as i64 - rss_full as i64;
    let per_message_goal = (64u64 << 20) as f64 / 5_000_000.0;
    let per_timer = timer_growth as f64 / args.delayed.max(1) as f64;
    println!(
        "RSS growth over {} pending delay messages ({delay_rate:.0} msg/s)  {:>6.1} MiB ({per_timer:.1} bytes per \
         pending timer, all three nodes)   goal <= {per_message_goal:.1} B  {}",
        args.delayed,
        timer_growth as f64 / f64::from(1 << 20),
        verdict(per_timer <= per_message_goal)
    );
    // Let every node write its checkpoint and any snapshot due before measuring files.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut worst_snapshot = 0;
    println!("\nnode  snapshot      ConsumeQueue   IndexFile      timers         CommitLog");
    for id in 1..=3 {
        let node = data.join(format!("node-{id}"));
        let snapshot = std::fs::metadata(node.join("state/snapshot.bin")).map_or(0, |m| m.len());
        worst_snapshot = worst_snapshot.max(snapshot);
        println!(
            "{id:>4}  {:>8} B  {:>10.1} MiB  {:>10.1} MiB  {:>10.1} MiB  {:>10.1} MiB",
            snapshot,
            mib(disk_bytes(&node.join("store/consumequeue"))),
            mib(disk_bytes(&node.join("store/index"))),
            mib(disk_bytes(&node.join("store/timer"))),
            mib(disk_bytes(&node.join("commitlog")))
        );
    }
    println!(
        "largest snapshot {worst_snapshot} B for {total} messages   goal <= 1 MiB  {}",
        verdict(worst_snapshot <= 1 << 20)
    );

    // Restart the group on its data: time to the first acknowledged send and first receive.
    group.stop()?;
    let restarted = Instant::now();
    group.spawn()?;
    let producer = Producer::with_options(&endpoints, options())?;
    first_success(Duration::from_secs(120), || async {
        Ok(producer.send(TOPIC, Message::new(&b"after restart"[..])).await.ok())
    })
    .await?;
    let send_after = restarted.elapsed();
    let consumer = SimpleConsumer::with_options(&endpoints, "store-bench-reader", TOPIC, "*", options())?;
    first_success(Duration::from_secs(120), || async {
        Ok(consumer.receive(1, Duration::from_secs(30), Duration::from_secs(2)).await.ok().filter(|b| !b.is_empty()))
    })
    .await?;
    let receive_after = restarted.elapsed();
    println!(
        "\nrestart with {total} messages retained: first acknowledged send after {:.2} s   goal <= 3 s  {}",
        send_after.as_secs_f64(),
        verdict(send_after <= Duration::from_secs(3))
    );
    println!("restart: first received message after {:.2} s", receive_after.as_secs_f64());

    // Query by key: keys of messages spread over the whole fill, each asked of one node over
    // a connection made beforehand.
    let mut admins = Vec::new();
    for node in 0..3u16 {
        let admin = Admin::with_options(&format!("127.0.0.1:{}", group.ports.0 + node), options())?;
        admin.list_topics().await?;
        admins.push(admin);
    }
    let mut latencies = Vec::new();
    for i in 0..20u64 {
        let n = args.messages * i / 20 / 1000 * 1000;
        let admin = &admins[(i % 3) as usize];
        let query =
            MessageQuery::Key { key: format!("key-{n}"), topic: Some(TOPIC.into()), begin_ms: None, end_ms: None };
        let asked = Instant::now();
        let found = admin.query_messages(query, Some(32)).await?;
        latencies.push(asked.elapsed());
        anyhow::ensure!(!found.is_empty(), "key-{n} not found");
    }
    latencies.sort();
    let (p50, worst) = (latencies[latencies.len() / 2], latencies[latencies.len() - 1]);
    println!(
        "query by key (20 keys over the fill, all nodes): p50 {:.2} ms, max {:.2} ms   goal <= 10 ms  {}",
        p50.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3,
        verdict(worst <= Duration::from_millis(10))
    );
    let log = std::fs::read_to_string(data.join("group.log")).unwrap_or_default();
    for line in log.lines().filter(|l| l.contains("opened its CommitLog") || l.contains("derived stores")).skip(3) {
        println!("  {line}");
    }
    group.stop()?;
    Ok(())
}

/// The data directory: the one given, or a temporary one removed at the end.
fn tempfile_dir(args: &Args) -> anyhow::Result<tempfile::TempDir> {
    match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            Ok(tempfile::Builder::new().prefix("bench-store-").tempdir_in(dir)?)
        }
        None => Ok(tempfile::tempdir()?),
    }
}
