//! Versioned encodings of what outlives a process: the command inside every log entry and
//! the state snapshot. A change to either layout bumps its version; the golden tests in
//! `tests/golden.rs` keep a byte-exact sample of each, so such a change is deliberate.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Format version of the commands in log entries (the CommitLog adapter writes it at the
/// start of every entry's payload).
pub const ENTRY_VERSION: u32 = 9;
/// The oldest entry format still read: version 8 differs from 9 only in lacking the last
/// command (`ForwardToDeadLetter`), so its entries decode the same (golden test
/// `older_entries_still_read`); a log written by a version 8 build goes on under this one.
pub const OLDEST_READ_ENTRY_VERSION: u32 = 8;
/// First bytes of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RMQSNAP\0";
/// Format version of snapshots.
pub const SNAPSHOT_VERSION: u32 = 7;
/// The oldest snapshot format still read: version 6 lacks the retired node ids that
/// version 7 adds after the applied state (the broker reads it and starts with none).
pub const OLDEST_READ_SNAPSHOT_VERSION: u32 = 6;
/// Magic, version, body length, body CRC32C (snapshots and other framed files).
pub const SNAPSHOT_HEADER_BYTES: usize = 8 + 4 + 8 + 4;
/// Largest snapshot body read (the replicated state is metadata only; this is far above it).
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

/// Why bytes could not be read as a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Written by a format this build does not read.
    #[error(
        "{what} has format version {found}, this build reads version {supported}; run a raftmq build that reads version {found}"
    )]
    UnsupportedVersion {
        /// What was read (a file name, a log index).
        what: String,
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// Not a snapshot, cut short, or its checksum does not match.
    #[error("{what} is corrupt: {reason}")]
    Corrupt {
        /// What was read.
        what: String,
        /// Which check failed.
        reason: String,
    },
    /// The value could not be encoded.
    #[error("encoding {what}: {reason}")]
    Encode {
        /// What was encoded.
        what: String,
        /// The encoder's error.
        reason: String,
    },
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a snapshot: magic, version, length and CRC32C of the body, then the body
/// (bincode).
pub fn encode_snapshot<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_framed(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, value)
}

/// Decodes a snapshot written by [`encode_snapshot`]; `what` names it in errors.
pub fn decode_snapshot<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, CodecError> {
    decode_framed(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, bytes, what)
}

/// The whole length of a snapshot file (header and body) as its first
/// [`SNAPSHOT_HEADER_BYTES`] say, checking the magic, that the version is one this build
/// reads and that the body is within [`MAX_SNAPSHOT_BYTES`]: a snapshot arriving in
/// chunks is refused at its first chunk, or as soon as it runs past this length.
pub fn snapshot_len(header: &[u8], what: &str) -> Result<u64, CodecError> {
    let corrupt = |reason: String| CodecError::Corrupt { what: what.to_string(), reason };
    let Some(header) = header.get(..SNAPSHOT_HEADER_BYTES) else {
        return Err(corrupt(format!("{} bytes, shorter than the {SNAPSHOT_HEADER_BYTES}-byte header", header.len())));
    };
    if header[..8] != SNAPSHOT_MAGIC {
        return Err(corrupt(format!(
            "it does not start with the magic {:?}",
            String::from_utf8_lossy(&SNAPSHOT_MAGIC)
        )));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if !(OLDEST_READ_SNAPSHOT_VERSION..=SNAPSHOT_VERSION).contains(&version) {
        return Err(CodecError::UnsupportedVersion {
            what: what.to_string(),
            found: version,
            supported: SNAPSHOT_VERSION,
        });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[12..20]);
    let len = u64::from_le_bytes(len);
    if len > MAX_SNAPSHOT_BYTES {
        return Err(corrupt(format!("the header says {len} body bytes, more than the {MAX_SNAPSHOT_BYTES} allowed")));
    }
    Ok(SNAPSHOT_HEADER_BYTES as u64 + len)
}

/// Encodes a small durable file of another kind the same way (own magic and version).
pub fn encode_framed<T: Serialize>(magic: [u8; 8], version: u32, value: &T) -> Result<Vec<u8>, CodecError> {
    let body = bincode::serde::encode_to_vec(value, bincode_config())
        .map_err(|e| CodecError::Encode { what: "state file".into(), reason: e.to_string() })?;
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + body.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes bytes written by [`encode_framed`] with this magic and version.
pub fn decode_framed<T: DeserializeOwned>(
    magic: [u8; 8],
    supported: u32,
    bytes: &[u8],
    what: &str,
) -> Result<T, CodecError> {
    let corrupt = |reason: String| CodecError::Corrupt { what: what.to_string(), reason };
    if bytes.len() < SNAPSHOT_HEADER_BYTES {
        return Err(corrupt(format!("{} bytes, shorter than the {SNAPSHOT_HEADER_BYTES}-byte header", bytes.len())));
    }
    let (header, body) = bytes.split_at(SNAPSHOT_HEADER_BYTES);
    if header[..8] != magic {
        return Err(corrupt(format!("it does not start with the magic {:?}", String::from_utf8_lossy(&magic))));
    }
    let word = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let version = word(8);
    if version != supported {
        return Err(CodecError::UnsupportedVersion { what: what.to_string(), found: version, supported });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[12..20]);
    let len = u64::from_le_bytes(len);
    if len > MAX_SNAPSHOT_BYTES || len != body.len() as u64 {
        return Err(corrupt(format!("the header says {len} body bytes, the file holds {}", body.len())));
    }
    let crc = word(20);
    if crc32c::crc32c(body) != crc {
        return Err(corrupt("the body's CRC32C does not match the header".into()));
    }
    let (value, used) =
        crate::bounded::decode_from_slice(body).map_err(|e| corrupt(format!("the body does not decode: {e}")))?;
    if used != body.len() {
        return Err(corrupt(format!("{} bytes follow the encoded state", body.len() - used)));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_is_reported_not_decoded() {
        let bytes = encode_snapshot(&(7u64, "state".to_string())).expect("encodes");
        let back: (u64, String) = decode_snapshot(&bytes, "s").expect("decodes");
        assert_eq!(back, (7, "state".to_string()));

        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(decode_snapshot::<(u64, String)>(&flipped, "s"), Err(CodecError::Corrupt { .. })));

        let mut newer = bytes.clone();
        newer[8] = (SNAPSHOT_VERSION + 1) as u8;
        assert_eq!(
            decode_snapshot::<(u64, String)>(&newer, "snapshot.bin"),
            Err(CodecError::UnsupportedVersion {
                what: "snapshot.bin".into(),
                found: SNAPSHOT_VERSION + 1,
                supported: SNAPSHOT_VERSION
            })
        );
        assert!(matches!(decode_snapshot::<(u64, String)>(&bytes[..10], "s"), Err(CodecError::Corrupt { .. })));
        assert!(matches!(
            decode_snapshot::<(u64, String)>(&bytes[..bytes.len() - 1], "s"),
            Err(CodecError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_snapshot_header_gives_its_length_or_says_what_is_wrong() {
        let bytes = encode_snapshot(&(7u64, "state".to_string())).expect("encodes");
        assert_eq!(snapshot_len(&bytes, "s"), Ok(bytes.len() as u64));
        assert_eq!(snapshot_len(&bytes[..SNAPSHOT_HEADER_BYTES], "s"), Ok(bytes.len() as u64));
        assert!(matches!(snapshot_len(&bytes[..SNAPSHOT_HEADER_BYTES - 1], "s"), Err(CodecError::Corrupt { .. })));
        let mut huge = bytes.clone();
        huge[12..20].copy_from_slice(&(MAX_SNAPSHOT_BYTES + 1).to_le_bytes());
        let err = snapshot_len(&huge, "received snapshot").expect_err("over the limit");
        assert!(err.to_string().contains("more than the"), "{err}");
        let mut magic = bytes.clone();
        magic[0] ^= 1;
        assert!(matches!(snapshot_len(&magic, "s"), Err(CodecError::Corrupt { .. })));
        let mut old = bytes;
        old[8..12].copy_from_slice(&(OLDEST_READ_SNAPSHOT_VERSION - 1).to_le_bytes());
        assert!(matches!(snapshot_len(&old, "s"), Err(CodecError::UnsupportedVersion { .. })));
    }
}
