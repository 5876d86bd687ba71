//! [`Log`]: the concurrent front of the engine. One writer thread owns the files; callers
//! queue appends (bounded), which the writer gathers into batches, writes, and reports
//! through each append's callback: after the batch's one `fdatasync`, or, under
//! [`Interval`](crate::SyncPolicy::Interval), before it (syncing later). Vote, purge, truncation and the
//! installing of backfilled segments go through the same queue, so no write is ever
//! reordered with another.

mod writer;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot};

use self::writer::Writer;
use crate::cache::TailCache;
use crate::core::{Backfilled, LogConfig, LogCore, OpenReport, RemovedSegment, Retention, StagedBackfill};
use crate::error::{LogError, Result};
use crate::fs::Fs;
use crate::meta::Purged;
use crate::record::{PayloadPart, Record};

/// Called once the appended records are durable (under [`Interval`](crate::SyncPolicy::Interval): once they
/// are written, in order, not yet fsynced), or with the error that stopped the log.
pub type OnDurable = Box<dyn FnOnce(Result<()>) + Send>;

enum Op {
    Append { records: Vec<Record>, done: OnDurable },
    Truncate { last_kept: Option<u64>, done: oneshot::Sender<Result<()>> },
    Purge { index: u64, id: Bytes, done: oneshot::Sender<Result<()>> },
    Vote { vote: Bytes, done: oneshot::Sender<Result<()>> },
    Committed { committed: Option<Bytes> },
    Retain { policy: Retention, now: SystemTime, done: oneshot::Sender<Result<Vec<RemovedSegment>>> },
    Backfill { staged: StagedBackfill, done: oneshot::Sender<Result<Backfilled>> },
    Flush { done: oneshot::Sender<Result<()>> },
    Shutdown { done: oneshot::Sender<Result<()>> },
}

/// A point-in-time view of the log's extent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogView {
    /// First index present (retention deletes below it).
    pub first: Option<u64>,
    /// Last appended index and its term (appended means readable, maybe not durable).
    pub last: Option<(u64, u64)>,
    /// Last index written to the files (reported to its appender under
    /// [`Interval`](crate::SyncPolicy::Interval); maybe not durable).
    pub written: Option<u64>,
    /// Last index known durable: fdatasynced, or found on disk when the log was opened.
    pub durable: Option<u64>,
    /// The purge point.
    pub purged: Option<Purged>,
}

/// What lives in memory beside the files. Lock order: `core` before `mem`, never the
/// reverse; appenders and tail readers take `mem` only, so they never wait behind a
/// batch being written to the files.
#[derive(Debug)]
struct Mem {
    cache: TailCache,
    /// Purge point, copied from the meta state (appenders must not need `core`).
    purged: Option<u64>,
    /// Last appended record (queued or written).
    last: Option<(u64, u64)>,
    /// Last record written to the files.
    written: Option<u64>,
    /// Last record fdatasynced; only ever moved by a sync.
    durable: Option<u64>,
    /// Committed id as last given, saved to the meta file lazily.
    committed: Option<Bytes>,
    /// Records being copied in from another replica: reads of them are refused.
    incomplete: Option<Range<u64>>,
    failed: Option<String>,
}

impl Mem {
    fn check_running(&self) -> Result<()> {
        match &self.failed {
            Some(why) => Err(LogError::Stopped(why.clone())),
            None => Ok(()),
        }
    }

    fn next_index(&self) -> Option<u64> {
        let after_last = self.last.map(|(i, _)| i + 1);
        let after_purge = self.purged.map(|p| p + 1);
        after_last.max(after_purge)
    }

    fn check_complete(&self, from: u64, to: u64) -> Result<()> {
        match &self.incomplete {
            Some(r) if from < r.end && r.start < to => Err(LogError::Incomplete { from: r.start, to: r.end }),
            _ => Ok(()),
        }
    }
}

#[derive(Debug)]
struct Shared {
    /// The files; the writer thread holds it for writing while it writes a batch.
    core: RwLock<LogCore>,
    mem: RwLock<Mem>,
    config: LogConfig,
}

/// A handle to an open log; cheap to clone, all clones share one writer.
#[derive(Debug, Clone)]
pub struct Log {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Op>,
    /// Keeps "check, put in cache, queue" atomic across concurrent appenders.
    submit: Arc<tokio::sync::Mutex<()>>,
    /// One backfill at a time (staged file names are per first index).
    backfill: Arc<tokio::sync::Mutex<()>>,
    /// The writer thread, woken after each request: when it waits with a timeout (for
    /// unsynced records under [`Interval`](crate::SyncPolicy::Interval), or to save the committed id), it
    /// parks, since the queue's receiver cannot wait with one.
    writer: std::thread::Thread,
}

impl Log {
    /// Opens or creates the log in `dir` on the real file system.
    pub fn open(dir: &Path, config: LogConfig) -> Result<(Log, OpenReport)> {
        Self::open_with(Arc::new(crate::fs::RealFs), dir, config)
    }

    /// Opens or creates the log in `dir` on `fs`, recovering from a crash, and starts the
    /// writer thread.
    pub fn open_with(fs: Arc<dyn Fs>, dir: &Path, config: LogConfig) -> Result<(Log, OpenReport)> {
        let (core, report) = LogCore::open(fs, dir, config.clone())?;
        let last = core.last_index().map(|i| (i, core.last_term()));
        let mem = Mem {
            committed: core.meta().committed.clone(),
            cache: TailCache::new(config.cache_bytes),
            purged: core.meta().purged.as_ref().map(|p| p.index),
            last,
            written: last.map(|l| l.0),
            durable: last.map(|l| l.0),
            incomplete: None,
            failed: None,
        };
        let shared = Arc::new(Shared { core: RwLock::new(core), mem: RwLock::new(mem), config: config.clone() });
        let (tx, rx) = mpsc::channel(config.queue_depth);
        let writer = Writer {
            shared: shared.clone(),
            rx,
            committed_saved_at: Instant::now(),
            pending_committed: None,
            unsynced_since: None,
            last_busy: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| LogError::io("spawn writer thread", dir, e))?;
        let log = Log {
            shared,
            tx,
            submit: Arc::new(tokio::sync::Mutex::new(())),
            backfill: Arc::new(tokio::sync::Mutex::new(())),
            writer: thread.thread().clone(),
        };
        Ok((log, report))
    }

    /// The configuration in force.
    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    /// The extent of the log.
    pub fn view(&self) -> LogView {
        let core = self.shared.core.read();
        let mem = self.shared.mem.read();
        LogView {
            first: core.first_index().or(mem.cache.first_index()),
            last: mem.last,
            written: mem.written,
            durable: mem.durable,
            purged: core.meta().purged.clone(),
        }
    }

    /// The index range `first..next` each segment file holds, oldest first.
    pub fn segment_ranges(&self) -> Vec<(u64, u64)> {
        self.shared.core.read().segment_ranges()
    }

    /// The last saved vote.
    pub fn vote(&self) -> Option<Bytes> {
        self.shared.core.read().meta().vote.clone()
    }

    /// The last committed id given to [`Log::save_committed`] (or loaded on open).
    pub fn committed(&self) -> Option<Bytes> {
        self.shared.mem.read().committed.clone()
    }

    /// Queues `records` after the last index. They are readable when this returns and
    /// `on_durable` runs on the writer thread once they are fsynced (under
    /// [`Interval`](crate::SyncPolicy::Interval): once they are written). Waits while the writer's queue is
    /// full.
    pub async fn append(&self, records: Vec<Record>, on_durable: OnDurable) -> Result<()> {
        if records.is_empty() {
            on_durable(Ok(()));
            return Ok(());
        }
        let _order = self.submit.lock().await;
        {
            let mut mem = self.shared.mem.write();
            mem.check_running()?;
            let mut expect = mem.next_index().unwrap_or(records[0].index);
            let mut term = mem.last.map_or(0, |l| l.1);
            for r in &records {
                if r.index != expect {
                    return Err(LogError::Invalid(format!(
                        "append at index {} but the next index is {expect}",
                        r.index
                    )));
                }
                if r.term < term {
                    return Err(LogError::Invalid(format!("entry {} has term {} after term {term}", r.index, r.term)));
                }
                if r.payload.len() > self.shared.config.max_payload as usize {
                    return Err(LogError::Invalid(format!(
                        "entry {} is {} bytes, over the limit of {}",
                        r.index,
                        r.payload.len(),
                        self.shared.config.max_payload
                    )));
                }
                expect += 1;
                term = r.term;
            }
            for r in &records {
                mem.cache.push(r.clone());
            }
            mem.last = Some((expect - 1, term));
        }
        self.send(Op::Append { records, done: on_durable }).await
    }

    /// Appends and waits until durable.
    pub async fn append_durable(&self, records: Vec<Record>) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.append(records, Box::new(move |r| drop(tx.send(r)))).await?;
        rx.await.map_err(|_| LogError::Stopped("the writer thread ended".into()))?
    }

    async fn send(&self, op: Op) -> Result<()> {
        self.tx.send(op).await.map_err(|_| LogError::Stopped("the writer thread ended".into()))?;
        self.writer.unpark();
        Ok(())
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Op) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        {
            let _order = self.submit.lock().await;
            self.shared.mem.read().check_running()?;
            self.send(make(tx)).await?;
        }
        rx.await.map_err(|_| LogError::Stopped("the writer thread ended".into()))?
    }

    /// Removes every record after `last_kept` (all for `None`); durable on return.
    pub async fn truncate_after(&self, last_kept: Option<u64>) -> Result<()> {
        self.call(|done| Op::Truncate { last_kept, done }).await
    }

    /// Moves the purge point; durable on return. Records stay readable through
    /// [`Log::read`] until retention deletes their segment.
    pub async fn purge(&self, index: u64, id: Bytes) -> Result<()> {
        self.call(|done| Op::Purge { index, id, done }).await
    }

    /// Saves the vote; durable on return and ordered after every earlier append.
    pub async fn save_vote(&self, vote: Bytes) -> Result<()> {
        self.call(|done| Op::Vote { vote, done }).await
    }

    /// Records the committed log id; it is written to disk after the appends queued before
    /// it, at most once per `committed_interval` (an idle writer saves it once the interval
    /// has passed), on [`Log::flush`] and on shutdown.
    pub async fn save_committed(&self, committed: Option<Bytes>) -> Result<()> {
        let _order = self.submit.lock().await;
        {
            let mut mem = self.shared.mem.write();
            mem.check_running()?;
            mem.committed = committed.clone();
        }
        self.send(Op::Committed { committed }).await
    }

    /// Deletes whole segments as `policy` allows.
    pub async fn retain(&self, policy: Retention, now: SystemTime) -> Result<Vec<RemovedSegment>> {
        self.call(|done| Op::Retain { policy, now, done }).await
    }

    /// Writes `records` (contiguous, at or below the purge point) copied from another
    /// replica: records already held are kept, conflicting ones replaced (the copy is
    /// committed, so it wins), missing ones written as new sealed segments. The files are
    /// written and fsynced off the writer thread, then renamed into place by it in queue
    /// order; durable on return. See [`LogCore::backfill`].
    pub async fn backfill(&self, records: Vec<Record>) -> Result<Backfilled> {
        let _one = self.backfill.lock().await;
        self.shared.mem.read().check_running()?;
        let shared = self.shared.clone();
        let staged = tokio::task::spawn_blocking(move || {
            let plan = shared.core.read().plan_backfill(&records)?;
            plan.stage(&records)
        })
        .await
        .map_err(|e| LogError::Invalid(format!("the backfill staging task failed: {e}")))??;
        self.call(|done| Op::Backfill { staged, done }).await
    }

    /// Removes the records in `from..to` (at or below the purge point) and the later
    /// records of their segments; durable on return. See [`LogCore::discard`].
    pub async fn discard(&self, from: u64, to: u64) -> Result<Backfilled> {
        let _one = self.backfill.lock().await;
        let plan = self.shared.core.read().plan_discard(from, to)?;
        let staged = plan.stage(&[])?;
        self.call(|done| Op::Backfill { staged, done }).await
    }

    /// Marks records `range` as being copied in from another replica (`None`: none are).
    /// Until the mark moves, [`Log::read`] refuses them with [`LogError::Incomplete`], so a
    /// reader never sees a record that is missing or about to be replaced. The mark lives in
    /// memory only.
    pub fn set_incomplete(&self, range: Option<Range<u64>>) {
        self.shared.mem.write().incomplete = range.filter(|r| !r.is_empty());
    }

    /// The records marked as being copied in, if any.
    pub fn incomplete(&self) -> Option<Range<u64>> {
        self.shared.mem.read().incomplete.clone()
    }

    /// Waits until everything queued so far is durable, the committed id included.
    pub async fn flush(&self) -> Result<()> {
        self.call(|done| Op::Flush { done }).await
    }

    /// Makes everything queued so far durable, then stops the writer: every later request,
    /// through any clone, fails with [`LogError::Stopped`]. When this returns the writer
    /// thread no longer touches the files. (Dropping the last clone also syncs and stops the writer, without
    /// waiting for it.) An error is the one that stopped the log, or that of the last sync.
    pub async fn shutdown(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        {
            let _order = self.submit.lock().await;
            self.send(Op::Shutdown { done: tx }).await?;
        }
        rx.await.map_err(|_| LogError::Stopped("the writer thread ended".into()))?
    }

    /// Reads the records present in `from..to` (purged ones included while their segment
    /// is retained). A record missing in the middle of the range is an error, and so is a
    /// range that touches records marked incomplete ([`Log::set_incomplete`]).
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<Record>> {
        self.read_records(from, to, true)
    }

    /// [`Log::read`] for Raft itself: the incomplete mark does not apply (Raft reads its
    /// own entries past the purge point, which a mark set ahead of a purge may cover).
    pub(crate) fn read_for_raft(&self, from: u64, to: u64) -> Result<Vec<Record>> {
        self.read_records(from, to, false)
    }

    /// Bytes `range` of record `index`'s payload, cut at its end, without reading the rest
    /// of the record: from memory when cached, else one read of the header and one of the
    /// part. Not checksum-verified (the caller checks its own checksums over the part);
    /// `None` when the log does not hold the record. Gated like [`Log::read`].
    pub fn read_payload_part(&self, index: u64, range: Range<u64>) -> Result<Option<PayloadPart>> {
        {
            let mem = self.shared.mem.read();
            mem.check_complete(index, index + 1)?;
            if mem.last.is_none_or(|l| index > l.0) {
                return Ok(None);
            }
            if mem.cache.first_index().is_some_and(|f| f <= index) {
                return Ok(mem.cache.range(index, index + 1).next().map(|r| PayloadPart::of(r, range)));
            }
        }
        let core = self.shared.core.read();
        self.shared.mem.read().check_complete(index, index + 1)?;
        match self.shared.mem.read().cache.range(index, index + 1).next() {
            Some(r) => Ok(Some(PayloadPart::of(r, range))),
            None => core.read_payload_part(index, range),
        }
    }

    fn read_records(&self, from: u64, to: u64, gated: bool) -> Result<Vec<Record>> {
        // Served from memory when the cache holds the whole range (the common tail read).
        {
            let mem = self.shared.mem.read();
            if gated {
                mem.check_complete(from, to)?;
            }
            let to = to.min(mem.last.map_or(0, |l| l.0 + 1));
            if from >= to {
                return Ok(Vec::new());
            }
            if mem.cache.first_index().is_some_and(|f| f <= from) {
                return Ok(mem.cache.range(from, to).cloned().collect());
            }
        }
        let core = self.shared.core.read();
        let mem = self.shared.mem.read();
        if gated {
            mem.check_complete(from, to)?;
        }
        let to = to.min(mem.last.map_or(0, |l| l.0 + 1));
        if from >= to {
            return Ok(Vec::new());
        }
        let cache_from = mem.cache.first_index().unwrap_or(to).max(from);
        let mut out = if from < cache_from { core.read(from, cache_from.min(to))? } else { Vec::new() };
        out.extend(mem.cache.range(cache_from, to).cloned());
        if let Some(gap) = out.windows(2).find(|w| w[0].index + 1 != w[1].index) {
            return Err(LogError::Invalid(format!("records {}..{} are missing", gap[0].index + 1, gap[1].index)));
        }
        Ok(out)
    }
}
