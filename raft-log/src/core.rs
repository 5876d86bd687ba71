//! The synchronous log engine: segments, recovery, append, truncate, purge, retention.
//!
//! [`LogCore`] is single-owner and does its IO inline; [`crate::Log`] runs it on a writer
//! thread. The crash tests drive it directly over a fault-injecting [`Fs`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::error::{LogError, Result};
use crate::fs::{FileIo, Fs};
use crate::meta::{MetaFile, MetaState, Purged};
use crate::record::{self, HEADER_LEN, PayloadPart, Record};
use crate::segment::{self, SEGMENT_HEADER_LEN, Segment};

mod backfill;

pub use self::backfill::Backfilled;
pub(crate) use self::backfill::StagedBackfill;

/// Tunables of the log. Every queue and buffer it uses is bounded by one of these.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Size each segment file is preallocated to (default 1 GiB).
    pub segment_size: u64,
    /// Largest payload of one record (default 64 MiB; at most the segment size less headers).
    pub max_payload: u32,
    /// How many of the newest sealed segments are fully checksum-verified on open, in
    /// addition to the active one, which always is (default 2). Older segments are verified
    /// record by record when read.
    pub verify_sealed_segments: usize,
    /// Bytes of recent entries kept in memory to serve reads of the tail (default 64 MiB).
    pub cache_bytes: usize,
    /// Most records written with one `fdatasync` (default 4096).
    pub max_batch_records: usize,
    /// Most payload bytes written with one `fdatasync` (default 16 MiB).
    pub max_batch_bytes: usize,
    /// Capacity of the writer's request queue (default 1024); appends wait when it is full.
    pub queue_depth: usize,
    /// How often a changed committed log id is written to the meta file (default 1 s).
    pub committed_interval: Duration,
    /// When appended records are made durable relative to reporting them (default
    /// [`SyncPolicy::EveryBatch`]).
    pub sync: SyncPolicy,
}

/// Longest [`SyncPolicy::Interval`] accepted.
pub const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(60);

/// When the writer `fdatasync`s appended records, and so what an append's callback means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Each batch of appends is written and fdatasynced before its callbacks run: a
    /// reported append survives any crash.
    #[default]
    EveryBatch,
    /// Callbacks run once a batch is written (in the page cache: readable, in order, not yet
    /// durable). The writer fdatasyncs when the oldest unsynced write is this old, when no
    /// request has come for a moment (the smaller of this and 1 ms), before every vote,
    /// truncation, purge, backfill or meta write (which stay durable on return), on
    /// [`crate::Log::flush`] and when the log shuts down. A crash of the machine (not of the
    /// process) can lose up to this much of the reported appends; what survives is still a
    /// prefix of what was written. Between 1 ms and [`MAX_SYNC_INTERVAL`].
    Interval(Duration),
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_size: 1 << 30,
            max_payload: 64 << 20,
            verify_sealed_segments: 2,
            cache_bytes: 64 << 20,
            max_batch_records: 4096,
            max_batch_bytes: 16 << 20,
            queue_depth: 1024,
            committed_interval: Duration::from_secs(1),
            sync: SyncPolicy::EveryBatch,
        }
    }
}

impl LogConfig {
    /// Checks the values against each other.
    pub fn validate(&self) -> Result<()> {
        let room = self.segment_size.saturating_sub(SEGMENT_HEADER_LEN + HEADER_LEN as u64);
        if self.segment_size < 64 << 10 {
            return Err(LogError::Invalid(format!(
                "segment_size {} is below the minimum of 64 KiB",
                self.segment_size
            )));
        }
        if u64::from(self.max_payload) > room {
            return Err(LogError::Invalid(format!(
                "max_payload {} does not fit a segment of {} bytes (at most {room})",
                self.max_payload, self.segment_size
            )));
        }
        if self.max_batch_records == 0 || self.max_batch_bytes == 0 || self.queue_depth == 0 {
            return Err(LogError::Invalid("batch limits and queue depth must be positive".into()));
        }
        if let SyncPolicy::Interval(every) = self.sync
            && !(Duration::from_millis(1)..=MAX_SYNC_INTERVAL).contains(&every)
        {
            return Err(LogError::Invalid(format!(
                "sync interval {every:?} is out of range; give 1 ms to {} s",
                MAX_SYNC_INTERVAL.as_secs()
            )));
        }
        Ok(())
    }
}

/// What recovery found when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// A torn tail that was cut: file and byte offset.
    pub torn_tail: Option<(PathBuf, u64)>,
    /// Segments found.
    pub segments: usize,
}

/// A segment deleted by retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedSegment {
    /// First index it held.
    pub first: u64,
    /// One past the last index it held.
    pub next: u64,
    /// Bytes of data it held.
    pub bytes: u64,
}

/// When whole segments may be deleted. A segment is only ever deleted when every index in
/// it is at or below the purge point and below `keep_from`, and only from the oldest end.
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    /// Delete segments last written longer ago than this (by file time: a segment copied
    /// in by a backfill counts from the copy).
    pub max_age: Option<Duration>,
    /// Delete the oldest segments while the log holds more than this many bytes.
    pub max_bytes: Option<u64>,
    /// Segments whose records all lie below this index are expired whatever their file
    /// time: the caller knows how old the records are (e.g. from message store times).
    pub expired_before: u64,
    /// Never delete a segment holding this index or later (e.g. a consume queue's minimum).
    pub keep_from: u64,
}

/// The log engine.
#[derive(Debug)]
pub struct LogCore {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<u64, Segment>,
    meta: MetaFile,
    state: MetaState,
    last_term: u64,
    dirty: bool,
}

fn list_segments(fs: &dyn Fs, dir: &Path) -> Result<Vec<u64>> {
    let names = fs.list_dir(dir).map_err(|e| LogError::io("list", dir, e))?;
    let mut firsts: Vec<u64> = names.iter().filter_map(|n| segment::parse_data_name(n)).collect();
    firsts.sort_unstable();
    Ok(firsts)
}

/// Removes what an interrupted backfill or segment removal leaves: staged files never
/// published, and index files whose data file is gone.
fn remove_leftovers(fs: &dyn Fs, dir: &Path) -> Result<()> {
    let names = fs.list_dir(dir).map_err(|e| LogError::io("list", dir, e))?;
    let data: Vec<u64> = names.iter().filter_map(|n| segment::parse_data_name(n)).collect();
    let mut removed = false;
    for name in &names {
        let orphan = segment::parse_index_name(name).is_some_and(|first| !data.contains(&first));
        if orphan || segment::is_staged_name(name) {
            let path = dir.join(name);
            tracing::info!(file = %path.display(), "removing a file left by an interrupted operation");
            fs.remove_file(&path).map_err(|e| LogError::io("remove", &path, e))?;
            removed = true;
        }
    }
    if removed {
        fs.sync_dir(dir).map_err(|e| LogError::io("fsync directory", dir, e))?;
    }
    Ok(())
}

impl LogCore {
    /// Opens (or creates) the log in `dir`, recovering from a crash: a torn tail is cut
    /// back to the last valid record, anything else damaged is an error.
    pub fn open(fs: Arc<dyn Fs>, dir: &Path, config: LogConfig) -> Result<(LogCore, OpenReport)> {
        config.validate()?;
        fs.create_dir_all(dir).map_err(|e| LogError::io("create directory", dir, e))?;
        remove_leftovers(&*fs, dir)?;
        let firsts = list_segments(&*fs, dir)?;
        let (meta, state) = match MetaFile::open(&*fs, dir)? {
            Some(found) => found,
            None if firsts.is_empty() => (MetaFile::create(&*fs, dir)?, MetaState::default()),
            None => {
                return Err(LogError::corrupt(
                    dir.join(crate::meta::META_FILE),
                    0,
                    "segments exist but the meta file is missing or has no valid slot",
                ));
            }
        };
        let mut report = OpenReport { segments: firsts.len(), ..Default::default() };
        let mut segments = BTreeMap::new();
        let count = firsts.len();
        for (i, &first) in firsts.iter().enumerate() {
            let is_last = i + 1 == count;
            if is_last && Segment::never_written(&*fs, dir, first)? {
                // A crash while creating the newest segment: its header never reached the
                // disk, so no record was ever written to it.
                tracing::warn!(first, "removing a segment whose creation did not complete");
                Segment::remove_files(&*fs, dir, first)?;
                fs.sync_dir(dir).map_err(|e| LogError::io("fsync directory", dir, e))?;
                report.segments -= 1;
                continue;
            }
            let mut seg = Segment::open(&*fs, dir, first)?;
            if is_last {
                let outcome = seg.scan(config.max_payload, true, None)?;
                if let Some((offset, why)) = outcome.torn_at {
                    tracing::warn!(file = %seg.data_path.display(), offset, reason = %why,
                        "cut a torn tail off the log: the bytes from this offset were never acknowledged as durable");
                    seg.clear_tail(offset)?;
                    report.torn_tail = Some((seg.data_path.clone(), offset));
                }
            } else if i + 1 + config.verify_sealed_segments >= count {
                seg.load_sealed(config.max_payload)?;
                let listed = seg.next;
                seg.scan(config.max_payload, false, Some(listed))?;
                if seg.next != listed {
                    return Err(LogError::corrupt(
                        &seg.data_path,
                        seg.end,
                        format!("records end before index {} but the sealed index lists up to {}", seg.next, listed),
                    ));
                }
                seg.sealed = true;
            } else {
                seg.load_sealed(config.max_payload)?;
            }
            segments.insert(first, seg);
        }
        let mut core =
            LogCore { fs, dir: dir.to_path_buf(), config, segments, meta, state, last_term: 0, dirty: false };
        core.check_contiguous()?;
        if let Some(last) = core.last_index() {
            core.last_term = core.read(last, last + 1)?.first().map_or(0, |r| r.term);
        }
        Ok((core, report))
    }

    fn check_contiguous(&self) -> Result<()> {
        let purged = self.state.purged.as_ref().map(|p| p.index);
        let mut prev: Option<&Segment> = None;
        for seg in self.segments.values() {
            if let Some(p) = prev {
                let gap_purged = purged.is_some_and(|x| seg.first <= x + 1);
                if p.next > seg.first || (p.next < seg.first && !gap_purged) {
                    return Err(LogError::corrupt(
                        &seg.data_path,
                        0,
                        format!(
                            "segment starts at index {} but the previous segment ends before {}",
                            seg.first, p.next
                        ),
                    ));
                }
            }
            prev = Some(seg);
        }
        Ok(())
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The durable meta state (vote, committed, purge point).
    pub fn meta(&self) -> &MetaState {
        &self.state
    }

    /// Last index present on disk (written, not necessarily synced).
    pub fn last_index(&self) -> Option<u64> {
        self.segments.values().rev().find(|s| s.next > s.first).map(|s| s.next - 1)
    }

    /// Term of the last record.
    pub fn last_term(&self) -> u64 {
        self.last_term
    }

    /// First index physically present (records below it were deleted by retention).
    pub fn first_index(&self) -> Option<u64> {
        self.segments.values().find(|s| s.next > s.first).map(|s| s.first)
    }

    /// Index the next append must carry.
    pub fn next_index(&self) -> Option<u64> {
        let after_last = self.last_index().map(|l| l + 1);
        let after_purge = self.state.purged.as_ref().map(|p| p.index + 1);
        after_last.max(after_purge)
    }

    /// Total bytes of record data in all segments.
    pub fn data_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.end - SEGMENT_HEADER_LEN).sum()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The index range `first..next` each segment holds, oldest first.
    pub fn segment_ranges(&self) -> Vec<(u64, u64)> {
        self.segments.values().map(|s| (s.first, s.next)).collect()
    }

    fn active_mut(&mut self) -> Option<&mut Segment> {
        self.segments.values_mut().next_back()
    }

    /// Writes `records` after the current last index; not durable until [`Self::sync`].
    pub fn append(&mut self, records: &[Record]) -> Result<()> {
        let Some(first) = records.first() else { return Ok(()) };
        if let Some(next) = self.next_index()
            && first.index != next
        {
            return Err(LogError::Invalid(format!("append at index {} but the next index is {next}", first.index)));
        }
        let mut term = self.last_term;
        for (i, r) in records.iter().enumerate() {
            if r.index != first.index + i as u64 {
                return Err(LogError::Invalid(format!("append batch is not contiguous at index {}", r.index)));
            }
            if r.payload.len() > self.config.max_payload as usize {
                return Err(LogError::Invalid(format!(
                    "entry {} is {} bytes, over the limit of {}",
                    r.index,
                    r.payload.len(),
                    self.config.max_payload
                )));
            }
            if r.term < term {
                return Err(LogError::Invalid(format!("entry {} has term {} after term {term}", r.index, r.term)));
            }
            term = r.term;
        }
        let headers: Vec<[u8; HEADER_LEN]> =
            records.iter().map(|r| record::encode_header(r.term, r.index, &r.payload)).collect();
        let mut start = 0;
        while start < records.len() {
            self.ensure_active_for(records[start].index, records[start].stored_len())?;
            let seg = self.active_mut().expect("ensure_active_for leaves an active segment");
            let mut end = start;
            let mut bytes = 0;
            while end < records.len() && seg.fits(bytes + records[end].stored_len()) {
                bytes += records[end].stored_len();
                end += 1;
            }
            seg.write(&records[start..end], &headers[start..end])?;
            self.dirty = true;
            start = end;
        }
        self.last_term = term;
        Ok(())
    }

    /// Makes sure the last segment is open for writing, starts at or before `index`
    /// contiguously, and has room for `bytes`; otherwise seals it and starts a new one.
    fn ensure_active_for(&mut self, index: u64, bytes: u64) -> Result<()> {
        let (reuse, seal) = match self.segments.values().next_back() {
            None => (false, false),
            Some(seg) if seg.next != index => (false, seg.count() > 0),
            // A backfilled segment is complete as written: appends go to a new one.
            Some(seg) if seg.sealed => (false, false),
            Some(seg) if !seg.fits(bytes) => (false, true),
            Some(_) => (true, false),
        };
        if reuse {
            return Ok(());
        }
        if seal {
            // Sealing syncs the data file itself.
            self.active_mut().expect("checked above").seal()?;
            self.dirty = false;
        } else if let Some((&first, seg)) = self.segments.iter().next_back()
            && seg.count() == 0
        {
            // An empty segment that cannot take `index` (after a purge past the end).
            let seg = self.segments.remove(&first).expect("present");
            seg.remove(&*self.fs)?;
        }
        let seg = Segment::create(&*self.fs, &self.dir, index, self.config.segment_size)?;
        self.segments.insert(index, seg);
        Ok(())
    }

    /// The data file of the active segment, so a caller can `fdatasync` it without holding
    /// the engine (only the active segment can have unsynced writes).
    pub fn active_file(&self) -> Option<Arc<dyn FileIo>> {
        self.segments.values().next_back().map(|s| s.data.clone())
    }

    /// Marks the active segment synced after the caller synced [`Self::active_file`].
    pub fn mark_synced(&mut self) {
        self.dirty = false;
    }

    /// Whether records were written since the last `fdatasync` (they may not survive a crash).
    pub fn has_unsynced(&self) -> bool {
        self.dirty
    }

    /// `fdatasync` of everything written.
    pub fn sync(&mut self) -> Result<()> {
        if self.dirty {
            if let Some(seg) = self.segments.values().next_back() {
                seg.sync()?;
            }
            self.dirty = false;
        }
        Ok(())
    }

    /// Removes every record after `last_kept` (all of them for `None`); durable on return.
    pub fn truncate_after(&mut self, last_kept: Option<u64>) -> Result<()> {
        if let (Some(p), Some(k)) = (&self.state.purged, last_kept)
            && k < p.index
        {
            return Err(LogError::Invalid(format!("truncate after {k} is below the purge point {}", p.index)));
        }
        let keep_to = last_kept.map_or(0, |k| k + 1);
        self.sync()?;
        // Whole segments after the cut go first, newest first.
        let doomed: Vec<u64> = self.segments.range(keep_to..).map(|(&f, _)| f).rev().collect();
        let removed_any = !doomed.is_empty();
        for first in doomed {
            // A segment starting exactly at keep_to still goes: nothing in it is kept.
            let seg = self.segments.remove(&first).expect("listed above");
            seg.remove(&*self.fs)?;
        }
        if removed_any {
            self.fs.sync_dir(&self.dir).map_err(|e| LogError::io("fsync directory", &self.dir, e))?;
        }
        if let Some(seg) = self.active_mut() {
            // Whatever is last now takes writes again.
            seg.sealed = false;
            if seg.next > keep_to {
                // seg.first < keep_to, or it would have been removed above.
                seg.truncate_after(keep_to - 1)?;
            }
        }
        self.last_term = match self.last_index() {
            Some(last) => self.read(last, last + 1)?.first().map_or(0, |r| r.term),
            None => 0,
        };
        Ok(())
    }

    /// Moves the purge point to `index` (logically removing everything up to it); the meta
    /// file is durable on return. Files are deleted only by [`Self::retain`].
    pub fn purge(&mut self, index: u64, id: Bytes) -> Result<()> {
        if let Some(p) = &self.state.purged
            && index < p.index
        {
            return Err(LogError::Invalid(format!("purge to {index} is below the purge point {}", p.index)));
        }
        self.sync()?;
        self.state.purged = Some(Purged { index, id });
        self.meta.store(&self.state)
    }

    /// Saves the vote; durable on return, after everything written before it.
    pub fn save_vote(&mut self, vote: Bytes) -> Result<()> {
        self.sync()?;
        self.state.vote = Some(vote);
        self.meta.store(&self.state)
    }

    /// Saves the committed log id; durable on return, after everything written before it.
    pub fn save_committed(&mut self, committed: Option<Bytes>) -> Result<()> {
        self.sync()?;
        self.state.committed = committed;
        self.meta.store(&self.state)
    }

    /// Reads the records present in `from..to`, each verified. Records below the first
    /// present one or past the last are simply not returned; a missing record in between
    /// is an error.
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        let start_seg = self.segments.range(..=from).next_back().map_or(from, |(&f, _)| f);
        for seg in self.segments.range(start_seg..).map(|(_, s)| s) {
            if seg.first >= to {
                break;
            }
            let lo = from.max(seg.first);
            let hi = to.min(seg.next);
            if lo >= hi {
                continue;
            }
            if let Some(last) = out.last().map(|r: &Record| r.index)
                && lo != last + 1
            {
                return Err(LogError::Invalid(format!("records {}..{lo} are missing between segments", last + 1)));
            }
            out.extend(seg.read_range(lo, hi, self.config.max_payload)?);
        }
        Ok(out)
    }

    /// Bytes `range` of record `index`'s payload ([`Segment::read_payload_part`]); `None`
    /// when no segment holds the record.
    pub fn read_payload_part(&self, index: u64, range: std::ops::Range<u64>) -> Result<Option<PayloadPart>> {
        let Some((_, seg)) = self.segments.range(..=index).next_back() else { return Ok(None) };
        if index < seg.first || index >= seg.next {
            return Ok(None);
        }
        seg.read_payload_part(index, range, self.config.max_payload).map(Some)
    }

    /// Deletes whole sealed segments as `policy` allows; returns what was deleted.
    pub fn retain(&mut self, policy: Retention, now: SystemTime) -> Result<Vec<RemovedSegment>> {
        let purged = self.state.purged.as_ref().map_or(0, |p| p.index + 1);
        let bound = purged.min(policy.keep_from);
        let mut total = self.data_bytes();
        let mut removed = Vec::new();
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        for (i, first) in firsts.iter().enumerate() {
            let is_active = i + 1 == firsts.len();
            let seg = &self.segments[first];
            if is_active || seg.next > bound {
                break;
            }
            let bytes = seg.end - SEGMENT_HEADER_LEN;
            let over_size = policy.max_bytes.is_some_and(|max| total > max);
            let expired = seg.next <= policy.expired_before;
            let too_old = match policy.max_age {
                Some(age) => {
                    let modified =
                        self.fs.modified(&seg.data_path).map_err(|e| LogError::io("stat", &seg.data_path, e))?;
                    now.duration_since(modified).is_ok_and(|d| d > age)
                }
                None => false,
            };
            if !(over_size || expired || too_old) {
                break;
            }
            let seg = self.segments.remove(first).expect("listed above");
            removed.push(RemovedSegment { first: seg.first, next: seg.next, bytes });
            tracing::info!(file = %seg.data_path.display(), first = seg.first, next = seg.next, "retention deleted segment");
            seg.remove(&*self.fs)?;
            total -= bytes;
        }
        if !removed.is_empty() {
            self.fs.sync_dir(&self.dir).map_err(|e| LogError::io("fsync directory", &self.dir, e))?;
        }
        Ok(removed)
    }
}
