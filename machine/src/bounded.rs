//! bincode decoding whose allocations are bounded by the bytes decoded. bincode allocates a
//! byte string or text of the length its prefix claims before it reads the bytes, so damaged
//! bytes claiming 2^60 of them would abort the process (allocation failure) instead of
//! failing to decode. Found by the fuzz targets (`fuzz/`); `raft-log` keeps the same guard
//! for its entries (it depends on no crate of ours).

use serde::de::DeserializeOwned;

/// Most bytes of bincode's limit one byte of input claims: every value claims its size in
/// memory (at most 16 bytes, a `u128`) and takes at least one byte, a byte string or text
/// claims its length and takes as many bytes. So a value decoded from `n` bytes claims at
/// most `CLAIM_PER_BYTE * n`, and any limit at or above that never refuses it.
const CLAIM_PER_BYTE: usize = 16;

/// Decodes a value from the start of `bytes` as `bincode::serde::decode_from_slice` with
/// bincode's standard configuration does, returning it and the bytes it took; a length in
/// the bytes claiming far more than they hold is an error, allocated never more than
/// `CLAIM_PER_BYTE` times the bytes given (at least 1 MiB).
pub fn decode_from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), String> {
    let standard = bincode::config::standard();
    let claim = bytes.len().saturating_mul(CLAIM_PER_BYTE);
    let decoded = if claim <= 1 << 20 {
        bincode::serde::decode_from_slice(bytes, standard.with_limit::<{ 1 << 20 }>())
    } else if claim <= 1 << 26 {
        bincode::serde::decode_from_slice(bytes, standard.with_limit::<{ 1 << 26 }>())
    } else if claim <= u32::MAX as usize {
        bincode::serde::decode_from_slice(bytes, standard.with_limit::<{ u32::MAX as usize }>())
    } else {
        bincode::serde::decode_from_slice(bytes, standard)
    };
    decoded.map_err(|e| match e {
        bincode::error::DecodeError::LimitExceeded => {
            format!("a length in it claims more than the {} bytes it has", bytes.len())
        }
        e => e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standard<T: serde::Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("encodes")
    }

    #[test]
    fn a_length_past_the_bytes_is_an_error_not_an_allocation() {
        // A text whose length prefix (varint marker 253, then a u64) claims 2^60 bytes.
        let claims_2_60 = [253, 0, 0, 0, 0, 0, 0, 0, 0x10];
        let err = decode_from_slice::<String>(&claims_2_60).expect_err("refused");
        assert_eq!(err, "a length in it claims more than the 9 bytes it has");
        let err = decode_from_slice::<(u64, bytes::Bytes)>(&[[7].as_slice(), &claims_2_60].concat()).expect_err("too");
        assert!(err.contains("claims more than the 10 bytes"), "{err}");
    }

    /// What the `snapshot` and `entry` fuzz targets found: a snapshot whose body, CRC and all,
    /// holds a name whose length claims 2^60 bytes, and a message slot that does.
    #[test]
    fn a_snapshot_or_message_claiming_2_60_bytes_is_corrupt() {
        use crate::codec::{self, CodecError, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
        let claims_2_60 = [253, 0, 0, 0, 0, 0, 0, 0, 0x10];
        // No broker group name, one topic, whose name claims 2^60 bytes.
        let body: Vec<u8> = [&[0u8, 1][..], &claims_2_60].concat();
        let mut file = SNAPSHOT_MAGIC.to_vec();
        file.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        file.extend_from_slice(&(body.len() as u64).to_le_bytes());
        file.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        file.extend_from_slice(&body);
        let err = codec::decode_snapshot::<crate::Machine>(&file, "snapshot.bin").expect_err("corrupt");
        assert!(matches!(&err, CodecError::Corrupt { reason, .. } if reason.contains("claims more than")), "{err}");

        // Topic, queue, topic epoch, no delivery time, not transactional, then a message id
        // claiming 2^60 bytes.
        let slot = [&[6u8][..], b"orders", &[0, 0, 0, 0], &claims_2_60].concat();
        let err = crate::batch::decode_slot(&slot, crc32c::crc32c(&slot), crate::Slot(0)).expect_err("corrupt");
        assert!(err.to_string().contains("claims more than"), "{err}");
    }

    #[test]
    fn values_decode_as_with_the_standard_configuration_in_every_size() {
        // Small integers claim 8 bytes each from one: the densest claims a real value makes.
        let dense: Vec<u64> = (0..100_000).map(|i| i % 100).collect();
        let bytes = standard(&dense);
        assert_eq!(decode_from_slice::<Vec<u64>>(&bytes), Ok((dense, bytes.len())));
        for len in [0usize, 1, 70_000, 5 << 20] {
            let value = (len as u64, "text".to_string(), vec![7u8; len]);
            let bytes = standard(&value);
            assert_eq!(decode_from_slice::<(u64, String, Vec<u8>)>(&bytes), Ok((value, bytes.len())), "{len}");
        }
    }
}
