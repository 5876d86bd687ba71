//! bincode encoding of openraft values carried as opaque bytes in `raftmq.raft.v1`.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Most bytes a single Raft RPC payload may decode from (a batch of entries).
pub const MAX_RPC_PAYLOAD: usize = 256 << 20;

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

/// Decodes a value, refusing trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, String> {
    let (v, used) = bincode::serde::decode_from_slice(bytes, config()).map_err(|e| format!("decode {what}: {e}"))?;
    if used != bytes.len() {
        return Err(format!("decode {what}: {} trailing bytes", bytes.len() - used));
    }
    Ok(v)
}
