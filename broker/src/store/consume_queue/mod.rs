//! On-disk ConsumeQueue: per (topic, queue) fixed-width records mapping a queue offset to its CommitLog position.
//!
//! Layout: `<root>/<topic>/<queue id>/<first offset, 20 digits>.cq`. Each file is a 64-byte header followed by
//! `records_per_file` 48-byte record slots (format version 2, little endian; see [`FORMAT_VERSION`]). An all-zero
//! slot is "not written". Records are not fsynced per append: [`ConsumeQueues::sync`] makes every write since the
//! previous sync durable, and the broker calls it before it writes a state snapshot.
//!
//! All state sits behind one mutex: every call is serialised. Queues are opened lazily on first use and at most
//! `max_open_files` file handles are kept open (least recently used are closed; their unsynced writes stay in the
//! dirty set, so the next `sync` still covers them).
//!
//! Submodules: `format` (the byte layout of files and records), `store` (file handles and file I/O shared by all
//! queues) and `queue` (one queue's files and records). This file holds the public API.

use std::collections::hash_map::{Entry, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use raftmq_machine::ids::{LogIndex, Millis, QueueId, QueueOffset, Slot};

mod format;
mod queue;
mod store;
#[cfg(test)]
mod tests;

use format::parse_file_name;
use queue::QueueState;
use store::{Store, allocated_bytes, is_dir, list_dir};

/// Version of the on-disk format this module writes and reads.
pub const FORMAT_VERSION: u32 = 2;
/// Default number of record slots per file.
pub const DEFAULT_RECORDS_PER_FILE: u32 = 300_000;
/// Default bound on the number of file handles kept open across all queues.
pub const DEFAULT_MAX_OPEN_FILES: usize = 256;
/// The most records one [`ConsumeQueues::read_range`] call returns.
pub const MAX_READ_RANGE: usize = 1024;
/// The longest topic name accepted (it becomes a directory name).
pub const MAX_TOPIC_LEN: usize = 127;

/// Where one message of a queue lives in the CommitLog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueueRecord {
    /// Raft log index of the entry holding the message.
    pub log_index: LogIndex,
    /// Position of the message within that entry's batch.
    pub slot: Slot,
    /// Size of the message in bytes.
    pub size_bytes: u32,
    /// Hash of the message's tag, if it has one.
    pub tag_hash: Option<u64>,
    /// Hash of the message's message group (FIFO), if it has one.
    pub group_hash: Option<u64>,
    /// When the broker stored the message.
    pub store_time: Millis,
}

/// What went wrong in a consume queue operation.
#[derive(Debug, thiserror::Error)]
pub enum CqError {
    /// A file system operation failed.
    #[error("consume queue I/O error: could not {op} {}: {source}; check the disk, its free space and permissions", .path.display())]
    Io {
        /// The operation that failed, e.g. "open" or "write".
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The error the operating system reported.
        source: io::Error,
    },
    /// A file's contents are damaged or inconsistent.
    #[error("corrupt consume queue file {} at byte {byte_offset}: {reason}; the node rebuilds it from the CommitLog", .path.display())]
    Corrupt {
        /// The damaged file (or the queue directory, for a missing file).
        path: PathBuf,
        /// Byte offset of the damage within the file.
        byte_offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A file was written in a format version this build does not read.
    #[error("consume queue file {} has format version {found} but this build reads only version {supported}; run a build that reads it, or delete the queue so the node rebuilds it from the CommitLog", .path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found in its header.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The caller asked for something the consume queue cannot do (a caller bug or bad configuration).
    #[error("invalid consume queue request: {0}")]
    Invalid(String),
}

/// Configuration of [`ConsumeQueues`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CqConfig {
    /// Directory holding one sub-directory per topic. Must not be empty.
    pub root: PathBuf,
    /// Record slots per file; must match the value existing files were written with.
    pub records_per_file: u32,
    /// Most file handles kept open at once across all queues (at least 1).
    pub max_open_files: usize,
}

impl CqConfig {
    /// A configuration with the default limits, storing under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), ..Self::default() }
    }
}

impl Default for CqConfig {
    /// Default limits and an empty `root`, which must be set before [`ConsumeQueues::open`].
    fn default() -> Self {
        Self {
            root: PathBuf::new(),
            records_per_file: DEFAULT_RECORDS_PER_FILE,
            max_open_files: DEFAULT_MAX_OPEN_FILES,
        }
    }
}

/// All consume queues stored under one root directory. `Send + Sync`; every call is serialised internally.
#[derive(Debug)]
pub struct ConsumeQueues {
    root: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    topics: HashMap<String, HashMap<QueueId, QueueState>>,
    store: Store,
}

impl ConsumeQueues {
    /// Opens (creating if needed) the store under `config.root`. Queues are opened lazily on first use.
    pub fn open(config: CqConfig) -> Result<Self, CqError> {
        if config.root.as_os_str().is_empty() {
            return Err(CqError::Invalid("CqConfig::root is empty; set it to the consume queue directory".into()));
        }
        if config.records_per_file == 0 || config.max_open_files == 0 {
            return Err(CqError::Invalid(format!(
                "records_per_file ({}) and max_open_files ({}) must both be at least 1",
                config.records_per_file, config.max_open_files
            )));
        }
        fs::create_dir_all(&config.root).map_err(io_err("create directory", &config.root))?;
        let store = Store::new(config.root.clone(), config.records_per_file, config.max_open_files);
        Ok(Self { root: config.root, inner: Mutex::new(Inner { topics: HashMap::new(), store }) })
    }

    /// Appends `rec` at `offset`, which must be the queue's end (next unwritten offset). An offset in
    /// `[min, end)` already holding an identical record is accepted as a no-op; anything else is `Invalid`.
    /// The first append to a queue without files may be at any offset and defines the queue's minimum.
    pub fn append(&self, topic: &str, queue: QueueId, offset: QueueOffset, rec: &QueueRecord) -> Result<(), CqError> {
        self.with_queue(topic, queue, true, |s, q| q.append(s, (topic, queue), offset.0, rec))
    }

    /// Appends consecutive records from `offset` (as [`Self::append`] each, written with one
    /// write per file when they go at the queue's end).
    pub fn append_all(
        &self,
        topic: &str,
        queue: QueueId,
        offset: QueueOffset,
        recs: &[QueueRecord],
    ) -> Result<(), CqError> {
        self.with_queue(topic, queue, true, |s, q| q.append_all(s, (topic, queue), offset.0, recs))
    }

    /// The record at `offset`, or `None` if it is below the queue's minimum or at/after its end.
    pub fn read(&self, topic: &str, queue: QueueId, offset: QueueOffset) -> Result<Option<QueueRecord>, CqError> {
        self.with_queue(topic, queue, false, |s, q| q.read(s, offset.0))
    }

    /// Up to `max` (capped at [`MAX_READ_RANGE`]) contiguous records starting at `from` (raised to the queue's
    /// minimum), reading each file's span with one read.
    pub fn read_range(
        &self,
        topic: &str,
        queue: QueueId,
        from: QueueOffset,
        max: usize,
    ) -> Result<Vec<(QueueOffset, QueueRecord)>, CqError> {
        self.with_queue(topic, queue, false, |s, q| q.read_range(s, from.0, max.min(MAX_READ_RANGE)))
    }

    /// `(min, end)` of the queue, or `None` if it holds no records.
    pub fn bounds(&self, topic: &str, queue: QueueId) -> Result<Option<(QueueOffset, QueueOffset)>, CqError> {
        self.with_queue(topic, queue, false, |_, q| {
            Ok(q.bounds().map(|(min, end)| (QueueOffset(min), QueueOffset(end))))
        })
    }

    /// The log index of the queue's last record (at `end - 1`), or `None` if it holds no records (as for
    /// [`Self::bounds`]).
    pub fn end_log_index(&self, topic: &str, queue: QueueId) -> Result<Option<LogIndex>, CqError> {
        self.with_queue(topic, queue, false, |s, q| {
            let Some((_, end)) = q.bounds() else { return Ok(None) };
            Ok(q.read(s, end - 1)?.map(|rec| rec.log_index))
        })
    }

    /// The offset of the record of message `slot` of log entry `log_index`, or `None` if the queue does not hold
    /// it. Binary search: records are in (log index, slot) order along a queue.
    pub fn offset_of(
        &self,
        topic: &str,
        queue: QueueId,
        log_index: LogIndex,
        slot: Slot,
    ) -> Result<Option<QueueOffset>, CqError> {
        self.with_queue(topic, queue, false, |s, q| {
            let at = q.partition_point(s, |rec| (rec.log_index, rec.slot) >= (log_index, slot))?;
            let found = q.read(s, at)?.is_some_and(|rec| (rec.log_index, rec.slot) == (log_index, slot));
            Ok(found.then_some(QueueOffset(at)))
        })
    }

    /// The first offset whose store time is `>= t`, or the queue's end if there is none. Binary search: store
    /// times are non-decreasing along a queue. For a queue without records this is its last known end.
    pub fn offset_at_time(&self, topic: &str, queue: QueueId, t: Millis) -> Result<QueueOffset, CqError> {
        self.with_queue(topic, queue, false, |s, q| q.partition_point(s, |rec| rec.store_time >= t).map(QueueOffset))
    }

    /// Drops the records at offsets `>= end`: deletes whole files starting at or after `end` and zeroes the rest.
    /// A no-op if `end` is at or after the queue's end. Truncating to or below the minimum removes every file,
    /// after which the next append may be at any offset.
    pub fn truncate_to(&self, topic: &str, queue: QueueId, end: QueueOffset) -> Result<(), CqError> {
        self.with_queue(topic, queue, true, |s, q| q.truncate_to(s, end.0).map(drop))
    }

    /// Drops, in every queue on disk, the records of log entries after `last` (records are in log-index order
    /// along a queue, so they form a tail); returns how many records were dropped.
    ///
    /// For restart: the dispatcher persists "every entry up to log index `last` is durably in the consume queues",
    /// and records written for later entries may be partial; they are appended again. Each queue's cut is found by
    /// a binary search over `[min, end)` and applied as by [`Self::truncate_to`] (so a queue whose every record is
    /// after `last` loses all its files). Queues are processed one by one: after an error, the queues before the
    /// failing one are already truncated, and calling again is safe.
    pub fn truncate_after_log_index(&self, last: LogIndex) -> Result<u64, CqError> {
        let mut dropped = 0;
        for (topic, queue) in self.queues()? {
            dropped += self.with_queue(&topic, queue, true, |s, q| {
                let cut = q.partition_point(s, |rec| rec.log_index > last)?;
                q.truncate_to(s, cut)
            })?;
        }
        Ok(dropped)
    }

    /// Deletes the whole files whose offsets are all below `min` and returns the bytes freed. The queue's minimum
    /// becomes `min` (at most its end); records below it in the remaining first file are kept on disk but not
    /// served. After a restart the minimum is again the first record of the first file.
    pub fn delete_below(&self, topic: &str, queue: QueueId, min: QueueOffset) -> Result<u64, CqError> {
        self.with_queue(topic, queue, true, |s, q| q.delete_below(s, min.0))
    }

    /// Deletes the queue's directory (e.g. before rebuilding it from the CommitLog).
    pub fn remove_queue(&self, topic: &str, queue: QueueId) -> Result<(), CqError> {
        self.remove_dir(topic, Some(queue))
    }

    /// Deletes the topic's directory with all its queues.
    pub fn remove_topic(&self, topic: &str) -> Result<(), CqError> {
        self.remove_dir(topic, None)
    }

    /// The queues that have a directory on disk, sorted. Entries that are not topic or queue directories are ignored.
    pub fn queues(&self) -> Result<Vec<(String, QueueId)>, CqError> {
        let mut out = Vec::new();
        for (topic, topic_dir) in list_dir(&self.root)? {
            if validate_topic(&topic).is_err() || !is_dir(&topic_dir) {
                continue;
            }
            for (name, queue_dir) in list_dir(&topic_dir)? {
                match name.parse::<u32>() {
                    Ok(id) if id.to_string() == name && is_dir(&queue_dir) => out.push((topic.clone(), QueueId(id))),
                    _ => tracing::debug!(path = %queue_dir.display(), "ignoring entry that is not a queue directory"),
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Makes every write since the previous sync durable: fdatasync of each file written (even if its handle was
    /// closed since) and fsync of each directory whose entries changed. After an error the store must be treated as
    /// failed (the kernel may have dropped the unsynced pages).
    pub fn sync(&self) -> Result<(), CqError> {
        self.lock()?.store.sync()
    }

    /// Bytes allocated on disk (`st_blocks * 512`) by all consume queue files.
    pub fn disk_bytes(&self) -> Result<u64, CqError> {
        let mut total = 0;
        for (_, topic_dir) in list_dir(&self.root)? {
            for (_, queue_dir) in list_dir(&topic_dir)? {
                for (name, path) in list_dir(&queue_dir)? {
                    if parse_file_name(&name).is_some() {
                        total += allocated_bytes(&path)?;
                    }
                }
            }
        }
        Ok(total)
    }

    #[cfg(test)]
    fn open_handles(&self) -> usize {
        self.inner.lock().map(|g| g.store.open_handles()).unwrap_or(usize::MAX)
    }

    /// Forgets and deletes a queue's directory, or a topic's if `queue` is `None`.
    fn remove_dir(&self, topic: &str, queue: Option<QueueId>) -> Result<(), CqError> {
        validate_topic(topic)?;
        let mut guard = self.lock()?;
        let Inner { topics, store } = &mut *guard;
        let dir = match queue {
            Some(queue) => {
                topics.get_mut(topic).map(|queues| queues.remove(&queue));
                store.queue_dir(topic, queue)
            }
            None => {
                topics.remove(topic);
                store.root.join(topic)
            }
        };
        store.delete_dir(&dir)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, CqError> {
        let poisoned = "an earlier consume queue operation panicked; its state is unknown, restart the node";
        self.inner.lock().map_err(|_| CqError::Invalid(poisoned.into()))
    }

    /// Runs `f` on the queue's state, loading it from disk first if needed. After a failed mutation (other than an
    /// `Invalid` request) the in-memory state is dropped so the next call reloads it from disk.
    fn with_queue<R>(
        &self,
        topic: &str,
        queue: QueueId,
        mutating: bool,
        f: impl FnOnce(&mut Store, &mut QueueState) -> Result<R, CqError>,
    ) -> Result<R, CqError> {
        validate_topic(topic)?;
        let mut guard = self.lock()?;
        let Inner { topics, store } = &mut *guard;
        let queues = topics.entry(topic.to_owned()).or_default();
        let state = match queues.entry(queue) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(QueueState::load(store, store.queue_dir(topic, queue))?),
        };
        let result = f(store, state);
        if mutating && matches!(&result, Err(e) if !matches!(e, CqError::Invalid(_))) {
            queues.remove(&queue);
        }
        result
    }
}

fn validate_topic(topic: &str) -> Result<(), CqError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '_' | '-');
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN || !topic.chars().all(ok_char) {
        return Err(CqError::Invalid(format!(
            "topic name {topic:?} must be 1 to {MAX_TOPIC_LEN} characters of [%|a-zA-Z0-9_-]"
        )));
    }
    Ok(())
}

fn corrupt(path: &Path, byte_offset: u64, reason: impl Into<String>) -> CqError {
    CqError::Corrupt { path: path.to_path_buf(), byte_offset, reason: reason.into() }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CqError + 'a {
    move |source| CqError::Io { op, path: path.to_path_buf(), source }
}

/// A short read means the file is shorter than its records_per_file says: corrupt, not an I/O failure.
fn read_err(path: &Path, at: u64) -> impl FnOnce(io::Error) -> CqError + '_ {
    move |source| match source.kind() {
        io::ErrorKind::UnexpectedEof => corrupt(path, at, "file ends before this read"),
        _ => CqError::Io { op: "read", path: path.to_path_buf(), source },
    }
}
