//! Messages as the application sees them, their wire form, message ids and body digests.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use raftmq_proto::rocketmq::v2 as pb;

use crate::Error;
use crate::conn::random_u64;

/// A message to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The body (must not be empty).
    pub body: Bytes,
    /// Tag, for consumers' filters.
    pub tag: Option<String>,
    /// Keys, for lookup.
    pub keys: Vec<String>,
    /// User properties.
    pub properties: HashMap<String, String>,
    /// FIFO message group: messages of one group go to one queue, in order.
    pub message_group: Option<String>,
    /// Delay message: delivered not before this time (RocketMQ 5's delivery timestamp).
    pub delivery_time: Option<std::time::SystemTime>,
}

impl Message {
    /// A message with this body and nothing else.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self { body: body.into(), ..Self::default() }
    }

    /// Sets the tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// Adds a key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
        self
    }

    /// Adds a user property.
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Sets the FIFO message group.
    pub fn with_message_group(mut self, group: impl Into<String>) -> Self {
        self.message_group = Some(group.into());
        self
    }

    /// Makes it a delay message, delivered not before `at`.
    pub fn with_delivery_time(mut self, at: std::time::SystemTime) -> Self {
        self.delivery_time = Some(at);
        self
    }

    /// Makes it a delay message with one of RocketMQ 4's 18 delay levels (1 = 1 s, 2 = 5 s,
    /// …, 18 = 2 h; `setDelayTimeLevel`), counted from when the broker receives it.
    pub fn with_delay_level(self, level: u8) -> Self {
        self.with_property(DELAY_LEVEL_PROPERTY, level.to_string())
    }
}

/// The property that carries a RocketMQ 4 delay level.
pub const DELAY_LEVEL_PROPERTY: &str = "DELAY";

/// What the broker answered for one sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    /// The message id (made by this client).
    pub message_id: String,
    /// The queue it went to.
    pub queue_id: u32,
    /// The broker group holding that queue (queue ids repeat across a topic's groups).
    pub broker: String,
    /// Its offset in that queue; `None` when the group acknowledges sends before applying
    /// them (`ack = "leader"`), so no offset is assigned yet, and for delay and half
    /// messages (they get one when they become visible).
    pub offset: Option<u64>,
    /// A transactional half message's transaction id (commit or roll back with it).
    pub transaction_id: Option<String>,
}

/// A message taken by a [`crate::SimpleConsumer`]; ack it with its receipt handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Message id.
    pub message_id: String,
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue_id: u32,
    /// The broker group holding the queue (and the message: acks go there).
    pub broker: String,
    /// Offset in the queue.
    pub offset: u64,
    /// Body, as the producer sent it (checked against the broker's CRC32 digest).
    pub body: Bytes,
    /// Tag.
    pub tag: Option<String>,
    /// Keys.
    pub keys: Vec<String>,
    /// Message group (FIFO).
    pub message_group: Option<String>,
    /// User properties.
    pub properties: HashMap<String, String>,
    /// Receipt handle: acks and invisibility changes name the delivery with it (empty for a
    /// pulled message).
    pub receipt_handle: String,
    /// How many times the message was delivered, this time included.
    pub delivery_attempt: u32,
}

/// Body digest as the RocketMQ clients compute it: CRC32, 8 upper-case hex digits.
pub(crate) fn crc32_digest(body: &[u8]) -> pb::Digest {
    pb::Digest { r#type: pb::DigestType::Crc32 as i32, checksum: format!("{:08X}", crc32fast::hash(body)) }
}

/// A fresh message id: RocketMQ 5's shape, 34 upper-case hex digits starting with "01",
/// here a per-process random prefix and a counter, so ids never repeat.
pub(crate) fn next_message_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(random_u64);
    format!("01{prefix:016X}{:016X}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// FNV-1a, as the broker hashes message groups onto queues.
pub(crate) fn group_hash(group: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in group.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn timestamp(t: std::time::SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

fn now() -> prost_types::Timestamp {
    timestamp(std::time::SystemTime::now())
}

/// The wire form of `m` for `topic`, going to `queue_id`, with id `message_id`.
pub(crate) fn outgoing(topic: &str, m: &Message, queue_id: u32, message_id: String) -> pb::Message {
    let message_type = if m.message_group.is_some() {
        pb::MessageType::Fifo
    } else if m.delivery_time.is_some() || m.properties.contains_key(DELAY_LEVEL_PROPERTY) {
        pb::MessageType::Delay
    } else {
        pb::MessageType::Normal
    };
    pb::Message {
        topic: Some(pb::Resource { resource_namespace: String::new(), name: topic.to_string() }),
        user_properties: m.properties.clone(),
        system_properties: Some(pb::SystemProperties {
            tag: m.tag.clone(),
            keys: m.keys.clone(),
            message_id,
            body_digest: Some(crc32_digest(&m.body)),
            body_encoding: pb::Encoding::Identity as i32,
            message_type: message_type as i32,
            born_timestamp: Some(now()),
            queue_id: i32::try_from(queue_id).unwrap_or(i32::MAX),
            message_group: m.message_group.clone(),
            delivery_timestamp: m.delivery_time.map(timestamp),
            ..Default::default()
        }),
        body: m.body.clone(),
    }
}

/// Largest body a gzip-encoded body may expand to.
pub const MAX_INFLATED_BODY: usize = 64 << 20;

/// Inflates a gzip body (producers of the official clients compress larger bodies), at most
/// [`MAX_INFLATED_BODY`] bytes.
fn gunzip(body: &[u8]) -> Result<Bytes, String> {
    use std::io::Read as _;
    let mut out = Vec::new();
    let limit = MAX_INFLATED_BODY as u64 + 1;
    flate2::read::GzDecoder::new(body).take(limit).read_to_end(&mut out).map_err(|e| e.to_string())?;
    if out.len() > MAX_INFLATED_BODY {
        return Err(format!("it inflates to more than {MAX_INFLATED_BODY} bytes"));
    }
    Ok(Bytes::from(out))
}

/// A delivered message, its body checked against the digest the broker sent (the digest
/// covers the body as sent, before inflating). A received one must carry a receipt handle;
/// a pulled one has none. `broker` is the broker group it was received from.
pub(crate) fn incoming(
    operation: &'static str,
    endpoint: &str,
    broker: &str,
    m: pb::Message,
) -> Result<ReceivedMessage, Error> {
    delivered(operation, endpoint, broker, m, false)
}

/// A pulled message (no receipt handle: pull consumers keep offsets, they do not ack).
pub(crate) fn pulled(
    operation: &'static str,
    endpoint: &str,
    broker: &str,
    m: pb::Message,
) -> Result<ReceivedMessage, Error> {
    delivered(operation, endpoint, broker, m, true)
}

fn delivered(
    operation: &'static str,
    endpoint: &str,
    broker: &str,
    m: pb::Message,
    pulled: bool,
) -> Result<ReceivedMessage, Error> {
    let sys = m.system_properties.unwrap_or_default();
    if let Some(d) = &sys.body_digest
        && d.r#type == pb::DigestType::Crc32 as i32
    {
        let computed = crc32_digest(&m.body).checksum;
        if !computed.eq_ignore_ascii_case(d.checksum.trim()) {
            return Err(Error::protocol(
                operation,
                endpoint,
                format!("message {} is corrupted: body CRC32 {computed}, digest {}", sys.message_id, d.checksum),
            ));
        }
    }
    let body = match pb::Encoding::try_from(sys.body_encoding) {
        Ok(pb::Encoding::Identity | pb::Encoding::Unspecified) => m.body,
        Ok(pb::Encoding::Gzip) => gunzip(&m.body)
            .map_err(|e| Error::protocol(operation, endpoint, format!("message {}: gzip body: {e}", sys.message_id)))?,
        Err(_) => {
            return Err(Error::protocol(
                operation,
                endpoint,
                format!("message {} has an unknown body encoding {}", sys.message_id, sys.body_encoding),
            ));
        }
    };
    let receipt_handle = match sys.receipt_handle {
        Some(r) => r,
        None if pulled => String::new(),
        None => {
            return Err(Error::protocol(
                operation,
                endpoint,
                format!("message {} has no receipt handle", sys.message_id),
            ));
        }
    };
    Ok(ReceivedMessage {
        message_id: sys.message_id,
        topic: m.topic.map(|t| t.name).unwrap_or_default(),
        queue_id: u32::try_from(sys.queue_id).unwrap_or_default(),
        broker: broker.to_string(),
        offset: sys.queue_offset.and_then(|o| u64::try_from(o).ok()).unwrap_or_default(),
        body,
        tag: sys.tag,
        keys: sys.keys,
        message_group: sys.message_group,
        properties: m.user_properties,
        receipt_handle,
        delivery_attempt: sys.delivery_attempt.and_then(|a| u32::try_from(a).ok()).unwrap_or(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(body: Bytes, encoding: i32) -> pb::Message {
        pb::Message {
            system_properties: Some(pb::SystemProperties {
                message_id: "m1".into(),
                receipt_handle: Some("r".into()),
                body_encoding: encoding,
                ..Default::default()
            }),
            body,
            ..Default::default()
        }
    }

    #[test]
    fn gzip_bodies_are_inflated_and_bad_ones_refused() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"hello hello hello").expect("in memory");
        let packed = Bytes::from(gz.finish().expect("in memory"));
        let m = incoming("receive", "e", "g", delivered(packed, pb::Encoding::Gzip as i32)).expect("valid gzip");
        assert_eq!(&m.body[..], b"hello hello hello");
        let plain =
            incoming("receive", "e", "g", delivered(Bytes::from("x"), pb::Encoding::Identity as i32)).expect("ok");
        assert_eq!(&plain.body[..], b"x");
        let e = incoming("receive", "e", "g", delivered(Bytes::from("not gzip"), pb::Encoding::Gzip as i32));
        assert!(e.expect_err("corrupt").to_string().contains("gzip body"));
        let e = incoming("receive", "e", "g", delivered(Bytes::from("x"), 7));
        assert!(e.expect_err("unknown").to_string().contains("unknown body encoding"));
    }

    #[test]
    fn message_ids_are_unique_and_shaped_like_rocketmqs() {
        let a = next_message_id();
        let b = next_message_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 34);
        assert!(a.starts_with("01") && a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_eq!(a[..18], b[..18], "one prefix per process");
    }

    #[test]
    fn digests_and_round_trip() {
        assert_eq!(crc32_digest(b"hello").checksum, "3610A686");
        let m = Message::new("hello").with_tag("A").with_key("k").with_property("p", "v");
        let mut wire = outgoing("t", &m, 3, "id1".into());
        let sys = wire.system_properties.get_or_insert_with(Default::default);
        sys.receipt_handle = Some("r".into());
        sys.queue_offset = Some(7);
        let got = incoming("receive", "h:1", "g", wire.clone()).expect("intact");
        assert_eq!(got.broker, "g");
        assert_eq!((got.body, got.tag, got.queue_id, got.offset), (m.body.clone(), m.tag.clone(), 3, 7));
        assert_eq!((got.keys, got.properties), (m.keys.clone(), m.properties.clone()));
        wire.body = Bytes::from_static(b"hellO");
        assert!(matches!(incoming("receive", "h:1", "g", wire), Err(Error::Protocol { .. })));
    }

    #[test]
    fn group_hash_is_fnv1a() {
        assert_eq!(group_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(group_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
