//! Helpers shared by the raft-log integration tests (the simulated file system is
//! `raft_log::sim`): a small
//! configuration that rolls segments often, and records whose bytes say which version of
//! an entry they are.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use bytes::Bytes;
use raft_log::{LogConfig, Record};

/// Segment size used by the tests: the minimum, so a few dozen records fill a segment.
pub const SEGMENT_SIZE: u64 = 64 << 10;
/// Largest payload the tests' configuration accepts.
pub const MAX_PAYLOAD: u32 = 16 << 10;
/// Size of a segment file's header.
pub const SEGMENT_HEADER_LEN: u64 = 64;
/// Size of a record header.
pub const RECORD_HEADER_LEN: u64 = 32;

/// A configuration with 64 KiB segments, verifying the newest two sealed ones on open.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_size: SEGMENT_SIZE,
        max_payload: MAX_PAYLOAD,
        verify_sealed_segments: 2,
        ..LogConfig::default()
    }
}

/// A payload of `len` bytes determined by `(index, term, version)`: two versions of the
/// same index differ unless both are empty.
pub fn payload(index: u64, term: u64, version: u64, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    let mut x = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ term.rotate_left(21) ^ version.rotate_left(42) ^ 1;
    let mut head = Vec::with_capacity(24);
    head.extend_from_slice(&index.to_le_bytes());
    head.extend_from_slice(&term.to_le_bytes());
    head.extend_from_slice(&version.to_le_bytes());
    out.extend(head.iter().take(len));
    while out.len() < len {
        // xorshift64: cheap varied bytes (a valid record header by chance is negligible).
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(x as u8);
    }
    Bytes::from(out)
}

/// A record with a payload from [`payload`].
pub fn record(index: u64, term: u64, version: u64, len: usize) -> Record {
    Record { index, term, payload: payload(index, term, version, len) }
}
