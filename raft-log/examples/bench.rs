//! Benchmark of the raft-log engine against the raw limits of the disk it runs on.
//!
//! In one run on one directory it measures (1) what the disk can do without the log:
//! fdatasyncs per second of 4 KiB writes and sequential MB/s of 4 MiB writes, each into a
//! preallocated file as the log's segments are; (2) the log's entries/s, MB/s and
//! append-to-durable latency for 1 KiB and 16 KiB entries in batches of 1, 16 and 256,
//! with one append in flight, plus a pipelined variant showing group commit, and 1 KiB
//! entries under `SyncPolicy::Interval` (the broker's `flush = "async"`), where an append
//! is reported once written; and (3) how close the log comes to the raw limits. The goals
//! are judged on (4) paired measurements: rounds of the matching raw test and log row run
//! back to back, so that a disk whose speed swings from minute to minute is compared with
//! itself (see `paired`). It prints figures only; it never fails on one.
//!
//! ```text
//! cargo run --release -p raft-log --example bench                  # full run, 3 s a row
//! cargo run --release -p raft-log --example bench -- --quick       # CI: proves it runs
//! cargo run --release -p raft-log --example bench -- --dir /mnt/nvme
//! cargo run --release -p raft-log --example bench -- --only 16k-256 --only 1k-1
//! cargo run --release -p raft-log --example bench -- --rounds 11
//! ```
// A CLI: printing its report to stdout is its purpose.
#![allow(clippy::print_stdout)]

#[path = "bench/paired.rs"]
mod paired;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use raft_log::{Log, LogConfig, Record, SyncPolicy};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Bytes per megabyte in every MB/s figure printed.
const MB: f64 = 1e6;
/// Write size of the raw fsync test (one page).
const RAW_SMALL_WRITE: usize = 4 << 10;
/// Write size of the raw sequential test.
const RAW_LARGE_WRITE: usize = 4 << 20;
/// Bytes before the first record of a raft-log segment file.
const SEGMENT_HEADER_BYTES: u64 = 64;
/// Bytes written ahead and then overwritten by the extra overwrite test.
const OVERWRITE_REGION: u64 = 16 << 20;
/// Ratio between the before and after raw figures above which the run warns of drift.
const DRIFT_WARN: f64 = 1.5;
/// Appends in flight in the pipelined rows.
const PIPELINE_DEPTH: usize = 8;
/// Entry sizes and batch sizes of the main table.
const ENTRY_SIZES: [usize; 2] = [1 << 10, 16 << 10];
const BATCH_SIZES: [usize; 3] = [1, 16, 256];
/// Batch sizes of the rows under `SyncPolicy::Interval` (1 KiB entries).
const ASYNC_BATCH_SIZES: [usize; 2] = [1, 16];
/// Their sync interval: the broker's default `flush_interval_ms`.
const ASYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Longest run of each half of a paired round (shorter when `--seconds` is).
const PAIRED_MAX: Duration = Duration::from_secs(1);
/// Bound on `--rounds`.
const MAX_ROUNDS: usize = 101;
/// Goals the log is held to (percent of the raw limit).
const GOAL_FSYNC_PCT: f64 = 80.0;
const GOAL_SEQ_PCT: f64 = 70.0;
/// Latency histograms hold 1 µs ..= 60 s at 3 significant digits.
const HIST_MAX_US: u64 = 60_000_000;
/// `statfs` type of tmpfs, where fsync costs nothing and the figures mean little.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Measures the raft-log engine against the raw fsync and sequential-write limits of a disk.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Directory on the disk to measure; a fresh temporary directory is made inside it and
    /// removed at the end [default: ./target, or . when there is no ./target].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 3.0, conflicts_with = "quick")]
    seconds: f64,
    /// A tiny run (0.2 s a row, 64 MiB segments) that proves the program works.
    #[arg(long)]
    quick: bool,
    /// Segment size of the log (and preallocation step of the raw file), e.g. 1GiB, 64MiB
    /// [default: 1GiB, or 64MiB with --quick].
    #[arg(long, value_parser = parse_size)]
    segment_size: Option<u64>,
    /// Runs only the log rows whose label matches, e.g. `16k-256` (entry KiB, batch) or
    /// `1k-1-d8` / `1k-16-async`; repeatable. The raw limits are still measured.
    #[arg(long)]
    only: Vec<String>,
    /// Rounds of each paired goal measurement (raw test and log row back to back), 1 to
    /// 101 [default: 7, or 3 with --quick].
    #[arg(long)]
    rounds: Option<usize>,
}

/// Parses a byte count with an optional binary suffix (K, KiB, M, MiB, G, GiB).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size such as 1073741824, 64MiB or 1GiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => MIB,
        "g" | "gib" => GIB,
        other => return Err(format!("unknown size unit {other:?}; use K, KiB, M, MiB, G or GiB")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

/// The settings in force after defaults and --quick are applied.
#[derive(Debug, Clone)]
struct Settings {
    duration: Duration,
    segment_size: u64,
    only: Vec<String>,
    /// Rounds of each paired goal measurement.
    rounds: usize,
    /// Duration of each half of a paired round.
    paired_duration: Duration,
}

impl Settings {
    fn from_args(args: &Args) -> anyhow::Result<Settings> {
        let seconds = if args.quick { 0.2 } else { args.seconds };
        if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
            bail!("--seconds {seconds} is out of range; give a number of seconds in (0, 3600]");
        }
        let default_segment = if args.quick { 64 * MIB } else { GIB };
        let segment_size = args.segment_size.unwrap_or(default_segment);
        if segment_size < MIB {
            bail!("--segment-size {segment_size} is below 1 MiB; give e.g. 64MiB or 1GiB");
        }
        let rounds = args.rounds.unwrap_or(if args.quick { 3 } else { 7 });
        if !(1..=MAX_ROUNDS).contains(&rounds) {
            bail!("--rounds {rounds} is out of range; give 1 to {MAX_ROUNDS} (an odd count has a true median)");
        }
        let duration = Duration::from_secs_f64(seconds);
        Ok(Settings {
            duration,
            segment_size,
            only: args.only.clone(),
            rounds,
            paired_duration: duration.min(PAIRED_MAX),
        })
    }

    /// Preallocation step of the raw test file: a segment, but at least a few large writes.
    fn raw_chunk(&self) -> u64 {
        self.segment_size.max(16 * RAW_LARGE_WRITE as u64)
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant bounds are valid")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Latency percentiles in µs.
#[derive(Debug, Clone, Copy)]
struct Latency {
    p50_us: u64,
    p99_us: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency { p50_us: h.value_at_quantile(0.50), p99_us: h.value_at_quantile(0.99) }
    }
}

// ---------------------------------------------------------------------------------------
// Raw limits
// ---------------------------------------------------------------------------------------

/// A file preallocated the way the log's `RealFs::allocate` does it (`fallocate` mode 0),
/// grown by another `chunk` whenever a write would pass the end (as the log starts a new
/// segment).
#[derive(Debug)]
struct RawFile {
    file: File,
    path: PathBuf,
    allocated: u64,
    chunk: u64,
}

impl RawFile {
    fn create(path: &Path, chunk: u64) -> anyhow::Result<RawFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("create {}", path.display()))?;
        let mut raw = RawFile { file, path: path.to_path_buf(), allocated: 0, chunk };
        raw.grow()?;
        Ok(raw)
    }

    fn grow(&mut self) -> anyhow::Result<()> {
        let (offset, len) = (self.allocated, self.chunk);
        match rustix::fs::fallocate(&self.file, rustix::fs::FallocateFlags::empty(), offset, len) {
            Ok(()) => {}
            // As RealFs::allocate: without fallocate a sparse file still works.
            Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => self.file.set_len(offset + len)?,
            Err(e) => return Err(e).with_context(|| format!("fallocate {}", self.path.display())),
        }
        self.allocated += len;
        Ok(())
    }

    fn write_all_at(&mut self, mut buf: &[u8], mut offset: u64) -> anyhow::Result<()> {
        while offset + buf.len() as u64 > self.allocated {
            self.grow()?;
        }
        while !buf.is_empty() {
            let n = rustix::io::pwrite(&self.file, buf, offset)
                .with_context(|| format!("pwrite {} at {offset}", self.path.display()))?;
            if n == 0 {
                bail!("pwrite to {} at {offset} wrote nothing", self.path.display());
            }
            buf = &buf[n..];
            offset += n as u64;
        }
        Ok(())
    }

    fn sync(&self) -> anyhow::Result<()> {
        rustix::fs::fdatasync(&self.file).with_context(|| format!("fdatasync {}", self.path.display()))
    }

    fn remove(self) -> anyhow::Result<()> {
        drop(self.file);
        std::fs::remove_file(&self.path).with_context(|| format!("remove {}", self.path.display()))
    }
}

/// One raw test: how it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawKind {
    /// 4 KiB pwrite + fdatasync at increasing offsets of a fresh fallocated file: every
    /// sync lands in a new block, as the log's appends do.
    Fsync,
    /// 4 MiB pwrite + fdatasync after each, at increasing 4 MiB-aligned offsets.
    Sequential,
    /// The same shifted by a segment header, as the log lays records out: some (virtual)
    /// disks treat the two layouts quite differently, and the limit is the better.
    SequentialShifted,
    /// Extra: 4 KiB pwrite + fdatasync cycling over blocks written and synced beforehand,
    /// which spares the file system the unwritten-extent bookkeeping of a fallocated file.
    FsyncOverwrite,
    /// Extra: 4 MiB pwrites with a single fdatasync at the end.
    SequentialUnsynced,
}

impl RawKind {
    const ALL: [RawKind; 5] = [
        RawKind::Fsync,
        RawKind::Sequential,
        RawKind::SequentialShifted,
        RawKind::FsyncOverwrite,
        RawKind::SequentialUnsynced,
    ];

    fn label(self) -> &'static str {
        match self {
            RawKind::Fsync => "4 KiB pwrite + fdatasync, increasing offsets",
            RawKind::Sequential => "4 MiB pwrite + fdatasync each, aligned",
            RawKind::SequentialShifted => "4 MiB pwrite + fdatasync each, 64 B shifted",
            RawKind::FsyncOverwrite => "4 KiB pwrite + fdatasync over written blocks",
            RawKind::SequentialUnsynced => "4 MiB pwrite, one fdatasync at the end",
        }
    }

    fn write_size(self) -> usize {
        match self {
            RawKind::Fsync | RawKind::FsyncOverwrite => RAW_SMALL_WRITE,
            RawKind::Sequential | RawKind::SequentialShifted | RawKind::SequentialUnsynced => RAW_LARGE_WRITE,
        }
    }

    /// Where the first write goes.
    fn start(self) -> u64 {
        if self == RawKind::SequentialShifted { SEGMENT_HEADER_BYTES } else { 0 }
    }

    fn counts_syncs(self) -> bool {
        matches!(self, RawKind::Fsync | RawKind::FsyncOverwrite)
    }

    fn unit(self) -> &'static str {
        if self.counts_syncs() { "fsyncs/s" } else { "MB/s" }
    }
}

/// A raw test's rate (fsyncs/s or MB/s, see [`RawKind::unit`]) and per-write latency.
#[derive(Debug, Clone, Copy)]
struct RawFigure {
    rate: f64,
    latency: Latency,
}

/// One pass over every raw test, in the order of [`RawKind::ALL`].
#[derive(Debug, Clone, Copy)]
struct RawPass([RawFigure; RawKind::ALL.len()]);

impl RawPass {
    fn get(&self, kind: RawKind) -> RawFigure {
        let i = RawKind::ALL.iter().position(|k| *k == kind).expect("every kind is in ALL");
        self.0[i]
    }

    /// The better of the two sequential layouts.
    fn seq_mb_per_s(&self) -> f64 {
        self.get(RawKind::Sequential).rate.max(self.get(RawKind::SequentialShifted).rate)
    }
}

/// The disk's limits, measured without the log before and after the log's rows.
#[derive(Debug, Clone, Copy)]
struct RawLimits {
    before: RawPass,
    after: RawPass,
}

impl RawLimits {
    /// The better of the two passes: the limit is what the disk showed it can do.
    fn best(&self, kind: RawKind) -> RawFigure {
        let (b, a) = (self.before.get(kind), self.after.get(kind));
        if a.rate > b.rate { a } else { b }
    }

    fn fsyncs_per_s(&self) -> f64 {
        self.best(RawKind::Fsync).rate
    }

    fn seq_mb_per_s(&self) -> f64 {
        self.before.seq_mb_per_s().max(self.after.seq_mb_per_s())
    }

    /// Largest ratio between the two passes of the two limits.
    fn drift(&self) -> f64 {
        let ratio = |b: f64, a: f64| if a.min(b) > 0.0 { a.max(b) / a.min(b) } else { f64::INFINITY };
        let fsync = ratio(self.before.get(RawKind::Fsync).rate, self.after.get(RawKind::Fsync).rate);
        fsync.max(ratio(self.before.seq_mb_per_s(), self.after.seq_mb_per_s()))
    }
}

/// Runs one raw test for `duration` on a fresh file at `path`, removed afterwards.
fn raw_run(path: &Path, chunk: u64, kind: RawKind, duration: Duration) -> anyhow::Result<RawFigure> {
    let write_size = kind.write_size();
    let mut file = RawFile::create(path, chunk)?;
    let buf: Vec<u8> = (0..write_size).map(|i| (i % 251) as u8).collect();
    let wrap = if kind == RawKind::FsyncOverwrite {
        let zeros = vec![0u8; RAW_LARGE_WRITE];
        for i in 0..OVERWRITE_REGION / RAW_LARGE_WRITE as u64 {
            file.write_all_at(&zeros, i * RAW_LARGE_WRITE as u64)?;
        }
        file.sync()?;
        OVERWRITE_REGION
    } else {
        u64::MAX
    };
    let sync_each = kind != RawKind::SequentialUnsynced;
    let mut hist = new_histogram();
    let mut writes = 0u64;
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        file.write_all_at(&buf, kind.start() + (writes * write_size as u64) % wrap)?;
        if sync_each {
            file.sync()?;
        }
        hist.saturating_record(micros(t.elapsed()));
        writes += 1;
    }
    if !sync_each {
        file.sync()?;
    }
    let secs = start.elapsed().as_secs_f64();
    file.remove()?;
    let rate = if kind.counts_syncs() { writes as f64 / secs } else { (writes * write_size as u64) as f64 / MB / secs };
    Ok(RawFigure { rate, latency: Latency::of(&hist) })
}

fn raw_pass(dir: &Path, settings: &Settings) -> anyhow::Result<RawPass> {
    let mut figures = Vec::with_capacity(RawKind::ALL.len());
    for (i, kind) in RawKind::ALL.into_iter().enumerate() {
        figures.push(raw_run(&dir.join(format!("raw-{i}")), settings.raw_chunk(), kind, settings.duration)?);
        settle(dir)?;
    }
    Ok(RawPass(figures.try_into().expect("one figure per kind")))
}

/// Runs blocking raw measurements off the async runtime's workers.
async fn blocking<T: Send + 'static>(
    dir: &Path,
    settings: &Settings,
    f: impl FnOnce(&Path, &Settings) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let (dir, settings) = (dir.to_path_buf(), settings.clone());
    tokio::task::spawn_blocking(move || f(&dir, &settings)).await.context("raw measurement task")?
}

/// Makes the deletions of the previous measurement durable now (one journal commit, with
/// its discards) so that they do not land in the next measurement.
fn settle(dir: &Path) -> anyhow::Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("fsync directory {}", dir.display()))
}

fn print_raw(raw: &RawLimits) {
    println!("Raw limits of the disk, without the log, on fresh files preallocated with fallocate as segments are;");
    println!("each measured before and after the log rows, the limit being the better pass (its p50/p99 shown);");
    println!("the sequential limit is the better of the two layouts:");
    println!(
        "  {:<46}  {:>9}  {:>9}  {:>9}  {:<8}  {:>7}  {:>7}",
        "test", "before", "after", "limit", "unit", "p50 µs", "p99 µs"
    );
    for kind in RawKind::ALL {
        if kind == RawKind::FsyncOverwrite {
            println!("  extra information, not limits:");
        }
        let (b, a, best) = (raw.before.get(kind), raw.after.get(kind), raw.best(kind));
        let decimals = if kind.counts_syncs() { 0 } else { 1 };
        println!(
            "  {:<46}  {:>9.*}  {:>9.*}  {:>9.*}  {:<8}  {:>7}  {:>7}",
            kind.label(),
            decimals,
            b.rate,
            decimals,
            a.rate,
            decimals,
            best.rate,
            kind.unit(),
            best.latency.p50_us,
            best.latency.p99_us
        );
    }
    if raw.drift() > DRIFT_WARN {
        println!(
            "  NOTE: a limit moved {:.1}x between before and after: this disk's speed varies (a cloud disk's",
            raw.drift()
        );
        println!("  burst credits or throttling, other load); take the ratios below as rough and run again.");
    }
    println!();
}

// ---------------------------------------------------------------------------------------
// The log
// ---------------------------------------------------------------------------------------

/// One row of the log table.
#[derive(Debug, Clone, Copy)]
struct RowSpec {
    entry_bytes: usize,
    batch: usize,
    /// Appends in flight: 1 is `append_durable` in a loop; more is the pipelined variant.
    depth: usize,
    /// When the log fdatasyncs.
    sync: SyncPolicy,
}

impl RowSpec {
    /// The row's name for `--only`: `<entry KiB>k-<batch>`, then `-d<depth>` when pipelined
    /// and `-async` under the interval policy.
    fn label(&self) -> String {
        let mut label = format!("{}k-{}", self.entry_bytes >> 10, self.batch);
        if self.depth > 1 {
            label.push_str(&format!("-d{}", self.depth));
        }
        if self.sync != SyncPolicy::EveryBatch {
            label.push_str("-async");
        }
        label
    }
}

/// What a row measured.
#[derive(Debug, Clone, Copy)]
struct RowResult {
    spec: RowSpec,
    entries_per_s: f64,
    mb_per_s: f64,
    latency: Latency,
}

/// Running totals of one row.
#[derive(Debug)]
struct Tally {
    entries: u64,
    hist: Histogram<u64>,
}

fn log_config(settings: &Settings, sync: SyncPolicy) -> LogConfig {
    let default = LogConfig::default();
    // The default largest payload (64 MiB) does not fit a 64 MiB --quick segment, which
    // the log rejects; the bench's entries are at most 16 KiB.
    let max_payload = u64::from(default.max_payload).min(settings.segment_size / 4);
    let max_payload = u32::try_from(max_payload).expect("at most the default, a u32");
    LogConfig { segment_size: settings.segment_size, max_payload, sync, ..default }
}

fn batch_of(first_index: u64, batch: usize, payload: &Bytes) -> Vec<Record> {
    (0..batch as u64).map(|i| Record { index: first_index + i, term: 1, payload: payload.clone() }).collect()
}

/// One producer, one append in flight: append a batch, wait until it is durable, repeat.
async fn drive_serial(log: &Log, spec: RowSpec, payload: &Bytes, duration: Duration) -> anyhow::Result<Tally> {
    let mut tally = Tally { entries: 0, hist: new_histogram() };
    let mut next = 1u64;
    let start = Instant::now();
    while start.elapsed() < duration {
        let records = batch_of(next, spec.batch, payload);
        let t = Instant::now();
        log.append_durable(records).await.with_context(|| format!("append_durable at index {next}"))?;
        tally.hist.saturating_record(micros(t.elapsed()));
        next += spec.batch as u64;
        tally.entries += spec.batch as u64;
    }
    Ok(tally)
}

/// One producer keeping up to `spec.depth` appends in flight; each append's `on_durable`
/// callback reports (sent, durable-at, result) through a channel with room for every
/// append in flight, so the callback never waits on the writer thread.
async fn drive_pipelined(log: &Log, spec: RowSpec, payload: &Bytes, duration: Duration) -> anyhow::Result<Tally> {
    type Done = (Instant, Instant, raft_log::Result<()>);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Done>(spec.depth);
    let mut tally = Tally { entries: 0, hist: new_histogram() };
    let mut next = 1u64;
    let mut in_flight = 0usize;
    let start = Instant::now();
    loop {
        while in_flight < spec.depth && start.elapsed() < duration {
            let records = batch_of(next, spec.batch, payload);
            let tx = tx.clone();
            let sent = Instant::now();
            let on_durable = Box::new(move |r: raft_log::Result<()>| {
                // Cannot be full: the channel has room for every append in flight.
                drop(tx.try_send((sent, Instant::now(), r)));
            });
            log.append(records, on_durable).await.with_context(|| format!("append at index {next}"))?;
            next += spec.batch as u64;
            in_flight += 1;
        }
        if in_flight == 0 {
            break;
        }
        let (sent, durable, result) = rx.recv().await.context("the completion channel closed")?;
        result.context("pipelined append")?;
        tally.hist.saturating_record(micros(durable.duration_since(sent)));
        tally.entries += spec.batch as u64;
        in_flight -= 1;
    }
    Ok(tally)
}

/// Runs one row on a fresh log directory and removes it afterwards. The first append
/// creates (preallocates) the first segment, so that cost is counted.
async fn log_row(base: &Path, settings: &Settings, spec: RowSpec) -> anyhow::Result<RowResult> {
    let mode = if spec.sync == SyncPolicy::EveryBatch { "sync" } else { "async" };
    let dir = base.join(format!("log-{}k-b{}-d{}-{mode}", spec.entry_bytes >> 10, spec.batch, spec.depth));
    let (log, _report) =
        Log::open(&dir, log_config(settings, spec.sync)).with_context(|| format!("open log in {}", dir.display()))?;
    let payload = Bytes::from((0..spec.entry_bytes).map(|i| (i % 253) as u8).collect::<Vec<u8>>());
    let start = Instant::now();
    let tally = if spec.depth <= 1 {
        drive_serial(&log, spec, &payload, settings.duration).await?
    } else {
        drive_pipelined(&log, spec, &payload, settings.duration).await?
    };
    let elapsed = start.elapsed().as_secs_f64();
    log.shutdown().await.context("shut the log down")?;
    drop(log);
    std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    settle(base)?;
    let bytes = tally.entries as f64 * spec.entry_bytes as f64;
    Ok(RowResult {
        spec,
        entries_per_s: tally.entries as f64 / elapsed,
        mb_per_s: bytes / MB / elapsed,
        latency: Latency::of(&tally.hist),
    })
}

fn size_label(bytes: usize) -> String {
    format!("{} KiB", bytes >> 10)
}

fn pct(x: f64, of: f64) -> f64 {
    if of > 0.0 { 100.0 * x / of } else { 0.0 }
}

fn print_table_header() {
    println!(
        "  {:>6}  {:>5}  {:>9}  {:>10}  {:>8}  {:>8}  {:>8}  {:>13}  {:>13}",
        "entry", "batch", "in flight", "entries/s", "MB/s", "p50 µs", "p99 µs", "of fsyncs/s", "of seq MB/s"
    );
}

fn print_row(row: &RowResult, raw: &RawLimits) {
    // Under the interval policy an append waits for no fsync: the ratio would mean nothing.
    let of_fsyncs = if row.spec.batch == 1 && row.spec.sync == SyncPolicy::EveryBatch {
        format!("{:.0}%", pct(row.entries_per_s, raw.fsyncs_per_s()))
    } else {
        "-".to_string()
    };
    println!(
        "  {:>6}  {:>5}  {:>9}  {:>10.0}  {:>8.1}  {:>8}  {:>8}  {:>13}  {:>12.0}%",
        size_label(row.spec.entry_bytes),
        row.spec.batch,
        row.spec.depth,
        row.entries_per_s,
        row.mb_per_s,
        row.latency.p50_us,
        row.latency.p99_us,
        of_fsyncs,
        pct(row.mb_per_s, raw.seq_mb_per_s())
    );
}

/// Makes the fresh working directory inside `--dir` (or ./target, or .).
fn work_dir(args: &Args) -> anyhow::Result<tempfile::TempDir> {
    let parent = match &args.dir {
        Some(d) => d.clone(),
        None if Path::new("target").is_dir() => PathBuf::from("target"),
        None => PathBuf::from("."),
    };
    tempfile::Builder::new()
        .prefix("bench-data-")
        .tempdir_in(&parent)
        .with_context(|| format!("create a temporary directory in {}; choose another with --dir", parent.display()))
}

/// Whether `dir` is on tmpfs (false when that cannot be told).
// `f_type`'s integer type differs between platforms; the conversion is not useless on all.
#[allow(clippy::useless_conversion)]
fn on_tmpfs(dir: &Path) -> bool {
    rustix::fs::statfs(dir).is_ok_and(|s| i64::try_from(s.f_type).is_ok_and(|t| t == TMPFS_MAGIC))
}

fn print_header(dir: &Path, settings: &Settings) {
    println!("raft-log bench");
    println!(
        "  directory {}, {:.1} s per measurement, segment size {} MiB, MB = 10^6 bytes",
        dir.display(),
        settings.duration.as_secs_f64(),
        settings.segment_size / MIB
    );
    if on_tmpfs(dir) {
        println!("  WARNING: the directory is on tmpfs, where fsync is free; choose a real disk with --dir");
    }
    println!();
}

async fn run(settings: Settings, dir: &Path) -> anyhow::Result<()> {
    print_header(dir, &settings);
    let mut rows = Vec::new();
    let sync = SyncPolicy::EveryBatch;
    let serial =
        ENTRY_SIZES.into_iter().flat_map(|e| BATCH_SIZES.map(|b| RowSpec { entry_bytes: e, batch: b, depth: 1, sync }));
    let pipelined = ENTRY_SIZES.map(|e| RowSpec { entry_bytes: e, batch: 1, depth: PIPELINE_DEPTH, sync });
    let sync = SyncPolicy::Interval(ASYNC_INTERVAL);
    let relaxed = ASYNC_BATCH_SIZES.map(|b| RowSpec { entry_bytes: 1 << 10, batch: b, depth: 1, sync });
    let specs: Vec<RowSpec> = serial.chain(pipelined).chain(relaxed).collect();
    if let Some(unknown) = settings.only.iter().find(|l| !specs.iter().any(|s| &s.label() == *l)) {
        let labels: Vec<String> = specs.iter().map(RowSpec::label).collect();
        bail!("--only {unknown:?} names no row; the rows are {}", labels.join(", "));
    }
    let wanted = |spec: &RowSpec| settings.only.is_empty() || settings.only.contains(&spec.label());
    // Progress goes to stderr; the report is printed once every figure is in, because the
    // ratios need the raw limits measured after the log rows too.
    eprintln!("bench: measuring the raw limits");
    let before = blocking(dir, &settings, raw_pass).await?;
    for spec in specs.into_iter().filter(wanted) {
        eprintln!(
            "bench: log, {} entries, batch {}, {} in flight, {:?}",
            size_label(spec.entry_bytes),
            spec.batch,
            spec.depth,
            spec.sync
        );
        rows.push(log_row(dir, &settings, spec).await?);
    }
    eprintln!("bench: measuring the raw limits again");
    let after = blocking(dir, &settings, raw_pass).await?;
    let raw = RawLimits { before, after };
    let goals: Vec<paired::Goal> = paired::Goal::ALL.into_iter().filter(|g| wanted(&g.spec())).collect();
    let pairs = paired::measure(dir, &settings, &goals).await?;

    print_raw(&raw);
    println!("The log: one producer, append_durable (append, then wait until fsynced), one append in flight:");
    print_table_header();
    for row in rows.iter().filter(|r| r.spec.depth == 1 && r.spec.sync == SyncPolicy::EveryBatch) {
        print_row(row, &raw);
    }
    println!();
    println!(
        "Pipelined variant, not the headline: batch 1 with up to {PIPELINE_DEPTH} appends in flight (Log::append +"
    );
    println!("on_durable), so the writer can make several appends durable with one fdatasync (group commit):");
    print_table_header();
    for row in rows.iter().filter(|r| r.spec.depth > 1) {
        print_row(row, &raw);
    }
    println!();
    println!("Relaxed durability (broker flush = \"async\"): append_durable returns once the entries are written, not");
    println!(
        "fsynced; the writer fsyncs every {} ms and when idle. Compare with the same rows above:",
        ASYNC_INTERVAL.as_millis()
    );
    print_table_header();
    for row in rows.iter().filter(|r| r.spec.sync != SyncPolicy::EveryBatch) {
        print_row(row, &raw);
    }
    println!();
    paired::print(&pairs, &settings);
    paired::print_goals(&rows, &raw, &pairs);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings::from_args(&args)?;
    let dir = work_dir(&args)?;
    let result = run(settings, dir.path()).await;
    let path = dir.path().to_path_buf();
    let cleanup = dir.close().with_context(|| format!("remove {}", path.display()));
    result?;
    cleanup
}
