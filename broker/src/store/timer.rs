//! The timer store: delay messages waiting for their delivery time (RocketMQ 5's TimerLog),
//! derived from the log like the ConsumeQueue. The replicated state keeps only how many wait
//! and which `FireTimers` was accepted last (see `raftmq_machine::timer`); the waiting
//! messages themselves are here, on disk.
//!
//! Layout: `<root>/<minute, 12 digits>.tmr`, one file per minute of delivery time (delivery
//! time in ms / 60 000). A file is a 16-byte header (magic, format version
//! [`FORMAT_VERSION`]) and appended 32-byte records, little endian: an *add* (a scheduled
//! message: delivery time, log index, slot) or a *fire* (an accepted `FireTimers` made that
//! message visible), each with a CRC32C. Records are not synced per append: [`TimerStore::sync`]
//! makes them durable, and dispatch calls it before it writes its checkpoint.
//!
//! Both kinds are idempotent: after a restart dispatch appends again what it dispatched after
//! its checkpoint, and a message added twice is still one timer, marked fired twice still
//! fired once. So the files are never cut back to the checkpoint; only a torn partial
//! record at a file's end goes. A message waits while its file holds its add and not its
//! fire mark.
//!
//! Memory: a summary per file (its length and the smallest log index it names). The waiting
//! set of a file is loaded only once its minute has come (the leader asks for due timers;
//! every node marks fires, which are due by definition), and dropped with the file once every
//! timer in it has fired and its minute has passed. Timers further out cost their 32 bytes
//! on disk each and nothing in memory.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, btree_map};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use raftmq_machine::ids::{LogIndex, Millis, Slot};

/// Version of the on-disk format this module writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Milliseconds of delivery time one file covers.
pub const BUCKET_MS: i64 = 60_000;
const MAGIC: [u8; 8] = *b"RMQTIMR\0";
const HEADER_BYTES: u64 = 16;
const RECORD_BYTES: usize = 32;
const EXTENSION: &str = "tmr";
/// Most files kept open for appending between syncs; past it they are synced and closed.
const MAX_OPEN_FILES: usize = 128;

const KIND_ADD: u8 = 1;
const KIND_FIRE: u8 = 2;

/// A scheduled message: when it is due and where it is in the log. Ordered by delivery time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer {
    /// When it becomes visible.
    pub deliver_at: Millis,
    /// The log entry of its `Send`.
    pub log_index: LogIndex,
    /// Its slot in that entry.
    pub slot: Slot,
}

impl Timer {
    fn bucket(&self) -> i64 {
        bucket_of(self.deliver_at)
    }
}

fn bucket_of(at: Millis) -> i64 {
    at.0.div_euclid(BUCKET_MS)
}

/// What went wrong in the timer store.
#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    /// A file system operation failed.
    #[error("timer store I/O error: could not {op} {}: {source}; check the disk, its free space and permissions", .path.display())]
    Io {
        /// The operation, e.g. "open" or "write".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error the operating system reported.
        source: io::Error,
    },
    /// A file's contents are damaged.
    #[error("corrupt timer file {} at byte {byte_offset}: {reason}; the node rebuilds it from the CommitLog", .path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where in it.
        byte_offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A file of a format version this build does not read.
    #[error("timer file {} has format version {found} but this build reads only version {FORMAT_VERSION}; run a build that reads it, or delete the store so the node rebuilds it from the CommitLog", .path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in its header.
        found: u32,
    },
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TimerError + 'a {
    move |source| TimerError::Io { op, path: path.to_path_buf(), source }
}

fn encode(kind: u8, t: &Timer) -> [u8; RECORD_BYTES] {
    let mut r = [0u8; RECORD_BYTES];
    r[0..8].copy_from_slice(&t.deliver_at.0.to_le_bytes());
    r[8..16].copy_from_slice(&t.log_index.0.to_le_bytes());
    r[16..20].copy_from_slice(&t.slot.0.to_le_bytes());
    r[20] = kind;
    let crc = crc32c::crc32c(&r[..28]);
    r[28..32].copy_from_slice(&crc.to_le_bytes());
    r
}

fn decode(r: &[u8]) -> Result<(u8, Timer), String> {
    let word = |range: std::ops::Range<usize>| r[range].iter().rev().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let crc = word(28..32) as u32;
    if crc != crc32c::crc32c(&r[..28]) {
        return Err(format!("record checksum {crc:#010x} does not match its bytes"));
    }
    let kind = r[20];
    if kind != KIND_ADD && kind != KIND_FIRE {
        return Err(format!("unknown record kind {kind}"));
    }
    let t = Timer {
        deliver_at: Millis(word(0..8) as i64),
        log_index: LogIndex(word(8..16)),
        slot: Slot(word(16..20) as u32),
    };
    Ok((kind, t))
}

fn header() -> [u8; HEADER_BYTES as usize] {
    let mut h = [0u8; HEADER_BYTES as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// The timers of one file, once loaded.
#[derive(Debug, Default)]
struct Loaded {
    /// Added and not fired.
    waiting: BTreeSet<Timer>,
    /// Fired (kept so that an add appended again after a restart stays fired).
    fired: HashSet<(LogIndex, Slot)>,
}

impl Loaded {
    fn add(&mut self, t: Timer) {
        if !self.fired.contains(&(t.log_index, t.slot)) {
            self.waiting.insert(t);
        }
    }

    fn fire(&mut self, t: &Timer) {
        self.fired.insert((t.log_index, t.slot));
        self.waiting.remove(t);
    }
}

/// One file.
#[derive(Debug)]
struct Bucket {
    /// Bytes written to it, header included.
    len: u64,
    /// The smallest log index an add in it names (fired or not): what retention keeps.
    min_log_index: Option<LogIndex>,
    loaded: Option<Loaded>,
}

impl Bucket {
    /// The smallest log index of a message still waiting in it (a bound while not loaded).
    fn keeps_from(&self) -> Option<LogIndex> {
        match &self.loaded {
            Some(l) => l.waiting.iter().map(|t| t.log_index).min(),
            None => self.min_log_index,
        }
    }
}

/// Due timers, as [`TimerStore::due`] found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The last accepted `FireTimers` whose marks the store holds: a plan from these timers
    /// is made after it.
    pub last_fire: LogIndex,
    /// Waiting timers due at the time asked, earliest first.
    pub timers: Vec<Timer>,
    /// When the next timer not in `timers` is due, as far as the store can tell without
    /// loading files further out (never later than the truth).
    pub next: Option<Millis>,
}

#[derive(Debug)]
struct Inner {
    buckets: BTreeMap<i64, Bucket>,
    /// Handles with writes not yet synced.
    open: HashMap<i64, File>,
    /// A file was created or deleted since the last sync.
    dir_dirty: bool,
    last_fire: LogIndex,
}

/// The timer files of one node. `Send + Sync`; calls are serialised.
#[derive(Debug)]
pub struct TimerStore {
    root: PathBuf,
    inner: Mutex<Inner>,
}

impl TimerStore {
    /// Opens (creating if needed) the store under `root`, reading every file once: a damaged
    /// record is an error (the caller deletes the store and dispatch rebuilds it); a torn
    /// partial record at a file's end is cut; a file whose timers all fired is deleted.
    pub fn open(root: &Path) -> Result<TimerStore, TimerError> {
        fs::create_dir_all(root).map_err(io_error("create directory", root))?;
        let mut buckets = BTreeMap::new();
        for entry in fs::read_dir(root).map_err(io_error("list", root))? {
            let entry = entry.map_err(io_error("list", root))?;
            let path = entry.path();
            let Some(minute) = parse_name(&path) else {
                tracing::warn!(file = %path.display(), "ignoring a file that is not a timer file");
                continue;
            };
            let (bucket, records) = read_file(&path, true)?;
            let Some(bucket) = bucket else { continue };
            if bucket.waiting.is_empty() {
                fs::remove_file(&path).map_err(io_error("delete", &path))?;
                continue;
            }
            let min_log_index = bucket.waiting.iter().map(|t| t.log_index).min();
            buckets.insert(
                minute,
                Bucket { len: HEADER_BYTES + records * RECORD_BYTES as u64, min_log_index, loaded: None },
            );
        }
        let inner = Inner { buckets, open: HashMap::new(), dir_dirty: false, last_fire: LogIndex(0) };
        Ok(TimerStore { root: root.to_path_buf(), inner: Mutex::new(inner) })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, minute: i64) -> PathBuf {
        self.root.join(format!("{minute:012}.{EXTENSION}"))
    }

    /// The last accepted `FireTimers` whose marks the store holds.
    pub fn last_fire(&self) -> LogIndex {
        self.lock().last_fire
    }

    /// Records that the marks of every accepted `FireTimers` up to `index` are in the store.
    pub fn set_last_fire(&self, index: LogIndex) {
        self.lock().last_fire = index;
    }

    /// Adds scheduled messages.
    pub fn add(&self, timers: &[Timer]) -> Result<(), TimerError> {
        let mut inner = self.lock();
        for t in timers {
            self.append(&mut inner, KIND_ADD, t)?;
            let bucket = inner.buckets.get_mut(&t.bucket()).expect("created by append");
            bucket.min_log_index = Some(bucket.min_log_index.map_or(t.log_index, |m| m.min(t.log_index)));
            if let Some(loaded) = &mut bucket.loaded {
                loaded.add(*t);
            }
        }
        Ok(())
    }

    /// Marks messages fired by an accepted `FireTimers`, and deletes the files whose timers
    /// have all fired and whose minute is before `now`'s.
    pub fn fire(&self, timers: &[Timer], now: Millis) -> Result<(), TimerError> {
        let mut inner = self.lock();
        for t in timers {
            self.append(&mut inner, KIND_FIRE, t)?;
            self.load(&mut inner, t.bucket())?.fire(t);
        }
        self.sweep(&mut inner, now)
    }

    /// Waiting timers due at `now`, at most `limit`, earliest first.
    pub fn due(&self, now: Millis, limit: usize) -> Result<Due, TimerError> {
        let mut inner = self.lock();
        self.sweep(&mut inner, now)?;
        let current = bucket_of(now);
        let due_buckets: Vec<i64> = inner.buckets.range(..=current).map(|(m, _)| *m).collect();
        let mut timers = Vec::new();
        let mut next = None;
        for minute in due_buckets {
            if timers.len() >= limit {
                // More may be due: at once.
                next = Some(now);
                break;
            }
            let loaded = self.load(&mut inner, minute)?;
            for t in &loaded.waiting {
                if t.deliver_at > now || timers.len() >= limit {
                    next = Some(next.map_or(t.deliver_at, |n: Millis| n.min(t.deliver_at)));
                    break;
                }
                timers.push(*t);
            }
        }
        if next.is_none() {
            next = inner.buckets.range(current + 1..).next().map(|(m, _)| Millis(m * BUCKET_MS));
        }
        Ok(Due { last_fire: inner.last_fire, timers, next })
    }

    /// The smallest log index of a message still waiting (a lower bound): retention keeps
    /// that entry and everything after it.
    pub fn keeps_from(&self) -> Option<LogIndex> {
        self.lock().buckets.values().filter_map(Bucket::keeps_from).min()
    }

    /// Bytes the files take.
    pub fn disk_bytes(&self) -> u64 {
        self.lock().buckets.values().map(|b| b.len).sum()
    }

    /// Makes every write since the last sync durable.
    pub fn sync(&self) -> Result<(), TimerError> {
        let mut inner = self.lock();
        Self::sync_locked(&self.root, &mut inner)
    }

    fn sync_locked(root: &Path, inner: &mut Inner) -> Result<(), TimerError> {
        for (minute, file) in inner.open.drain() {
            file.sync_data().map_err(|source| TimerError::Io {
                op: "sync",
                path: root.join(format!("{minute:012}.{EXTENSION}")),
                source,
            })?;
        }
        if inner.dir_dirty {
            File::open(root).and_then(|d| d.sync_all()).map_err(io_error("sync directory", root))?;
            inner.dir_dirty = false;
        }
        Ok(())
    }

    /// Deletes every file (before a rebuild).
    pub fn clear(&self) -> Result<(), TimerError> {
        let mut inner = self.lock();
        inner.open.clear();
        for minute in std::mem::take(&mut inner.buckets).into_keys() {
            let path = self.path(minute);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(TimerError::Io { op: "delete", path, source }),
            }
        }
        inner.dir_dirty = true;
        inner.last_fire = LogIndex(0);
        Ok(())
    }

    fn append(&self, inner: &mut Inner, kind: u8, t: &Timer) -> Result<(), TimerError> {
        let minute = t.bucket();
        let path = self.path(minute);
        if !inner.open.contains_key(&minute) {
            if inner.open.len() >= MAX_OPEN_FILES {
                Self::sync_locked(&self.root, inner)?;
            }
            let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_error("open", &path))?;
            if let btree_map::Entry::Vacant(slot) = inner.buckets.entry(minute) {
                // A new file (or a leftover of one deleted before a crash): start it.
                file.set_len(0).map_err(io_error("truncate", &path))?;
                (&file).write_all(&header()).map_err(io_error("write", &path))?;
                slot.insert(Bucket { len: HEADER_BYTES, min_log_index: None, loaded: None });
                inner.dir_dirty = true;
            }
            inner.open.insert(minute, file);
        }
        let file = inner.open.get(&minute).expect("opened above");
        (&*file).write_all(&encode(kind, t)).map_err(io_error("write", &path))?;
        inner.buckets.get_mut(&minute).expect("created above").len += RECORD_BYTES as u64;
        Ok(())
    }

    /// The loaded timers of a file (read from disk the first time).
    fn load<'a>(&self, inner: &'a mut Inner, minute: i64) -> Result<&'a mut Loaded, TimerError> {
        let bucket = inner.buckets.get_mut(&minute).expect("the caller names a file the store has");
        if bucket.loaded.is_none() {
            let (loaded, _) = read_file(&self.path(minute), false)?;
            bucket.loaded = Some(loaded.unwrap_or_default());
        }
        Ok(bucket.loaded.as_mut().expect("loaded above"))
    }

    /// Deletes loaded files whose timers have all fired and whose minute is before `now`'s.
    fn sweep(&self, inner: &mut Inner, now: Millis) -> Result<(), TimerError> {
        let current = bucket_of(now);
        let done: Vec<i64> = inner
            .buckets
            .range(..current)
            .filter(|(_, b)| b.loaded.as_ref().is_some_and(|l| l.waiting.is_empty()))
            .map(|(m, _)| *m)
            .collect();
        for minute in done {
            inner.open.remove(&minute);
            inner.buckets.remove(&minute);
            let path = self.path(minute);
            fs::remove_file(&path).map_err(io_error("delete", &path))?;
            inner.dir_dirty = true;
        }
        Ok(())
    }
}

fn parse_name(path: &Path) -> Option<i64> {
    if path.extension()? != EXTENSION {
        return None;
    }
    path.file_stem()?.to_str()?.parse().ok()
}

/// Reads a file: its timers and how many whole records it holds. `repair` (at open) cuts a
/// torn partial record at the end, and deletes a file too short to hold its header (torn
/// while being created: it held nothing synced); `None` then.
fn read_file(path: &Path, repair: bool) -> Result<(Option<Loaded>, u64), TimerError> {
    let bytes = fs::read(path).map_err(io_error("read", path))?;
    let corrupt =
        |byte_offset: u64, reason: String| TimerError::Corrupt { path: path.to_path_buf(), byte_offset, reason };
    if (bytes.len() as u64) < HEADER_BYTES {
        if repair {
            tracing::warn!(file = %path.display(), bytes = bytes.len(), "deleting a timer file torn while it was created");
            fs::remove_file(path).map_err(io_error("delete", path))?;
            return Ok((None, 0));
        }
        return Err(corrupt(0, format!("{} bytes, shorter than the header", bytes.len())));
    }
    if bytes[..8] != MAGIC {
        return Err(corrupt(0, "not a timer file (wrong magic)".into()));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return Err(TimerError::UnsupportedVersion { path: path.to_path_buf(), found: version });
    }
    let body = &bytes[HEADER_BYTES as usize..];
    let whole = body.len() / RECORD_BYTES;
    if body.len() % RECORD_BYTES != 0 {
        let keep = HEADER_BYTES + (whole * RECORD_BYTES) as u64;
        if !repair {
            return Err(corrupt(keep, "a partial record".into()));
        }
        tracing::warn!(file = %path.display(), keep, "cutting a torn partial timer record");
        let file = OpenOptions::new().write(true).open(path).map_err(io_error("open", path))?;
        file.set_len(keep).map_err(io_error("truncate", path))?;
        file.sync_all().map_err(io_error("sync", path))?;
    }
    let mut loaded = Loaded::default();
    let mut fires = Vec::new();
    for (i, record) in body.chunks_exact(RECORD_BYTES).enumerate() {
        let at = HEADER_BYTES + (i * RECORD_BYTES) as u64;
        let (kind, t) = decode(record).map_err(|reason| corrupt(at, reason))?;
        if bucket_of(t.deliver_at) != parse_name(path).unwrap_or(bucket_of(t.deliver_at)) {
            return Err(corrupt(at, format!("a timer due at {} ms does not belong in this file", t.deliver_at.0)));
        }
        match kind {
            KIND_ADD => loaded.add(t),
            _ => fires.push(t),
        }
    }
    // A fire mark may precede an add appended again after a restart: apply marks last.
    for t in &fires {
        loaded.fire(t);
    }
    Ok((Some(loaded), whole as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(at: i64, index: u64, slot: u32) -> Timer {
        Timer { deliver_at: Millis(at), log_index: LogIndex(index), slot: Slot(slot) }
    }

    const MIN: i64 = BUCKET_MS;

    #[test]
    fn due_timers_come_in_time_order_and_fired_ones_never_again() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = TimerStore::open(dir.path())?;
        store.add(&[t(10 * MIN + 5, 7, 0), t(10 * MIN + 1, 8, 0), t(12 * MIN, 9, 1), t(500 * MIN, 9, 2)])?;
        let due = store.due(Millis(10 * MIN + 3), 100)?;
        assert_eq!(due.timers, vec![t(10 * MIN + 1, 8, 0)]);
        assert_eq!(due.next, Some(Millis(10 * MIN + 5)));
        let due = store.due(Millis(12 * MIN + 1), 2)?;
        assert_eq!(due.timers, vec![t(10 * MIN + 1, 8, 0), t(10 * MIN + 5, 7, 0)], "limit 2");
        assert_eq!(due.next, Some(Millis(12 * MIN + 1)), "more may be due: at once");
        store.fire(&[t(10 * MIN + 1, 8, 0), t(10 * MIN + 5, 7, 0)], Millis(12 * MIN + 1))?;
        store.set_last_fire(LogIndex(20));
        let due = store.due(Millis(12 * MIN + 1), 100)?;
        assert_eq!(due.timers, vec![t(12 * MIN, 9, 1)]);
        assert_eq!(due.last_fire, LogIndex(20));
        assert_eq!(due.next, Some(Millis(500 * MIN)), "the far file is not loaded, its minute bounds it");
        // The minute-10 file went once all its timers fired; the others stay.
        assert!(!dir.path().join(format!("{:012}.tmr", 10)).exists());
        assert_eq!(store.keeps_from(), Some(LogIndex(9)));
        Ok(())
    }

    #[test]
    fn records_written_again_after_a_restart_change_nothing() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        {
            let store = TimerStore::open(dir.path())?;
            store.add(&[t(5 * MIN, 3, 0), t(5 * MIN + 1, 3, 1)])?;
            store.fire(&[t(5 * MIN, 3, 0)], Millis(0))?;
            store.sync()?;
        }
        // Dispatch goes on from a checkpoint before both: the same records again.
        let store = TimerStore::open(dir.path())?;
        assert_eq!(store.keeps_from(), Some(LogIndex(3)));
        store.add(&[t(5 * MIN, 3, 0), t(5 * MIN + 1, 3, 1)])?;
        store.fire(&[t(5 * MIN, 3, 0)], Millis(0))?;
        assert_eq!(store.due(Millis(6 * MIN), 100)?.timers, vec![t(5 * MIN + 1, 3, 1)]);
        store.sync()?;
        drop(store);
        let store = TimerStore::open(dir.path())?;
        assert_eq!(store.due(Millis(6 * MIN), 100)?.timers, vec![t(5 * MIN + 1, 3, 1)]);
        store.fire(&[t(5 * MIN + 1, 3, 1)], Millis(6 * MIN))?;
        assert_eq!(store.keeps_from(), None);
        assert_eq!(fs::read_dir(dir.path())?.count(), 0, "a file whose timers all fired is deleted");
        Ok(())
    }

    #[test]
    fn a_torn_record_is_cut_and_a_damaged_one_refused_naming_the_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(format!("{:012}.tmr", 7));
        {
            let store = TimerStore::open(dir.path())?;
            store.add(&[t(7 * MIN, 1, 0), t(7 * MIN + 2, 2, 0)])?;
            store.sync()?;
        }
        let mut bytes = fs::read(&path)?;
        bytes.extend_from_slice(&[1, 2, 3]);
        fs::write(&path, &bytes)?;
        let store = TimerStore::open(dir.path())?;
        assert_eq!(store.due(Millis(8 * MIN), 10)?.timers.len(), 2, "the torn tail went, the records stayed");
        drop(store);
        assert_eq!(fs::metadata(&path)?.len(), HEADER_BYTES + 2 * RECORD_BYTES as u64);
        let mut bytes = fs::read(&path)?;
        bytes[HEADER_BYTES as usize + RECORD_BYTES + 3] ^= 0x40;
        fs::write(&path, &bytes)?;
        let err = TimerStore::open(dir.path()).expect_err("a damaged record");
        let text = err.to_string();
        assert!(matches!(err, TimerError::Corrupt { byte_offset: 48, .. }), "{text}");
        assert!(text.contains("000000000007.tmr") && text.contains("checksum"), "{text}");
        Ok(())
    }

    #[test]
    fn many_files_far_out_cost_no_memory_until_due() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = TimerStore::open(dir.path())?;
        let timers: Vec<Timer> = (0..300).map(|i| t((1000 + i) * MIN, 100 + i as u64, 0)).collect();
        store.add(&timers)?;
        store.sync()?;
        let inner = store.lock();
        assert_eq!(inner.buckets.len(), 300);
        assert!(inner.buckets.values().all(|b| b.loaded.is_none()));
        assert!(inner.open.is_empty(), "synced handles are closed");
        drop(inner);
        assert_eq!(store.due(Millis(1000 * MIN), 10)?.timers, vec![timers[0]]);
        assert_eq!(store.lock().buckets.values().filter(|b| b.loaded.is_some()).count(), 1);
        assert_eq!(store.keeps_from(), Some(LogIndex(100)));
        Ok(())
    }
}
