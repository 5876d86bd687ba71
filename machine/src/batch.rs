//! The messages of one `Send` entry, kept encoded with a table of slots, so that one message
//! is read and checked without decoding (or even reading) the others.
//!
//! ```text
//! | count u32 | count × (end u32, crc u32) | message 0 | message 1 | … |
//! ```
//! All integers little-endian. Slot `i` is the bytes `end[i-1]..end[i]` of the data after
//! the table (`0..end[0]` for the first); `crc` is CRC32C over those bytes; each message is
//! bincode, its [`MessageHead`] fields first. The table is checked whenever a batch is
//! decoded, each slot's CRC whenever it is read, so a reader that fetched only one slot's
//! bytes from disk still serves nothing damaged.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::CodecError;
use crate::ids::{LogIndex, Millis, QueueId, Slot};
use crate::types::{StoredMessage, TopicName};

/// Bytes of the count at the start of a batch.
pub const BATCH_COUNT_BYTES: usize = 4;
/// Bytes of one slot's table entry (end offset and CRC32C).
pub const SLOT_ENTRY_BYTES: usize = 8;
/// Most messages one batch holds.
pub const MAX_BATCH_MESSAGES: usize = 1 << 16;

/// The first fields of every encoded message: enough to tell whether it is stored
/// ([`crate::Machine::accepts_head`]) without decoding properties and body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageHead {
    /// Topic.
    pub topic: TopicName,
    /// Queue.
    pub queue: QueueId,
    /// The topic incarnation the proposer checked the message against.
    pub topic_epoch: LogIndex,
    /// Earliest delivery time (delay messages).
    pub deliver_at: Option<Millis>,
    /// A transactional half message: visible only once committed.
    pub transactional: bool,
}

/// Where one slot's bytes are, relative to the start of the batch, and their CRC32C.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotLocation {
    /// Byte range within the batch.
    pub bytes: Range<usize>,
    /// CRC32C of those bytes.
    pub crc: u32,
}

/// Encoded messages of one entry; the table is valid (checked when made or decoded).
#[derive(Clone, PartialEq, Eq)]
pub struct MessageBatch {
    bytes: Bytes,
    count: usize,
}

impl fmt::Debug for MessageBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageBatch").field("count", &self.count).field("bytes", &self.bytes.len()).finish()
    }
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn corrupt(what: &str, reason: String) -> CodecError {
    CodecError::Corrupt { what: what.to_string(), reason }
}

fn word(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

impl MessageBatch {
    /// Encodes `messages` in order (slot `i` is `messages[i]`).
    pub fn encode(messages: &[StoredMessage]) -> Result<Self, CodecError> {
        let encode_error = |reason: String| CodecError::Encode { what: "message batch".into(), reason };
        if messages.len() > MAX_BATCH_MESSAGES {
            return Err(encode_error(format!(
                "{} messages, a batch holds at most {MAX_BATCH_MESSAGES}",
                messages.len()
            )));
        }
        let table = BATCH_COUNT_BYTES + messages.len() * SLOT_ENTRY_BYTES;
        let mut out = vec![0u8; table];
        out[..BATCH_COUNT_BYTES].copy_from_slice(&(messages.len() as u32).to_le_bytes());
        for (i, m) in messages.iter().enumerate() {
            let start = out.len();
            bincode::serde::encode_into_std_write(m, &mut out, config()).map_err(|e| encode_error(e.to_string()))?;
            let end = u32::try_from(out.len() - table)
                .map_err(|_| encode_error("the messages take more than 4 GiB".to_string()))?;
            let crc = crc32c::crc32c(&out[start..]);
            let at = BATCH_COUNT_BYTES + i * SLOT_ENTRY_BYTES;
            out[at..at + 4].copy_from_slice(&end.to_le_bytes());
            out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        }
        Ok(Self { bytes: Bytes::from(out), count: messages.len() })
    }

    /// Takes encoded bytes, checking the table; `what` names them in errors.
    pub fn from_bytes(bytes: Bytes, what: &str) -> Result<Self, CodecError> {
        let count = Self::count_in(&bytes, what)?;
        let table = Self::table_bytes(count);
        if bytes.len() < table {
            return Err(corrupt(
                what,
                format!("{count} slots need a {table}-byte table, the batch has {} bytes", bytes.len()),
            ));
        }
        let mut previous = 0u32;
        for i in 0..count {
            let end = word(&bytes, BATCH_COUNT_BYTES + i * SLOT_ENTRY_BYTES);
            if end < previous {
                return Err(corrupt(what, format!("slot {i} ends at {end}, before slot {} ends at {previous}", i - 1)));
            }
            previous = end;
        }
        if previous as usize != bytes.len() - table {
            return Err(corrupt(
                what,
                format!("the slots end at {previous}, the batch holds {} bytes of messages", bytes.len() - table),
            ));
        }
        Ok(Self { bytes, count })
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// How many messages.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it holds no message.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The message in `slot`; `None` past the last. A slot whose bytes do not match their
    /// CRC or do not decode is an error.
    pub fn get(&self, slot: Slot) -> Option<Result<StoredMessage, CodecError>> {
        let location = self.locate(slot)?;
        Some(decode_slot(&self.bytes[location.bytes.clone()], location.crc, slot))
    }

    /// The head of the message in `slot` (its CRC checked, properties and body not decoded).
    pub fn head(&self, slot: Slot) -> Option<Result<MessageHead, CodecError>> {
        let location = self.locate(slot)?;
        Some(decode_head(&self.bytes[location.bytes.clone()], location.crc, slot))
    }

    /// Every message in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, Result<StoredMessage, CodecError>)> + '_ {
        (0..self.count as u32).map(Slot).filter_map(|s| self.get(s).map(|m| (s, m)))
    }

    /// Every message, decoded; the first damaged one is an error.
    pub fn decode_all(&self) -> Result<Vec<StoredMessage>, CodecError> {
        self.iter().map(|(_, m)| m).collect()
    }

    /// Every message's head in slot order.
    pub fn heads(&self) -> impl Iterator<Item = (Slot, Result<MessageHead, CodecError>)> + '_ {
        (0..self.count as u32).map(Slot).filter_map(|s| self.head(s).map(|m| (s, m)))
    }

    fn locate(&self, slot: Slot) -> Option<SlotLocation> {
        let table = &self.bytes[..Self::table_bytes(self.count)];
        Self::locate_in(table, slot).ok().flatten()
    }

    fn count_in(bytes: &[u8], what: &str) -> Result<usize, CodecError> {
        if bytes.len() < BATCH_COUNT_BYTES {
            return Err(corrupt(what, format!("{} bytes, too short for the message count", bytes.len())));
        }
        let count = word(bytes, 0) as usize;
        if count > MAX_BATCH_MESSAGES {
            return Err(corrupt(what, format!("{count} messages, a batch holds at most {MAX_BATCH_MESSAGES}")));
        }
        Ok(count)
    }

    /// Bytes of the count and table of a batch of `count` messages.
    pub fn table_bytes(count: usize) -> usize {
        BATCH_COUNT_BYTES + count * SLOT_ENTRY_BYTES
    }

    /// The batch bytes a reader of `slot` needs before it knows where the slot is: the
    /// count and the table up to the slot's entry.
    pub fn table_prefix_for(slot: Slot) -> usize {
        Self::table_bytes(slot.0 as usize + 1)
    }

    /// Where `slot` is, from the first bytes of a batch (at least
    /// [`Self::table_prefix_for`] of them, or the whole batch); `None` when the batch holds
    /// fewer messages. For readers that fetch only the bytes they need.
    pub fn locate_in(prefix: &[u8], slot: Slot) -> Result<Option<SlotLocation>, CodecError> {
        let what = "message batch";
        let count = Self::count_in(prefix, what)?;
        let i = slot.0 as usize;
        if i >= count {
            return Ok(None);
        }
        let need = Self::table_prefix_for(slot);
        if prefix.len() < need {
            return Err(corrupt(what, format!("slot {i} needs {need} bytes of table, {} were read", prefix.len())));
        }
        let entry = BATCH_COUNT_BYTES + i * SLOT_ENTRY_BYTES;
        let start = if i == 0 { 0 } else { word(prefix, entry - SLOT_ENTRY_BYTES) as usize };
        let end = word(prefix, entry) as usize;
        if end < start {
            return Err(corrupt(what, format!("slot {i} ends at {end}, before it starts at {start}")));
        }
        let data = Self::table_bytes(count);
        Ok(Some(SlotLocation { bytes: data + start..data + end, crc: word(prefix, entry + 4) }))
    }
}

fn check_slot(bytes: &[u8], crc: u32, slot: Slot) -> Result<(), CodecError> {
    if crc32c::crc32c(bytes) != crc {
        return Err(corrupt(&format!("message {}", slot.0), "its bytes do not match their CRC32C".into()));
    }
    Ok(())
}

/// Decodes one slot's bytes (as located by [`MessageBatch::locate_in`]), checking its CRC.
pub fn decode_slot(bytes: &[u8], crc: u32, slot: Slot) -> Result<StoredMessage, CodecError> {
    check_slot(bytes, crc, slot)?;
    let (m, used) = crate::bounded::decode_from_slice(bytes)
        .map_err(|e| corrupt(&format!("message {}", slot.0), format!("it does not decode: {e}")))?;
    if used != bytes.len() {
        return Err(corrupt(&format!("message {}", slot.0), format!("{} bytes follow it", bytes.len() - used)));
    }
    Ok(m)
}

fn decode_head(bytes: &[u8], crc: u32, slot: Slot) -> Result<MessageHead, CodecError> {
    check_slot(bytes, crc, slot)?;
    let (head, _) = crate::bounded::decode_from_slice(bytes)
        .map_err(|e| corrupt(&format!("message {}", slot.0), format!("its head does not decode: {e}")))?;
    Ok(head)
}

impl Serialize for MessageBatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.bytes)
    }
}

impl<'de> Deserialize<'de> for MessageBatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = Bytes::deserialize(deserializer)?;
        MessageBatch::from_bytes(bytes, "message batch").map_err(serde::de::Error::custom)
    }
}

impl StoredMessage {
    /// The fields that say where the message goes.
    pub fn head(&self) -> MessageHead {
        MessageHead {
            topic: self.topic.clone(),
            queue: self.queue,
            topic_epoch: self.topic_epoch,
            deliver_at: self.deliver_at,
            transactional: self.transactional,
        }
    }

    /// A message with only the fields of `head` (the rest empty): what is known of a stored
    /// message whose other fields do not decode.
    pub fn bare(head: MessageHead) -> StoredMessage {
        StoredMessage {
            topic: head.topic,
            queue: head.queue,
            topic_epoch: head.topic_epoch,
            deliver_at: head.deliver_at,
            transactional: head.transactional,
            message_id: String::new(),
            tag: None,
            keys: Vec::new(),
            message_group: None,
            properties: Default::default(),
            born: Default::default(),
            born_host: String::new(),
            body: Bytes::new(),
            body_gzip: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn message(i: u32) -> StoredMessage {
        StoredMessage {
            topic: TopicName::new("orders").expect("present"),
            queue: QueueId(i % 4),
            topic_epoch: LogIndex(3),
            message_id: format!("id-{i}"),
            tag: Some("TagA".into()),
            keys: vec![format!("k{i}")],
            message_group: None,
            properties: BTreeMap::from([("p".to_string(), i.to_string())]),
            born: Millis(1_700_000_000_000 + i64::from(i)),
            deliver_at: None,
            transactional: false,
            born_host: "10.0.0.1".into(),
            body: Bytes::from(vec![i as u8; i as usize * 7]),
            body_gzip: false,
        }
    }

    #[test]
    fn every_slot_reads_back_alone() {
        let messages: Vec<_> = (0..9).map(message).collect();
        let batch = MessageBatch::encode(&messages).expect("present");
        assert_eq!(batch.len(), 9);
        for (i, m) in messages.iter().enumerate() {
            let slot = Slot(i as u32);
            assert_eq!(batch.get(slot).expect("present").expect("present"), *m);
            assert_eq!(batch.head(slot).expect("present").expect("present"), m.head());
            // A reader holding only the table prefix and the slot's bytes gets the same.
            let prefix = &batch.as_bytes()[..MessageBatch::table_prefix_for(slot)];
            let at = MessageBatch::locate_in(prefix, slot).expect("present").expect("present");
            assert_eq!(decode_slot(&batch.as_bytes()[at.bytes], at.crc, slot).expect("present"), *m);
        }
        assert!(batch.get(Slot(9)).is_none());
        assert_eq!(MessageBatch::locate_in(batch.as_bytes(), Slot(9)).expect("present"), None);
        let collected: Vec<_> = batch.iter().map(|(_, m)| m.expect("present")).collect();
        assert_eq!(collected, messages);
        let empty = MessageBatch::encode(&[]).expect("present");
        assert!(empty.is_empty());
        assert_eq!(empty.iter().count(), 0);
    }

    #[test]
    fn serde_round_trip_checks_the_table() {
        let batch = MessageBatch::encode(&[message(1), message(2)]).expect("present");
        let bytes = bincode::serde::encode_to_vec(&batch, config()).expect("present");
        let (back, _): (MessageBatch, usize) = bincode::serde::decode_from_slice(&bytes, config()).expect("present");
        assert_eq!(back, batch);

        // A table whose slots do not end where the data ends is refused when decoded.
        let mut raw = batch.as_bytes().to_vec();
        raw.pop();
        let err = MessageBatch::from_bytes(Bytes::from(raw), "entry 7").expect_err("an error");
        assert!(err.to_string().contains("entry 7"), "{err}");
        let mut backwards = batch.as_bytes().to_vec();
        backwards[BATCH_COUNT_BYTES..BATCH_COUNT_BYTES + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(MessageBatch::from_bytes(Bytes::from(backwards), "entry 7").is_err());
        let mut huge = batch.as_bytes().to_vec();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(MessageBatch::from_bytes(Bytes::from(huge), "entry 7").is_err());
        assert!(MessageBatch::from_bytes(Bytes::from_static(&[1, 0]), "entry 7").is_err());
    }

    #[test]
    fn a_damaged_slot_is_an_error_and_its_neighbours_still_read() {
        let batch = MessageBatch::encode(&[message(1), message(2), message(3)]).expect("present");
        let at = MessageBatch::locate_in(batch.as_bytes(), Slot(1)).expect("present").expect("present");
        let mut raw = batch.as_bytes().to_vec();
        raw[at.bytes.start + 2] ^= 0x40;
        let damaged = MessageBatch::from_bytes(Bytes::from(raw), "entry 7").expect("present");
        let err = damaged.get(Slot(1)).expect("present").expect_err("an error");
        assert!(err.to_string().contains("CRC32C"), "{err}");
        assert!(damaged.head(Slot(1)).expect("present").is_err());
        assert_eq!(damaged.get(Slot(0)).expect("present").expect("present"), message(1));
        assert_eq!(damaged.get(Slot(2)).expect("present").expect("present"), message(3));
        // A prefix too short for the slot's table entry is an error, not a wrong answer.
        assert!(MessageBatch::locate_in(&batch.as_bytes()[..8], Slot(2)).is_err());
    }
}
