//! bincode encoding of openraft values carried as opaque bytes in `raftmq.raft.v1`.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Most bytes of one log entry: the largest CommitLog `max_payload` a node starts with.
pub const MAX_ENTRY_BYTES: usize = 64 << 20;
/// Encoded bytes one append message aims at: a request over it is sent in pieces, each
/// of whole entries (an entry larger than this goes alone).
pub const APPEND_PIECE_BYTES: usize = 16 << 20;
/// Most bytes a single Raft RPC payload may decode from: one append piece, at most one
/// entry of the largest size with the request around it.
pub const MAX_RPC_PAYLOAD: usize = MAX_ENTRY_BYTES + (1 << 20);
/// Most bytes of one gRPC message on the Raft port, either way (the payload with its
/// envelope; `ReadSegment` chunks stay under it too).
pub const MAX_RAFT_MESSAGE: usize = MAX_RPC_PAYLOAD + (64 << 10);

fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_RPC_PAYLOAD>,
> {
    bincode::config::standard().with_limit::<MAX_RPC_PAYLOAD>()
}

/// Encodes a value.
pub fn encode<T: Serialize>(value: &T) -> Result<Bytes, String> {
    bincode::serde::encode_to_vec(value, config()).map(Bytes::from).map_err(|e| format!("encode: {e}"))
}

/// How many bytes [`encode`] makes of a value, without making them.
pub fn encoded_len<T: Serialize>(value: &T) -> Result<usize, String> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config()).map_err(|e| format!("encode: {e}"))?;
    Ok(size.bytes_written)
}

/// Decodes a value, refusing trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, String> {
    let (v, used) = bincode::serde::decode_from_slice(bytes, config()).map_err(|e| format!("decode {what}: {e}"))?;
    if used != bytes.len() {
        return Err(format!("decode {what}: {} trailing bytes", bytes.len() - used));
    }
    Ok(v)
}
