//! The on-disk byte layout (format version 2, little endian): file names, the file header and the record slot,
//! with their encoding, decoding and checks.
//!
//! A file is named `<first offset, 20 digits>.cq` and holds a 64-byte header followed by `records_per_file`
//! 48-byte record slots.
//!
//! Header: `0..8` magic `RMQCQ\0\0\0`, `8..12` format version, `12..16` records per file, `16..24` first offset,
//! `24..60` reserved (zero), `60..64` CRC32C of bytes `0..60`.
//!
//! Record: `0..8` log index, `8..16` store time, `16..24` tag hash (zero without a tag), `24..32` message group
//! hash (zero without a group), `32..36` slot in the batch, `36..40` size in bytes, `40..44` flags (bit 0: has a
//! tag, bit 1: has a message group), `44..48` CRC32C of bytes `0..44`. A slot of all zero bytes is "not written";
//! an encoded record is never all zero because the CRC32C of 44 zero bytes is not zero.

use std::path::{Path, PathBuf};

use super::{CqError, FORMAT_VERSION, QueueRecord, corrupt};
use raftmq_machine::ids::{LogIndex, Millis, Slot};

const MAGIC: [u8; 8] = *b"RMQCQ\0\0\0";
pub(super) const HEADER_LEN: u64 = 64;
pub(super) const RECORD_LEN: usize = 48;
pub(super) const RECORD_LEN_U64: u64 = RECORD_LEN as u64;
const FLAG_HAS_TAG: u32 = 1;
const FLAG_HAS_GROUP: u32 = 2;
const CRC_AT: usize = RECORD_LEN - 4;

/// What a record slot holds.
pub(super) enum Decoded {
    /// Never written (or zeroed by a truncation).
    Zero,
    Valid(QueueRecord),
    /// Damaged or half written; the reason says how.
    Invalid(String),
}

pub(super) fn encode_record(rec: &QueueRecord) -> [u8; RECORD_LEN] {
    let mut b = [0u8; RECORD_LEN];
    b[0..8].copy_from_slice(&rec.log_index.0.to_le_bytes());
    b[8..16].copy_from_slice(&rec.store_time.0.to_le_bytes());
    b[16..24].copy_from_slice(&rec.tag_hash.unwrap_or(0).to_le_bytes());
    b[24..32].copy_from_slice(&rec.group_hash.unwrap_or(0).to_le_bytes());
    b[32..36].copy_from_slice(&rec.slot.0.to_le_bytes());
    b[36..40].copy_from_slice(&rec.size_bytes.to_le_bytes());
    let flags = if rec.tag_hash.is_some() { FLAG_HAS_TAG } else { 0 }
        | if rec.group_hash.is_some() { FLAG_HAS_GROUP } else { 0 };
    b[40..44].copy_from_slice(&flags.to_le_bytes());
    let crc = crc32c::crc32c(&b[..CRC_AT]);
    b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    b
}

pub(super) fn decode_record(b: &[u8]) -> Decoded {
    assert_eq!(b.len(), RECORD_LEN, "decode_record takes exactly one record");
    if b.iter().all(|&x| x == 0) {
        return Decoded::Zero;
    }
    let (stored, computed) = (le_u32(b, CRC_AT), crc32c::crc32c(&b[..CRC_AT]));
    if stored != computed {
        return Decoded::Invalid(format!("record checksum mismatch (stored {stored:#x}, computed {computed:#x})"));
    }
    let flags = le_u32(b, 40);
    if flags & !(FLAG_HAS_TAG | FLAG_HAS_GROUP) != 0 {
        return Decoded::Invalid(format!("record has unknown flags {flags:#x}"));
    }
    let (tag, group) = (le_u64(b, 16), le_u64(b, 24));
    if flags & FLAG_HAS_TAG == 0 && tag != 0 {
        return Decoded::Invalid("record has a tag hash but not the has-tag flag".into());
    }
    if flags & FLAG_HAS_GROUP == 0 && group != 0 {
        return Decoded::Invalid("record has a message group hash but not the has-group flag".into());
    }
    Decoded::Valid(QueueRecord {
        log_index: LogIndex(le_u64(b, 0)),
        store_time: Millis(le_u64(b, 8) as i64),
        tag_hash: (flags & FLAG_HAS_TAG != 0).then_some(tag),
        group_hash: (flags & FLAG_HAS_GROUP != 0).then_some(group),
        slot: Slot(le_u32(b, 32)),
        size_bytes: le_u32(b, 36),
    })
}

/// The record in `raw` (at byte `byte` of `path`) for `offset`, which lies in the queue's `[min, end)`: it must be
/// written and valid.
pub(super) fn check_record(
    raw: &[u8],
    path: &Path,
    byte: u64,
    offset: u64,
    (min, end): (u64, u64),
) -> Result<QueueRecord, CqError> {
    match decode_record(raw) {
        Decoded::Valid(rec) => Ok(rec),
        Decoded::Zero => {
            let why = format!("record for offset {offset} is not written, but the queue holds [{min}, {end})");
            Err(corrupt(path, byte, why))
        }
        Decoded::Invalid(reason) => Err(corrupt(path, byte, format!("record for offset {offset}: {reason}"))),
    }
}

pub(super) fn encode_header(start: u64, rpf: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(rpf as u32).to_le_bytes());
    h[16..24].copy_from_slice(&start.to_le_bytes());
    let crc = crc32c::crc32c(&h[..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks the header `h` of the file `path`, which the queue expects to start at offset `start` and to have been
/// written with `rpf` records per file.
pub(super) fn check_header(h: &[u8; HEADER_LEN as usize], path: &Path, start: u64, rpf: u64) -> Result<(), CqError> {
    if h[0..8] != MAGIC {
        return Err(corrupt(path, 0, format!("bad magic {:?}; not a consume queue file", &h[0..8])));
    }
    let found = le_u32(h, 8);
    if found != FORMAT_VERSION {
        return Err(CqError::UnsupportedVersion { path: path.to_path_buf(), found, supported: FORMAT_VERSION });
    }
    let (stored, computed) = (le_u32(h, 60), crc32c::crc32c(&h[..60]));
    if stored != computed {
        return Err(corrupt(
            path,
            60,
            format!("header checksum mismatch (stored {stored:#x}, computed {computed:#x})"),
        ));
    }
    if h[24..60].iter().any(|&b| b != 0) {
        return Err(corrupt(path, 24, "reserved header bytes are not zero"));
    }
    let file_rpf = le_u32(h, 12);
    if u64::from(file_rpf) != rpf {
        let why = format!("file was written with records_per_file {file_rpf} but the node is configured with {rpf}");
        return Err(corrupt(path, 12, why + "; records_per_file cannot change for existing data"));
    }
    let first = le_u64(h, 16);
    if first != start {
        return Err(corrupt(path, 16, format!("header says first offset {first} but the file name says {start}")));
    }
    Ok(())
}

pub(super) fn file_name(start: u64) -> String {
    format!("{start:020}.cq")
}

pub(super) fn file_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(file_name(start))
}

/// The first offset named by a file name, or `None` if the name is not a consume queue file's.
pub(super) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".cq")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Byte offset of record slot `slot` within its file.
pub(super) fn slot_byte(slot: u64) -> u64 {
    HEADER_LEN + slot * RECORD_LEN_U64
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
