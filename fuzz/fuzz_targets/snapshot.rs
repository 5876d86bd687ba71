//! Snapshot and checkpoint files (`raftmq_machine::codec::decode_snapshot` and
//! `decode_framed`): the broker's snapshot file (`broker::raft::state::decode`, today's
//! format and the oldest still read), the state machine's snapshot alone, and the derived
//! stores' checkpoint.
//!
//! Checked: nothing panics, however damaged the bytes; what decodes encodes (in today's
//! format) and decodes again to the same value.
//!
//! Input: a mode byte, then either a whole file (modes 0, 3, 5; seeds: the golden samples) or
//! a body that is given a valid header, so that the body decoder is reached whatever the
//! bytes (modes 1, 2, 4, 6).

#![no_main]

use broker::raft::state;
use broker::store::checkpoint::{CHECKPOINT_MAGIC, CHECKPOINT_VERSION, Checkpoint};
use libfuzzer_sys::fuzz_target;
use raftmq_machine::Machine;
use raftmq_machine::codec::{self, OLDEST_READ_SNAPSHOT_VERSION, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 7 {
        0 => broker_snapshot(rest),
        1 => broker_snapshot(&framed(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, rest)),
        2 => broker_snapshot(&framed(SNAPSHOT_MAGIC, OLDEST_READ_SNAPSHOT_VERSION, rest)),
        3 => machine_snapshot(rest),
        4 => machine_snapshot(&framed(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, rest)),
        5 => checkpoint(rest),
        _ => checkpoint(&framed(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, rest)),
    }
});

/// `body` behind a valid header: magic, version, length, CRC32C (`codec::encode_framed`'s).
fn framed(magic: [u8; 8], version: u32, body: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn broker_snapshot(bytes: &[u8]) {
    let Ok(file) = state::decode(bytes, "fuzz input") else { return };
    let again = codec::encode_snapshot(&file).expect("a decoded snapshot encodes");
    let back = state::decode(&again, "the re-encoded snapshot").expect("a re-encoded snapshot decodes");
    assert_eq!((back.meta, back.applied), (file.meta, file.applied), "decode, encode, decode changed the snapshot");
}

fn machine_snapshot(bytes: &[u8]) {
    let Ok(machine) = codec::decode_snapshot::<Machine>(bytes, "fuzz input") else { return };
    let again = codec::encode_snapshot(&machine).expect("a decoded state encodes");
    let back: Machine = codec::decode_snapshot(&again, "the re-encoded state").expect("a re-encoded state decodes");
    assert_eq!(back, machine, "decode, encode, decode changed the state");
}

fn checkpoint(bytes: &[u8]) {
    let Ok(c) = codec::decode_framed::<Checkpoint>(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, bytes, "fuzz input") else {
        return;
    };
    let again = codec::encode_framed(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, &c).expect("a decoded checkpoint encodes");
    let back: Checkpoint =
        codec::decode_framed(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, &again, "the re-encoded checkpoint")
            .expect("a re-encoded checkpoint decodes");
    assert_eq!(back, c, "decode, encode, decode changed the checkpoint");
}
