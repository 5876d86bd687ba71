//! Conversions between the RocketMQ v2 wire messages and the broker's own values, with
//! every limit on what a client may send.

use std::collections::BTreeMap;

use md5::Digest as _;
use prost_types::Timestamp;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;

use super::status::Refusal;
use raftmq_machine::LogIndex;
use raftmq_machine::types::{Millis, QueueId, StoredMessage, TopicName};

/// Most user properties per message.
pub const MAX_PROPERTIES: usize = 128;
/// Most bytes of user property keys and values per message.
pub const MAX_PROPERTY_BYTES: usize = 16 << 10;
/// Most keys per message.
pub const MAX_KEYS: usize = 64;
/// Longest tag, key, message id or message group.
pub const MAX_SHORT_FIELD: usize = 128;

/// Milliseconds of a protobuf timestamp, saturating at the ends of `Millis` (exactly: a
/// timestamp made by [`timestamp`] gives back its milliseconds, the extremes too).
pub fn millis_of(ts: &Timestamp) -> Millis {
    let ms = i128::from(ts.seconds) * 1000 + i128::from(ts.nanos / 1_000_000);
    Millis(i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX }))
}

/// A protobuf timestamp of milliseconds.
pub fn timestamp(ms: Millis) -> Timestamp {
    Timestamp { seconds: ms.0.div_euclid(1000), nanos: (ms.0.rem_euclid(1000) * 1_000_000) as i32 }
}

/// Milliseconds of a protobuf duration (negative → error).
pub fn duration_ms(d: &prost_types::Duration) -> Result<u64, String> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err("negative duration".into());
    }
    Ok((d.seconds as u64).saturating_mul(1000).saturating_add(d.nanos as u64 / 1_000_000))
}

/// A protobuf duration of milliseconds.
pub fn duration(ms: u64) -> prost_types::Duration {
    prost_types::Duration { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

fn short(field: &str, value: &str, code: Code) -> Result<(), Refusal> {
    if value.len() > MAX_SHORT_FIELD {
        return Err(Refusal::new(code, format!("{field} is {} bytes, the limit is {MAX_SHORT_FIELD}", value.len())));
    }
    if value.trim().is_empty() || value.chars().any(char::is_control) {
        return Err(Refusal::new(code, format!("{field} {value:?} is blank or has control characters")));
    }
    Ok(())
}

/// Checks the body against the digest the client sent (if any).
fn check_digest(body: &[u8], digest: &pb::Digest) -> Result<(), Refusal> {
    let computed = match pb::DigestType::try_from(digest.r#type) {
        Ok(pb::DigestType::Crc32) => format!("{:08X}", crc32fast::hash(body)),
        Ok(pb::DigestType::Md5) => hex_upper(&md5::Md5::digest(body)),
        Ok(pb::DigestType::Sha1) => hex_upper(&sha1::Sha1::digest(body)),
        _ => return Err(Refusal::new(Code::BadRequest, format!("unknown digest type {}", digest.r#type))),
    };
    if !computed.eq_ignore_ascii_case(digest.checksum.trim()) {
        return Err(Refusal::new(
            Code::MessageCorrupted,
            format!("body digest mismatch: the client sent {}, the body hashes to {computed}", digest.checksum),
        ));
    }
    Ok(())
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// The CRC32 digest of a body, as the clients expect it (8 upper-case hex digits).
pub fn crc32_digest(body: &[u8]) -> pb::Digest {
    pb::Digest { r#type: pb::DigestType::Crc32 as i32, checksum: format!("{:08X}", crc32fast::hash(body)) }
}

/// Validates one message of a `SendMessage` and turns it into what the log stores.
/// `queue` is where it goes; `message_id` is used when the client sent none.
pub fn incoming(
    msg: pb::Message,
    max_body: usize,
    queue: QueueId,
    make_id: impl FnOnce() -> String,
) -> Result<StoredMessage, Refusal> {
    let topic_name = msg.topic.as_ref().map(|r| r.name.as_str()).unwrap_or_default();
    let topic = TopicName::new(topic_name).map_err(|e| Refusal::topic(topic_name, e))?;
    if msg.body.len() > max_body {
        return Err(Refusal::new(
            Code::PayloadTooLarge,
            format!("message body is {} bytes, the limit is {max_body}", msg.body.len()),
        ));
    }
    if msg.body.is_empty() {
        return Err(Refusal::new(Code::BadRequest, "message body is empty"));
    }
    let sys = msg.system_properties.unwrap_or_default();
    if let Some(tag) = &sys.tag {
        short("tag", tag, Code::IllegalMessageTag)?;
        if tag.contains('|') {
            return Err(Refusal::new(Code::IllegalMessageTag, format!("tag {tag:?} contains '|'")));
        }
    }
    if sys.keys.len() > MAX_KEYS {
        return Err(Refusal::new(Code::IllegalMessageKey, format!("{} keys, the limit is {MAX_KEYS}", sys.keys.len())));
    }
    for key in &sys.keys {
        short("key", key, Code::IllegalMessageKey)?;
    }
    if let Some(g) = &sys.message_group {
        short("message group", g, Code::IllegalMessageGroup)?;
    }
    if msg.user_properties.len() > MAX_PROPERTIES {
        return Err(Refusal::new(
            Code::MessagePropertiesTooLarge,
            format!("{} properties, the limit is {MAX_PROPERTIES}", msg.user_properties.len()),
        ));
    }
    let prop_bytes: usize = msg.user_properties.iter().map(|(k, v)| k.len() + v.len()).sum();
    if prop_bytes > MAX_PROPERTY_BYTES {
        return Err(Refusal::new(
            Code::MessagePropertiesTooLarge,
            format!("properties take {prop_bytes} bytes, the limit is {MAX_PROPERTY_BYTES}"),
        ));
    }
    if let Some(k) = msg.user_properties.keys().find(|k| k.is_empty() || k.chars().any(char::is_control)) {
        return Err(Refusal::new(
            Code::IllegalMessagePropertyKey,
            format!("property key {k:?} is empty or has control characters"),
        ));
    }
    if let Some(d) = &sys.body_digest {
        check_digest(&msg.body, d)?;
    }
    let message_id = if sys.message_id.is_empty() { make_id() } else { sys.message_id.clone() };
    short("message id", &message_id, Code::IllegalMessageId)?;
    if sys.born_host.len() > 256 {
        return Err(Refusal::new(Code::BadRequest, "born host is longer than 256 bytes"));
    }
    let body_gzip = match pb::Encoding::try_from(sys.body_encoding) {
        Ok(pb::Encoding::Gzip) => true,
        Ok(pb::Encoding::Identity) | Ok(pb::Encoding::Unspecified) => false,
        Err(_) => return Err(Refusal::new(Code::BadRequest, format!("unknown body encoding {}", sys.body_encoding))),
    };
    Ok(StoredMessage {
        topic,
        queue,
        // Set by the sender from the topic it checked the message against.
        topic_epoch: LogIndex(0),
        message_id,
        tag: sys.tag,
        keys: sys.keys,
        message_group: sys.message_group,
        properties: msg.user_properties.into_iter().collect::<BTreeMap<_, _>>(),
        born: sys.born_timestamp.as_ref().map(millis_of).unwrap_or(Millis(0)),
        deliver_at: sys.delivery_timestamp.as_ref().map(millis_of),
        transactional: false,
        born_host: sys.born_host,
        body: msg.body,
        body_gzip,
    })
}

/// Delivery facts added to a stored message when it goes out.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Store time.
    pub stored: Millis,
    /// This node's client endpoint.
    pub store_host: String,
    /// Queue offset.
    pub offset: u64,
    /// Receipt handle (pop deliveries).
    pub receipt: Option<String>,
    /// Delivery attempt (>= 1).
    pub attempt: u32,
    /// Invisible duration (pop deliveries).
    pub invisible_ms: Option<u64>,
}

/// The wire form of a stored message being delivered.
pub fn outgoing(m: &StoredMessage, d: &Delivery) -> pb::Message {
    let message_type = if m.transactional {
        pb::MessageType::Transaction
    } else if m.message_group.is_some() {
        pb::MessageType::Fifo
    } else if m.deliver_at.is_some() {
        pb::MessageType::Delay
    } else {
        pb::MessageType::Normal
    };
    pb::Message {
        topic: Some(pb::Resource { resource_namespace: String::new(), name: m.topic.as_str().to_string() }),
        user_properties: m.properties.clone().into_iter().collect(),
        system_properties: Some(pb::SystemProperties {
            tag: m.tag.clone(),
            keys: m.keys.clone(),
            message_id: m.message_id.clone(),
            body_digest: Some(crc32_digest(&m.body)),
            body_encoding: if m.body_gzip { pb::Encoding::Gzip } else { pb::Encoding::Identity } as i32,
            message_type: message_type as i32,
            born_timestamp: Some(timestamp(m.born)),
            born_host: m.born_host.clone(),
            store_timestamp: Some(timestamp(d.stored)),
            store_host: d.store_host.clone(),
            delivery_timestamp: m.deliver_at.map(timestamp),
            receipt_handle: d.receipt.clone(),
            queue_id: m.queue.0 as i32,
            queue_offset: Some(d.offset as i64),
            invisible_duration: d.invisible_ms.map(duration),
            delivery_attempt: Some(d.attempt.max(1) as i32),
            message_group: m.message_group.clone(),
            ..Default::default()
        }),
        body: m.body.clone(),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn sys(m: &mut pb::Message) -> &mut pb::SystemProperties {
        m.system_properties.get_or_insert_with(Default::default)
    }

    fn message(body: &str) -> pb::Message {
        pb::Message {
            topic: Some(pb::Resource { resource_namespace: String::new(), name: "t".into() }),
            user_properties: Default::default(),
            system_properties: Some(pb::SystemProperties { tag: Some("A".into()), ..Default::default() }),
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[test]
    fn digests_are_checked_and_produced_like_the_clients_do() {
        let mut m = message("hello");
        sys(&mut m).body_digest = Some(crc32_digest(b"hello"));
        assert_eq!(crc32_digest(b"hello").checksum, "3610A686");
        assert!(incoming(m.clone(), 1024, QueueId(0), || "id".into()).is_ok());
        sys(&mut m).body_digest = Some(pb::Digest {
            r#type: pb::DigestType::Md5 as i32,
            checksum: "5d41402abc4b2a76b9719d911017c592".into(),
        });
        assert!(incoming(m.clone(), 1024, QueueId(0), || "id".into()).is_ok(), "md5 of hello, lower case accepted");
        m.body = Bytes::from_static(b"hellO");
        let err = incoming(m, 1024, QueueId(0), || "id".into()).expect_err("mismatch");
        assert_eq!(err.code, Code::MessageCorrupted);
    }

    #[test]
    fn limits_are_enforced() {
        let big = incoming(message("xxxxx"), 4, QueueId(0), || "id".into()).expect_err("too big");
        assert_eq!(big.code, Code::PayloadTooLarge);
        let mut bad_topic = message("x");
        bad_topic.topic = Some(pb::Resource { resource_namespace: String::new(), name: "a b".into() });
        assert_eq!(incoming(bad_topic, 10, QueueId(0), || "id".into()).map_err(|e| e.code), Err(Code::IllegalTopic));
        let mut bad_tag = message("x");
        sys(&mut bad_tag).tag = Some("a|b".into());
        assert_eq!(incoming(bad_tag, 10, QueueId(0), || "id".into()).map_err(|e| e.code), Err(Code::IllegalMessageTag));
        let stored = incoming(message("x"), 10, QueueId(3), || "generated".into()).expect("valid");
        assert_eq!((stored.message_id.as_str(), stored.queue), ("generated", QueueId(3)));
    }

    #[test]
    fn timestamps_round_trip() {
        for ms in [0i64, 1, 999, 1000, 1_700_000_000_123, -1, i64::MIN, i64::MIN + 1, i64::MAX] {
            assert_eq!(millis_of(&timestamp(Millis(ms))), Millis(ms));
        }
    }

    /// What the `requests` fuzz target found (a QueryOffset timestamp): the seconds of
    /// `i64::MIN` saturated, then the milliseconds of `timestamp` of that moved off the
    /// bound, so the same moment read twice differed by 192 ms.
    #[test]
    fn timestamps_beyond_millis_saturate_and_stay_there() {
        let ts = Timestamp { seconds: i64::MIN, nanos: 0 };
        assert_eq!(millis_of(&ts), Millis(i64::MIN));
        assert_eq!(millis_of(&timestamp(millis_of(&ts))), Millis(i64::MIN));
        assert_eq!(millis_of(&Timestamp { seconds: i64::MAX, nanos: 999_999_999 }), Millis(i64::MAX));
        assert_eq!(millis_of(&Timestamp { seconds: -1, nanos: -500_000_000 }), Millis(-1500));
    }
}
