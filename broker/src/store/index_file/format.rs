//! Byte layout of an index file: the header and entry encodings with their crc32c, the key hash and the version check.
//!
//! A file is a 128-byte header, a table of `slot_count` bucket heads (u32, 1-based entry number, 0 = empty) and
//! `max_entries` 40-byte entries chained newest-first per bucket. All integers are little endian; the header and
//! every entry carry a crc32c.
//!
//! Header: magic `RMQIDX\0\0`, version u32, slot_count u32, max_entries u32, entry_count u32, first_log_index u64,
//! last_log_index u64, begin_time_ms i64, end_time_ms i64, zeros, crc32c of bytes 0..124 at byte 124.
//! Entry: key_hash u64, log_index u64, store_time_ms i64, slot u32, prev u32, kind u8, 3 zero bytes,
//! crc32c of bytes 0..36 at byte 36.

use std::path::Path;

use super::{FORMAT_VERSION, IndexError, corrupt};

const MAGIC: [u8; 8] = *b"RMQIDX\0\0";
pub(super) const HEADER_LEN: u64 = 128;
const HEADER_CRC_AT: usize = 124;
pub(super) const ENTRY_LEN: u64 = 40;
const ENTRY_CRC_AT: usize = 36;
pub(super) const KIND_ID: u8 = 1;
pub(super) const KIND_KEY: u8 = 2;

/// 64-bit FNV-1a over `[kind][key bytes]`, finished with murmur3's fmix64 so that `hash % slot_count` uses every
/// bit. Part of the on-disk format: never change it without bumping [`FORMAT_VERSION`].
pub(super) fn key_hash(kind: u8, key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in std::iter::once(&kind).chain(key) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// In-memory copy of a file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) slot_count: u32,
    pub(super) max_entries: u32,
    pub(super) entry_count: u32,
    pub(super) first_log_index: u64,
    pub(super) last_log_index: u64,
    pub(super) begin_time: i64,
    pub(super) end_time: i64,
}

impl Header {
    pub(super) fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut b = [0u8; HEADER_LEN as usize];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.slot_count.to_le_bytes());
        b[16..20].copy_from_slice(&self.max_entries.to_le_bytes());
        b[20..24].copy_from_slice(&self.entry_count.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_log_index.to_le_bytes());
        b[32..40].copy_from_slice(&self.last_log_index.to_le_bytes());
        b[40..48].copy_from_slice(&self.begin_time.to_le_bytes());
        b[48..56].copy_from_slice(&self.end_time.to_le_bytes());
        let crc = crc32c::crc32c(&b[..HEADER_CRC_AT]);
        b[HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header read from a file of `file_len` bytes.
    pub(super) fn decode(path: &Path, b: &[u8; HEADER_LEN as usize], file_len: u64) -> Result<Self, IndexError> {
        if b[0..8] != MAGIC {
            return Err(corrupt(path, 0, "bad magic, not an index file"));
        }
        let found = u32_at(b, 8);
        if found != FORMAT_VERSION {
            return Err(IndexError::UnsupportedVersion { path: path.to_path_buf(), found, supported: FORMAT_VERSION });
        }
        let (stored, computed) = (u32_at(b, HEADER_CRC_AT), crc32c::crc32c(&b[..HEADER_CRC_AT]));
        if stored != computed {
            let reason = format!("header checksum {stored:#010x} does not match its contents ({computed:#010x})");
            return Err(corrupt(path, HEADER_CRC_AT as u64, reason));
        }
        let h = Header {
            slot_count: u32_at(b, 12),
            max_entries: u32_at(b, 16),
            entry_count: u32_at(b, 20),
            first_log_index: u64_at(b, 24),
            last_log_index: u64_at(b, 32),
            begin_time: u64_at(b, 40) as i64,
            end_time: u64_at(b, 48) as i64,
        };
        h.check(path, file_len)?;
        Ok(h)
    }

    /// Checks that a decoded header is consistent and fits in a file of `file_len` bytes.
    fn check(&self, path: &Path, file_len: u64) -> Result<(), IndexError> {
        let bad = |at: u64, reason: String| Err(corrupt(path, at, reason));
        if self.slot_count == 0 || self.max_entries == 0 {
            return bad(
                12,
                format!("slot_count {} and max_entries {} must be positive", self.slot_count, self.max_entries),
            );
        }
        if self.entry_count > self.max_entries {
            return bad(20, format!("entry_count {} exceeds max_entries {}", self.entry_count, self.max_entries));
        }
        if self.entry_count > 0 && (self.first_log_index > self.last_log_index || self.begin_time > self.end_time) {
            return bad(
                24,
                format!(
                    "log index range {}..={} or time range {}..={} is reversed",
                    self.first_log_index, self.last_log_index, self.begin_time, self.end_time
                ),
            );
        }
        if file_len < self.file_len() {
            return bad(
                file_len,
                format!("file is {file_len} bytes but its header needs {}; it was cut short", self.file_len()),
            );
        }
        Ok(())
    }

    pub(super) fn slot_offset(&self, bucket: u32) -> u64 {
        HEADER_LEN + u64::from(bucket) * 4
    }

    /// Offset of 1-based entry `n`.
    pub(super) fn entry_offset(&self, n: u32) -> u64 {
        HEADER_LEN + u64::from(self.slot_count) * 4 + u64::from(n).saturating_sub(1) * ENTRY_LEN
    }

    pub(super) fn file_len(&self) -> u64 {
        HEADER_LEN + u64::from(self.slot_count) * 4 + u64::from(self.max_entries) * ENTRY_LEN
    }

    pub(super) fn bucket(&self, hash: u64) -> u32 {
        (hash % u64::from(self.slot_count)) as u32
    }

    pub(super) fn is_full(&self) -> bool {
        self.entry_count >= self.max_entries
    }

    pub(super) fn overlaps(&self, begin: i64, end: i64) -> bool {
        self.entry_count > 0 && self.begin_time <= end && begin <= self.end_time
    }
}

/// One decoded entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) key_hash: u64,
    pub(super) log_index: u64,
    pub(super) store_time: i64,
    pub(super) slot: u32,
    pub(super) prev: u32,
    pub(super) kind: u8,
}

impl Entry {
    pub(super) fn encode(&self) -> [u8; ENTRY_LEN as usize] {
        let mut b = [0u8; ENTRY_LEN as usize];
        b[0..8].copy_from_slice(&self.key_hash.to_le_bytes());
        b[8..16].copy_from_slice(&self.log_index.to_le_bytes());
        b[16..24].copy_from_slice(&self.store_time.to_le_bytes());
        b[24..28].copy_from_slice(&self.slot.to_le_bytes());
        b[28..32].copy_from_slice(&self.prev.to_le_bytes());
        b[32] = self.kind;
        let crc = crc32c::crc32c(&b[..ENTRY_CRC_AT]);
        b[ENTRY_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes 40 bytes; the error is the reason it is damaged.
    pub(super) fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() != ENTRY_LEN as usize {
            return Err(format!("entry is {} bytes, not {ENTRY_LEN}", b.len()));
        }
        let (stored, computed) = (u32_at(b, ENTRY_CRC_AT), crc32c::crc32c(&b[..ENTRY_CRC_AT]));
        if stored != computed {
            return Err(format!("entry checksum {stored:#010x} does not match its contents ({computed:#010x})"));
        }
        let kind = b[32];
        if kind != KIND_ID && kind != KIND_KEY {
            return Err(format!("entry kind {kind} is neither 1 (id) nor 2 (key)"));
        }
        Ok(Entry {
            key_hash: u64_at(b, 0),
            log_index: u64_at(b, 8),
            store_time: u64_at(b, 16) as i64,
            slot: u32_at(b, 24),
            prev: u32_at(b, 28),
            kind,
        })
    }
}
