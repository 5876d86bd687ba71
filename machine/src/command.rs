//! Commands the Raft log carries for the state machine, and what applying them returns.

use serde::{Deserialize, Serialize};

use crate::batch::MessageBatch;
use crate::ids::{LogIndex, Millis, PopId, QueueId, QueueOffset, Slot};
use crate::receipt::Receipt;
use crate::timer::Fire;
use crate::transaction::TransactionKey;
use crate::types::{GroupConfig, GroupName, TopicConfig, TopicName};

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
    /// Appends messages (a group-commit batch: many sends in one entry). A message is stored
    /// when its topic exists in the incarnation it names ([`StoredMessage::topic_epoch`]) and
    /// has its queue: whether a message was stored follows from the entry and the topic table
    /// alone, so every node's ConsumeQueue dispatch can tell without the apply result.
    Send {
        /// The proposer's clock: the store time of every message (raised to the state
        /// machine's clock if behind).
        now: Millis,
        /// The messages, each with its queue chosen, encoded so that one is read without the
        /// others.
        messages: MessageBatch,
        /// Set by a proposer that answers once the leader's own write is durable
        /// (`ack = "leader"`), to recognise its entry; apply ignores it.
        proposal: Option<ProposalId>,
    },
    /// Delivers messages to a consumer group and hides them for `invisible_ms`. The leader
    /// plans it from its ConsumeQueue ([`crate::Machine::plan_pop`]): which expired messages
    /// to deliver again and which never-delivered ones to deliver or skip (tag filter). Apply
    /// checks every choice is still free and takes only those, so a stale plan takes nothing
    /// twice.
    Pop {
        /// The proposer's clock.
        now: Millis,
        /// Consumer group.
        group: GroupName,
        /// Topic.
        topic: TopicName,
        /// How long taken messages stay invisible.
        invisible_ms: u64,
        /// What to take, per queue.
        takes: Vec<PopTake>,
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
    /// Makes due delay messages visible: each gets the next offset of its queue (if its topic
    /// incarnation still exists). Taken only if the last accepted `FireTimers` is `prev_fire`
    /// (see [`crate::timer`]); else refused whole.
    FireTimers {
        /// The proposer's clock.
        now: Millis,
        /// The last accepted `FireTimers` the plan was made after (0: none).
        prev_fire: LogIndex,
        /// The messages (at most [`crate::timer::MAX_FIRES_PER_COMMAND`]): due delay
        /// messages and committed half messages.
        fires: Vec<Fire>,
        /// Rolled-back half messages: their transactions end without a queue offset (at
        /// most [`crate::transaction::MAX_TRANSACTIONS_PER_COMMAND`]).
        drops: Vec<TransactionKey>,
    },
    /// Counts a check-back sent for each named open transaction (unknown ones are ignored).
    CheckTransactions {
        /// The proposer's clock: when they were checked.
        now: Millis,
        /// The transactions (at most [`crate::transaction::MAX_TRANSACTIONS_PER_COMMAND`]).
        keys: Vec<TransactionKey>,
    },
    /// Moves a consumer group's position on a topic's queues (RocketMQ's reset offset,
    /// 回溯消费): on each named queue its receives start again from the offset given (clamped
    /// to what the queue holds; messages in flight are forgotten, their receipts no longer
    /// ack) and its committed offset (pulls) becomes it. The leader turns a time into
    /// offsets from its ConsumeQueue.
    ResetOffset {
        /// Consumer group.
        group: GroupName,
        /// Topic.
        topic: TopicName,
        /// New positions (at most [`crate::types::MAX_QUEUES`]).
        offsets: Vec<(QueueId, QueueOffset)>,
    },
    /// Creates or changes a consumer group's configuration.
    UpsertGroup {
        /// Consumer group.
        group: GroupName,
        /// Its configuration.
        config: GroupConfig,
    },
    /// Retention: each named queue's minimum offset moves up to the offset given (never
    /// down, never past its maximum); consumer state below the new minimum goes too. The
    /// leader proposes it from its ConsumeQueue when messages are past the reserved time.
    TrimQueues {
        /// New minimum offsets (at most [`crate::MAX_TRIM_QUEUES`]).
        mins: Vec<(TopicName, QueueId, QueueOffset)>,
    },
    /// A consumer gives up on a message it holds (a FIFO push consumer after its local
    /// retries): it leaves the group, if still in flight from the pop named, and is appended
    /// to the group's `%DLQ%<group>` topic either way (the leader checked the receipt before
    /// proposing; like a planned dead letter, one acknowledged in between is both).
    ForwardToDeadLetter {
        /// Consumer group.
        group: GroupName,
        /// Topic it was delivered from.
        topic: TopicName,
        /// Queue it was delivered from.
        queue: QueueId,
        /// The message.
        letter: DeadLetter,
    },
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::UpsertTopic { topic, config } => write!(f, "upsert-topic {topic} queues={}", config.queue_count),
            Command::DeleteTopic { topic } => write!(f, "delete-topic {topic}"),
            Command::Send { messages, .. } => write!(f, "send {} messages", messages.len()),
            Command::Pop { group, topic, takes, .. } => write!(f, "pop {group} {topic} queues={}", takes.len()),
            Command::Ack { group, topic, receipts } => write!(f, "ack {group} {topic} n={}", receipts.len()),
            Command::ChangeInvisible { group, topic, .. } => write!(f, "change-invisible {group} {topic}"),
            Command::CommitOffset { group, topic, queue, offset } => {
                write!(f, "commit-offset {group} {topic} q{} @{}", queue.0, offset.0)
            }
            Command::TrimQueues { mins } => write!(f, "trim-queues n={}", mins.len()),
            Command::FireTimers { fires, drops, .. } => {
                write!(f, "fire-timers n={} drops={}", fires.len(), drops.len())
            }
            Command::CheckTransactions { keys, .. } => write!(f, "check-transactions n={}", keys.len()),
            Command::UpsertGroup { group, config } => write!(f, "upsert-group {group} fifo={}", config.fifo),
            Command::ResetOffset { group, topic, offsets } => {
                write!(f, "reset-offset {group} {topic} queues={}", offsets.len())
            }
            Command::ForwardToDeadLetter { group, topic, queue, letter } => {
                write!(f, "forward-to-dead-letter {group} {topic} q{} @{}", queue.0, letter.offset.0)
            }
        }
    }
}

/// What a pop takes from one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PopTake {
    /// Queue.
    pub queue: QueueId,
    /// Offsets delivered before whose invisibility ended: delivered again if still so.
    pub redeliver: Vec<QueueOffset>,
    /// First never-delivered offset the plan read (the group's position when planned).
    pub fresh_from: QueueOffset,
    /// End of the never-delivered range the plan read: offsets in
    /// `fresh_from..fresh_end` not in `deliver` or `defer` are skipped (filtered out).
    pub fresh_end: QueueOffset,
    /// Offsets of that range to deliver, ascending.
    pub deliver: Vec<QueueOffset>,
    /// FIFO groups: offsets deferred before to deliver now (their message group is free),
    /// ascending.
    pub undefer: Vec<QueueOffset>,
    /// FIFO groups: offsets of the range passed over because their message group is busy,
    /// ascending.
    pub defer: Vec<QueueOffset>,
    /// FIFO groups: the message group hash of the offsets in `deliver` and `defer` that
    /// have one.
    pub groups: Vec<(QueueOffset, u64)>,
    /// Delivered messages whose invisibility ended after their last allowed delivery: they
    /// go to the group's dead-letter queue instead of coming again.
    pub dead: Vec<DeadLetter>,
}

/// A message moved to its consumer group's dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its offset in the queue it was delivered from.
    pub offset: QueueOffset,
    /// The pop that delivered it last (it leaves the group only if still in flight from it).
    pub pop_id: PopId,
    /// Where it is in the log.
    pub log_index: LogIndex,
    /// Its slot in that entry.
    pub slot: Slot,
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
    /// The topic was deleted or created anew after the send was checked.
    #[error("topic {0} was deleted or re-created while the message was being sent; send it again")]
    TopicChanged(String),
    /// A bound of the replicated state was reached.
    #[error("{0}")]
    LimitReached(String),
    /// A plan made from a state that has changed since (another was taken first).
    #[error("stale plan: {0}; plan again")]
    StalePlan(String),
    /// The command's bytes are damaged (a message's CRC32C does not match).
    #[error("damaged command: {0}")]
    Damaged(String),
}

/// Result of sending (or firing) one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// Queue.
    pub queue: QueueId,
    /// Offset assigned; `None` for a delay message, which gets its offset when its timer
    /// fires.
    pub offset: Option<QueueOffset>,
}

/// A popped message and its receipt (its body is found through the ConsumeQueue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Popped {
    /// Queue.
    pub queue: QueueId,
    /// Offset in the queue.
    pub offset: QueueOffset,
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
    /// One result per message of a `Send` or a `FireTimers`, in order.
    Sent(Vec<Result<Sent, CommandError>>),
    /// The messages a `Pop` took.
    Popped(Vec<Popped>),
    /// One result per receipt of an `Ack`, in order.
    Acked(Vec<Result<(), CommandError>>),
    /// The new receipt after `ChangeInvisible`.
    Changed(Receipt),
}
