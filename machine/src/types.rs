//! Names, ids and values of the messaging model, with their limits.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use crate::ids::{LogIndex, Millis, QueueId, QueueOffset};

/// Longest topic or group name (RocketMQ's limit).
pub const MAX_NAME_LEN: usize = 127;
/// Most queues a topic may have.
pub const MAX_QUEUES: u32 = 1024;

/// A validated topic name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicName(String);

/// A validated consumer or producer group name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupName(String);

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty.
    #[error("name is empty")]
    Empty,
    /// Too long.
    #[error("name is {0} characters, the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    /// A character outside `[%|a-zA-Z0-9_-]`.
    #[error("name contains {0:?}; allowed are letters, digits, '%', '|', '_' and '-'")]
    BadChar(char),
    /// A name reserved for the system.
    #[error("name {0:?} is reserved for the system")]
    Reserved(String),
}

fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '_' | '-'))) {
        return Err(NameError::BadChar(c));
    }
    Ok(())
}

const RESERVED_TOPICS: &[&str] =
    &["TBW102", "SCHEDULE_TOPIC_XXXX", "RMQ_SYS_TRANS_HALF_TOPIC", "RMQ_SYS_TRANS_OP_HALF_TOPIC"];

/// The prefix of dead-letter topics.
pub const DLQ_PREFIX: &str = "%DLQ%";

impl TopicName {
    /// Validates the name of a topic a consumer reads: a user topic, or a consumer group's
    /// dead-letter topic (`%DLQ%<group>`, which only the broker writes).
    pub fn readable(name: &str) -> Result<Self, NameError> {
        match name.strip_prefix(DLQ_PREFIX) {
            Some(group) => {
                check_name(name)?;
                GroupName::new(group)?;
                Ok(Self(name.to_string()))
            }
            None => Self::new(name),
        }
    }

    /// Whether this is a dead-letter topic.
    pub fn is_dead_letter(&self) -> bool {
        self.0.starts_with(DLQ_PREFIX)
    }

    /// Validates a topic name a user gave (system prefixes and names are refused).
    pub fn new(name: &str) -> Result<Self, NameError> {
        check_name(name)?;
        if name.starts_with("rmq_sys") || name.starts_with("%RETRY%") || name.starts_with("%DLQ%") {
            return Err(NameError::Reserved(name.to_string()));
        }
        if RESERVED_TOPICS.contains(&name) {
            return Err(NameError::Reserved(name.to_string()));
        }
        Ok(Self(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl GroupName {
    /// Validates a group name.
    pub fn new(name: &str) -> Result<Self, NameError> {
        check_name(name)?;
        Ok(Self(name.to_string()))
    }

    /// The group's dead-letter topic, `%DLQ%<group>` (none when the name would be too long).
    pub fn dead_letter_topic(&self) -> Option<TopicName> {
        let name = format!("{DLQ_PREFIX}{}", self.0);
        check_name(&name).ok().map(|_| TopicName(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kinds of message a topic accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MessageType {
    /// Plain messages.
    Normal,
    /// Ordered by message group.
    Fifo,
    /// Delivered at a later time.
    Delay,
    /// Transactional half messages.
    Transaction,
}

impl MessageType {
    /// Every type, in order.
    pub const ALL: [MessageType; 4] =
        [MessageType::Normal, MessageType::Fifo, MessageType::Delay, MessageType::Transaction];

    /// RocketMQ's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            MessageType::Normal => "NORMAL",
            MessageType::Fifo => "FIFO",
            MessageType::Delay => "DELAY",
            MessageType::Transaction => "TRANSACTION",
        }
    }

    /// The type named `name` (RocketMQ's names, any case).
    pub fn parse(name: &str) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(name.trim()))
    }
}

/// What clients may do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Permission {
    /// Read and write.
    ReadWrite,
    /// Read only.
    Read,
    /// Write only.
    Write,
}

/// A topic's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Number of queues (1..=MAX_QUEUES).
    pub queue_count: u32,
    /// Accepted message types.
    pub message_types: BTreeSet<MessageType>,
    /// Permission.
    pub permission: Permission,
}

impl TopicConfig {
    /// A read-write topic with `queue_count` queues taking every message type.
    pub fn all_types(queue_count: u32) -> Self {
        Self { queue_count, message_types: MessageType::ALL.into_iter().collect(), permission: Permission::ReadWrite }
    }
}

/// A consumer group's configuration (RocketMQ's subscription group config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupConfig {
    /// Orderly consumption (RocketMQ's `consumeMessageOrderly`): on each queue, the next
    /// message of a message group is delivered only after the one before it is
    /// acknowledged; messages of other groups keep flowing. Push consumers are told so in
    /// their settings.
    pub fifo: bool,
    /// Deliveries of a message before it goes to the group's dead-letter queue
    /// (`%DLQ%<group>`) instead of coming again (RocketMQ's 16 by default).
    pub max_attempts: u32,
}

/// Default [`GroupConfig::max_attempts`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 16;
/// Most deliveries a group may allow before dead-lettering.
pub const MAX_MAX_ATTEMPTS: u32 = 1000;

impl Default for GroupConfig {
    fn default() -> Self {
        Self { fifo: false, max_attempts: DEFAULT_MAX_ATTEMPTS }
    }
}

/// A message as the log stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Topic.
    pub topic: TopicName,
    /// Queue the proposer chose.
    pub queue: QueueId,
    /// The incarnation of the topic the proposer checked the message against: the log
    /// index that created it ([`crate::Machine::topic_epoch`]). A message for a topic deleted
    /// or created anew since is not stored.
    pub topic_epoch: LogIndex,
    /// Earliest delivery time (delay messages; one later than the entry's time waits for a
    /// timer, [`crate::timer::scheduled`]).
    pub deliver_at: Option<Millis>,
    /// A transactional half message: stored at once, visible only once committed
    /// ([`crate::transaction`]).
    pub transactional: bool,
    /// Message id (the client's, or one the broker made).
    pub message_id: String,
    /// Tag, for filtering.
    pub tag: Option<String>,
    /// Keys, for lookup.
    pub keys: Vec<String>,
    /// Message group (FIFO).
    pub message_group: Option<String>,
    /// User properties.
    pub properties: BTreeMap<String, String>,
    /// When the producer made it.
    pub born: Millis,
    /// Producer host.
    pub born_host: String,
    /// The body, as the producer sent it.
    pub body: Bytes,
    /// Whether `body` is gzip-compressed.
    pub body_gzip: bool,
}

/// Stable 64-bit hash of a tag (FNV-1a), stored in consume queue records.
pub fn tag_hash(tag: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tag.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A subscription's tag expression: `*` or `a || b || c`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TagFilter {
    /// Every message.
    All,
    /// Messages whose tag hash is one of these.
    Tags(BTreeSet<u64>),
}

impl TagFilter {
    /// Parses a tag expression. Empty or `*` matches everything.
    pub fn parse(expr: &str) -> Result<Self, String> {
        let expr = expr.trim();
        if expr.is_empty() || expr == "*" {
            return Ok(TagFilter::All);
        }
        if expr.len() > 4096 {
            return Err("tag expression longer than 4096 characters".into());
        }
        let mut tags = BTreeSet::new();
        for part in expr.split("||") {
            let t = part.trim();
            if t.is_empty() {
                return Err(format!("empty tag in expression {expr:?}"));
            }
            if t == "*" {
                return Ok(TagFilter::All);
            }
            tags.insert(tag_hash(t));
        }
        Ok(TagFilter::Tags(tags))
    }

    /// Whether a message with this tag hash (None: no tag) passes.
    pub fn matches(&self, tag: Option<u64>) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Tags(set) => tag.is_some_and(|t| set.contains(&t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rocketmq_rules() {
        assert!(TopicName::new("orders_2024-eu|%x").is_ok());
        assert_eq!(TopicName::new(""), Err(NameError::Empty));
        assert_eq!(TopicName::new("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(TopicName::new(&"a".repeat(128)), Err(NameError::TooLong(128)));
        assert!(TopicName::new(&"a".repeat(127)).is_ok());
        assert!(matches!(TopicName::new("%RETRY%g"), Err(NameError::Reserved(_))));
        assert!(matches!(TopicName::new("TBW102"), Err(NameError::Reserved(_))));
        assert!(matches!(TopicName::new("rmq_sys_x"), Err(NameError::Reserved(_))));
        assert!(GroupName::new("group-1").is_ok());
        assert_eq!(GroupName::new("g/1"), Err(NameError::BadChar('/')));
    }

    #[test]
    fn tag_filters() {
        assert_eq!(TagFilter::parse(" * "), Ok(TagFilter::All));
        assert_eq!(TagFilter::parse(""), Ok(TagFilter::All));
        let f = TagFilter::parse("TagA || TagB").expect("valid");
        assert!(f.matches(Some(tag_hash("TagA"))));
        assert!(f.matches(Some(tag_hash("TagB"))));
        assert!(!f.matches(Some(tag_hash("TagC"))));
        assert!(!f.matches(None));
        assert!(TagFilter::parse("a || ").is_err());
    }
}
