//! File handles and file I/O shared by all queues: a least-recently-used bound on open files, slot reads and
//! writes, file creation and deletion, and the sets of written files and changed directories that `sync` makes
//! durable. Knows file geometry but nothing of a queue's bounds.

use std::collections::hash_map::HashMap;
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::format::{HEADER_LEN, RECORD_LEN, RECORD_LEN_U64, check_header, encode_header, encode_record};
use super::format::{file_path, slot_byte};
use super::{CqError, QueueRecord, corrupt, io_err, read_err};
use raftmq_machine::ids::QueueId;

/// Record slots read, checked or zeroed per system call when a whole file is scanned.
pub(super) const SCAN_CHUNK: u64 = 1024;

/// File handles, dirty sets and geometry shared by all queues.
#[derive(Debug)]
pub(super) struct Store {
    pub(super) root: PathBuf,
    /// Record slots per file.
    pub(super) rpf: u64,
    cache: FileCache,
    /// Files written since the last sync (their handles may have been closed since).
    pub(super) dirty_files: HashSet<PathBuf>,
    /// Directories whose entries changed since the last sync.
    dirty_dirs: HashSet<PathBuf>,
}

impl Store {
    /// A store under `root` (which exists but whose creation is not yet durable).
    pub(super) fn new(root: PathBuf, records_per_file: u32, max_open_files: usize) -> Self {
        let cache = FileCache { max: max_open_files, tick: 0, open: HashMap::new(), order: BTreeMap::new() };
        let dirty_dirs = HashSet::from([root.clone()]);
        Self { root, rpf: u64::from(records_per_file), cache, dirty_files: HashSet::new(), dirty_dirs }
    }

    pub(super) fn queue_dir(&self, topic: &str, queue: QueueId) -> PathBuf {
        self.root.join(topic).join(queue.0.to_string())
    }

    pub(super) fn file_start(&self, offset: u64) -> u64 {
        offset - offset % self.rpf
    }

    /// Largest offset accepted, so that `file start + 2 * records_per_file` never overflows.
    pub(super) fn max_offset(&self) -> u64 {
        u64::MAX - 2 * self.rpf
    }

    fn file_len(&self) -> u64 {
        HEADER_LEN + self.rpf * RECORD_LEN_U64
    }

    /// The open handle of an existing file, opening it (and checking its header) if needed.
    pub(super) fn file(&mut self, path: &Path, start: u64) -> Result<&File, CqError> {
        let (rpf, len) = (self.rpf, self.file_len());
        self.cache.get_or_open(path, || open_checked(path, start, rpf, len))
    }

    pub(super) fn create_queue_dir(&mut self, dir: &Path) -> Result<(), CqError> {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        for d in dir.ancestors().take(3) {
            self.dirty_dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    /// Creates the (sparse) file starting at `start`, replacing any stale file of that name.
    pub(super) fn create_file(&mut self, dir: &Path, start: u64) -> Result<(), CqError> {
        let path = file_path(dir, start);
        self.cache.remove(&path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        file.set_len(self.file_len()).map_err(io_err("set the length of", &path))?;
        file.write_all_at(&encode_header(start, self.rpf), 0).map_err(io_err("write the header of", &path))?;
        self.cache.get_or_open(&path, || Ok(file))?;
        self.dirty_files.insert(path);
        self.dirty_dirs.insert(dir.to_path_buf());
        Ok(())
    }

    pub(super) fn write_record(&mut self, dir: &Path, offset: u64, rec: &QueueRecord) -> Result<(), CqError> {
        let start = self.file_start(offset);
        let path = file_path(dir, start);
        self.file(&path, start)?
            .write_all_at(&encode_record(rec), slot_byte(offset - start))
            .map_err(io_err("write", &path))?;
        self.dirty_files.insert(path);
        Ok(())
    }

    /// Writes consecutive records from `offset`, all within one file, with one write.
    pub(super) fn write_records(&mut self, dir: &Path, offset: u64, recs: &[QueueRecord]) -> Result<(), CqError> {
        let start = self.file_start(offset);
        debug_assert!(offset - start + recs.len() as u64 <= self.rpf, "records span files");
        let path = file_path(dir, start);
        let bytes: Vec<u8> = recs.iter().flat_map(encode_record).collect();
        self.file(&path, start)?.write_all_at(&bytes, slot_byte(offset - start)).map_err(io_err("write", &path))?;
        self.dirty_files.insert(path);
        Ok(())
    }

    /// Writes zeros over slots `[from, to)` of the file starting at `start`.
    pub(super) fn zero_slots(&mut self, path: &Path, start: u64, from: u64, to: u64) -> Result<(), CqError> {
        let mut slot = from;
        while slot < to {
            let n = (to - slot).min(SCAN_CHUNK);
            let zeros = vec![0u8; n as usize * RECORD_LEN];
            self.file(path, start)?.write_all_at(&zeros, slot_byte(slot)).map_err(io_err("write", path))?;
            slot += n;
        }
        self.dirty_files.insert(path.to_path_buf());
        Ok(())
    }

    /// The raw bytes of slots `[slot, slot + n)` of the file starting at `start`, in one read.
    pub(super) fn read_slots(&mut self, path: &Path, start: u64, slot: u64, n: u64) -> Result<Vec<u8>, CqError> {
        let mut buf = vec![0u8; n as usize * RECORD_LEN];
        let at = slot_byte(slot);
        self.file(path, start)?.read_exact_at(&mut buf, at).map_err(read_err(path, at))?;
        Ok(buf)
    }

    /// Deletes a file and returns the bytes it had allocated.
    pub(super) fn delete_file(&mut self, path: &Path) -> Result<u64, CqError> {
        self.cache.remove(path);
        let bytes = allocated_bytes(path)?;
        unless_missing(fs::remove_file(path)).map_err(io_err("delete", path))?;
        self.dirty_files.remove(path);
        if let Some(dir) = path.parent() {
            self.dirty_dirs.insert(dir.to_path_buf());
        }
        Ok(bytes)
    }

    /// Deletes the files starting at `first..=last`, newest first so the remaining files stay contiguous.
    pub(super) fn delete_files(&mut self, dir: &Path, first: u64, last: u64) -> Result<u64, CqError> {
        let mut freed = 0;
        let mut start = last;
        while start >= first {
            freed += self.delete_file(&file_path(dir, start))?;
            match start.checked_sub(self.rpf) {
                Some(prev) => start = prev,
                None => break,
            }
        }
        Ok(freed)
    }

    /// Deletes the directory `dir` with everything in it, forgetting its handles and unsynced writes.
    pub(super) fn delete_dir(&mut self, dir: &Path) -> Result<(), CqError> {
        self.cache.remove_under(dir);
        self.dirty_files.retain(|p| !p.starts_with(dir));
        self.dirty_dirs.retain(|p| !p.starts_with(dir));
        self.dirty_dirs.extend(dir.parent().map(Path::to_path_buf));
        unless_missing(fs::remove_dir_all(dir)).map_err(io_err("delete directory", dir))?;
        Ok(())
    }

    /// fdatasync of each file written and fsync of each directory changed since the last sync.
    pub(super) fn sync(&mut self) -> Result<(), CqError> {
        // A file whose handle was evicted is reopened: fdatasync flushes the file, not just one descriptor.
        let files: Vec<PathBuf> = self.dirty_files.iter().cloned().collect();
        for path in files {
            let synced = match self.cache.open.get(&path) {
                Some((file, _)) => file.sync_data(),
                None => unless_missing(File::open(&path)).and_then(|f| f.map_or(Ok(()), |f| f.sync_data())),
            };
            synced.map_err(io_err("fdatasync", &path))?;
            self.dirty_files.remove(&path);
        }
        let dirs: Vec<PathBuf> = self.dirty_dirs.iter().cloned().collect();
        for dir in dirs {
            unless_missing(File::open(&dir))
                .and_then(|d| d.map_or(Ok(()), |d| d.sync_all()))
                .map_err(io_err("fsync", &dir))?;
            self.dirty_dirs.remove(&dir);
        }
        Ok(())
    }

    #[cfg(test)]
    pub(super) fn open_handles(&self) -> usize {
        self.cache.open.len()
    }
}

/// Open file handles with least-recently-used eviction.
#[derive(Debug)]
struct FileCache {
    max: usize,
    tick: u64,
    open: HashMap<PathBuf, (File, u64)>,
    order: BTreeMap<u64, PathBuf>,
}

impl FileCache {
    fn get_or_open(&mut self, path: &Path, open: impl FnOnce() -> Result<File, CqError>) -> Result<&File, CqError> {
        self.tick += 1;
        let tick = self.tick;
        if let Some((_, used)) = self.open.get_mut(path) {
            let old = std::mem::replace(used, tick);
            self.order.remove(&old);
        } else {
            let file = open()?;
            while self.open.len() >= self.max {
                let Some((_, victim)) = self.order.pop_first() else { break };
                self.open.remove(&victim);
            }
            self.open.insert(path.to_path_buf(), (file, tick));
        }
        self.order.insert(tick, path.to_path_buf());
        match self.open.get(path) {
            Some((file, _)) => Ok(file),
            None => unreachable!("file handle was just inserted"),
        }
    }

    fn remove(&mut self, path: &Path) {
        if let Some((_, used)) = self.open.remove(path) {
            self.order.remove(&used);
        }
    }

    fn remove_under(&mut self, dir: &Path) {
        let doomed: Vec<PathBuf> = self.open.keys().filter(|p| p.starts_with(dir)).cloned().collect();
        for path in doomed {
            self.remove(&path);
        }
    }
}

/// Opens an existing file read-write and checks its header and length.
fn open_checked(path: &Path, start: u64, rpf: u64, want_len: u64) -> Result<File, CqError> {
    let file = OpenOptions::new().read(true).write(true).open(path).map_err(io_err("open", path))?;
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    if len < HEADER_LEN {
        return Err(corrupt(path, 0, format!("file is {len} bytes, shorter than its {HEADER_LEN}-byte header")));
    }
    let mut h = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut h, 0).map_err(read_err(path, 0))?;
    check_header(&h, path, start, rpf)?;
    if len != want_len {
        return Err(corrupt(path, len.min(want_len), format!("file is {len} bytes, expected {want_len}")));
    }
    Ok(file)
}

/// Whether the whole file is zero bytes (a file created but never written before a crash).
pub(super) fn is_all_zero(path: &Path) -> Result<bool, CqError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at).map_err(read_err(path, at))?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// `(name, path)` of each entry of `dir`; empty if `dir` does not exist. Non-UTF-8 names are skipped.
pub(super) fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, CqError> {
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Ok(Vec::new()),
        r => unless_missing(r).map_err(io_err("list directory", dir))?,
    };
    let mut out = Vec::new();
    for entry in entries.into_iter().flatten() {
        let entry = entry.map_err(io_err("list directory", dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, entry.path()));
        }
    }
    Ok(out)
}

pub(super) fn is_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Bytes allocated on disk (`st_blocks * 512`) by a file; 0 if it does not exist.
pub(super) fn allocated_bytes(path: &Path) -> Result<u64, CqError> {
    Ok(unless_missing(fs::symlink_metadata(path)).map_err(io_err("stat", path))?.map_or(0, |m| m.blocks() * 512))
}

/// `Ok(None)` for a file or directory that does not exist (any more).
fn unless_missing<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
