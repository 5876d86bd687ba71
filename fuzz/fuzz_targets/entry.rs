//! The log entry codec: the payload of a CommitLog record as the broker's openraft adapter
//! reads it (`raft_log::decode_entry` for the broker's `TypeConfig`: a 4-byte entry format
//! version, then bincode of openraft's entry around a `raftmq_machine::Command`), the
//! message batch of a `Send` (`MessageBatch`), and the broker's reader of one message of an
//! entry (`broker::raft::slot`), which decodes only the entry's head, the batch's table and
//! one slot.
//!
//! Checked: nothing panics; a decoded entry encodes and decodes to itself; for a `Send`
//! whose head names the record's index, the slot reader gives exactly the message the full
//! decode gives in every slot (or an error where the full decode finds the slot damaged),
//! and nothing past the last slot; a `Send` made from the input decodes to itself, before
//! any damage.
//!
//! Input: a mode byte. Mode 0: the record's index (u64, little-endian), then its payload
//! (seeds: the golden entries). Mode 1 (through `arbitrary`): a `Send` entry's messages and
//! log id, its format version, and damage to its bytes.

#![no_main]

use std::ops::RangeInclusive;

use arbitrary::Unstructured;
use broker::raft::slot::read_message_in;
use broker::raft::{Entry, LogId, TypeConfig};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use openraft::EntryPayload;
use openraft::entry::RaftEntry;
use raft_log::Record;
use raftmq_fuzz::stored_message;
use raftmq_machine::codec::{ENTRY_VERSION, OLDEST_READ_ENTRY_VERSION};
use raftmq_machine::command::ProposalId;
use raftmq_machine::{Command, MessageBatch, Millis, NodeId, Slot};

/// Most slots compared per entry.
const MAX_SLOTS_CHECKED: u32 = 64;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let _ = match mode % 2 {
        0 => raw(rest),
        _ => made(&mut Unstructured::new(rest)),
    };
});

fn versions() -> RangeInclusive<u32> {
    OLDEST_READ_ENTRY_VERSION..=ENTRY_VERSION
}

fn raw(data: &[u8]) -> arbitrary::Result<()> {
    let Some((index, payload)) = data.split_first_chunk::<8>() else { return Ok(()) };
    let record = Record { index: u64::from_le_bytes(*index), term: 1, payload: Bytes::copy_from_slice(payload) };
    check(&record);
    // The batch codec on its own, over the same bytes.
    if let Ok(batch) = MessageBatch::from_bytes(record.payload.clone(), "fuzz input") {
        check_batch(&batch);
    }
    Ok(())
}

/// A `Send` entry made from the input: it decodes to itself and every slot reads back; then
/// the same checks as for raw bytes after damage.
fn made(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let count = u.int_in_range(0..=6)?;
    let messages = (0..count).map(|_| stored_message(u)).collect::<arbitrary::Result<Vec<_>>>()?;
    let batch = MessageBatch::encode(&messages).expect("a batch of a few messages encodes");
    let log_id = LogId::new(
        openraft::impls::leader_id_adv::LeaderId { term: u.arbitrary()?, node_id: NodeId(u.arbitrary()?) },
        u.arbitrary()?,
    );
    let proposal = u.arbitrary::<Option<u64>>()?.map(ProposalId);
    let command = Command::Send { now: Millis(u.arbitrary()?), messages: batch, proposal };
    let entry = Entry::new(log_id, EntryPayload::Normal(command));
    let version = *u.choose(&[OLDEST_READ_ENTRY_VERSION, ENTRY_VERSION])?;
    let payload = raft_log::encode_entry::<TypeConfig>(&entry, version).expect("an entry encodes");
    let record = Record { index: log_id.index(), term: 1, payload };
    let back = raft_log::decode_entry::<TypeConfig>(&record, versions()).expect("an encoded entry decodes");
    assert_eq!(back, entry);
    for (slot, m) in messages.iter().enumerate() {
        let read = read_message_in(&record, &versions(), Slot(slot as u32)).expect("an intact slot reads");
        assert_eq!(read.as_ref(), Some(m), "slot {slot}");
    }
    check(&record);

    let mut damaged = record.payload.to_vec();
    if damaged.is_empty() {
        return Ok(());
    }
    match u.int_in_range(0..=2)? {
        0 => {
            let at = u.choose_index(damaged.len())?;
            damaged[at] ^= u.int_in_range(1..=255)?;
        }
        1 => damaged.truncate(u.choose_index(damaged.len())?),
        _ => {
            let at = u.choose_index(damaged.len())?;
            let bytes: Vec<u8> = u.arbitrary()?;
            for (i, b) in bytes.into_iter().enumerate() {
                if let Some(d) = damaged.get_mut(at + i) {
                    *d = b;
                }
            }
        }
    }
    check(&Record { payload: Bytes::from(damaged), ..record });
    Ok(())
}

/// Decodes a record as the adapter and the slot reader do, comparing the two.
fn check(record: &Record) {
    let full = raft_log::decode_entry::<TypeConfig>(record, versions());
    // The slot reader must not panic whatever the bytes, for a few slots and an arbitrary one.
    let far = Slot(record.payload.len() as u32 ^ 0x5555);
    for slot in [Slot(0), Slot(1), Slot(u32::MAX), far] {
        let _ = read_message_in(record, &versions(), slot);
    }
    let Ok(entry) = full else { return };
    let bytes = raft_log::encode_entry::<TypeConfig>(&entry, ENTRY_VERSION).expect("a decoded entry encodes");
    let again = raft_log::decode_entry::<TypeConfig>(&Record { payload: bytes, ..record.clone() }, versions())
        .expect("a re-encoded entry decodes");
    assert_eq!(again, entry, "decode, encode, decode changed the entry");
    let EntryPayload::Normal(Command::Send { messages, .. }) = &entry.payload else { return };
    check_batch(messages);
    if entry.log_id.index() != record.index {
        return;
    }
    for slot in (0..messages.len() as u32).take(MAX_SLOTS_CHECKED as usize).map(Slot) {
        let whole = messages.get(slot).expect("a slot below the count exists");
        let part = read_message_in(record, &versions(), slot);
        match (whole, part) {
            (Ok(m), Ok(Some(p))) => assert_eq!(m, p, "slot {}: the slot reader and the full decode disagree", slot.0),
            (Err(_), Err(_)) => {}
            (whole, part) => panic!("slot {}: the full decode gives {whole:?}, the slot reader {part:?}", slot.0),
        }
    }
    let past = read_message_in(record, &versions(), Slot(messages.len() as u32));
    assert!(matches!(past, Ok(None)), "past the last slot the slot reader gives {past:?}");
}

/// A batch's messages, decoded and encoded again, make the same batch.
fn check_batch(batch: &MessageBatch) {
    let heads: Vec<_> = batch.heads().collect();
    assert_eq!(heads.len(), batch.len());
    let Ok(messages) = batch.decode_all() else { return };
    for ((_, head), m) in heads.iter().zip(&messages) {
        let head = head.as_ref().expect("a message that decodes has a head that decodes");
        let from_message = (&m.topic, m.queue, m.topic_epoch, m.deliver_at, m.transactional);
        assert_eq!((&head.topic, head.queue, head.topic_epoch, head.deliver_at, head.transactional), from_message);
    }
    let again = MessageBatch::encode(&messages).expect("decoded messages encode");
    assert_eq!(again.decode_all().expect("an encoded batch decodes"), messages);
}
