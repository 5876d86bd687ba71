//! A segment: one preallocated data file of records plus its fixed-width index file.
//!
//! Data file `<first index, 20 digits>.log`: a 64-byte file header, then records back to
//! back. Index file `<first index>.idx`: for the record with index `first + i`, bytes
//! `8*i .. 8*i+8` hold its byte position in the data file. Lookup from index to position
//! is one positional read, with no per-record state in memory.
//!
//! The index file of the active (last) segment is not fsynced per batch: it is rebuilt
//! by scanning the data file on open. A segment is *sealed* when the log moves past it;
//! sealing fsyncs both files, so later opens trust a sealed segment's index.

use std::io::IoSlice;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::error::{LogError, Result};
use crate::fs::{FileIo, Fs};
use crate::record::{self, HEADER_LEN, PayloadPart, Record, RecordError};

mod rewrite;

/// Size of the data file header.
pub const SEGMENT_HEADER_LEN: u64 = 64;
/// Format version written into every segment header and the meta file.
pub const FORMAT_VERSION: u32 = 1;
const SEGMENT_MAGIC: &[u8; 8] = b"RMQSEGv\0";
pub(crate) const INDEX_SLOT: u64 = 8;
/// How far past the expected index a record found after a damaged one still proves the
/// damage is in the middle of the log rather than a torn tail.
const FOLLOW_WINDOW: u64 = 1024;
/// Bytes read per step while scanning a segment.
pub(crate) const SCAN_CHUNK: usize = 4 << 20;

/// File names of the segment starting at `first`.
pub fn file_names(first: u64) -> (String, String) {
    (format!("{first:020}.log"), format!("{first:020}.idx"))
}

/// Suffix of the names a backfilled segment is written under before it is published.
pub const STAGED_SUFFIX: &str = ".tmp";

fn parse_stem(stem: &str) -> Option<u64> {
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Parses a data file name back into its first index.
pub fn parse_data_name(name: &str) -> Option<u64> {
    parse_stem(name.strip_suffix(".log")?)
}

/// Parses an index file name back into its first index.
pub fn parse_index_name(name: &str) -> Option<u64> {
    parse_stem(name.strip_suffix(".idx")?)
}

/// Whether `name` is a staged (never published) segment file.
pub fn is_staged_name(name: &str) -> bool {
    name.strip_suffix(STAGED_SUFFIX).is_some_and(|n| parse_data_name(n).or_else(|| parse_index_name(n)).is_some())
}

/// One segment's files and extent.
#[derive(Debug)]
pub struct Segment {
    /// Index of the first record.
    pub first: u64,
    /// One past the index of the last record (`first` when empty).
    pub next: u64,
    /// Byte position just after the last record.
    pub end: u64,
    /// Size the data file was preallocated to; records never cross it.
    pub capacity: u64,
    /// Whether both files are durable and complete (the log has moved past it).
    pub sealed: bool,
    pub(crate) data: Arc<dyn FileIo>,
    pub(crate) index: Arc<dyn FileIo>,
    pub(crate) data_path: PathBuf,
    pub(crate) index_path: PathBuf,
}

pub(crate) fn encode_segment_header(first: u64, capacity: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first.to_le_bytes());
    h[24..32].copy_from_slice(&capacity.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What a scan of a data file found.
#[derive(Debug)]
pub struct ScanOutcome {
    /// Where a torn tail was cut: byte offset and why the bytes there were rejected.
    pub torn_at: Option<(u64, RecordError)>,
}

impl Segment {
    /// Creates and preallocates a new, empty segment; durable (files and directory
    /// entries) when this returns.
    pub fn create(fs: &dyn Fs, dir: &Path, first: u64, capacity: u64) -> Result<Segment> {
        let (data_name, index_name) = file_names(first);
        let data_path = dir.join(data_name);
        let index_path = dir.join(index_name);
        let data = fs.open(&data_path, true).map_err(|e| LogError::io("create", &data_path, e))?;
        data.allocate(capacity).map_err(|e| LogError::io("preallocate", &data_path, e))?;
        data.write_all_at(&encode_segment_header(first, capacity), 0)
            .map_err(|e| LogError::io("write segment header", &data_path, e))?;
        data.sync_data().map_err(|e| LogError::io("fdatasync", &data_path, e))?;
        let index = fs.open(&index_path, true).map_err(|e| LogError::io("create", &index_path, e))?;
        index.set_len(0).map_err(|e| LogError::io("truncate index", &index_path, e))?;
        index.sync_data().map_err(|e| LogError::io("fdatasync", &index_path, e))?;
        fs.sync_dir(dir).map_err(|e| LogError::io("fsync directory", dir, e))?;
        Ok(Segment {
            first,
            next: first,
            end: SEGMENT_HEADER_LEN,
            capacity,
            sealed: false,
            data,
            index,
            data_path,
            index_path,
        })
    }

    /// Opens the files of an existing segment and checks the data file header.
    /// The extent (`next`, `end`) is set by [`Segment::load_sealed`] or [`Segment::scan`].
    pub fn open(fs: &dyn Fs, dir: &Path, first: u64) -> Result<Segment> {
        let (data_name, index_name) = file_names(first);
        let data_path = dir.join(data_name);
        let index_path = dir.join(index_name);
        let data = fs.open(&data_path, false).map_err(|e| LogError::io("open", &data_path, e))?;
        let index = fs.open(&index_path, true).map_err(|e| LogError::io("open", &index_path, e))?;
        let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
        data.read_exact_at(&mut h, 0).map_err(|e| LogError::io("read segment header", &data_path, e))?;
        if &h[0..8] != SEGMENT_MAGIC {
            return Err(LogError::corrupt(&data_path, 0, "not a raftmq segment (bad file magic)"));
        }
        let crc = u32::from_le_bytes(h[60..64].try_into().expect("4 bytes"));
        if crc != crc32c::crc32c(&h[0..60]) {
            return Err(LogError::corrupt(&data_path, 0, "segment header checksum mismatch"));
        }
        let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(LogError::UnsupportedVersion { path: data_path, found: version, supported: FORMAT_VERSION });
        }
        let stored_first = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
        if stored_first != first {
            return Err(LogError::corrupt(
                &data_path,
                16,
                format!("header says first index {stored_first}, file name says {first}"),
            ));
        }
        let capacity = u64::from_le_bytes(h[24..32].try_into().expect("8 bytes"));
        Ok(Segment {
            first,
            next: first,
            end: SEGMENT_HEADER_LEN,
            capacity,
            sealed: false,
            data,
            index,
            data_path,
            index_path,
        })
    }

    /// Whether the data file of segment `first` has no header at all (shorter than one,
    /// or all zeros): its creation never completed.
    pub fn never_written(fs: &dyn Fs, dir: &Path, first: u64) -> Result<bool> {
        let path = dir.join(file_names(first).0);
        let data = fs.open(&path, false).map_err(|e| LogError::io("open", &path, e))?;
        let len = data.len().map_err(|e| LogError::io("stat", &path, e))?;
        let mut h = vec![0u8; len.min(SEGMENT_HEADER_LEN + HEADER_LEN as u64) as usize];
        data.read_exact_at(&mut h, 0).map_err(|e| LogError::io("read segment header", &path, e))?;
        let head = h.len().min(SEGMENT_HEADER_LEN as usize);
        if h[..head].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        if h[head..].iter().any(|&b| b != 0) {
            return Err(LogError::corrupt(&path, 0, "the segment header is zeroed but a record follows it"));
        }
        Ok(true)
    }

    /// Removes the files of segment `first` (a missing index file is fine).
    pub fn remove_files(fs: &dyn Fs, dir: &Path, first: u64) -> Result<()> {
        let (data_name, index_name) = file_names(first);
        let data_path = dir.join(data_name);
        fs.remove_file(&data_path).map_err(|e| LogError::io("remove", &data_path, e))?;
        let index_path = dir.join(index_name);
        match fs.remove_file(&index_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LogError::io("remove", &index_path, e)),
            _ => Ok(()),
        }
    }

    /// Number of records.
    pub fn count(&self) -> u64 {
        self.next - self.first
    }

    /// Loads the extent of a sealed segment from its index file, checking the first and
    /// last records fully (header, CRC, index).
    pub fn load_sealed(&mut self, max_payload: u32) -> Result<()> {
        let len = self.index.len().map_err(|e| LogError::io("stat", &self.index_path, e))?;
        if len % INDEX_SLOT != 0 {
            return Err(LogError::corrupt(&self.index_path, len, "index file length is not a multiple of 8"));
        }
        let count = len / INDEX_SLOT;
        self.next = self.first + count;
        self.sealed = true;
        // Positions are bounded by the file until the last record tells where data ends.
        self.end = self.capacity;
        if count == 0 {
            self.end = SEGMENT_HEADER_LEN;
            let mut h = [0u8; HEADER_LEN];
            self.data
                .read_exact_at(&mut h, SEGMENT_HEADER_LEN)
                .map_err(|e| LogError::io("read", &self.data_path, e))?;
            if h.iter().any(|&b| b != 0) {
                return Err(LogError::corrupt(
                    &self.index_path,
                    0,
                    "the index file lists no records but the data file holds some (index file lost?)",
                ));
            }
            return Ok(());
        }
        let last_pos = self.position(self.next - 1)?;
        let last = self.read_one_at(last_pos, self.next - 1, max_payload)?;
        self.end = last_pos + last.stored_len();
        let first_pos = self.position(self.first)?;
        self.read_one_at(first_pos, self.first, max_payload)?;
        Ok(())
    }

    /// Byte position of record `index` (which must be in this segment).
    pub fn position(&self, index: u64) -> Result<u64> {
        assert!(
            index >= self.first && index < self.next,
            "index {index} outside segment {}..{}",
            self.first,
            self.next
        );
        let mut b = [0u8; 8];
        let at = (index - self.first) * INDEX_SLOT;
        self.index.read_exact_at(&mut b, at).map_err(|e| LogError::io("read index", &self.index_path, e))?;
        let pos = u64::from_le_bytes(b);
        if pos < SEGMENT_HEADER_LEN || pos >= self.end {
            return Err(LogError::corrupt(
                &self.index_path,
                at,
                format!("index slot for {index} holds position {pos}"),
            ));
        }
        Ok(pos)
    }

    fn read_one_at(&self, pos: u64, expect_index: u64, max_payload: u32) -> Result<Record> {
        let mut h = [0u8; HEADER_LEN];
        self.data.read_exact_at(&mut h, pos).map_err(|e| LogError::io("read", &self.data_path, e))?;
        let header = record::decode_header(&h, max_payload)
            .map_err(|e| LogError::corrupt(&self.data_path, pos, e.to_string()))?;
        let mut buf = BytesMut::zeroed(header.stored_len() as usize);
        self.data.read_exact_at(&mut buf, pos).map_err(|e| LogError::io("read", &self.data_path, e))?;
        self.decode_expected(buf.freeze(), pos, expect_index, max_payload).map(|(r, _)| r)
    }

    fn decode_expected(&self, buf: Bytes, pos: u64, expect_index: u64, max_payload: u32) -> Result<(Record, usize)> {
        let (rec, used) =
            record::decode(&buf, max_payload).map_err(|e| LogError::corrupt(&self.data_path, pos, e.to_string()))?;
        if rec.index != expect_index {
            return Err(LogError::corrupt(
                &self.data_path,
                pos,
                format!("record has index {}, expected {expect_index}", rec.index),
            ));
        }
        Ok((rec, used))
    }

    /// Reads bytes `range` of record `index`'s payload (cut at its end) without reading the
    /// rest of the record. Its header is checked (magic, length, index); its CRC cannot be:
    /// the caller checks its own checksums over the part.
    pub fn read_payload_part(&self, index: u64, range: Range<u64>, max_payload: u32) -> Result<PayloadPart> {
        let pos = self.position(index)?;
        let mut h = [0u8; HEADER_LEN];
        self.data.read_exact_at(&mut h, pos).map_err(|e| LogError::io("read", &self.data_path, e))?;
        let header = record::decode_header(&h, max_payload)
            .map_err(|e| LogError::corrupt(&self.data_path, pos, e.to_string()))?;
        if header.index != index {
            return Err(LogError::corrupt(
                &self.data_path,
                pos,
                format!("record has index {}, expected {index}", header.index),
            ));
        }
        if pos + header.stored_len() > self.end {
            return Err(LogError::corrupt(&self.data_path, pos, "the record runs past the segment's end"));
        }
        let len = u64::from(header.len);
        let start = range.start.min(len);
        let end = range.end.min(len).max(start);
        let mut buf = BytesMut::zeroed((end - start) as usize);
        self.data
            .read_exact_at(&mut buf, pos + HEADER_LEN as u64 + start)
            .map_err(|e| LogError::io("read", &self.data_path, e))?;
        Ok(PayloadPart { index, term: header.term, payload_len: len, offset: start, bytes: buf.freeze() })
    }

    /// Reads records `from..to` (within this segment), verifying each.
    pub fn read_range(&self, from: u64, to: u64, max_payload: u32) -> Result<Vec<Record>> {
        assert!(from >= self.first && to <= self.next && from <= to);
        if from == to {
            return Ok(Vec::new());
        }
        let start = self.position(from)?;
        let stop = if to == self.next { self.end } else { self.position(to)? };
        if stop <= start {
            return Err(LogError::corrupt(
                &self.index_path,
                (to - self.first) * INDEX_SLOT,
                "index positions go backwards",
            ));
        }
        let mut buf = BytesMut::zeroed((stop - start) as usize);
        self.data.read_exact_at(&mut buf, start).map_err(|e| LogError::io("read", &self.data_path, e))?;
        let buf = buf.freeze();
        let mut out = Vec::with_capacity((to - from) as usize);
        let mut off = 0usize;
        for index in from..to {
            let (rec, used) = self.decode_expected(buf.slice(off..), start + off as u64, index, max_payload)?;
            off += used;
            out.push(rec);
        }
        Ok(out)
    }

    /// Whether `bytes` more fit into the data file.
    pub fn fits(&self, bytes: u64) -> bool {
        self.end + bytes <= self.capacity
    }

    /// Writes `records` (the next indexes of this segment) and their index slots; nothing
    /// is fsynced here.
    pub fn write(&mut self, records: &[Record], headers: &[[u8; HEADER_LEN]]) -> Result<()> {
        assert!(!self.sealed, "write to sealed segment {}", self.first);
        let mut slices = Vec::with_capacity(records.len() * 2);
        let mut slots = Vec::with_capacity(records.len() * INDEX_SLOT as usize);
        let mut pos = self.end;
        for (i, (rec, h)) in records.iter().zip(headers).enumerate() {
            assert_eq!(rec.index, self.next + i as u64, "records must be contiguous");
            slices.push(IoSlice::new(h));
            slices.push(IoSlice::new(&rec.payload));
            slots.extend_from_slice(&pos.to_le_bytes());
            pos += rec.stored_len();
        }
        assert!(pos <= self.capacity, "caller checks fits()");
        self.data.write_all_vectored_at(&slices, self.end).map_err(|e| LogError::io("write", &self.data_path, e))?;
        self.index
            .write_all_at(&slots, (self.next - self.first) * INDEX_SLOT)
            .map_err(|e| LogError::io("write index", &self.index_path, e))?;
        self.end = pos;
        self.next += records.len() as u64;
        Ok(())
    }

    /// `fdatasync` of the data file.
    pub fn sync(&self) -> Result<()> {
        self.data.sync_data().map_err(|e| LogError::io("fdatasync", &self.data_path, e))
    }

    /// Makes the segment complete and durable: data and index fsynced, index trimmed to the
    /// record count.
    pub fn seal(&mut self) -> Result<()> {
        self.sync()?;
        self.index
            .set_len(self.count() * INDEX_SLOT)
            .map_err(|e| LogError::io("truncate index", &self.index_path, e))?;
        self.index.sync_data().map_err(|e| LogError::io("fdatasync", &self.index_path, e))?;
        self.sealed = true;
        Ok(())
    }

    /// Removes records after `last_kept` (exclusive end `last_kept + 1`). Their bytes are
    /// overwritten with zeros from the cut forward and the data file is fsynced before this
    /// returns. The first zeroed header is a clean end for [`Segment::scan`], so a crash
    /// part way leaves either the old records or the cut log, never a mix.
    pub fn truncate_after(&mut self, last_kept: u64) -> Result<()> {
        let keep_to = last_kept + 1;
        assert!(keep_to >= self.first && keep_to <= self.next);
        if keep_to == self.next {
            return Ok(());
        }
        let new_end = if keep_to == self.first { SEGMENT_HEADER_LEN } else { self.position(keep_to)? };
        // Headers newest first and durable before anything else: a crash part way leaves
        // a prefix of the old records and then only zeroed headers.
        let zero = [0u8; HEADER_LEN];
        for index in (keep_to..self.next).rev() {
            let pos = self.position(index)?;
            self.data.write_all_at(&zero, pos).map_err(|e| LogError::io("write", &self.data_path, e))?;
        }
        self.sync()?;
        // Then the payload bytes, so the end is all zeros however short the next records.
        let zeros = vec![0u8; (1 << 20).min((self.end - new_end) as usize)];
        let mut at = new_end;
        while at < self.end {
            let n = zeros.len().min((self.end - at) as usize);
            self.data.write_all_at(&zeros[..n], at).map_err(|e| LogError::io("write", &self.data_path, e))?;
            at += n as u64;
        }
        self.sync()?;
        self.next = keep_to;
        self.end = new_end;
        self.sealed = false;
        self.index
            .set_len(self.count() * INDEX_SLOT)
            .map_err(|e| LogError::io("truncate index", &self.index_path, e))?;
        Ok(())
    }

    /// Scans the data file from the start, verifying every record, and rewrites the index
    /// file to match. The records end at a zeroed header (never-written space). A bad
    /// record followed by no valid continuation is a torn tail: the segment ends before it. A bad record followed by the record that should come after
    /// it is corruption in the middle of the log: an error naming the file and offset.
    pub fn scan(&mut self, max_payload: u32, tail_allowed: bool, stop_at: Option<u64>) -> Result<ScanOutcome> {
        let file_len = self.data.len().map_err(|e| LogError::io("stat", &self.data_path, e))?;
        let limit = file_len.min(self.capacity);
        let mut pos = SEGMENT_HEADER_LEN;
        let mut index = self.first;
        let mut last_term = 0u64;
        let mut slots: Vec<u8> = Vec::with_capacity(64 << 10);
        let mut slot_base = 0u64;
        let mut torn_at = None;
        let mut buf = Bytes::new();
        let mut buf_pos = pos;
        while pos < limit && stop_at != Some(index) {
            // Refill when the buffer does not hold a whole header or the whole record.
            let off = (pos - buf_pos) as usize;
            let need = match record::decode_header(&buf[off.min(buf.len())..], max_payload) {
                Ok(h) => h.stored_len() as usize,
                Err(_) => HEADER_LEN,
            };
            if buf.len() < off + need {
                let want = need.max(SCAN_CHUNK).min((limit - pos) as usize);
                let mut b = BytesMut::zeroed(want);
                self.data.read_exact_at(&mut b, pos).map_err(|e| LogError::io("read", &self.data_path, e))?;
                buf = b.freeze();
                buf_pos = pos;
            }
            let off = (pos - buf_pos) as usize;
            let head_end = buf.len().min(off + HEADER_LEN);
            if buf[off..head_end].iter().all(|&b| b == 0) {
                // Never-written (preallocated) space, or a record header zeroed by a
                // truncation: the clean end of the segment.
                if let Some(next_pos) = self.find_record(pos + 1, limit, index + 1, last_term, max_payload)? {
                    return Err(LogError::corrupt(
                        &self.data_path,
                        pos,
                        format!(
                            "record {index} has a zeroed header but record {} follows at byte {next_pos}",
                            index + 1
                        ),
                    ));
                }
                break;
            }
            let result = record::decode(&buf.slice(off..), max_payload).and_then(|(rec, used)| {
                if rec.index != index {
                    Err(RecordError::UnexpectedIndex { found: rec.index, expected: index })
                } else if rec.term < last_term {
                    Err(RecordError::TermRegression { found: rec.term, last: last_term })
                } else {
                    Ok((rec, used))
                }
            });
            match result {
                Ok((rec, used)) => {
                    slots.extend_from_slice(&pos.to_le_bytes());
                    if slots.len() >= 64 << 10 {
                        self.flush_slots(&mut slots, &mut slot_base)?;
                    }
                    last_term = rec.term;
                    pos += used as u64;
                    index += 1;
                }
                Err(err) => {
                    // When the damaged record's header is intact, its payload is not searched:
                    // a payload may itself hold bytes that form a valid record.
                    let head = &buf[off..buf.len().min(off + HEADER_LEN)];
                    let search_from = match record::decode_header(head, max_payload) {
                        Ok(h) if pos + h.stored_len() <= limit => pos + h.stored_len(),
                        _ => pos + 1,
                    };
                    if let Some(next_pos) = self.find_record(search_from, limit, index + 1, last_term, max_payload)? {
                        return Err(LogError::corrupt(
                            &self.data_path,
                            pos,
                            format!(
                                "record {index} is damaged ({err}) but record {} follows at byte {next_pos}",
                                index + 1
                            ),
                        ));
                    }
                    if !tail_allowed {
                        return Err(LogError::corrupt(
                            &self.data_path,
                            pos,
                            format!("record {index} is damaged ({err}) in a sealed segment"),
                        ));
                    }
                    torn_at = Some((pos, err));
                    break;
                }
            }
        }
        self.flush_slots(&mut slots, &mut slot_base)?;
        self.index.set_len(slot_base).map_err(|e| LogError::io("truncate index", &self.index_path, e))?;
        self.next = index;
        self.end = pos;
        Ok(ScanOutcome { torn_at })
    }

    /// Zeroes every non-zero byte from `from` to the end of the file and syncs.
    pub fn clear_tail(&self, from: u64) -> Result<()> {
        let len = self.data.len().map_err(|e| LogError::io("stat", &self.data_path, e))?.min(self.capacity);
        let mut at = from;
        while at < len {
            let n = (1u64 << 20).min(len - at) as usize;
            let mut b = vec![0u8; n];
            self.data.read_exact_at(&mut b, at).map_err(|e| LogError::io("read", &self.data_path, e))?;
            if b.iter().any(|&x| x != 0) {
                b.fill(0);
                self.data.write_all_at(&b, at).map_err(|e| LogError::io("write", &self.data_path, e))?;
            }
            at += n as u64;
        }
        self.sync()
    }

    fn flush_slots(&self, slots: &mut Vec<u8>, base: &mut u64) -> Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        self.index.write_all_at(slots, *base).map_err(|e| LogError::io("write index", &self.index_path, e))?;
        *base += slots.len() as u64;
        slots.clear();
        Ok(())
    }

    /// Looks for a valid record that could follow a damaged one, at any byte position in
    /// `from..limit`: index `want` or up to [`FOLLOW_WINDOW`] beyond (a damaged length field
    /// can make the search start past `want` itself), with a term no lower than `min_term`.
    fn find_record(&self, from: u64, limit: u64, want: u64, min_term: u64, max_payload: u32) -> Result<Option<u64>> {
        let magic = record::RECORD_MAGIC.to_le_bytes();
        // A vectorised search for the magic: this runs over the whole never-written rest
        // of a preallocated segment each time the log opens.
        let finder = memchr::memmem::Finder::new(&magic);
        let mut b = vec![0u8; SCAN_CHUNK];
        let mut at = from;
        while at + HEADER_LEN as u64 <= limit {
            let n = (SCAN_CHUNK as u64).min(limit - at) as usize;
            let b = &mut b[..n];
            self.data.read_exact_at(b, at).map_err(|e| LogError::io("read", &self.data_path, e))?;
            for i in finder.find_iter(b) {
                let p = at + i as u64;
                let mut h = [0u8; HEADER_LEN];
                if self.data.read_exact_at(&mut h, p).is_err() {
                    continue;
                }
                let Ok(header) = record::decode_header(&h, max_payload) else { continue };
                let follows = header.index >= want && header.index <= want + FOLLOW_WINDOW;
                if !follows || header.term < min_term || p + header.stored_len() > limit {
                    continue;
                }
                let mut full = vec![0u8; header.stored_len() as usize];
                if self.data.read_exact_at(&mut full, p).is_ok()
                    && record::verify(&h, &header, &full[HEADER_LEN..]).is_ok()
                {
                    return Ok(Some(p));
                }
            }
            // Overlap by a header so a record straddling chunks is not missed.
            at += (n as u64).saturating_sub(HEADER_LEN as u64).max(1);
        }
        Ok(None)
    }

    /// Deletes both files.
    pub fn remove(self, fs: &dyn Fs) -> Result<()> {
        let dir = self.data_path.parent().expect("segment paths are inside the log directory");
        Self::remove_files(fs, dir, self.first)
    }
}
