//! One queue's files: loading a queue from its directory (checking the files, finding its end and repairing a torn
//! tail), and appending, reading, searching, truncating and deleting its records.

use std::path::{Path, PathBuf};

use super::format::{Decoded, HEADER_LEN, RECORD_LEN, check_record, decode_record, file_name, file_path};
use super::format::{parse_file_name, slot_byte};
use super::store::{SCAN_CHUNK, Store, is_all_zero, list_dir};
use super::{CqError, QueueRecord, corrupt};
use raftmq_machine::ids::{QueueId, QueueOffset};

/// In-memory view of one queue, built lazily from its directory.
#[derive(Debug)]
pub(super) struct QueueState {
    dir: PathBuf,
    /// Logical minimum: reads below it return `None`.
    min: u64,
    /// Next unwritten offset.
    end: u64,
    /// First offsets of the first and last file; `None` when the queue has no file (any first append is accepted).
    files: Option<Files>,
}

#[derive(Debug, Clone, Copy)]
struct Files {
    first: u64,
    last: u64,
}

impl QueueState {
    /// Builds a queue's state from its directory: checks file names and contiguity, finds the end in the newest
    /// file (repairing a torn tail) and the minimum in the first one. Other files are checked lazily on access.
    pub(super) fn load(s: &mut Store, dir: PathBuf) -> Result<Self, CqError> {
        let mut starts = list_files(s, &dir)?;
        let Some((min_in_last, end)) = scan_newest_file(s, &dir, &mut starts)? else {
            return Ok(Self { dir, min: 0, end: 0, files: None });
        };
        for pair in starts.windows(2) {
            if pair[1] != pair[0] + s.rpf {
                let (gap, [a, b]) = (file_name(pair[0] + s.rpf), [pair[0], pair[1]].map(file_name));
                return Err(corrupt(&dir, 0, format!("file {gap} is missing between {a} and {b}")));
            }
        }
        let (first, last) = (starts[0], starts[starts.len() - 1]);
        let min = if first == last { min_in_last } else { first_written(s, &file_path(&dir, first), first)? };
        Ok(Self { dir, min, end, files: Some(Files { first, last }) })
    }

    /// `(min, end)`, or `None` if the queue holds no record.
    pub(super) fn bounds(&self) -> Option<(u64, u64)> {
        (self.files.is_some() && self.min < self.end).then_some((self.min, self.end))
    }

    /// Appends `rec` at `o` (see [`super::ConsumeQueues::append`]); `topic` and `queue` name the queue in errors.
    /// Appends consecutive records from offset `o`: at the queue's end, one write per file
    /// they fall in; otherwise one [`Self::append`] each (same checks and errors).
    pub(super) fn append_all(
        &mut self,
        s: &mut Store,
        (topic, queue): (&str, QueueId),
        o: u64,
        recs: &[QueueRecord],
    ) -> Result<(), CqError> {
        let Some(last) = o.checked_add(recs.len() as u64).filter(|&l| l <= s.max_offset()) else {
            return Err(CqError::Invalid(format!("offset {o} + {} records is too large", recs.len())));
        };
        if (self.files.is_some() && o != self.end) || recs.is_empty() {
            for (i, rec) in recs.iter().enumerate() {
                self.append(s, (topic, queue), o + i as u64, rec)?;
            }
            return Ok(());
        }
        let mut at = o;
        while at < last {
            let start = s.file_start(at);
            let n = (start + s.rpf).min(last) - at;
            let done = (at - o) as usize;
            let run = &recs[done..done + n as usize];
            match self.files {
                None => {
                    s.create_queue_dir(&self.dir)?;
                    s.create_file(&self.dir, start)?;
                    (self.min, self.end, self.files) = (at, at, Some(Files { first: start, last: start }));
                }
                Some(files) if start > files.last => {
                    assert_eq!(start, files.last + s.rpf, "files of a queue must stay contiguous");
                    s.create_file(&self.dir, start)?;
                    self.files = Some(Files { last: start, ..files });
                }
                Some(_) => {}
            }
            s.write_records(&self.dir, at, run)?;
            at += n;
            self.end = at;
        }
        Ok(())
    }

    pub(super) fn append(
        &mut self,
        s: &mut Store,
        (topic, queue): (&str, QueueId),
        o: u64,
        rec: &QueueRecord,
    ) -> Result<(), CqError> {
        if o > s.max_offset() {
            return Err(CqError::Invalid(format!("offset {o} is too large (at most {})", s.max_offset())));
        }
        let Some(files) = self.files else {
            let start = s.file_start(o);
            s.create_queue_dir(&self.dir)?;
            s.create_file(&self.dir, start)?;
            (self.min, self.end, self.files) = (o, o, Some(Files { first: start, last: start }));
            s.write_record(&self.dir, o, rec)?;
            self.end = o + 1;
            return Ok(());
        };
        if o == self.end {
            let start = s.file_start(o);
            if start > files.last {
                assert_eq!(start, files.last + s.rpf, "files of a queue must stay contiguous");
                s.create_file(&self.dir, start)?;
                self.files = Some(Files { last: start, ..files });
            }
            s.write_record(&self.dir, o, rec)?;
            self.end = o + 1;
            return Ok(());
        }
        if (self.min..self.end).contains(&o) {
            let existing = self.read_record(s, o)?;
            if existing == *rec {
                return Ok(());
            }
            return Err(CqError::Invalid(format!(
                "offset {o} of queue {topic}/{} already holds {existing:?}, not {rec:?}; truncate the queue first",
                queue.0
            )));
        }
        Err(CqError::Invalid(format!(
            "cannot append at offset {o} to queue {topic}/{}: it holds [{}, {}), so the next append must be at {}",
            queue.0, self.min, self.end, self.end
        )))
    }

    /// The record at `o`, or `None` if it is below the minimum or at/after the end.
    pub(super) fn read(&self, s: &mut Store, o: u64) -> Result<Option<QueueRecord>, CqError> {
        if self.files.is_none() || o < self.min || o >= self.end {
            return Ok(None);
        }
        self.read_record(s, o).map(Some)
    }

    /// Up to `max` contiguous records starting at `from` (raised to the minimum), one read per file.
    pub(super) fn read_range(
        &self,
        s: &mut Store,
        from: u64,
        max: usize,
    ) -> Result<Vec<(QueueOffset, QueueRecord)>, CqError> {
        let from = from.max(self.min);
        if self.files.is_none() || from >= self.end {
            return Ok(Vec::new());
        }
        let to = self.end.min(from.saturating_add(max as u64));
        let mut out = Vec::with_capacity((to - from) as usize);
        let mut o = from;
        while o < to {
            let start = s.file_start(o);
            let n = (start + s.rpf).min(to) - o;
            let path = file_path(&self.dir, start);
            let buf = s.read_slots(&path, start, o - start, n)?;
            for (i, raw) in buf.chunks_exact(RECORD_LEN).enumerate() {
                let off = o + i as u64;
                let rec = check_record(raw, &path, slot_byte(off - start), off, (self.min, self.end))?;
                out.push((QueueOffset(off), rec));
            }
            o += n;
        }
        Ok(out)
    }

    /// Binary search over `[min, end)`: the first offset whose record satisfies `is_after`, or the end if none
    /// does. `is_after` must be false for a prefix of the records and true for the rest. For a queue without
    /// files this is its last known end.
    pub(super) fn partition_point(
        &self,
        s: &mut Store,
        mut is_after: impl FnMut(&QueueRecord) -> bool,
    ) -> Result<u64, CqError> {
        if self.files.is_none() {
            return Ok(self.end);
        }
        let (mut lo, mut hi) = (self.min, self.end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if is_after(&self.read_record(s, mid)?) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }

    /// Drops the records at offsets `>= x` (see [`super::ConsumeQueues::truncate_to`]); returns how many of the
    /// records in `[min, end)` were dropped.
    pub(super) fn truncate_to(&mut self, s: &mut Store, x: u64) -> Result<u64, CqError> {
        let Some(files) = self.files else { return Ok(0) };
        if x >= self.end {
            return Ok(0);
        }
        let dropped = self.end - x.max(self.min);
        if x <= self.min {
            s.delete_files(&self.dir, files.first, files.last)?;
            (self.min, self.end, self.files) = (x, x, None);
            return Ok(dropped);
        }
        let keep = s.file_start(x - 1);
        let end_in_keep = self.end.min(keep + s.rpf);
        if files.last > keep {
            s.delete_files(&self.dir, keep + s.rpf, files.last)?;
        }
        if x < end_in_keep {
            s.zero_slots(&file_path(&self.dir, keep), keep, x - keep, end_in_keep - keep)?;
        }
        self.files = Some(Files { last: keep, ..files });
        self.end = x;
        Ok(dropped)
    }

    /// Deletes the whole files below `m` (see [`super::ConsumeQueues::delete_below`]); returns the bytes freed.
    pub(super) fn delete_below(&mut self, s: &mut Store, m: u64) -> Result<u64, CqError> {
        let Some(files) = self.files else { return Ok(0) };
        let mut freed = 0;
        let mut first = files.first;
        while first <= files.last && first + s.rpf <= m {
            freed += s.delete_file(&file_path(&self.dir, first))?;
            first += s.rpf;
        }
        if first > files.last {
            self.files = None;
            self.min = self.end;
        } else {
            self.files = Some(Files { first, ..files });
            self.min = self.min.max(m.min(self.end));
        }
        Ok(freed)
    }

    /// The valid record at `offset`, which must lie in a file of the queue.
    fn read_record(&self, s: &mut Store, offset: u64) -> Result<QueueRecord, CqError> {
        let start = s.file_start(offset);
        let path = file_path(&self.dir, start);
        let raw = s.read_slots(&path, start, offset - start, 1)?;
        check_record(&raw, &path, slot_byte(offset - start), offset, (self.min, self.end))
    }
}

/// The first offsets of the queue's files, sorted. Files not named like consume queue files are ignored.
fn list_files(s: &Store, dir: &Path) -> Result<Vec<u64>, CqError> {
    let mut starts = Vec::new();
    for (name, path) in list_dir(dir)? {
        match parse_file_name(&name) {
            Some(start) if start % s.rpf != 0 || start > s.max_offset() => {
                let why =
                    format!("first offset {start} is not a multiple of the configured records_per_file {}", s.rpf);
                return Err(corrupt(&path, 0, why + " (was it written with another records_per_file?)"));
            }
            Some(start) => starts.push(start),
            None => tracing::warn!(path = %path.display(), "ignoring unexpected file in consume queue directory"),
        }
    }
    starts.sort_unstable();
    Ok(starts)
}

/// Finds the newest file of `starts` holding a record and returns `(first record in it, queue end)`, or `None` if
/// no file is left. Newer files that were never written (torn creation) or hold no record are deleted and popped.
fn scan_newest_file(s: &mut Store, dir: &Path, starts: &mut Vec<u64>) -> Result<Option<(u64, u64)>, CqError> {
    while let Some(&last) = starts.last() {
        let path = file_path(dir, last);
        match s.file(&path, last) {
            Ok(_) => {}
            Err(e @ CqError::Corrupt { .. }) => {
                if !is_all_zero(&path)? {
                    return Err(e);
                }
                tracing::warn!(file = %path.display(), "newest consume queue file was never written (torn creation); removing it");
                s.delete_file(&path)?;
                starts.pop();
                continue;
            }
            Err(e) => return Err(e),
        }
        if let Some(span) = scan_newest(s, &path, last, starts.len() == 1)? {
            return Ok(Some(span));
        }
        tracing::warn!(file = %path.display(), "newest consume queue file holds no record; removing it");
        s.delete_file(&path)?;
        starts.pop();
    }
    Ok(None)
}

/// Scans the newest file of a queue from the front. Returns `(first record, end)`, or `None` if it holds no
/// record. Records before the first zero slot must be valid; an invalid record followed only by zero slots is
/// a torn tail (zeroed and reported); non-zero slots after the first zero slot are unsynced leftovers (zeroed).
/// Leading zero slots are allowed only in the queue's first file (its first append may be past its start).
fn scan_newest(s: &mut Store, path: &Path, start: u64, is_first: bool) -> Result<Option<(u64, u64)>, CqError> {
    let mut leading = is_first;
    let mut first_rec = 0;
    let mut stop: Option<(u64, Option<String>)> = None; // first zero (None) or invalid (Some) slot
    let mut leftovers: Option<(u64, u64)> = None; // non-zero slots after a zero stop
    let mut slot = 0;
    while slot < s.rpf {
        let n = (s.rpf - slot).min(SCAN_CHUNK);
        let buf = s.read_slots(path, start, slot, n)?;
        for (i, raw) in buf.chunks_exact(RECORD_LEN).enumerate() {
            let at = slot + i as u64;
            let decoded = decode_record(raw);
            if let Some((stop_at, reason)) = &stop {
                if matches!(decoded, Decoded::Zero) {
                    continue;
                }
                if let Some(reason) = reason {
                    return Err(corrupt(path, slot_byte(*stop_at), format!("{reason} (records follow it)")));
                }
                leftovers = Some((leftovers.map_or(at, |l| l.0), at));
                continue;
            }
            match decoded {
                Decoded::Zero if leading => {}
                Decoded::Zero => stop = Some((at, None)),
                Decoded::Valid(_) | Decoded::Invalid(_) if leading => {
                    leading = false;
                    first_rec = at;
                    if let Decoded::Invalid(reason) = decoded {
                        stop = Some((at, Some(reason)));
                    }
                }
                Decoded::Valid(_) => {}
                Decoded::Invalid(reason) => stop = Some((at, Some(reason))),
            }
        }
        slot += n;
    }
    if leading {
        return Ok(None);
    }
    let end_slot = repair_tail(s, path, start, stop, leftovers)?;
    Ok((end_slot > first_rec).then_some((start + first_rec, start + end_slot)))
}

/// Zeroes what follows the end of the newest file, as found by [`scan_newest`], and returns the end slot: all of
/// the file if there was no `stop`; otherwise `stop`, after zeroing a torn record there or the `leftovers` range.
fn repair_tail(
    s: &mut Store,
    path: &Path,
    start: u64,
    stop: Option<(u64, Option<String>)>,
    leftovers: Option<(u64, u64)>,
) -> Result<u64, CqError> {
    match stop {
        None => Ok(s.rpf),
        Some((at, None)) => {
            if let Some((a, b)) = leftovers {
                tracing::warn!(file = %path.display(), byte_offset = slot_byte(a), end = start + at,
                    "consume queue file has records after its end (unsynced writes before a crash); zeroing them");
                s.zero_slots(path, start, a, b + 1)?;
            }
            Ok(at)
        }
        Some((at, Some(reason))) => {
            tracing::warn!(file = %path.display(), byte_offset = slot_byte(at), %reason,
                "torn tail in consume queue file; the queue ends before this record");
            s.zero_slots(path, start, at, at + 1)?;
            Ok(at)
        }
    }
}

/// Offset of the first non-zero slot of a queue's first file (when later files exist).
fn first_written(s: &mut Store, path: &Path, start: u64) -> Result<u64, CqError> {
    let mut slot = 0;
    while slot < s.rpf {
        let n = (s.rpf - slot).min(SCAN_CHUNK);
        let buf = s.read_slots(path, start, slot, n)?;
        if let Some(i) = buf.chunks_exact(RECORD_LEN).position(|r| r.iter().any(|&b| b != 0)) {
            return Ok(start + slot + i as u64);
        }
        slot += n;
    }
    Err(corrupt(path, HEADER_LEN, "the queue's first file holds no record although later files exist"))
}
