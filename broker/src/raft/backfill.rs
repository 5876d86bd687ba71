//! Backfill: a node that caught up through a snapshot copies in the CommitLog records
//! below the snapshot's last index (the message bodies its ConsumeQueues point at), from
//! the leader or, failing that, another member, with `ReadSegment`.
//!
//! Installing a snapshot records the range to copy durably before the new state becomes
//! visible: from just after the last entry this node applied (everything up to it is
//! committed here, so correct) through the snapshot's last index. Local records in that
//! range may be missing, or be leftovers of a term the group overwrote; the copy replaces
//! them ([`Log::backfill`]: a committed copy wins). Until the range is done the log refuses
//! reads of it ([`Log::set_incomplete`]), so a consumer gets a retryable error, never a
//! wrong body, and this node never serves the range to another one.
//!
//! One task per node copies the range in batches (bounded by bytes), saving its progress
//! after each, retrying with backoff until done, and survives restarts (the range is in
//! `<state>/backfill.bin`). Records the source no longer retains (its retention deleted
//! them) are not copied; local ones there cannot be verified and are discarded.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::entry::RaftEntry;
use parking_lot::Mutex;
use raft_log::{Log, LogError, Record};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::network::read_segment;
use super::{Entry, NodeId, Raft, TypeConfig};
use crate::durable::write_durably;
use raftmq_machine::codec::{ENTRY_VERSION, OLDEST_READ_ENTRY_VERSION};

/// File (in the state directory) holding the range still to copy.
const PENDING_FILE: &str = "backfill.bin";
const FILE_VERSION: u32 = 1;
/// Most bytes of records written with one [`Log::backfill`] (also bounded by the segment
/// size): the memory a copy takes.
const MAX_BATCH_BYTES: u64 = 64 << 20;
/// Bytes a segment file's header takes (the rest holds records).
const SEGMENT_HEADER_BYTES: u64 = 64;
/// Longest wait for the next chunk of a `ReadSegment` stream.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Log records `from..=through` still to verify or copy in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// First index not yet done.
    pub from: u64,
    /// Last index to do (the last installed snapshot's last index).
    pub through: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct PendingFile {
    version: u32,
    pending: Option<Pending>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Tracked {
    pending: Option<Pending>,
    /// Bumped by every snapshot install, so a copy that finishes an older range does not
    /// clear a newer one.
    generation: u64,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    log: Log,
    tracked: Mutex<Tracked>,
    wake: watch::Sender<u64>,
}

/// The range a node still has to copy in, shared by the state machine (which adds to it
/// when it installs a snapshot) and the copying task. Clones share it.
#[derive(Debug, Clone)]
pub struct Backfill {
    inner: Arc<Inner>,
}

/// Why one attempt to copy did not finish.
#[derive(Debug, thiserror::Error)]
enum CopyError {
    #[error("waiting for the log's purge point to reach {0}")]
    NotYet(u64),
    #[error("no other member to copy from")]
    NoSource,
    #[error("node {node}: {status}")]
    Rpc { node: NodeId, status: tonic::Status },
    #[error("node {node}: {reason}")]
    Bad { node: NodeId, reason: String },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("saving backfill progress: {0}")]
    Io(#[from] io::Error),
}

fn decode_file(bytes: &[u8], path: &Path) -> io::Result<Option<Pending>> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", path.display()));
    let (file, _): (PendingFile, usize) =
        bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map_err(|e| bad(e.to_string()))?;
    if file.version != FILE_VERSION {
        return Err(bad(format!("version {}, this build reads version {FILE_VERSION}", file.version)));
    }
    Ok(file.pending)
}

fn persist(path: &Path, pending: Option<Pending>) -> io::Result<()> {
    let file = PendingFile { version: FILE_VERSION, pending };
    let bytes = bincode::serde::encode_to_vec(&file, bincode::config::standard()).map_err(io::Error::other)?;
    write_durably(path, &bytes)
}

impl Backfill {
    /// Loads the range still to copy from `state_dir` and marks it incomplete in `log`.
    pub fn open(state_dir: &Path, log: Log) -> io::Result<Backfill> {
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join(PENDING_FILE);
        let pending = match std::fs::read(&path) {
            Ok(bytes) => decode_file(&bytes, &path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(p) = pending {
            tracing::info!(from = p.from, through = p.through, "log records still to copy in from another member");
            log.set_incomplete(Some(p.from..p.through + 1));
        }
        let (wake, _) = watch::channel(0);
        let tracked = Mutex::new(Tracked { pending, generation: 0 });
        Ok(Backfill { inner: Arc::new(Inner { path, log, tracked, wake }) })
    }

    /// The range still to copy, if any.
    pub fn pending(&self) -> Option<Pending> {
        self.inner.tracked.lock().pending
    }

    /// Records, durably, that a snapshot through `snapshot_last` is being installed over a
    /// state that had applied up to `applied_before`, and marks the range incomplete.
    /// Blocking (one small fsynced file); call it before the new state becomes visible.
    pub fn note_install(&self, applied_before: Option<u64>, snapshot_last: u64) -> io::Result<()> {
        let from = applied_before.map_or(0, |a| a + 1);
        if from > snapshot_last {
            return Ok(());
        }
        let mut tracked = self.inner.tracked.lock();
        let merged = match tracked.pending {
            Some(p) => Pending { from: p.from.min(from), through: p.through.max(snapshot_last) },
            None => Pending { from, through: snapshot_last },
        };
        persist(&self.inner.path, Some(merged))?;
        tracked.pending = Some(merged);
        tracked.generation += 1;
        self.inner.log.set_incomplete(Some(merged.from..merged.through + 1));
        let generation = tracked.generation;
        drop(tracked);
        self.inner.wake.send_replace(generation);
        tracing::info!(from = merged.from, through = merged.through, "snapshot installed; log records to copy in");
        Ok(())
    }

    /// Saves that everything below `next` is done (blocking).
    fn advance(&self, next: u64) -> io::Result<()> {
        let mut tracked = self.inner.tracked.lock();
        let Some(p) = tracked.pending else { return Ok(()) };
        if next <= p.from {
            return Ok(());
        }
        let moved = Pending { from: next, ..p };
        persist(&self.inner.path, Some(moved))?;
        tracked.pending = Some(moved);
        self.inner.log.set_incomplete(Some(moved.from..moved.through + 1));
        Ok(())
    }

    /// Clears the range if no snapshot was installed since `generation` (blocking).
    fn finish(&self, generation: u64) -> io::Result<bool> {
        let mut tracked = self.inner.tracked.lock();
        if tracked.generation != generation {
            return Ok(false);
        }
        persist(&self.inner.path, None)?;
        tracked.pending = None;
        self.inner.log.set_incomplete(None);
        Ok(true)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Backfill) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this)).await.map_err(io::Error::other)?
    }

    /// Starts the task that copies whatever range is pending, for member `me` of `group`;
    /// it runs until aborted.
    pub fn spawn(&self, raft: Raft, group: String, me: NodeId) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let mut wake = self.inner.wake.subscribe();
        tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            loop {
                let tracked = *this.inner.tracked.lock();
                let Some(pending) = tracked.pending else {
                    if wake.changed().await.is_err() {
                        return;
                    }
                    continue;
                };
                let result = match this.copy(&raft, &group, me, pending).await {
                    Ok(()) => this.blocking(move |b| b.finish(tracked.generation)).await.map_err(CopyError::from),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(done) => {
                        if done {
                            tracing::info!(through = pending.through, "log records copied in; backfill complete");
                        }
                        backoff = FIRST_BACKOFF;
                        continue;
                    }
                    Err(e @ CopyError::NotYet(_)) => tracing::debug!(error = %e, "backfill waits"),
                    Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "backfill of log records failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = wake.changed() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        })
    }

    /// Copies `pending` from the first member that can serve it.
    async fn copy(&self, raft: &Raft, group: &str, me: NodeId, pending: Pending) -> Result<(), CopyError> {
        let purged = self.inner.log.view().purged.map(|p| p.index);
        if purged.is_none_or(|p| p < pending.through) {
            return Err(CopyError::NotYet(pending.through));
        }
        let mut last_error = CopyError::NoSource;
        for (node, addr) in sources(raft, me) {
            let from = self.pending().map_or(pending.from, |p| p.from);
            if from > pending.through {
                return Ok(());
            }
            match self.copy_from(node, &addr, group, from, pending.through).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::info!(node = node.0, error = %e, "cannot copy log records from this member; trying the next");
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    /// Streams records `from..=through` from `node` into the log in batches.
    async fn copy_from(&self, node: NodeId, addr: &str, group: &str, from: u64, through: u64) -> Result<(), CopyError> {
        let rpc = |status| CopyError::Rpc { node, status };
        let bad = |reason: String| CopyError::Bad { node, reason };
        let opened = tokio::time::timeout(CHUNK_TIMEOUT, read_segment(addr, group, node, from, through + 1)).await;
        let mut stream = opened.map_err(|_| bad("no answer to ReadSegment".into()))?.map_err(rpc)?;
        // A batch fills one segment at most, so backfilled segments are full ones.
        let room = self.inner.log.config().segment_size.min(MAX_BATCH_BYTES) - SEGMENT_HEADER_BYTES;
        let mut batch: Vec<Record> = Vec::new();
        let mut bytes = 0u64;
        let mut expect: Option<u64> = None;
        loop {
            let next = tokio::time::timeout(CHUNK_TIMEOUT, stream.message()).await;
            let Some(chunk) = next.map_err(|_| bad(format!("no chunk for {CHUNK_TIMEOUT:?}")))?.map_err(rpc)? else {
                break;
            };
            for r in chunk.records {
                match expect {
                    None if r.index < from || r.index > through => {
                        return Err(bad(format!("record {} outside the range {from}..={through}", r.index)));
                    }
                    None => self.not_retained(node, from, r.index, through).await?,
                    Some(e) if r.index != e => return Err(bad(format!("record {} where {e} was expected", r.index))),
                    Some(_) => {}
                }
                check_entry(&r).map_err(bad)?;
                expect = Some(r.index + 1);
                let record = Record { index: r.index, term: r.term, payload: r.payload };
                if !batch.is_empty() && bytes + record.stored_len() > room {
                    self.write(node, std::mem::take(&mut batch)).await?;
                    bytes = 0;
                }
                bytes += record.stored_len();
                batch.push(record);
            }
        }
        if !batch.is_empty() {
            self.write(node, batch).await?;
        }
        match expect {
            None => self.not_retained(node, from, through + 1, through).await,
            Some(e) if e != through + 1 => Err(bad(format!("the records stop at {}, before {through}", e - 1))),
            Some(_) => Ok(()),
        }
    }

    /// Records `from..first` are not retained by `node` (its retention deleted them): they
    /// are not copied, and local ones there, which nobody can vouch for, are discarded
    /// (with the rest of their segments, which the copy from `first` on replaces), unless
    /// a segment also holds records past `through`: then the records from `first` on, which
    /// the copy checks, vouch for the earlier ones of that segment.
    async fn not_retained(&self, node: NodeId, from: u64, first: u64, through: u64) -> Result<(), CopyError> {
        if first <= from {
            return Ok(());
        }
        tracing::info!(node = node.0, from, to = first, "log records no longer retained by the source; not copied");
        let log = &self.inner.log;
        let touched: Vec<(u64, u64)> =
            log.segment_ranges().into_iter().filter(|&(f, n)| f < n && f < first && n > from).collect();
        if touched.is_empty() || touched.iter().any(|&(_, n)| n > through + 1) {
            return Ok(());
        }
        let done = log.discard(from, first).await?;
        tracing::warn!(removed = ?done.removed, "discarded local log records no member retains any more");
        Ok(())
    }

    async fn write(&self, node: NodeId, batch: Vec<Record>) -> Result<(), CopyError> {
        let (lo, hi) = (batch[0].index, batch[batch.len() - 1].index);
        let done = self.inner.log.backfill(batch).await?;
        self.blocking(move |b| b.advance(hi + 1)).await?;
        tracing::info!(node = node.0, from = lo, to = hi, segments = done.written.len(), already_held = done.already_held,
            replaced = ?done.removed, "copied log records in");
        Ok(())
    }
}

/// The members to copy from, the leader first; never this node.
fn sources(raft: &Raft, me: NodeId) -> Vec<(NodeId, String)> {
    let metrics = raft.metrics().borrow_watched().clone();
    let leader = metrics.current_leader.filter(|&l| l != me);
    let mut out: Vec<(NodeId, String)> = metrics
        .membership_config
        .nodes()
        .filter(|(id, _)| **id != me)
        .map(|(id, info)| (*id, info.raft_addr.clone()))
        .collect();
    out.sort_by_key(|(id, _)| Some(*id) != leader);
    out
}

/// Checks that a record's payload is the log entry its header names.
fn check_entry(r: &raftmq_proto::raft::v1::LogRecord) -> Result<(), String> {
    let record = Record { index: r.index, term: r.term, payload: r.payload.clone() };
    let entry: Entry = raft_log::decode_entry::<TypeConfig>(&record, OLDEST_READ_ENTRY_VERSION..=ENTRY_VERSION)
        .map_err(|e| format!("record {}: {e}", r.index))?;
    let id = entry.log_id();
    if id.index() != r.index || id.committed_leader_id().term != r.term {
        return Err(format!("record {} (term {}) holds entry {id}", r.index, r.term));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use raft_log::LogConfig;

    use super::*;

    #[tokio::test]
    async fn installs_merge_into_a_durable_range_that_progress_shrinks_and_only_the_latest_copy_clears()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (log, _) = Log::open(
            &dir.path().join("log"),
            LogConfig { segment_size: 1 << 20, max_payload: 1 << 16, ..LogConfig::default() },
        )?;
        let state = dir.path().join("state");
        let b = Backfill::open(&state, log.clone())?;
        assert_eq!(b.pending(), None);
        b.note_install(Some(10), 50)?;
        assert_eq!(b.pending(), Some(Pending { from: 11, through: 50 }));
        assert_eq!(log.incomplete(), Some(11..51));
        let first = b.inner.tracked.lock().generation;

        // A restart finds the range and marks it again.
        log.set_incomplete(None);
        let reopened = Backfill::open(&state, log.clone())?;
        assert_eq!(reopened.pending(), Some(Pending { from: 11, through: 50 }));
        assert_eq!(log.incomplete(), Some(11..51));

        b.note_install(Some(60), 80)?;
        assert_eq!(b.pending(), Some(Pending { from: 11, through: 80 }), "a second install widens the range");
        b.note_install(Some(100), 90)?;
        assert_eq!(b.pending(), Some(Pending { from: 11, through: 80 }), "nothing to copy below what was applied");
        b.advance(30)?;
        assert_eq!(log.incomplete(), Some(30..81));
        assert!(!b.finish(first)?, "a copy of the first range must not clear the wider one");
        assert_eq!(Backfill::open(&state, log.clone())?.pending(), Some(Pending { from: 30, through: 80 }));
        let latest = b.inner.tracked.lock().generation;
        assert!(b.finish(latest)?);
        assert_eq!(log.incomplete(), None);
        assert_eq!(Backfill::open(&state, log)?.pending(), None);
        Ok(())
    }
}
