//! The on-disk record: a 32-byte header followed by the payload.
//!
//! ```text
//! 0       4         8       16       24         28     32
//! | magic | length  | term  | index  | reserved | crc  | payload (length bytes) |
//! ```
//! All integers little-endian. `crc` is CRC32C over header bytes 0..28 and the payload, so
//! a flipped bit anywhere in the record is caught. `reserved` is zero in this format.

use bytes::Bytes;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 32;
/// First four bytes of every record ("RMQL" little-endian).
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"RMQL");

/// One log entry as stored: its Raft position and its opaque payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Raft log index.
    pub index: u64,
    /// Raft term of the leader that created the entry.
    pub term: u64,
    /// The encoded entry.
    pub payload: Bytes,
}

impl Record {
    /// Bytes the record takes in a segment.
    pub fn stored_len(&self) -> u64 {
        (HEADER_LEN + self.payload.len()) as u64
    }
}

/// Part of a record's payload, read without the rest: not checksum-verified (the caller
/// checks its own checksums over what it reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadPart {
    /// Raft log index.
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// Length of the whole payload.
    pub payload_len: u64,
    /// Where `bytes` start within the payload.
    pub offset: u64,
    /// The bytes read: the range asked for, cut at the payload's end.
    pub bytes: Bytes,
}

impl PayloadPart {
    /// Takes `range` of a whole record's payload.
    pub fn of(record: &Record, range: std::ops::Range<u64>) -> PayloadPart {
        let len = record.payload.len() as u64;
        let (start, end) = (range.start.min(len), range.end.min(len).max(range.start.min(len)));
        PayloadPart {
            index: record.index,
            term: record.term,
            payload_len: len,
            offset: start,
            bytes: record.payload.slice(start as usize..end as usize),
        }
    }
}

/// A decoded, not yet checksum-verified header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload length in bytes.
    pub len: u32,
    /// Raft term.
    pub term: u64,
    /// Raft log index.
    pub index: u64,
    /// Stored CRC32C.
    pub crc: u32,
}

impl RecordHeader {
    /// Header plus payload length.
    pub fn stored_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the header or the payload it announces.
    #[error("record truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// The magic number is wrong (not a record start, or zeroed space).
    #[error("bad record magic {0:#010x}")]
    BadMagic(u32),
    /// The reserved field is not zero.
    #[error("reserved header field is {0:#x}, expected 0")]
    BadReserved(u32),
    /// The payload length exceeds the limit.
    #[error("payload length {len} exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// A valid record, but not the one expected at this place.
    #[error("record has index {found}, expected {expected}")]
    UnexpectedIndex {
        /// Index in the record.
        found: u64,
        /// Index expected here.
        expected: u64,
    },
    /// A valid record whose term is lower than the record before it.
    #[error("record term {found} is lower than the previous record's term {last}")]
    TermRegression {
        /// Term in the record.
        found: u64,
        /// Term of the previous record.
        last: u64,
    },
    /// The checksum does not match the bytes.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
}

fn crc_of(header_prefix: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header_prefix), payload)
}

/// Encodes the header for `term`, `index` and `payload`.
pub fn encode_header(term: u64, index: u64, payload: &[u8]) -> [u8; HEADER_LEN] {
    let len = u32::try_from(payload.len()).expect("payload length is checked against the limit before encoding");
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8..16].copy_from_slice(&term.to_le_bytes());
    h[16..24].copy_from_slice(&index.to_le_bytes());
    let crc = crc_of(&h[0..28], payload);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("slice of 4 bytes"))
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("slice of 8 bytes"))
}

/// Decodes a header, checking magic, reserved field and the length limit.
pub fn decode_header(buf: &[u8], max_payload: u32) -> Result<RecordHeader, RecordError> {
    if buf.len() < HEADER_LEN {
        return Err(RecordError::Truncated { need: HEADER_LEN as u64, have: buf.len() as u64 });
    }
    let magic = le_u32(&buf[0..4]);
    if magic != RECORD_MAGIC {
        return Err(RecordError::BadMagic(magic));
    }
    let reserved = le_u32(&buf[24..28]);
    if reserved != 0 {
        return Err(RecordError::BadReserved(reserved));
    }
    let len = le_u32(&buf[4..8]);
    if len > max_payload {
        return Err(RecordError::TooLarge { len, max: max_payload });
    }
    Ok(RecordHeader { len, term: le_u64(&buf[8..16]), index: le_u64(&buf[16..24]), crc: le_u32(&buf[28..32]) })
}

/// Checks the CRC of a decoded header against its header bytes and payload.
pub fn verify(header_bytes: &[u8], header: &RecordHeader, payload: &[u8]) -> Result<(), RecordError> {
    let computed = crc_of(&header_bytes[0..28], payload);
    if computed != header.crc {
        return Err(RecordError::Checksum { stored: header.crc, computed });
    }
    Ok(())
}

/// Decodes and verifies the record at the start of `buf`; returns it (payload shares
/// `buf`'s memory) and the number of bytes it took.
pub fn decode(buf: &Bytes, max_payload: u32) -> Result<(Record, usize), RecordError> {
    let header = decode_header(buf, max_payload)?;
    let total = header.stored_len();
    if (buf.len() as u64) < total {
        return Err(RecordError::Truncated { need: total, have: buf.len() as u64 });
    }
    let total = total as usize;
    verify(&buf[..HEADER_LEN], &header, &buf[HEADER_LEN..total])?;
    let record = Record { index: header.index, term: header.term, payload: buf.slice(HEADER_LEN..total) };
    Ok((record, total))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn encode(term: u64, index: u64, payload: &[u8]) -> Bytes {
        let mut v = encode_header(term, index, payload).to_vec();
        v.extend_from_slice(payload);
        Bytes::from(v)
    }

    proptest! {
        #[test]
        fn round_trip(term: u64, index: u64, payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let buf = encode(term, index, &payload);
            let (rec, used) = decode(&buf, u32::MAX).expect("valid record decodes");
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(rec.term, term);
            prop_assert_eq!(rec.index, index);
            prop_assert_eq!(&rec.payload[..], &payload[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), max in any::<u32>()) {
            let _ = decode(&Bytes::from(bytes), max);
        }

        #[test]
        fn any_single_bit_flip_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 0..512),
            bit in any::<prop::sample::Index>(),
        ) {
            let buf = encode(7, 42, &payload);
            let mut bad = buf.to_vec();
            let bit = bit.index(bad.len() * 8);
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&Bytes::from(bad), u32::MAX).is_err());
        }

        #[test]
        fn short_input_is_truncated_error(payload in proptest::collection::vec(any::<u8>(), 1..512), cut in any::<prop::sample::Index>()) {
            let buf = encode(1, 1, &payload);
            let cut = cut.index(buf.len());
            let err = decode(&buf.slice(..cut), u32::MAX).expect_err("a cut record never decodes");
            prop_assert!(matches!(err, RecordError::Truncated { .. }), "got {:?}", err);
        }
    }

    #[test]
    fn length_over_limit_is_rejected_before_reading_payload() {
        let buf = encode(1, 1, &[0u8; 100]);
        assert_eq!(decode(&buf, 99), Err(RecordError::TooLarge { len: 100, max: 99 }));
    }

    #[test]
    fn zeroed_space_is_bad_magic() {
        assert_eq!(decode(&Bytes::from(vec![0u8; 64]), 1024), Err(RecordError::BadMagic(0)));
    }
}
