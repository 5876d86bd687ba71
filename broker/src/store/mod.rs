//! Derived, on-disk stores every node writes from the CommitLog (RocketMQ's dispatch): the
//! ConsumeQueue (queue offset → where the message is, its size, tag hash and store time),
//! the IndexFile (message key and id → where the message is) and the timer store (delay
//! messages waiting for their time). Nothing here is
//! replicated and nothing here is needed to apply the log: any node rebuilds them from its
//! CommitLog and its applied state ([`dispatch`]).

pub mod checkpoint;
pub mod consume_queue;
pub mod dispatch;
pub mod index_file;
pub mod timer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use raftmq_machine::plan::Fresh;
use raftmq_machine::types::TopicName;
use raftmq_machine::{LogIndex, Millis, QueueId, QueueOffset, Slot};
use tokio::sync::watch;

use crate::raft::ack::AckLogStore;
use crate::raft::state::StateStore;
pub use crate::settings::StoreConfig;

use self::consume_queue::{ConsumeQueues, CqConfig, CqError, QueueRecord};
use self::index_file::{Hit, IndexConfig, IndexError, IndexFiles, IndexKey};
use self::timer::{TimerError, TimerStore};

/// A derived store failed; the message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The ConsumeQueue.
    #[error(transparent)]
    ConsumeQueue(#[from] CqError),
    /// The IndexFile.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The timer store.
    #[error(transparent)]
    Timer(#[from] TimerError),
    /// The records asked for are not dispatched yet (the store is behind the log, or being
    /// rebuilt); retry shortly.
    #[error("the ConsumeQueue of this node is behind its log (dispatched up to {0}); retry shortly")]
    Behind(LogIndex),
}

/// The node's storage as the services read it: applied state, log, derived stores.
#[derive(Debug, Clone)]
pub struct Storage {
    /// The applied state.
    pub state: StateStore,
    /// The CommitLog (message bodies).
    pub log: AckLogStore,
    /// The derived stores (ConsumeQueue, IndexFile).
    pub stores: Stores,
}

/// The derived stores of one node; clones share them.
#[derive(Clone)]
pub struct Stores {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    config: StoreConfig,
    cq: ConsumeQueues,
    index: IndexFiles,
    timers: TimerStore,
    /// The last log index dispatched into the stores (readable, maybe not yet durable).
    dispatched: watch::Sender<LogIndex>,
    /// Set when a read found a store file damaged: dispatch rebuilds the stores.
    damaged: std::sync::atomic::AtomicBool,
    /// Whether the stores were closed; held shared by every dispatch write in progress,
    /// taken exclusively by [`Stores::close`].
    closed: parking_lot::RwLock<bool>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").field("dir", &self.inner.dir).field("dispatched", &self.dispatched()).finish()
    }
}

fn cq_config(dir: &Path, config: &StoreConfig) -> CqConfig {
    CqConfig { records_per_file: config.cq_records_per_file, ..CqConfig::new(dir.join("consumequeue")) }
}

fn index_config(dir: &Path, config: &StoreConfig) -> IndexConfig {
    IndexConfig {
        slot_count: config.index_slots,
        max_entries: config.index_entries,
        ..IndexConfig::new(dir.join("index"))
    }
}

impl Stores {
    /// Opens the stores under `dir`. A store that does not open (corrupt, torn beyond
    /// repair, another format version) is deleted and opened empty, and the fact is logged:
    /// dispatch then rebuilds it from the CommitLog. Returns whether that happened.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<(Stores, bool), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| {
            StoreError::ConsumeQueue(CqError::Io { op: "create directory", path: dir.to_path_buf(), source })
        })?;
        let mut reset = false;
        let cq = match ConsumeQueues::open(cq_config(dir, &config)) {
            Ok(cq) => cq,
            Err(e) => {
                tracing::warn!(error = %e, "the ConsumeQueue does not open; deleting it to rebuild it from the CommitLog");
                reset = true;
                remove_dir(&dir.join("consumequeue"))?;
                ConsumeQueues::open(cq_config(dir, &config))?
            }
        };
        let index = match IndexFiles::open(index_config(dir, &config)) {
            Ok(index) => index,
            Err(e) => {
                tracing::warn!(error = %e, "the IndexFile does not open; deleting it to rebuild it from the CommitLog");
                reset = true;
                IndexFiles::remove_all(&dir.join("index"))?;
                IndexFiles::open(index_config(dir, &config))?
            }
        };
        let timer_dir = dir.join("timer");
        let timers = match TimerStore::open(&timer_dir) {
            Ok(timers) => timers,
            Err(e) => {
                tracing::warn!(error = %e, "the timer store does not open; deleting it to rebuild it from the CommitLog");
                reset = true;
                remove_dir(&timer_dir)?;
                TimerStore::open(&timer_dir)?
            }
        };
        let (dispatched, _) = watch::channel(LogIndex(0));
        let damaged = std::sync::atomic::AtomicBool::new(false);
        let closed = parking_lot::RwLock::new(false);
        let inner = Inner { dir: dir.to_path_buf(), config, cq, index, timers, dispatched, damaged, closed };
        Ok((Stores { inner: Arc::new(inner) }, reset))
    }

    /// The directory of the stores.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The last log index dispatched (its records are readable).
    pub fn dispatched(&self) -> LogIndex {
        *self.inner.dispatched.borrow()
    }

    /// Follows dispatch progress.
    pub fn watch_dispatched(&self) -> watch::Receiver<LogIndex> {
        self.inner.dispatched.subscribe()
    }

    pub(crate) fn set_dispatched(&self, index: LogIndex) {
        self.inner.dispatched.send_replace(index);
    }

    /// Passes `result` through; a damaged file (or one of an older format) asks dispatch to
    /// rebuild the stores (a read never serves from it, and the node does not stop).
    fn checked<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result
            && matches!(
                e,
                StoreError::ConsumeQueue(CqError::Corrupt { .. } | CqError::UnsupportedVersion { .. })
                    | StoreError::Index(IndexError::Corrupt { .. })
                    | StoreError::Timer(TimerError::Corrupt { .. })
            )
        {
            tracing::warn!(error = %e, "a derived store file is damaged; rebuilding the stores from the CommitLog");
            self.inner.damaged.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        result
    }

    /// Whether a read found damage since the last call (dispatch rebuilds then).
    /// Runs `f` (a dispatch write) unless the stores were closed: then `None`, and `f`
    /// does not run (blocking).
    pub(crate) fn while_open<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let closed = self.inner.closed.read();
        if *closed {
            return None;
        }
        Some(f())
    }

    /// Waits for the dispatch writes in progress and refuses later ones: once it returns,
    /// nothing of this node writes the store files (a stopped node's dispatch task may
    /// have left a write running on a blocking thread). Blocking.
    pub fn close(&self) {
        *self.inner.closed.write() = true;
    }

    pub(crate) fn take_damaged(&self) -> bool {
        self.inner.damaged.swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// The ConsumeQueue.
    pub fn consume_queues(&self) -> &ConsumeQueues {
        &self.inner.cq
    }

    /// The IndexFile.
    pub fn index(&self) -> &IndexFiles {
        &self.inner.index
    }

    /// The timer store.
    pub fn timers(&self) -> &TimerStore {
        &self.inner.timers
    }

    /// Due delay timers at `now` (see [`TimerStore::due`]).
    pub fn due_timers(&self, now: Millis, limit: usize) -> Result<timer::Due, StoreError> {
        self.checked(self.inner.timers.due(now, limit).map_err(StoreError::from))
    }

    /// Deletes every store's files (before a rebuild).
    pub(crate) fn clear(&self) -> Result<(), StoreError> {
        for (topic, _) in self.inner.cq.queues()?.into_iter().collect::<std::collections::BTreeMap<_, _>>() {
            self.inner.cq.remove_topic(&topic)?;
        }
        self.inner.index.clear()?;
        self.inner.timers.clear()?;
        Ok(())
    }

    /// The record at `offset` of a queue (`None` below its first record or not dispatched).
    pub fn record(
        &self,
        topic: &TopicName,
        queue: QueueId,
        offset: QueueOffset,
    ) -> Result<Option<QueueRecord>, StoreError> {
        self.checked(self.inner.cq.read(topic.as_str(), queue, offset).map_err(StoreError::from))
    }

    /// The offset of message `slot` of log entry `log_index` in a queue, if the queue holds it.
    pub fn offset_of(
        &self,
        topic: &TopicName,
        queue: QueueId,
        log_index: LogIndex,
        slot: Slot,
    ) -> Result<Option<QueueOffset>, StoreError> {
        Ok(self.inner.cq.offset_of(topic.as_str(), queue, log_index, slot)?)
    }

    /// Records of a queue from `from` (raised to its first record) to `end` at most, in
    /// reads of at most [`consume_queue::MAX_READ_RANGE`] records.
    pub fn records(
        &self,
        topic: &TopicName,
        queue: QueueId,
        from: u64,
        end: u64,
    ) -> Result<Vec<(QueueOffset, QueueRecord)>, StoreError> {
        let mut out = Vec::new();
        let mut next = from;
        while next < end {
            let want = ((end - next) as usize).min(consume_queue::MAX_READ_RANGE);
            let got = self.checked(
                self.inner.cq.read_range(topic.as_str(), queue, QueueOffset(next), want).map_err(StoreError::from),
            )?;
            let Some(&(last, _)) = got.last() else { break };
            next = last.0 + 1;
            out.extend(got);
            if out.len() as u64 >= end - from {
                break;
            }
        }
        Ok(out)
    }

    /// Tag and message group hashes of a queue's offsets `from..end` as dispatched so far
    /// (fewer when dispatch is behind): what a pop plan reads.
    pub fn tags(&self, topic: &TopicName, queue: QueueId, from: u64, end: u64) -> Result<Vec<Fresh>, StoreError> {
        let records = self.records(topic, queue, from, end)?;
        // Only a contiguous run from `from` counts: a plan must not skip what it did not read.
        Ok(records
            .iter()
            .enumerate()
            .take_while(|(i, (offset, _))| offset.0 == from + *i as u64)
            .map(|(_, (_, r))| Fresh { tag: r.tag_hash, group: r.group_hash, at: Some((r.log_index, r.slot)) })
            .collect())
    }

    /// The first offset of a queue stored at or after `at` (its end if none).
    pub fn offset_at_time(&self, topic: &TopicName, queue: QueueId, at: Millis) -> Result<QueueOffset, StoreError> {
        self.checked(self.inner.cq.offset_at_time(topic.as_str(), queue, at).map_err(StoreError::from))
    }

    /// Positions of messages with this key or id stored in `begin..=end`, newest first.
    pub fn lookup(&self, key: IndexKey<'_>, begin: Millis, end: Millis) -> Result<Vec<Hit>, StoreError> {
        let mut hits = self.checked(self.inner.index.lookup(key, begin, end).map_err(StoreError::from))?;
        // Only what dispatch has published: an entry it is still writing may lack its
        // ConsumeQueue record.
        let dispatched = self.dispatched();
        hits.retain(|h| h.log_index <= dispatched);
        Ok(hits)
    }

    /// Bytes the stores take on disk: (ConsumeQueue, IndexFile, timers).
    pub fn disk_bytes(&self) -> Result<(u64, u64, u64), StoreError> {
        Ok((self.inner.cq.disk_bytes()?, self.inner.index.disk_bytes()?, self.inner.timers.disk_bytes()))
    }

    /// The configured sizes.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }
}

fn remove_dir(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => {
            Err(StoreError::ConsumeQueue(CqError::Io { op: "remove directory", path: path.to_path_buf(), source }))
        }
    }
}
