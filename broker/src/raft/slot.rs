//! Reading one message of a `Send` entry from the CommitLog without reading or decoding the
//! rest of the entry: the entry's first bytes say where its message batch starts, the batch's
//! table where the message is ([`MessageBatch::locate_in`]), and the message's own CRC32C
//! stands in for the record's, which a partial read cannot check.

use std::io;
use std::ops::{Range, RangeInclusive};
use std::sync::OnceLock;

use openraft::EntryPayload;
use openraft::entry::RaftEntry;
use raft_log::{Log, PayloadPart, Record};
use raftmq_machine::batch::{MessageBatch, decode_slot};
use raftmq_machine::types::StoredMessage;
use raftmq_machine::{Command, Millis, Slot};

use super::{Entry, LogId};

/// Bytes read first: the entry's version and head, and the table of a batch of up to
/// about 500 messages.
const FIRST_READ_BYTES: u64 = 4096;

/// The fields a `Send` entry's payload starts with, up to its batch's length: log id, the
/// variant indexes of the payload (`Normal`) and the command (`Send`), the proposer's time.
type SendHead = (LogId, u32, u32, Millis, u64);

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn invalid(index: u64, what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("log entry {index}: {what}"))
}

/// The variant indexes a `Send` entry's head carries, learnt by encoding one (so a
/// reordering of the enums cannot make this reader disagree with the full decode).
fn send_variants() -> (u32, u32) {
    static VARIANTS: OnceLock<(u32, u32)> = OnceLock::new();
    *VARIANTS.get_or_init(|| {
        let log_id = LogId::new(openraft::impls::leader_id_adv::LeaderId { term: 1, node_id: Default::default() }, 1);
        let empty = MessageBatch::encode(&[]).expect("an empty batch encodes");
        let entry =
            Entry::new(log_id, EntryPayload::Normal(Command::Send { now: Millis(0), messages: empty, proposal: None }));
        let bytes = bincode::serde::encode_to_vec(&entry, config()).expect("an entry encodes");
        let ((_, payload, command, _, _), _): (SendHead, usize) =
            bincode::serde::decode_from_slice(&bytes, config()).expect("its head decodes");
        (payload, command)
    })
}

/// Where a batch is in an entry's payload.
struct BatchAt {
    start: u64,
    len: u64,
}

/// Finds the batch of the `Send` entry whose payload starts with `first` (written with an
/// entry format in `versions`); `None` when the entry is not a `Send`.
fn find_batch(first: &PayloadPart, versions: &RangeInclusive<u32>) -> io::Result<Option<BatchAt>> {
    let index = first.index;
    let Some((found, body)) = first.bytes.split_first_chunk::<4>() else {
        return Err(invalid(index, format!("{} bytes, too short for its format version", first.bytes.len())));
    };
    let found = u32::from_le_bytes(*found);
    if !versions.contains(&found) {
        return Err(invalid(
            index,
            format!(
                "entry format version {found}, this build reads {}; run a raftmq build that reads version {found}",
                raft_log::describe_versions(versions)
            ),
        ));
    }
    let Ok(((log_id, payload, command, _, len), used)) =
        bincode::serde::decode_from_slice::<SendHead, _>(body, config())
    else {
        // Too short to be a Send's head (a small entry of another kind), or not a Send.
        return Ok(None);
    };
    if (payload, command) != send_variants() {
        return Ok(None);
    }
    if log_id.index() != index {
        return Err(invalid(index, format!("its head names log index {}", log_id.index())));
    }
    let start = 4 + used as u64;
    if start.checked_add(len).is_none_or(|end| end > first.payload_len) {
        return Err(invalid(
            index,
            format!("its batch of {len} bytes at {start} runs past its {} bytes", first.payload_len),
        ));
    }
    Ok(Some(BatchAt { start, len }))
}

/// Reads more of a record's payload: the bytes of a range, cut at the payload's end; `None`
/// when the record is gone.
type ReadPart<'a> = &'a dyn Fn(Range<u64>) -> io::Result<Option<PayloadPart>>;

/// The bytes `from..to` of record `first.index`'s payload, from `first` when it holds them.
fn bytes_at(first: &PayloadPart, from: u64, to: u64, read: ReadPart<'_>) -> io::Result<bytes::Bytes> {
    let held = first.offset + first.bytes.len() as u64;
    if from >= first.offset && to <= held {
        return Ok(first.bytes.slice((from - first.offset) as usize..(to - first.offset) as usize));
    }
    let part = read(from..to)?.ok_or_else(|| invalid(first.index, "it went while it was being read".into()))?;
    if part.bytes.len() as u64 != to - from {
        return Err(invalid(first.index, format!("bytes {from}..{to} are past its end")));
    }
    Ok(part.bytes)
}

/// The message in `slot` of the log entry at `index` (entry format in `versions`), reading only
/// the entry's head, its batch's table up to the slot, and the slot. `None` when the log
/// does not hold the entry, it is not a `Send`, or it has no such slot; a message whose
/// bytes do not match their CRC32C is an error naming the entry and slot.
pub fn read_message(
    log: &Log,
    versions: &RangeInclusive<u32>,
    index: u64,
    slot: Slot,
) -> io::Result<Option<StoredMessage>> {
    let Some(first) = log.read_payload_part(index, 0..FIRST_READ_BYTES).map_err(io::Error::from)? else {
        return Ok(None);
    };
    message_in(&first, versions, slot, &|range| log.read_payload_part(index, range).map_err(io::Error::from))
}

/// [`read_message`] over a record held in memory, making the same reads of the same parts
/// of its payload (for the fuzz targets, which compare it with the full decode).
#[doc(hidden)]
pub fn read_message_in(
    record: &Record,
    versions: &RangeInclusive<u32>,
    slot: Slot,
) -> io::Result<Option<StoredMessage>> {
    let first = PayloadPart::of(record, 0..FIRST_READ_BYTES);
    message_in(&first, versions, slot, &|range| Ok(Some(PayloadPart::of(record, range))))
}

/// The message in `slot` of the entry whose payload starts with `first`, reading the rest
/// of what it needs with `read`.
fn message_in(
    first: &PayloadPart,
    versions: &RangeInclusive<u32>,
    slot: Slot,
    read: ReadPart<'_>,
) -> io::Result<Option<StoredMessage>> {
    let index = first.index;
    let Some(batch) = find_batch(first, versions)? else { return Ok(None) };
    let table_len = (MessageBatch::table_prefix_for(slot) as u64).min(batch.len);
    let table = bytes_at(first, batch.start, batch.start + table_len, read)?;
    let damaged = |e: raftmq_machine::codec::CodecError| invalid(index, format!("slot {}: {e}", slot.0));
    let Some(at) = MessageBatch::locate_in(&table, slot).map_err(damaged)? else { return Ok(None) };
    if at.bytes.end as u64 > batch.len {
        return Err(invalid(index, format!("slot {} runs past its batch of {} bytes", slot.0, batch.len)));
    }
    let bytes = bytes_at(first, batch.start + at.bytes.start as u64, batch.start + at.bytes.end as u64, read)?;
    decode_slot(&bytes, at.crc, slot).map(Some).map_err(damaged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_variants_are_those_of_the_enums() {
        // Normal is openraft's second payload variant, Send the machine's third command.
        assert_eq!(send_variants(), (1, 2));
    }
}
