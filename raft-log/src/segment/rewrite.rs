//! Writing segments other than by appending: a backfilled segment staged under temporary
//! names and published by renaming, and a segment at or below the purge point cut back.

use std::path::Path;

use super::{INDEX_SLOT, SCAN_CHUNK, SEGMENT_HEADER_LEN, STAGED_SUFFIX, Segment, encode_segment_header, file_names};
use crate::error::{LogError, Result};
use crate::fs::Fs;
use crate::record::{self, HEADER_LEN, Record};

/// Most bytes written with one call while staging a segment.
const STAGE_CHUNK: u64 = 4 << 20;
/// Records whose headers are zeroed per window while cutting a segment.
const CUT_WINDOW: u64 = 4096;

impl Segment {
    /// Writes `records` (contiguous) as a complete, sealed segment under staged names
    /// (`<first>.log.tmp`, `<first>.idx.tmp`), both files fsynced. Its capacity is exactly
    /// its size, so nothing is ever appended to it. Recovery ignores it until
    /// [`Segment::publish`] gives it its real names.
    pub fn stage(fs: &dyn Fs, dir: &Path, records: &[Record]) -> Result<Segment> {
        let first = records.first().expect("a staged segment holds records").index;
        let (data_name, index_name) = file_names(first);
        let data_path = dir.join(data_name + STAGED_SUFFIX);
        let index_path = dir.join(index_name + STAGED_SUFFIX);
        let capacity = SEGMENT_HEADER_LEN + records.iter().map(Record::stored_len).sum::<u64>();
        let data = fs.open(&data_path, true).map_err(|e| LogError::io("create", &data_path, e))?;
        data.set_len(0).map_err(|e| LogError::io("truncate", &data_path, e))?;
        data.write_all_at(&encode_segment_header(first, capacity), 0)
            .map_err(|e| LogError::io("write segment header", &data_path, e))?;
        let index = fs.open(&index_path, true).map_err(|e| LogError::io("create", &index_path, e))?;
        index.set_len(0).map_err(|e| LogError::io("truncate index", &index_path, e))?;
        let mut seg = Segment {
            first,
            next: first,
            end: SEGMENT_HEADER_LEN,
            capacity,
            sealed: false,
            data,
            index,
            data_path,
            index_path,
        };
        // Bounded batches: a backfill can carry a whole segment.
        let mut start = 0;
        while start < records.len() {
            let mut end = start;
            let mut bytes = 0u64;
            while end < records.len() && (end == start || bytes + records[end].stored_len() <= STAGE_CHUNK) {
                bytes += records[end].stored_len();
                end += 1;
            }
            let headers: Vec<[u8; HEADER_LEN]> =
                records[start..end].iter().map(|r| record::encode_header(r.term, r.index, &r.payload)).collect();
            seg.write(&records[start..end], &headers)?;
            start = end;
        }
        seg.seal()?;
        Ok(seg)
    }

    /// Gives a staged segment its real names: the index file first (directory synced),
    /// then the data file (directory synced). A crash leaves either no data file or a data
    /// file with its complete index, never a data file whose index is missing.
    pub fn publish(&mut self, fs: &dyn Fs, dir: &Path) -> Result<()> {
        let (data_name, index_name) = file_names(self.first);
        let data_path = dir.join(data_name);
        let index_path = dir.join(index_name);
        fs.rename(&self.index_path, &index_path).map_err(|e| LogError::io("rename", &self.index_path, e))?;
        fs.sync_dir(dir).map_err(|e| LogError::io("fsync directory", dir, e))?;
        self.index_path = index_path;
        fs.rename(&self.data_path, &data_path).map_err(|e| LogError::io("rename", &self.data_path, e))?;
        fs.sync_dir(dir).map_err(|e| LogError::io("fsync directory", dir, e))?;
        self.data_path = data_path;
        Ok(())
    }

    /// Removes the records after `last_kept` from a segment at or below the purge point,
    /// and seals it again. The index file is cut and synced first (a sealed segment never
    /// lists a record that is gone); then, as in [`Segment::truncate_after`], the cut
    /// records' headers are zeroed newest first and synced, then the rest of the cut bytes.
    /// A crash part way leaves, to a scan, the kept records and at most a prefix of the cut
    /// ones followed by a damaged record or zeros; to an index, only the kept records.
    pub fn cut(&mut self, last_kept: u64, max_payload: u32) -> Result<()> {
        let keep_to = last_kept + 1;
        assert!(keep_to > self.first && keep_to < self.next, "cut inside segment {}..{}", self.first, self.next);
        let new_end = self.position(keep_to)?;
        let old_end = self.end;
        // Every CUT_WINDOW-th record's position: the headers can then be zeroed newest
        // first, a window at a time, once the index no longer lists them.
        let mut checkpoints = Vec::new();
        let mut count = 0u64;
        self.record_positions(new_end, old_end, max_payload, |pos| {
            if count.is_multiple_of(CUT_WINDOW) {
                checkpoints.push(pos);
            }
            count += 1;
        })?;
        if count != self.next - keep_to {
            return Err(LogError::corrupt(
                &self.data_path,
                new_end,
                format!("{count} records follow record {last_kept}, the index lists {}", self.next - keep_to),
            ));
        }
        self.index
            .set_len((keep_to - self.first) * INDEX_SLOT)
            .map_err(|e| LogError::io("truncate index", &self.index_path, e))?;
        self.index.sync_data().map_err(|e| LogError::io("fdatasync", &self.index_path, e))?;
        self.next = keep_to;
        self.end = new_end;
        let zero = [0u8; HEADER_LEN];
        let mut window_end = old_end;
        for &start in checkpoints.iter().rev() {
            let mut positions = Vec::with_capacity(CUT_WINDOW as usize);
            self.record_positions(start, window_end, max_payload, |pos| positions.push(pos))?;
            for &pos in positions.iter().rev() {
                self.data.write_all_at(&zero, pos).map_err(|e| LogError::io("write", &self.data_path, e))?;
            }
            window_end = start;
        }
        self.sync()?;
        let zeros = vec![0u8; (1 << 20).min((old_end - new_end) as usize)];
        let mut at = new_end;
        while at < old_end {
            let n = zeros.len().min((old_end - at) as usize);
            self.data.write_all_at(&zeros[..n], at).map_err(|e| LogError::io("write", &self.data_path, e))?;
            at += n as u64;
        }
        self.seal()
    }

    /// Calls `f` with the byte position of each record from `pos` to `end`, reading only
    /// the headers (in chunks); the records must end exactly at `end`.
    fn record_positions(&self, mut pos: u64, end: u64, max_payload: u32, mut f: impl FnMut(u64)) -> Result<()> {
        let mut buf: Vec<u8> = Vec::new();
        let mut buf_pos = pos;
        while pos < end {
            if pos < buf_pos || pos + HEADER_LEN as u64 > buf_pos + buf.len() as u64 {
                let n = (SCAN_CHUNK as u64).min(end - pos).max(HEADER_LEN as u64) as usize;
                buf.resize(n, 0);
                self.data.read_exact_at(&mut buf, pos).map_err(|e| LogError::io("read", &self.data_path, e))?;
                buf_pos = pos;
            }
            let off = (pos - buf_pos) as usize;
            let header = record::decode_header(&buf[off..off + HEADER_LEN], max_payload)
                .map_err(|e| LogError::corrupt(&self.data_path, pos, e.to_string()))?;
            f(pos);
            pos += header.stored_len();
        }
        if pos != end {
            return Err(LogError::corrupt(&self.data_path, pos, format!("the last record runs past byte {end}")));
        }
        Ok(())
    }
}
