//! One index file: its name, creating and opening it, reading and writing entries and bucket heads, walking a
//! bucket's chain for a lookup, and cutting the file back (and repairing a torn tail) on truncation.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::format::{ENTRY_LEN, Entry, HEADER_LEN, Header, u32_at};
use super::{Hit, IndexError, corrupt, io_err};
use raftmq_machine::ids::{LogIndex, Millis, Slot};

/// Entries read or zeroed per call when scanning a file.
const CHUNK_ENTRIES: u32 = 1024;

/// One index file.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) path: PathBuf,
    pub(super) header: Header,
}

/// `<first log index, 20 digits>.idx`.
pub(super) fn file_name(first: u64) -> String {
    format!("{first:020}.idx")
}

pub(super) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".idx")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(super) fn open_rw(path: &Path) -> Result<File, IndexError> {
    File::options().read(true).write(true).open(path).map_err(io_err("opening", path))
}

/// Creates a new file at `path`, sized for `header` (sparse until written; the header itself is not written yet).
pub(super) fn create(path: &Path, header: &Header) -> Result<File, IndexError> {
    let file = File::options().read(true).write(true).create_new(true).open(path).map_err(io_err("creating", path))?;
    if let Err(e) = file.set_len(header.file_len()) {
        let _ = fs::remove_file(path);
        return Err(io_err("sizing", path)(e));
    }
    Ok(file)
}

pub(super) fn remove(path: &Path) -> Result<(), IndexError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("deleting", path)(e)),
        _ => Ok(()),
    }
}

/// Allocated bytes of a file (0 if it is gone).
pub(super) fn allocated_bytes(path: &Path) -> Result<u64, IndexError> {
    match fs::metadata(path) {
        Ok(meta) => Ok(meta.blocks() * 512),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err("inspecting", path)(e)),
    }
}

pub(super) fn sync_dir(root: &Path) -> Result<(), IndexError> {
    File::open(root).and_then(|d| d.sync_all()).map_err(io_err("syncing directory", root))
}

fn read_at(file: &File, path: &Path, offset: u64, buf: &mut [u8]) -> Result<(), IndexError> {
    file.read_exact_at(buf, offset).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            corrupt(path, offset, format!("file ends before byte {}", offset + buf.len() as u64))
        }
        _ => io_err("reading", path)(e),
    })
}

pub(super) fn write_at(file: &File, path: &Path, offset: u64, buf: &[u8]) -> Result<(), IndexError> {
    file.write_all_at(buf, offset).map_err(io_err("writing", path))
}

/// Reads 1-based entry `n`, checking its checksum.
fn read_entry(file: &File, path: &Path, h: &Header, n: u32) -> Result<Entry, IndexError> {
    let offset = h.entry_offset(n);
    let mut b = [0u8; ENTRY_LEN as usize];
    read_at(file, path, offset, &mut b)?;
    Entry::decode(&b).map_err(|reason| corrupt(path, offset, format!("entry {n}: {reason}")))
}

/// Raw bytes of entries `lo..=hi`.
fn read_entries(file: &File, path: &Path, h: &Header, lo: u32, hi: u32) -> Result<Vec<u8>, IndexError> {
    let mut buf = vec![0u8; (hi - lo + 1) as usize * ENTRY_LEN as usize];
    read_at(file, path, h.entry_offset(lo), &mut buf)?;
    Ok(buf)
}

/// Newest entry of `bucket`, checked against the entry count.
fn read_head(file: &File, path: &Path, h: &Header, bucket: u32) -> Result<u32, IndexError> {
    let mut b = [0u8; 4];
    let offset = h.slot_offset(bucket);
    read_at(file, path, offset, &mut b)?;
    let head = u32::from_le_bytes(b);
    if head > h.entry_count {
        return Err(corrupt(path, offset, format!("slot {bucket} points to entry {head} of {}", h.entry_count)));
    }
    Ok(head)
}

/// Reads a file's header. `None` for a file whose header was never written (crashed right after its creation, so
/// it holds nothing that was synced).
pub(super) fn load_header(path: &Path) -> Result<Option<Header>, IndexError> {
    let file = File::open(path).map_err(io_err("opening", path))?;
    let len = file.metadata().map_err(io_err("inspecting", path))?.len();
    if len == 0 {
        return Ok(None);
    }
    if len < HEADER_LEN {
        return Err(corrupt(path, len, format!("file is {len} bytes, shorter than the {HEADER_LEN}-byte header")));
    }
    let mut b = [0u8; HEADER_LEN as usize];
    read_at(&file, path, 0, &mut b)?;
    if b.iter().all(|&x| x == 0) {
        return Ok(None);
    }
    Header::decode(path, &b, len).map(Some)
}

/// Entries of one file taken by [`stage`] and not yet written: the first one's number, their bytes, and the new head
/// of each bucket they went into.
#[derive(Debug, Default)]
pub(super) struct Staged {
    first: u32,
    bytes: Vec<u8>,
    heads: BTreeMap<u32, u32>,
}

/// Takes `entry` as the next entry of `seg`, linking it (`prev`) to its bucket's head (a staged one, or the file's)
/// and making it the new head, and updates the in-memory header; [`write_staged`] writes them.
pub(super) fn stage(file: &File, seg: &mut Segment, mut entry: Entry, staged: &mut Staged) -> Result<(), IndexError> {
    let h = &mut seg.header;
    let n = h.entry_count + 1;
    let bucket = h.bucket(entry.key_hash);
    entry.prev = match staged.heads.get(&bucket) {
        Some(&head) => head,
        None => read_head(file, &seg.path, h, bucket)?,
    };
    if staged.bytes.is_empty() {
        staged.first = n;
    }
    staged.bytes.extend_from_slice(&entry.encode());
    staged.heads.insert(bucket, n);
    if h.entry_count == 0 {
        h.begin_time = entry.store_time;
    }
    h.entry_count = n;
    h.last_log_index = entry.log_index;
    h.end_time = entry.store_time.max(h.begin_time);
    Ok(())
}

/// Writes the staged entries of `seg` (one write), then its changed bucket heads, then its header.
pub(super) fn write_staged(file: &File, seg: &Segment, staged: &mut Staged) -> Result<(), IndexError> {
    if staged.bytes.is_empty() {
        return Ok(());
    }
    let h = &seg.header;
    write_at(file, &seg.path, h.entry_offset(staged.first), &staged.bytes)?;
    for (&bucket, &n) in &staged.heads {
        write_at(file, &seg.path, h.slot_offset(bucket), &n.to_le_bytes())?;
    }
    write_at(file, &seg.path, 0, &h.encode())?;
    staged.bytes.clear();
    staged.heads.clear();
    Ok(())
}

/// What a lookup looks for: the key's hash and kind, the store time window `[begin, end]` and the most hits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Query {
    pub(super) hash: u64,
    pub(super) kind: u8,
    pub(super) begin: i64,
    pub(super) end: i64,
    pub(super) max: usize,
}

/// Walks the query's bucket chain in one file, newest first, adding matching hits not yet `seen` until `hits` holds
/// `q.max`. Checks every link, so a damaged chain is `Corrupt` rather than a loop or a wrong answer.
pub(super) fn walk_chain(
    file: &File,
    seg: &Segment,
    q: &Query,
    hits: &mut Vec<Hit>,
    seen: &mut HashSet<(u64, u32)>,
) -> Result<(), IndexError> {
    let (path, h) = (&seg.path, &seg.header);
    let bucket = h.bucket(q.hash);
    let mut n = read_head(file, path, h, bucket)?;
    while n != 0 && hits.len() < q.max {
        let e = read_entry(file, path, h, n)?;
        if e.prev >= n {
            return Err(corrupt(path, h.entry_offset(n), format!("entry {n} links to newer entry {}", e.prev)));
        }
        if h.bucket(e.key_hash) != bucket {
            let reason = format!("entry {n} is chained from slot {bucket} but hashes to another slot");
            return Err(corrupt(path, h.entry_offset(n), reason));
        }
        if e.store_time < q.begin {
            break; // chains run newest first and store times never go backwards
        }
        if e.key_hash == q.hash && e.kind == q.kind && e.store_time <= q.end && seen.insert((e.log_index, e.slot)) {
            hits.push(Hit { log_index: LogIndex(e.log_index), slot: Slot(e.slot), store_time: Millis(e.store_time) });
        }
        n = e.prev;
    }
    Ok(())
}

/// Cuts the file back to its entries with a log index up to `keep_up_to` and returns how many remain (0: the caller
/// deletes the file). Bucket heads above the kept count are walked back through `prev`; if a crash left a head or
/// chain entry unreadable, the slot table is rebuilt from the kept entries instead.
pub(super) fn truncate_file(file: &File, path: &Path, h: &mut Header, keep_up_to: u64) -> Result<u32, IndexError> {
    let Some((k, last)) = last_kept_entry(file, path, h, keep_up_to)? else { return Ok(0) };
    let zero_to = cut_slot_table(file, path, h, k)?;
    let zeros = vec![0u8; CHUNK_ENTRIES as usize * ENTRY_LEN as usize];
    let mut n = k + 1;
    while n <= zero_to {
        let count = (zero_to - n + 1).min(CHUNK_ENTRIES);
        write_at(file, path, h.entry_offset(n), &zeros[..count as usize * ENTRY_LEN as usize])?;
        n += count;
    }
    let new =
        Header { entry_count: k, last_log_index: last.log_index, end_time: last.store_time.max(h.begin_time), ..*h };
    if new != *h {
        write_at(file, path, 0, &new.encode())?;
        *h = new;
    }
    Ok(k)
}

/// Newest readable entry (number and contents) with a log index up to `keep_up_to`, scanning back from the
/// header's count and skipping damaged entries.
fn last_kept_entry(file: &File, path: &Path, h: &Header, keep_up_to: u64) -> Result<Option<(u32, Entry)>, IndexError> {
    let mut hi = h.entry_count;
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK_ENTRIES) + 1;
        let buf = read_entries(file, path, h, lo, hi)?;
        for (i, bytes) in buf.chunks_exact(ENTRY_LEN as usize).enumerate().rev() {
            if let Ok(e) = Entry::decode(bytes)
                && e.log_index <= keep_up_to
            {
                return Ok(Some((lo + i as u32, e)));
            }
        }
        hi = lo - 1;
    }
    Ok(None)
}

/// Points every bucket head at its newest entry among `1..=k` (walking back, or rebuilding the table if a chain is
/// damaged) and writes the table if it changed. Returns the last entry number that may hold removed data.
fn cut_slot_table(file: &File, path: &Path, h: &Header, k: u32) -> Result<u32, IndexError> {
    let mut raw = vec![0u8; h.slot_count as usize * 4];
    read_at(file, path, h.slot_offset(0), &mut raw)?;
    let mut table: Vec<u32> = raw.chunks_exact(4).map(|b| u32_at(b, 0)).collect();
    let mut zero_to = h.entry_count;
    let mut rebuild = false;
    for (bucket, head) in table.iter_mut().enumerate() {
        let mut n = *head;
        while n > k && !rebuild {
            zero_to = zero_to.max(n.min(h.max_entries));
            match read_entry(file, path, h, n) {
                Ok(e) if n <= h.max_entries && e.prev < n && h.bucket(e.key_hash) as usize == bucket => n = e.prev,
                _ => rebuild = true,
            }
        }
        *head = n;
    }
    if rebuild {
        tracing::warn!(path = %path.display(), "index file has a torn tail; rebuilding its slot table");
        table = rebuild_slot_table(file, path, h, k)?;
    }
    let bytes: Vec<u8> = table.iter().flat_map(|v| v.to_le_bytes()).collect();
    if bytes != raw {
        write_at(file, path, h.slot_offset(0), &bytes)?;
    }
    Ok(zero_to)
}

/// Slot table of entries `1..=k`, checking every entry and its `prev` link.
fn rebuild_slot_table(file: &File, path: &Path, h: &Header, k: u32) -> Result<Vec<u32>, IndexError> {
    let mut table = vec![0u32; h.slot_count as usize];
    let mut lo = 1;
    while lo <= k {
        let hi = k.min(lo + CHUNK_ENTRIES - 1);
        let buf = read_entries(file, path, h, lo, hi)?;
        for (i, bytes) in buf.chunks_exact(ENTRY_LEN as usize).enumerate() {
            let n = lo + i as u32;
            let offset = h.entry_offset(n);
            let e = Entry::decode(bytes).map_err(|reason| corrupt(path, offset, format!("entry {n}: {reason}")))?;
            let Some(head) = table.get_mut(h.bucket(e.key_hash) as usize) else { continue };
            if e.prev != *head {
                let reason = format!("entry {n} links to entry {} but its slot's previous entry is {head}", e.prev);
                return Err(corrupt(path, offset, reason));
            }
            *head = n;
        }
        lo = hi + 1;
    }
    Ok(table)
}
