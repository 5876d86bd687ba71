//! Backfill: writing records at or below the purge point that the log lacks, copied from
//! another replica (after this one caught up through a snapshot), as sealed segments that
//! become visible whole.
//!
//! The copy wins. Every entry at or below the purge point is committed, so another
//! replica's copy is the truth there. A local record with the same index and term is the
//! same entry (Raft's log matching) and is kept; a local record with another term is a
//! leftover this node never learned was overwritten. It goes, together with every later
//! record of its segment: the records of one segment come from one log, so by log matching
//! they are all leftovers too. A segment holding records above the purge point is never
//! cut; such a conflict is refused.
//!
//! A backfill is planned against the current segments, staged (files written under
//! temporary names and fsynced, without holding the engine), then installed: conflicting
//! records are cut (durably), and each staged segment is renamed into place, oldest first.
//! A crash leaves every staged segment whole or absent, and a conflicting range either as
//! it was, cut, or (in the newest segment only) cut back to a prefix of its old records.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use super::LogCore;
use crate::error::{LogError, Result};
use crate::fs::Fs;
use crate::record::Record;
use crate::segment::{SEGMENT_HEADER_LEN, Segment};

/// What a backfill (or discard) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backfilled {
    /// Index ranges `first..next` written as new segments, oldest first.
    pub written: Vec<(u64, u64)>,
    /// Records the log already held with the same term and bytes (left in place).
    pub already_held: u64,
    /// Index ranges `from..to` of local records removed because they conflicted with the
    /// copy (or were discarded).
    pub removed: Vec<(u64, u64)>,
}

/// A local segment to cut: records from `keep_to` on go (the whole segment when `keep_to`
/// is its first index). `next` is the segment's extent when planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cut {
    first: u64,
    next: u64,
    keep_to: u64,
}

/// A planned backfill: what to cut and which records to write as which segments.
#[derive(Debug)]
pub(crate) struct Plan {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    cuts: Vec<Cut>,
    /// Ranges of the batch (positions in it) to write, one new segment each.
    segments: Vec<Range<usize>>,
    already_held: u64,
}

/// A backfill whose segments are written under staged names, ready to be installed.
#[derive(Debug)]
pub struct StagedBackfill {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    cuts: Vec<Cut>,
    segments: Vec<Segment>,
    already_held: u64,
}

impl Plan {
    /// Writes the planned segments under staged names (data and index fsynced). Needs no
    /// access to the engine, so it can run while the writer goes on.
    pub(crate) fn stage(self, records: &[Record]) -> Result<StagedBackfill> {
        let mut staged = StagedBackfill {
            fs: self.fs,
            dir: self.dir,
            cuts: self.cuts,
            segments: Vec::with_capacity(self.segments.len()),
            already_held: self.already_held,
        };
        for range in self.segments {
            match Segment::stage(&*staged.fs, &staged.dir, &records[range]) {
                Ok(seg) => staged.segments.push(seg),
                Err(e) => {
                    staged.discard();
                    return Err(e);
                }
            }
        }
        Ok(staged)
    }
}

impl StagedBackfill {
    /// Removes the staged files (best effort: open removes leftovers anyway).
    fn discard(self) {
        for seg in self.segments {
            for path in [&seg.data_path, &seg.index_path] {
                if let Err(e) = self.fs.remove_file(path) {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove a staged backfill file");
                }
            }
        }
    }
}

impl LogCore {
    /// Makes the log hold `records` (contiguous, all at or below the purge point), as
    /// described in the module docs; durable on return. Records already held are kept,
    /// conflicting ones are replaced, missing ones are written as new sealed segments.
    pub fn backfill(&mut self, records: &[Record]) -> Result<Backfilled> {
        let staged = self.plan_backfill(records)?.stage(records)?;
        self.install_backfill(staged)
    }

    /// Removes every record in `from..to` (all at or below the purge point), and with each
    /// the later records of its segment (segments are only cut at the end); durable on
    /// return. For records no replica can vouch for any more.
    pub fn discard(&mut self, from: u64, to: u64) -> Result<Backfilled> {
        let staged = self.plan_discard(from, to)?.stage(&[])?;
        self.install_backfill(staged)
    }

    fn purge_index(&self, what: &str) -> Result<u64> {
        self.state.purged.as_ref().map(|p| p.index).ok_or_else(|| {
            LogError::Invalid(format!("{what} works only at or below the purge point, and nothing is purged"))
        })
    }

    /// Checks a batch on its own: contiguous, terms not decreasing, sizes within limits.
    fn check_batch(&self, records: &[Record]) -> Result<(u64, u64)> {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Err(LogError::Invalid("backfill of no records".into()));
        };
        let limit = self.config.segment_size.max(self.config.max_batch_bytes as u64);
        let mut bytes = 0u64;
        for (i, pair) in records.windows(2).enumerate() {
            if pair[1].index != pair[0].index + 1 {
                return Err(LogError::Invalid(format!("backfill batch is not contiguous at position {}", i + 1)));
            }
            if pair[1].term < pair[0].term {
                return Err(LogError::Invalid(format!(
                    "backfill record {} has term {} after term {}",
                    pair[1].index, pair[1].term, pair[0].term
                )));
            }
        }
        for r in records {
            if r.payload.len() > self.config.max_payload as usize {
                return Err(LogError::Invalid(format!(
                    "backfill record {} is {} bytes, over the limit of {}",
                    r.index,
                    r.payload.len(),
                    self.config.max_payload
                )));
            }
            bytes += r.stored_len();
        }
        if bytes > limit {
            return Err(LogError::Invalid(format!("backfill batch of {bytes} bytes is over the limit of {limit}")));
        }
        Ok((first.index, last.index))
    }

    /// The present record at `index`, if any.
    fn record_at(&self, index: u64) -> Result<Option<Record>> {
        Ok(self.read(index, index + 1)?.pop())
    }

    pub(crate) fn plan_backfill(&self, records: &[Record]) -> Result<Plan> {
        let (lo, hi) = self.check_batch(records)?;
        let purged = self.purge_index("backfill")?;
        if hi > purged {
            return Err(LogError::Invalid(format!(
                "backfill up to record {hi} is past the purge point {purged}: those records are Raft's to write"
            )));
        }
        let last_term = records[records.len() - 1].term;
        if let Some(below) = lo.checked_sub(1)
            && let Some(prev) = self.record_at(below)?
            && prev.term > records[0].term
        {
            return Err(LogError::Invalid(format!(
                "record {below} has term {} but the copy's record {lo} has term {}: the local record is a \
                 leftover; backfill the records below {lo} first",
                prev.term, records[0].term
            )));
        }
        let mut cuts = Vec::new();
        let mut already_held = 0;
        // Local records in lo..=hi, and the one just after (a leftover if its term is lower
        // than the copy's last: a committed entry is never followed by a lower term).
        let end = hi + 2;
        let start = self.segments.range(..=lo).next_back().map_or(lo, |(&f, _)| f);
        for seg in self.segments.range(start..end).map(|(_, s)| s) {
            let (from, to) = (lo.max(seg.first), end.min(seg.next));
            if from >= to {
                continue;
            }
            for local in seg.read_range(from, to, self.config.max_payload)? {
                let conflict = match records.get((local.index - lo) as usize) {
                    Some(copy) if local.term == copy.term && local.payload != copy.payload => {
                        return Err(LogError::Invalid(format!(
                            "record {} has term {} here and in the copy, but different bytes: one of the two \
                             replicas is damaged",
                            local.index, local.term
                        )));
                    }
                    Some(copy) => local.term != copy.term,
                    None => local.term < last_term,
                };
                if !conflict {
                    already_held += u64::from(local.index <= hi);
                    continue;
                }
                if seg.next - 1 > purged {
                    return Err(LogError::Invalid(format!(
                        "record {} (term {}) conflicts with the copy, but its segment holds records past the \
                         purge point {purged}",
                        local.index, local.term
                    )));
                }
                cuts.push(Cut { first: seg.first, next: seg.next, keep_to: local.index });
                break;
            }
        }
        let segments =
            self.missing_runs(lo, hi, &cuts).into_iter().flat_map(|run| self.split(records, lo, run)).collect();
        Ok(Plan { fs: self.fs.clone(), dir: self.dir.clone(), cuts, segments, already_held })
    }

    pub(crate) fn plan_discard(&self, from: u64, to: u64) -> Result<Plan> {
        let purged = self.purge_index("discard")?;
        if to > purged + 1 {
            return Err(LogError::Invalid(format!("discard up to {to} is past the purge point {purged}")));
        }
        let mut cuts = Vec::new();
        let start = self.segments.range(..=from).next_back().map_or(from, |(&f, _)| f);
        for seg in self.segments.range(start..to).map(|(_, s)| s) {
            if seg.next <= from || seg.count() == 0 {
                continue;
            }
            if seg.next - 1 > purged {
                return Err(LogError::Invalid(format!(
                    "records {from}..{to} share a segment with records past the purge point {purged}"
                )));
            }
            cuts.push(Cut { first: seg.first, next: seg.next, keep_to: from.max(seg.first) });
        }
        Ok(Plan { fs: self.fs.clone(), dir: self.dir.clone(), cuts, segments: Vec::new(), already_held: 0 })
    }

    /// Extent segment `first..next` has once `cuts` are made.
    fn extent_after(cuts: &[Cut], first: u64, next: u64) -> u64 {
        cuts.iter().find(|c| c.first == first).map_or(next, |c| c.keep_to)
    }

    /// Index ranges within `lo..=hi` that no segment holds once `cuts` are made.
    fn missing_runs(&self, lo: u64, hi: u64, cuts: &[Cut]) -> Vec<Range<u64>> {
        let mut runs = Vec::new();
        let mut at = lo;
        let start = self.segments.range(..=lo).next_back().map_or(lo, |(&f, _)| f);
        for seg in self.segments.range(start..=hi).map(|(_, s)| s) {
            let next = Self::extent_after(cuts, seg.first, seg.next);
            if next <= at || seg.first == next {
                continue;
            }
            if seg.first > at {
                runs.push(at..seg.first);
            }
            at = next;
        }
        if at <= hi {
            runs.push(at..hi + 1);
        }
        runs
    }

    /// Splits the records of index run `run` into segment-sized position ranges of the batch.
    fn split(&self, records: &[Record], lo: u64, run: Range<u64>) -> Vec<Range<usize>> {
        let (start, end) = ((run.start - lo) as usize, (run.end - lo) as usize);
        let mut out = Vec::new();
        let mut first = start;
        let mut bytes = SEGMENT_HEADER_LEN;
        for (i, r) in records.iter().enumerate().take(end).skip(start) {
            if i > first && bytes + r.stored_len() > self.config.segment_size {
                out.push(first..i);
                first = i;
                bytes = SEGMENT_HEADER_LEN;
            }
            bytes += r.stored_len();
        }
        out.push(first..end);
        out
    }

    /// Whether `staged` still fits the segments as they are now (retention may have deleted
    /// some since it was planned; nothing else writes at or below the purge point).
    fn still_fits(&self, staged: &StagedBackfill) -> bool {
        let cuts_hold = staged.cuts.iter().all(|c| self.segments.get(&c.first).is_some_and(|s| s.next == c.next));
        let free = staged.segments.iter().all(|new| {
            self.segments.values().all(|seg| {
                let next = Self::extent_after(&staged.cuts, seg.first, seg.next);
                seg.first == next || next <= new.first || new.next <= seg.first
            })
        });
        cuts_hold && free
    }

    /// Makes a staged backfill part of the log: cuts, then renames each staged segment into
    /// place, oldest first.
    pub(crate) fn install_backfill(&mut self, mut staged: StagedBackfill) -> Result<Backfilled> {
        if !self.still_fits(&staged) {
            staged.discard();
            return Err(LogError::Invalid("the log changed while the backfill was staged; plan it again".into()));
        }
        // Like every write but an append, ordered after the appends before it.
        self.sync()?;
        let mut done = Backfilled { already_held: staged.already_held, ..Backfilled::default() };
        for cut in std::mem::take(&mut staged.cuts) {
            done.removed.push((cut.keep_to, cut.next));
            tracing::warn!(
                from = cut.keep_to,
                to = cut.next,
                segment = cut.first,
                "removing log records that conflict with a replica's committed copy"
            );
            if cut.keep_to == cut.first {
                let seg = self.segments.remove(&cut.first).expect("checked by still_fits");
                seg.remove(&*self.fs)?;
                self.fs.sync_dir(&self.dir).map_err(|e| LogError::io("fsync directory", &self.dir, e))?;
            } else {
                self.segments
                    .get_mut(&cut.first)
                    .expect("checked by still_fits")
                    .cut(cut.keep_to - 1, self.config.max_payload)?;
            }
        }
        // A segment that stops being the newest must be sealed (durable, index trusted) first,
        // as when the log rolls over to a new segment.
        let newest_staged = staged.segments.iter().map(|s| s.first).max();
        if let Some(active) = self.segments.values_mut().next_back()
            && newest_staged.is_some_and(|f| f > active.first)
            && !active.sealed
        {
            active.seal()?;
            self.dirty = false;
        }
        let mut segments = std::mem::take(&mut staged.segments).into_iter();
        while let Some(mut seg) = segments.next() {
            if let Err(e) = seg.publish(&*self.fs, &self.dir) {
                staged.segments = std::iter::once(seg).chain(segments).collect();
                staged.discard();
                return Err(e);
            }
            tracing::info!(first = seg.first, next = seg.next, "backfilled log segment");
            done.written.push((seg.first, seg.next));
            self.segments.insert(seg.first, seg);
        }
        self.last_term = match self.last_index() {
            Some(last) => self.read(last, last + 1)?.first().map_or(0, |r| r.term),
            None => 0,
        };
        Ok(done)
    }
}
