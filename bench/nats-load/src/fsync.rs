//! `nats-load fsync`: the disk's raw fsync limit for one writer: pwrite of one body at
//! increasing offsets of a file preallocated with `fallocate` (as raftmq's CommitLog
//! segments are), each followed by `fdatasync`, for a fixed time.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{latency_json, new_histogram, record_latency};

/// Preallocation step of the test file (raftmq dev's segment size).
const CHUNK_BYTES: u64 = 256 << 20;
/// Largest body.
const MAX_BODY_BYTES: usize = 4 << 20;
/// Longest run.
const MAX_SECONDS: u64 = 3600;

/// Options of `fsync`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory on the disk to measure (a file is made there and removed afterwards).
    #[arg(long)]
    dir: PathBuf,
    /// Bytes written before each fdatasync.
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// How long to write.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

/// The test file, grown by another [`CHUNK_BYTES`] whenever a write would pass its end.
struct RawFile {
    file: File,
    path: PathBuf,
    allocated: u64,
}

impl RawFile {
    fn create(path: &Path) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { file, path: path.to_path_buf(), allocated: 0 })
    }

    fn grow(&mut self) -> anyhow::Result<()> {
        let (offset, len) = (self.allocated, CHUNK_BYTES);
        match rustix::fs::fallocate(&self.file, rustix::fs::FallocateFlags::empty(), offset, len) {
            Ok(()) => {}
            // Without fallocate a sparse file still measures the syncs.
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => self.file.set_len(offset + len)?,
            Err(e) => return Err(e).with_context(|| format!("cannot fallocate {}", self.path.display())),
        }
        self.allocated += len;
        Ok(())
    }

    fn write_and_sync(&mut self, mut buf: &[u8], mut offset: u64) -> anyhow::Result<()> {
        while offset + buf.len() as u64 > self.allocated {
            self.grow()?;
        }
        while !buf.is_empty() {
            let n = rustix::io::pwrite(&self.file, buf, offset)
                .with_context(|| format!("cannot write {} at {offset}", self.path.display()))?;
            if n == 0 {
                bail!("a write to {} at {offset} wrote nothing", self.path.display());
            }
            buf = &buf[n..];
            offset += n as u64;
        }
        rustix::fs::fdatasync(&self.file).with_context(|| format!("cannot fdatasync {}", self.path.display()))
    }
}

/// Runs the loop and returns its figures.
pub fn run(args: &Args) -> anyhow::Result<serde_json::Value> {
    if args.body_size == 0 || args.body_size > MAX_BODY_BYTES {
        bail!("--body-size must be within 1..={MAX_BODY_BYTES}");
    }
    if args.seconds == 0 || args.seconds > MAX_SECONDS {
        bail!("--seconds must be within 1..={MAX_SECONDS}");
    }
    let path = args.dir.join(format!("fsync-limit-{}.tmp", std::process::id()));
    let mut file = RawFile::create(&path)?;
    let result = sync_loop(&mut file, args);
    drop(file);
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    result
}

fn sync_loop(file: &mut RawFile, args: &Args) -> anyhow::Result<serde_json::Value> {
    let body: Vec<u8> = (0..args.body_size).map(|i| (i % 251) as u8).collect();
    let mut latency = new_histogram();
    let (mut offset, mut writes) = (0u64, 0u64);
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    while Instant::now() < until {
        let t = Instant::now();
        file.write_and_sync(&body, offset)?;
        record_latency(&mut latency, t.elapsed());
        offset += body.len() as u64;
        writes += 1;
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    Ok(serde_json::json!({
        "body_size": args.body_size,
        "writes": writes,
        "elapsed_s": elapsed,
        "msg_per_s": writes as f64 / elapsed,
        "mib_per_s": (writes * body.len() as u64) as f64 / elapsed / f64::from(1u32 << 20),
        "latency": latency_json(&latency),
    }))
}
