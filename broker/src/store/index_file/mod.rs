//! On-disk hash index (like RocketMQ's IndexFile) from message keys and ids to their CommitLog position and store time.
//!
//! Files live in `<root>/<first log index, 20 digits>.idx`, each a header, a table of bucket heads and entries
//! chained newest-first per bucket (byte layout in `format.rs`). This module holds the public types and
//! [`IndexFiles`], which keeps the directory's list of files; `file.rs` reads and writes one file.

mod file;
mod format;

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use self::file::{Query, Segment};
use self::format::{Entry, Header, KIND_ID, KIND_KEY, key_hash};
use raftmq_machine::ids::{LogIndex, Millis, Slot};

/// Version of the on-disk format that this module writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Longest accepted message key or message id, in bytes.
pub const MAX_KEY_LEN: usize = 128;

/// Most read-only file handles kept open for lookups in older files.
const READ_HANDLES: usize = 64;

/// What a lookup or an add is about: a message id, or one of a message's keys. The same text as an id and as a key
/// are different index keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexKey<'a> {
    /// A message id.
    Id(&'a str),
    /// One of a message's keys.
    Key(&'a str),
}

impl IndexKey<'_> {
    /// Kind byte and key bytes, after checking the length.
    fn parts(&self) -> Result<(u8, &[u8]), IndexError> {
        let (kind, text) = match *self {
            IndexKey::Id(s) => (KIND_ID, s),
            IndexKey::Key(s) => (KIND_KEY, s),
        };
        if text.is_empty() || text.len() > MAX_KEY_LEN {
            return Err(IndexError::Invalid(format!(
                "index key {self:?} is {} bytes; keys and ids must be 1 to {MAX_KEY_LEN} bytes",
                text.len()
            )));
        }
        Ok((kind, text.as_bytes()))
    }
}

/// A candidate position of a message carrying the looked-up key. Hash collisions are possible: the caller reads the
/// message from the CommitLog and checks the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hit {
    /// Raft log index of the entry holding the message.
    pub log_index: LogIndex,
    /// Position of the message in that entry's batch.
    pub slot: Slot,
    /// Store time of the message.
    pub store_time: Millis,
}

/// Errors of the index. Every message says what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A file system call failed.
    #[error("index I/O error while {op} {path}: {source}; check the disk and the directory's permissions")]
    Io {
        /// What was being done, e.g. "reading".
        op: &'static str,
        /// File or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file's contents are damaged.
    #[error(
        "corrupt index file {path} at byte {byte_offset}: {reason}; the node rebuilds its index from the CommitLog"
    )]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Offset of the damaged header, slot or entry (or the file's length if it is too short).
        byte_offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A file was written in a format version this build does not read.
    #[error(
        "index file {path} has format version {found} but this build reads version {supported}; \
         run a build that reads it, or delete the index so the node rebuilds it from the CommitLog"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version found in its header.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The caller asked for something the index does not allow (a bug in the caller or a bad configuration).
    #[error("invalid index request: {0}")]
    Invalid(String),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IndexError + 'a {
    move |source| IndexError::Io { op, path: path.to_path_buf(), source }
}

fn corrupt(path: &Path, byte_offset: u64, reason: impl Into<String>) -> IndexError {
    IndexError::Corrupt { path: path.to_path_buf(), byte_offset, reason: reason.into() }
}

/// Configuration of an index directory. New files take `slot_count` and `max_entries` from here; existing files
/// keep the geometry written in their header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexConfig {
    /// Directory holding the index files.
    pub root: PathBuf,
    /// Buckets per file (default 1,000,000).
    pub slot_count: u32,
    /// Entries per file (default 4,000,000; about 164 MB per file, allocated as written).
    pub max_entries: u32,
    /// Most hits one lookup returns (default 64).
    pub max_results: usize,
}

impl IndexConfig {
    /// Configuration with the default sizes for an index in `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), slot_count: 1_000_000, max_entries: 4_000_000, max_results: 64 }
    }
}

/// Read-write handle of the newest file.
#[derive(Debug)]
struct Writer {
    file: Arc<File>,
    /// Written since the last sync.
    dirty: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Oldest first.
    segments: Vec<Segment>,
    /// Handle of `segments.last()`, if one is open.
    writer: Option<Writer>,
    /// Log index and store time of the newest entry.
    last: Option<(LogIndex, Millis)>,
    /// Older files written since the last sync.
    unsynced: Vec<PathBuf>,
    /// Files were created or deleted since the last sync.
    dir_dirty: bool,
}

/// Small LRU of read-only handles to older files, keyed by first log index.
#[derive(Debug, Default)]
struct ReadHandles(VecDeque<(u64, Arc<File>)>);

impl ReadHandles {
    fn get(&mut self, seg: &Segment) -> Result<Arc<File>, IndexError> {
        let key = seg.header.first_log_index;
        if let Some(i) = self.0.iter().position(|(k, _)| *k == key)
            && let Some(item) = self.0.remove(i)
        {
            let file = item.1.clone();
            self.0.push_front(item);
            return Ok(file);
        }
        let file = Arc::new(File::open(&seg.path).map_err(io_err("opening", &seg.path))?);
        self.0.push_front((key, file.clone()));
        self.0.truncate(READ_HANDLES);
        Ok(file)
    }

    fn forget(&mut self, first: u64) {
        self.0.retain(|(k, _)| *k != first);
    }
}

/// An entry for [`IndexFiles::add_all`]: a key, checked and hashed, and where its message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewEntry {
    key_hash: u64,
    kind: u8,
    log_index: LogIndex,
    slot: Slot,
    store_time: Millis,
}

impl NewEntry {
    /// The entry of `key` for the message at (`log_index`, `slot`) stored at `store_time`; `Invalid` for an
    /// empty key or one over 128 bytes.
    pub fn new(key: IndexKey<'_>, log_index: LogIndex, slot: Slot, store_time: Millis) -> Result<NewEntry, IndexError> {
        let (kind, bytes) = key.parts()?;
        Ok(NewEntry { key_hash: key_hash(kind, bytes), kind, log_index, slot, store_time })
    }
}

/// The index files of one directory. `Send + Sync`: lookups share a read lock, changes take the write lock.
/// At most the newest file is open for writing, plus up to 64 read-only handles to older files.
#[derive(Debug)]
pub struct IndexFiles {
    config: IndexConfig,
    state: RwLock<State>,
    readers: Mutex<ReadHandles>,
}

impl IndexFiles {
    /// Opens (creating it if needed) the index in `config.root`, checking every file's header without reading
    /// entries. Files whose header was never written are deleted.
    pub fn open(config: IndexConfig) -> Result<Self, IndexError> {
        if config.slot_count == 0 || config.max_entries == 0 || config.max_results == 0 {
            return Err(IndexError::Invalid(format!(
                "slot_count, max_entries and max_results must be positive, got {config:?}"
            )));
        }
        let root = &config.root;
        fs::create_dir_all(root).map_err(io_err("creating directory", root))?;
        let mut files = Vec::new();
        for item in fs::read_dir(root).map_err(io_err("listing", root))? {
            let item = item.map_err(io_err("listing", root))?;
            if let Some(first) = item.file_name().to_str().and_then(file::parse_file_name) {
                files.push((first, item.path()));
            }
        }
        files.sort();
        let mut state = State::default();
        for (first, path) in files {
            let header = match file::load_header(&path)? {
                Some(h) if h.entry_count > 0 => h,
                _ => {
                    tracing::warn!(path = %path.display(), "deleting index file that holds no entries");
                    file::remove(&path)?;
                    state.dir_dirty = true;
                    continue;
                }
            };
            if header.first_log_index != first {
                let reason =
                    format!("header says first log index {} but the name says {first}", header.first_log_index);
                return Err(corrupt(&path, 24, reason));
            }
            if let Some(prev) = state.segments.last()
                && prev.header.last_log_index > first
            {
                let reason = format!(
                    "starts at log index {first}, before {} ends ({})",
                    prev.path.display(),
                    prev.header.last_log_index
                );
                return Err(corrupt(&path, 24, reason));
            }
            state.segments.push(Segment { path, header });
        }
        if let Some(seg) = state.segments.last() {
            state.writer = Some(Writer { file: Arc::new(file::open_rw(&seg.path)?), dirty: false });
            state.last = Some((LogIndex(seg.header.last_log_index), Millis(seg.header.end_time)));
        }
        tracing::debug!(root = %root.display(), files = state.segments.len(), "opened index");
        Ok(Self { config, state: RwLock::new(state), readers: Mutex::new(ReadHandles::default()) })
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn readers(&self) -> MutexGuard<'_, ReadHandles> {
        self.readers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Indexes `key` for the message at (`log_index`, `slot`) stored at `store_time`. Log indexes and store times
    /// must not go backwards (lookups rely on store times to stop early); both are `Invalid` otherwise, as are
    /// empty keys and keys over 128 bytes. Nothing is synced: call [`IndexFiles::sync`] before a snapshot.
    pub fn add(
        &self,
        key: IndexKey<'_>,
        log_index: LogIndex,
        slot: Slot,
        store_time: Millis,
    ) -> Result<(), IndexError> {
        self.add_all(&[NewEntry::new(key, log_index, slot, store_time)?])
    }

    /// Adds `entries` in order, as [`IndexFiles::add`] each, writing the header of the file they went into once
    /// at the end. Stops at the first one refused; those before it stay added.
    pub fn add_all(&self, entries: &[NewEntry]) -> Result<(), IndexError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut guard = self.write();
        let st = &mut *guard;
        let mut staged = file::Staged::default();
        let mut result = Ok(());
        for e in entries {
            result = self.add_one(st, e, &mut staged);
            if result.is_err() {
                break;
            }
        }
        let written = Self::write_staged(st, &mut staged);
        result.and(written)
    }

    /// Writes what is staged for the last file: entries, bucket heads, header.
    fn write_staged(st: &mut State, staged: &mut file::Staged) -> Result<(), IndexError> {
        match (st.segments.last(), st.writer.as_ref()) {
            (Some(seg), Some(writer)) => file::write_staged(&writer.file, seg, staged),
            _ => Ok(()),
        }
    }

    fn add_one(&self, st: &mut State, e: &NewEntry, staged: &mut file::Staged) -> Result<(), IndexError> {
        let NewEntry { key_hash, kind, log_index, slot, store_time } = *e;
        if let Some((last_index, last_time)) = st.last {
            if log_index < last_index {
                return Err(IndexError::Invalid(format!(
                    "log index {log_index} is before the last indexed log index {last_index}; add in log order, \
                     or call truncate_after before re-adding"
                )));
            }
            if store_time < last_time {
                return Err(IndexError::Invalid(format!(
                    "store time {} ms of log index {log_index} is before the last indexed store time {} ms; \
                     store times must not go backwards",
                    store_time.0, last_time.0
                )));
            }
        }
        if st.writer.is_none() || st.segments.last().is_none_or(|s| s.header.is_full()) {
            Self::write_staged(st, staged)?;
            self.start_file(st, log_index)?;
        }
        let (Some(seg), Some(writer)) = (st.segments.last_mut(), st.writer.as_mut()) else {
            return Err(IndexError::Invalid("no writable index file after creating one".into()));
        };
        let entry = Entry { key_hash, log_index: log_index.0, store_time: store_time.0, slot: slot.0, prev: 0, kind };
        file::stage(&writer.file, seg, entry, staged)?;
        writer.dirty = true;
        st.last = Some((log_index, store_time));
        Ok(())
    }

    /// Creates the file that starts at `log_index` and makes it the writable one.
    fn start_file(&self, st: &mut State, log_index: LogIndex) -> Result<(), IndexError> {
        if let Some(seg) = st.segments.last()
            && seg.header.first_log_index == log_index.0
        {
            return Err(IndexError::Invalid(format!(
                "log index {log_index} has more than {} index entries, which do not fit in one index file; \
                 raise max_entries",
                seg.header.max_entries
            )));
        }
        let path = self.config.root.join(file::file_name(log_index.0));
        let header = Header {
            slot_count: self.config.slot_count,
            max_entries: self.config.max_entries,
            entry_count: 0,
            first_log_index: log_index.0,
            last_log_index: log_index.0,
            begin_time: 0,
            end_time: 0,
        };
        let file = file::create(&path, &header)?;
        tracing::info!(path = %path.display(), "started index file");
        if let (Some(old), Some(seg)) = (st.writer.take(), st.segments.last())
            && old.dirty
        {
            st.unsynced.push(seg.path.clone());
        }
        st.dir_dirty = true;
        st.segments.push(Segment { path, header });
        st.writer = Some(Writer { file: Arc::new(file), dirty: true });
        Ok(())
    }

    /// Candidate positions of messages indexed under `key` with a store time in `[begin, end]`, newest first,
    /// distinct by (log index, slot), at most `max_results`. Only files whose time range overlaps are read.
    pub fn lookup(&self, key: IndexKey<'_>, begin: Millis, end: Millis) -> Result<Vec<Hit>, IndexError> {
        let (kind, bytes) = key.parts()?;
        let q = Query { hash: key_hash(kind, bytes), kind, begin: begin.0, end: end.0, max: self.config.max_results };
        let st = self.read();
        let mut hits = Vec::new();
        let mut seen = HashSet::new();
        for (i, seg) in st.segments.iter().enumerate().rev() {
            if hits.len() >= q.max {
                break;
            }
            if !seg.header.overlaps(begin.0, end.0) {
                continue;
            }
            let file = match &st.writer {
                Some(w) if i + 1 == st.segments.len() => w.file.clone(),
                _ => self.readers().get(seg)?,
            };
            file::walk_chain(&file, seg, &q, &mut hits, &mut seen)?;
        }
        Ok(hits)
    }

    /// Removes every entry with a log index above `log_index`: newer files are deleted, and the new last file is
    /// cut back (bucket heads restored, removed entries zeroed, header fixed). The last file is also repaired when
    /// a crash left unsynced entries or bucket heads past its header's count, so call this on every restart.
    pub fn truncate_after(&self, log_index: LogIndex) -> Result<(), IndexError> {
        let mut guard = self.write();
        let st = &mut *guard;
        while let Some(seg) = st.segments.last() {
            if seg.header.first_log_index <= log_index.0 && seg.header.entry_count > 0 {
                if st.writer.is_none() {
                    st.writer = Some(Writer { file: Arc::new(file::open_rw(&seg.path)?), dirty: false });
                }
                let (Some(seg), Some(writer)) = (st.segments.last_mut(), st.writer.as_mut()) else { break };
                let before = seg.header;
                let kept = file::truncate_file(&writer.file, &seg.path, &mut seg.header, log_index.0)?;
                writer.dirty |= kept > 0;
                if kept > 0 {
                    if seg.header != before {
                        tracing::info!(path = %seg.path.display(), kept, removed = before.entry_count - kept,
                            "truncated index file");
                    }
                    break;
                }
            }
            self.delete_file(st, st.segments.len() - 1)?;
        }
        st.last = st.segments.last().map(|s| (LogIndex(s.header.last_log_index), Millis(s.header.end_time)));
        Ok(())
    }

    /// Deletes the file of `st.segments[i]` and forgets it; returns the bytes it took on disk.
    fn delete_file(&self, st: &mut State, i: usize) -> Result<u64, IndexError> {
        let Some(seg) = st.segments.get(i) else { return Ok(0) };
        let bytes = file::allocated_bytes(&seg.path)?;
        file::remove(&seg.path)?;
        tracing::info!(path = %seg.path.display(), bytes, "deleted index file");
        self.readers().forget(seg.header.first_log_index);
        st.unsynced.retain(|p| *p != seg.path);
        st.dir_dirty = true;
        if i + 1 == st.segments.len() {
            st.writer = None;
        }
        st.segments.remove(i);
        Ok(bytes)
    }

    /// Deletes the oldest files whose newest log index is below `log_index`, never the newest file. Returns the
    /// bytes they took on disk.
    pub fn delete_before(&self, log_index: LogIndex) -> Result<u64, IndexError> {
        let mut guard = self.write();
        let st = &mut *guard;
        let mut freed = 0;
        while st.segments.len() > 1 && st.segments[0].header.last_log_index < log_index.0 {
            freed += self.delete_file(st, 0)?;
        }
        Ok(freed)
    }

    /// Log index of the newest entry, if any.
    pub fn last_log_index(&self) -> Option<LogIndex> {
        self.read().last.map(|(index, _)| index)
    }

    /// Makes every add so far durable: fdatasyncs the files written since the last sync, and the directory if files
    /// were created or deleted.
    pub fn sync(&self) -> Result<(), IndexError> {
        let (writer, mut paths, dir) = {
            let mut guard = self.write();
            let st = &mut *guard;
            let writer = match (st.writer.as_mut(), st.segments.last()) {
                (Some(w), Some(seg)) if w.dirty => {
                    file::write_at(&w.file, &seg.path, 0, &seg.header.encode())?;
                    w.dirty = false;
                    Some((w.file.clone(), seg.path.clone()))
                }
                _ => None,
            };
            (writer, std::mem::take(&mut st.unsynced), std::mem::take(&mut st.dir_dirty))
        };
        let result = self.sync_files(writer.as_ref(), &paths, dir);
        if result.is_err() {
            let mut st = self.write();
            paths.extend(writer.map(|(_, path)| path));
            st.unsynced.extend(paths);
            st.dir_dirty |= dir;
        }
        result
    }

    fn sync_files(
        &self,
        writer: Option<&(Arc<File>, PathBuf)>,
        paths: &[PathBuf],
        dir: bool,
    ) -> Result<(), IndexError> {
        if let Some((file, path)) = writer {
            file.sync_data().map_err(io_err("syncing", path))?;
        }
        for path in paths {
            match File::open(path) {
                Ok(file) => file.sync_data().map_err(io_err("syncing", path))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("opening", path)(e)),
            }
        }
        if dir {
            file::sync_dir(&self.config.root)?;
        }
        Ok(())
    }

    /// Bytes the index files take on disk (allocated blocks; files are sparse until written).
    pub fn disk_bytes(&self) -> Result<u64, IndexError> {
        self.read().segments.iter().map(|s| file::allocated_bytes(&s.path)).sum()
    }

    /// Deletes every index file, e.g. before rebuilding the index from the CommitLog.
    pub fn clear(&self) -> Result<(), IndexError> {
        let mut st = self.write();
        *st = State::default();
        self.readers().0.clear();
        Self::remove_all(&self.config.root)
    }

    /// Deletes every index file in `root` without opening them (for an index that [`IndexFiles::open`] rejected),
    /// and syncs the directory.
    pub fn remove_all(root: &Path) -> Result<(), IndexError> {
        let listing = match fs::read_dir(root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => other.map_err(io_err("listing", root))?,
        };
        for item in listing {
            let item = item.map_err(io_err("listing", root))?;
            if item.file_name().to_str().and_then(file::parse_file_name).is_some() {
                file::remove(&item.path())?;
            }
        }
        tracing::info!(root = %root.display(), "deleted every index file");
        file::sync_dir(root)
    }
}

#[cfg(test)]
mod tests;
