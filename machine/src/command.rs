//! Commands the Raft log carries for the state machine, and what applying them returns.

use serde::{Deserialize, Serialize};

use crate::ids::{LogIndex, Millis, QueueId, QueueOffset, Slot};
use crate::receipt::Receipt;
use crate::types::{GroupName, StoredMessage, TagFilter, TopicConfig, TopicName};

/// Marks the entry of one proposal, unique within the proposing node's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProposalId(pub u64);

/// One replicated command. Time is a field: apply never reads a clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates a topic, or updates its configuration (queues can only grow).
    UpsertTopic {
        /// Topic.
        topic: TopicName,
        /// Configuration.
        config: TopicConfig,
    },
    /// Deletes a topic with its queues and consumer state.
    DeleteTopic {
        /// Topic.
        topic: TopicName,
    },
    /// Appends messages (a group-commit batch: many sends in one entry).
    Send {
        /// The proposer's clock: the store time of every message.
        now: Millis,
        /// When set, a missing topic is created with this many queues.
        auto_create_queues: Option<u32>,
        /// The messages, each with its queue chosen.
        messages: Vec<StoredMessage>,
        /// Set by a proposer that answers once the leader's own write is durable
        /// (`ack = "leader"`), to recognise its entry; apply ignores it.
        proposal: Option<ProposalId>,
    },
    /// Takes up to `max` visible messages for a consumer group and hides them.
    Pop {
        /// The proposer's clock.
        now: Millis,
        /// Consumer group.
        group: GroupName,
        /// Topic.
        topic: TopicName,
        /// One queue, or any queue of the topic.
        queue: Option<QueueId>,
        /// Most messages to take.
        max: u32,
        /// How long taken messages stay invisible.
        invisible_ms: u64,
        /// Which messages the group wants.
        filter: TagFilter,
    },
    /// Acknowledges popped messages.
    Ack {
        /// Consumer group.
        group: GroupName,
        /// Topic.
        topic: TopicName,
        /// The receipts of the messages.
        receipts: Vec<Receipt>,
    },
    /// Changes how long a popped message stays invisible.
    ChangeInvisible {
        /// The proposer's clock.
        now: Millis,
        /// Consumer group.
        group: GroupName,
        /// Topic.
        topic: TopicName,
        /// The receipt of the message.
        receipt: Receipt,
        /// New invisible duration from `now`.
        invisible_ms: u64,
    },
    /// Stores a pull consumer's offset.
    CommitOffset {
        /// Consumer group.
        group: GroupName,
        /// Topic.
        topic: TopicName,
        /// Queue.
        queue: QueueId,
        /// Next offset to consume.
        offset: QueueOffset,
    },
    /// Retention: every queue drops its records stored in log entries below
    /// `before_log_index` and its minimum offset moves past them; consumer state below the
    /// new minimum goes too (the leader proposes it when those messages are past the
    /// reserved time).
    TrimQueues {
        /// First log index whose messages stay.
        before_log_index: LogIndex,
    },
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::UpsertTopic { topic, config } => write!(f, "upsert-topic {topic} queues={}", config.queue_count),
            Command::DeleteTopic { topic } => write!(f, "delete-topic {topic}"),
            Command::Send { messages, .. } => write!(f, "send {} messages", messages.len()),
            Command::Pop { group, topic, max, .. } => write!(f, "pop {group} {topic} max={max}"),
            Command::Ack { group, topic, receipts } => write!(f, "ack {group} {topic} n={}", receipts.len()),
            Command::ChangeInvisible { group, topic, .. } => write!(f, "change-invisible {group} {topic}"),
            Command::CommitOffset { group, topic, queue, offset } => {
                write!(f, "commit-offset {group} {topic} q{} @{}", queue.0, offset.0)
            }
            Command::TrimQueues { before_log_index } => write!(f, "trim-queues before={before_log_index}"),
        }
    }
}

/// Why a command (or one item of it) was refused. Applying never fails as a whole:
/// refusals are results, identical on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    /// The topic does not exist.
    #[error("topic {0} does not exist")]
    TopicNotFound(String),
    /// The queue id is out of range.
    #[error("queue {queue} does not exist; topic {topic} has {count} queues")]
    QueueNotFound {
        /// Topic.
        topic: String,
        /// Requested queue.
        queue: u32,
        /// Queues the topic has.
        count: u32,
    },
    /// The configuration is not allowed.
    #[error("invalid topic configuration: {0}")]
    BadConfig(String),
    /// The topic does not accept this kind of message or operation.
    #[error("{0}")]
    NotPermitted(String),
    /// The receipt handle does not match an invisible message of this group.
    #[error("receipt handle is not valid: {0}")]
    InvalidReceipt(String),
}

/// Result of sending one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// Queue.
    pub queue: QueueId,
    /// Offset assigned.
    pub offset: QueueOffset,
}

/// A popped message: where its body is, and its receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Popped {
    /// Queue.
    pub queue: QueueId,
    /// Offset in the queue.
    pub offset: QueueOffset,
    /// Raft log index of the entry holding the message.
    pub log_index: LogIndex,
    /// Position of the message within that entry's batch.
    pub slot: Slot,
    /// How many times it has been delivered, this time included (>= 1).
    pub attempt: u32,
    /// Receipt to ack or change invisibility with.
    pub receipt: Receipt,
    /// When it becomes visible again unless acked.
    pub visible_at: Millis,
}

/// What applying a command returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Nothing to report (blank and membership entries too).
    Done,
    /// The command was refused.
    Failed(CommandError),
    /// One result per message of a `Send`, in order.
    Sent(Vec<Result<Sent, CommandError>>),
    /// The messages a `Pop` took.
    Popped(Vec<Popped>),
    /// One result per receipt of an `Ack`, in order.
    Acked(Vec<Result<(), CommandError>>),
    /// The new receipt after `ChangeInvisible`.
    Changed(Receipt),
}
