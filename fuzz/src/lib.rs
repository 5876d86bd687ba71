//! What the fuzz targets share: values of the messaging model made from fuzz input, and
//! checks of what a valid value looks like.

use std::collections::BTreeMap;

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use raftmq_machine::types::{MAX_NAME_LEN, StoredMessage, TopicName};
use raftmq_machine::{LogIndex, Millis, QueueId};

/// Characters of valid topic and group names, and one that is not.
const NAME_CHARS: &[u8] = b"abyzABYZ0189_-%|.";

/// A name that is often a valid topic or group name, sometimes not.
pub fn name(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 8)? {
        return u.arbitrary();
    }
    let len = if u.ratio(1, 16)? { u.int_in_range(100..=130)? } else { u.int_in_range(1..=12)? };
    (0..len).map(|_| u.choose(NAME_CHARS).map(|&c| char::from(c))).collect()
}

/// A message as the log stores it, any field any value (the topic a valid name).
pub fn stored_message(u: &mut Unstructured<'_>) -> Result<StoredMessage> {
    let topic = name(u)?;
    let topic = TopicName::new(&topic).or_else(|_| TopicName::new("t")).expect("t is a valid topic name");
    Ok(StoredMessage {
        topic,
        queue: QueueId(u.arbitrary()?),
        topic_epoch: LogIndex(u.arbitrary()?),
        deliver_at: u.arbitrary::<Option<i64>>()?.map(Millis),
        transactional: u.arbitrary()?,
        message_id: u.arbitrary()?,
        tag: u.arbitrary()?,
        keys: u.arbitrary()?,
        message_group: u.arbitrary()?,
        properties: u.arbitrary::<BTreeMap<String, String>>()?,
        born: Millis(u.arbitrary()?),
        born_host: u.arbitrary()?,
        body: Bytes::from(u.arbitrary::<Vec<u8>>()?),
        body_gzip: u.arbitrary()?,
    })
}

/// Asserts that an accepted topic or group name keeps RocketMQ's rules.
pub fn assert_valid_name(name: &str) {
    assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN, "accepted name {name:?} has a bad length");
    assert!(
        name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '_' | '-')),
        "accepted name {name:?} has a character outside [%|a-zA-Z0-9_-]"
    );
}
