//! The CommitLog record codec (`raft_log::record`): bytes read from a segment file are a
//! record only if they decode and verify, and then they are exactly what encoding that
//! record writes; an encoded record decodes to itself, and no single flipped bit passes.
//!
//! Input: a mode byte, then for mode 0 a payload limit (u32, little-endian) and the bytes
//! read; for mode 1 a term, an index, a bit to flip (or none) and the payload.

#![no_main]

use arbitrary::Unstructured;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use raft_log::record::{self, HEADER_LEN, PayloadPart, Record, RecordError};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let _ = match mode % 2 {
        0 => decode_bytes(rest),
        _ => round_trip(rest),
    };
});

fn encode(term: u64, index: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = record::encode_header(term, index, payload).to_vec();
    out.extend_from_slice(payload);
    out
}

/// Arbitrary bytes as read from a segment, under an arbitrary payload limit.
fn decode_bytes(data: &[u8]) -> arbitrary::Result<()> {
    let mut u = Unstructured::new(data);
    let max_payload: u32 = u.arbitrary()?;
    let buf = Bytes::copy_from_slice(u.take_rest());
    let header = record::decode_header(&buf, max_payload);
    match record::decode(&buf, max_payload) {
        Ok((rec, used)) => {
            let header = header.expect("a record that decodes has a header that decodes");
            assert_eq!(used as u64, header.stored_len());
            assert_eq!(used as u64, rec.stored_len());
            assert!(rec.payload.len() <= max_payload as usize, "payload over the limit accepted");
            assert_eq!(
                encode(rec.term, rec.index, &rec.payload),
                buf[..used],
                "a decoded record re-encodes differently"
            );
            check_parts(&rec, data);
        }
        Err(RecordError::Truncated { need, have }) => {
            assert!(need > have && have == buf.len() as u64, "truncated: need {need}, have {have}");
        }
        Err(RecordError::TooLarge { len, max }) => assert!(len > max && max == max_payload),
        Err(_) => {}
    }
    Ok(())
}

/// An encoded record decodes to itself; one flipped bit anywhere is refused.
fn round_trip(data: &[u8]) -> arbitrary::Result<()> {
    let mut u = Unstructured::new(data);
    let term: u64 = u.arbitrary()?;
    let index: u64 = u.arbitrary()?;
    let flip: Option<u32> = u.arbitrary()?;
    let payload = u.take_rest();
    let bytes = encode(term, index, payload);
    let (rec, used) = record::decode(&Bytes::from(bytes.clone()), u32::MAX).expect("an encoded record decodes");
    assert_eq!((rec.term, rec.index, &rec.payload[..], used), (term, index, payload, HEADER_LEN + payload.len()));
    if let Some(bit) = flip {
        let bit = bit as usize % (bytes.len() * 8);
        let mut bad = bytes;
        bad[bit / 8] ^= 1 << (bit % 8);
        let decoded = record::decode(&Bytes::from(bad), u32::MAX);
        assert!(decoded.is_err(), "bit {bit} flipped and the record still decodes: {decoded:?}");
    }
    check_parts(&rec, payload);
    Ok(())
}

/// A part of a payload is the bytes of the range asked for, cut at the payload's end.
fn check_parts(rec: &Record, seed: &[u8]) {
    let mut u = Unstructured::new(seed);
    let (Ok(start), Ok(end)) = (u.arbitrary::<u64>(), u.arbitrary::<u64>()) else { return };
    let len = rec.payload.len() as u64;
    for range in [start..end, start % (len + 1)..end % (len + 1)] {
        let part = PayloadPart::of(rec, range.clone());
        assert_eq!(part.payload_len, len);
        let want_start = range.start.min(len);
        assert_eq!(part.offset, want_start);
        let want_end = range.end.min(len).max(want_start);
        assert_eq!(&part.bytes[..], &rec.payload[want_start as usize..want_end as usize]);
    }
}
