//! The replicated state machine: topics and the bounds of their queues, consumer groups'
//! pop state and committed offsets. Metadata only: its size follows the number of topics,
//! queues, groups and in-flight messages, never the number of stored messages.
//!
//! [`Machine::apply`] is plain code over a [`Command`]: no IO, no clock (time comes in the
//! command), so every node computes the same state and it is tested without a network.
//! Message bodies stay in the Raft log; where each message is (log index and slot) lives in
//! each node's ConsumeQueue, derived from the log. Whether a message of a `Send` is stored
//! follows from the entry and the topic table ([`Machine::accepts`]), so the dispatch that
//! writes the ConsumeQueue needs no apply result and gives every message the offset apply
//! gave it.

pub mod batch;
pub mod bounded;
pub mod codec;
pub mod command;
pub mod ids;
pub mod plan;
pub mod pop;
pub mod receipt;
pub mod sql;
pub mod timer;
pub mod transaction;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use self::batch::{MessageBatch, MessageHead};
use self::codec::CodecError;
pub use self::command::{Command, CommandError, DeadLetter, PopTake, Popped, ProposalId, Response, Sent};
pub use self::ids::{LogIndex, Millis, NodeId, PopId, QueueId, QueueOffset, Slot};
use self::pop::PopState;
pub use self::receipt::Receipt;
use self::timer::{Fire, MAX_FIRES_PER_COMMAND, TimerState};
use self::transaction::{MAX_OPEN_TRANSACTIONS, MAX_TRANSACTIONS_PER_COMMAND, OpenTransaction, TransactionKey};
use self::types::{GroupConfig, GroupName, Permission, StoredMessage, TopicConfig, TopicName};

/// Most messages one pop may take.
pub const MAX_POP_BATCH: u32 = 256;
/// Most never-delivered offsets one pop examines per queue (filtered ones included).
pub const POP_SCAN_LIMIT: u64 = 4096;
/// Most topics a broker group holds.
pub const MAX_TOPICS: usize = 10_000;
/// Most consumer groups with state (pops or committed offsets) in a broker group.
pub const MAX_GROUPS: usize = 10_000;
/// Most delivered, unacknowledged messages per consumer group and queue.
pub const MAX_INFLIGHT_PER_QUEUE: usize = 100_000;
/// Most messages per consumer group and queue waiting for their message group (FIFO
/// groups); past it a queue's never-delivered messages wait.
pub const MAX_DEFERRED_PER_QUEUE: usize = 100_000;
/// Most receipts one ack carries.
pub const MAX_RECEIPTS_PER_ACK: usize = 1024;
/// Most queues one `TrimQueues` names.
pub const MAX_TRIM_QUEUES: usize = 4096;

/// A consumer group's progress on one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueProgress {
    /// Topic.
    pub topic: TopicName,
    /// Queue.
    pub queue: QueueId,
    /// The queue's first offset still held.
    pub min_offset: u64,
    /// The offset the queue's next message gets (RocketMQ's broker offset).
    pub max_offset: u64,
    /// Receives (pop): every offset below is acknowledged.
    pub acked_below: Option<u64>,
    /// Receives (pop): the first offset never delivered.
    pub next_fresh: Option<u64>,
    /// Receives (pop): delivered, not yet acknowledged.
    pub inflight: usize,
    /// Receives (pop, FIFO groups): passed over, waiting for their message group.
    pub deferred: usize,
    /// Pulls: the committed offset.
    pub committed: Option<u64>,
}

impl QueueProgress {
    /// The group's consumer offset: acknowledged below it (pops), else its committed offset,
    /// else the queue's start.
    pub fn consumer_offset(&self) -> u64 {
        self.acked_below.or(self.committed).unwrap_or(self.min_offset).max(self.min_offset)
    }

    /// Messages the group has not consumed (RocketMQ's diff): broker offset − consumer offset.
    pub fn lag(&self) -> u64 {
        self.max_offset.saturating_sub(self.consumer_offset())
    }

    /// Messages never delivered to the group (pops: past its fresh edge, or deferred behind
    /// their message group), or not yet consumed (pulls).
    pub fn ready(&self) -> u64 {
        let fresh =
            self.max_offset.saturating_sub(self.next_fresh.unwrap_or(self.consumer_offset()).max(self.min_offset));
        fresh + self.deferred as u64
    }
}

/// One queue: the offsets it holds are `min_offset..max_offset`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    min_offset: u64,
    max_offset: u64,
}

impl Queue {
    /// First offset still held.
    pub fn min_offset(&self) -> u64 {
        self.min_offset
    }

    /// Offset the next message gets.
    pub fn max_offset(&self) -> u64 {
        self.max_offset
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Topic {
    config: TopicConfig,
    /// The log index that created this incarnation of the topic.
    created_at: LogIndex,
    queues: Vec<Queue>,
    /// Queue counts from the log index each took effect, oldest first (counts only grow,
    /// so at most [`types::MAX_QUEUES`] steps).
    queue_counts: Vec<(LogIndex, u32)>,
}

impl Topic {
    /// How many queues this incarnation had when the entry at `index` was applied.
    fn queue_count_at(&self, index: LogIndex) -> u32 {
        let i = self.queue_counts.partition_point(|&(from, _)| from <= index);
        i.checked_sub(1).map_or(0, |i| self.queue_counts[i].1)
    }
}

type GroupQueue = (GroupName, TopicName, QueueId);

/// The whole replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    broker_group: String,
    topics: BTreeMap<TopicName, Topic>,
    pops: BTreeMap<GroupQueue, PopState>,
    offsets: BTreeMap<GroupQueue, QueueOffset>,
    next_pop_id: u64,
    /// The newest log index applied: indexes only grow.
    last_applied: LogIndex,
    /// The largest proposer time seen: store and visibility times never go backwards, even
    /// when a new leader's clock is behind the old one's.
    clock: Millis,
    /// Delay timers' progress.
    timers: TimerState,
    /// Open transactions: half messages not yet committed or rolled back.
    transactions: BTreeMap<TransactionKey, OpenTransaction>,
    /// Consumer groups created with a configuration (others consume with the defaults).
    groups: BTreeMap<GroupName, GroupConfig>,
}

fn validate_config(config: &TopicConfig) -> Result<(), CommandError> {
    if config.queue_count == 0 || config.queue_count > types::MAX_QUEUES {
        return Err(CommandError::BadConfig(format!(
            "queue count {} is outside 1..={}",
            config.queue_count,
            types::MAX_QUEUES
        )));
    }
    if config.message_types.is_empty() {
        return Err(CommandError::BadConfig("a topic must accept at least one message type".into()));
    }
    Ok(())
}

impl Machine {
    /// An empty state for the broker group `broker_group` (named in receipts).
    pub fn new(broker_group: &str) -> Self {
        Self { broker_group: broker_group.to_string(), ..Default::default() }
    }

    /// The broker group named in receipts.
    pub fn broker_group(&self) -> &str {
        &self.broker_group
    }

    /// A topic's configuration.
    pub fn topic(&self, topic: &TopicName) -> Option<&TopicConfig> {
        self.topics.get(topic).map(|t| &t.config)
    }

    /// The incarnation of a topic: the log index that created it. A send names it, so a
    /// message is never stored in a topic deleted and created anew after it was checked.
    pub fn topic_epoch(&self, topic: &TopicName) -> Option<LogIndex> {
        self.topics.get(topic).map(|t| t.created_at)
    }

    /// All topics.
    pub fn topics(&self) -> impl Iterator<Item = (&TopicName, &TopicConfig)> {
        self.topics.iter().map(|(n, t)| (n, &t.config))
    }

    /// A queue of a topic.
    pub fn queue(&self, topic: &TopicName, queue: QueueId) -> Option<&Queue> {
        self.topics.get(topic).and_then(|t| t.queues.get(queue.0 as usize))
    }

    /// A pull consumer's committed offset (never below the queue's minimum offset).
    pub fn committed_offset(&self, group: &GroupName, topic: &TopicName, queue: QueueId) -> Option<QueueOffset> {
        let min = self.queue(topic, queue).map_or(0, Queue::min_offset);
        self.offsets.get(&(group.clone(), topic.clone(), queue)).map(|o| QueueOffset(o.0.max(min)))
    }

    /// Delay timers' progress.
    pub fn timers(&self) -> TimerState {
        self.timers
    }

    /// A consumer group's configuration (the defaults when it was never configured).
    pub fn group_config(&self, group: &GroupName) -> GroupConfig {
        self.groups.get(group).copied().unwrap_or_default()
    }

    /// The configured consumer groups.
    pub fn groups(&self) -> &BTreeMap<GroupName, GroupConfig> {
        &self.groups
    }

    /// The open transactions, oldest half message first.
    pub fn transactions(&self) -> &BTreeMap<TransactionKey, OpenTransaction> {
        &self.transactions
    }

    /// A consumer group's progress on every queue of the topics it has consumed from (pops
    /// or committed offsets), by topic and queue; a queue it has not touched yet counts from
    /// its first offset.
    pub fn group_progress(&self, group: &GroupName) -> Vec<QueueProgress> {
        let mut out: BTreeMap<(TopicName, QueueId), QueueProgress> = BTreeMap::new();
        let topics: BTreeSet<&TopicName> =
            self.pops.keys().chain(self.offsets.keys()).filter(|(g, _, _)| g == group).map(|(_, t, _)| t).collect();
        for topic in topics {
            let count = self.topics.get(topic).map_or(0, |t| t.config.queue_count);
            for q in 0..count {
                entry(self, &mut out, topic, QueueId(q));
            }
        }
        fn entry<'a>(
            m: &Machine,
            out: &'a mut BTreeMap<(TopicName, QueueId), QueueProgress>,
            topic: &TopicName,
            queue: QueueId,
        ) -> Option<&'a mut QueueProgress> {
            let q = m.queue(topic, queue)?;
            Some(out.entry((topic.clone(), queue)).or_insert_with(|| QueueProgress {
                topic: topic.clone(),
                queue,
                min_offset: q.min_offset,
                max_offset: q.max_offset,
                acked_below: None,
                next_fresh: None,
                inflight: 0,
                deferred: 0,
                committed: None,
            }))
        }
        for ((_, topic, queue), state) in self.pops.iter().filter(|((g, _, _), _)| g == group) {
            if let Some(p) = entry(self, &mut out, topic, *queue) {
                p.acked_below = Some(state.ack_offset);
                p.next_fresh = Some(state.next_fresh);
                p.inflight = state.inflight_count();
                p.deferred = state.deferred_count();
            }
        }
        for ((_, topic, queue), offset) in self.offsets.iter().filter(|((g, _, _), _)| g == group) {
            if let Some(p) = entry(self, &mut out, topic, *queue) {
                p.committed = Some(offset.0.max(p.min_offset));
            }
        }
        out.into_values().collect()
    }

    /// Pop state of a group on a queue.
    pub fn pop_state(&self, group: &GroupName, topic: &TopicName, queue: QueueId) -> Option<&PopState> {
        self.pops.get(&(group.clone(), topic.clone(), queue))
    }

    /// The newest log index applied.
    pub fn last_applied(&self) -> LogIndex {
        self.last_applied
    }

    /// The state machine's clock: the largest proposer time applied so far.
    pub fn clock(&self) -> Millis {
        self.clock
    }

    /// Whether the `Send` in the entry at `index` stored `m` (asked of the state after that
    /// entry, or of any later one): its topic exists in the incarnation the message names and
    /// had its queue then. A topic incarnation that exists now existed at every index from its
    /// creation on, and it keeps its queue counts by index, so dispatch running behind apply
    /// gets the answer apply got for every message of a topic that still exists.
    pub fn accepts(&self, m: &StoredMessage, index: LogIndex) -> Result<(), CommandError> {
        self.accepts_at(&m.topic, m.queue, m.topic_epoch, index)
    }

    /// [`Self::accepts`] for a message of which only the head was decoded.
    pub fn accepts_head(&self, m: &MessageHead, index: LogIndex) -> Result<(), CommandError> {
        self.accepts_at(&m.topic, m.queue, m.topic_epoch, index)
    }

    fn accepts_at(
        &self,
        topic: &TopicName,
        queue: QueueId,
        topic_epoch: LogIndex,
        index: LogIndex,
    ) -> Result<(), CommandError> {
        let t = self.topics.get(topic).ok_or_else(|| CommandError::TopicNotFound(topic.to_string()))?;
        if t.created_at != topic_epoch || index < t.created_at {
            return Err(CommandError::TopicChanged(topic.to_string()));
        }
        let count = t.queue_count_at(index);
        if queue.0 >= count {
            return Err(CommandError::QueueNotFound { topic: topic.to_string(), queue: queue.0, count });
        }
        Ok(())
    }

    /// The fires of the `FireTimers` entry at `index` that got queue offsets, in order, as
    /// apply gave them (asked of the state after that entry, or of any later one).
    /// `last_fire` is the caller's own record of the last accepted `FireTimers` (the entries
    /// before this one decide it); it moves to `index` when this one was accepted. `drops`
    /// is how many rollbacks the entry carries.
    pub fn fired<'a>(
        &self,
        last_fire: &mut LogIndex,
        index: LogIndex,
        prev_fire: LogIndex,
        fires: &'a [Fire],
        drops: usize,
    ) -> Vec<&'a Fire> {
        if prev_fire != *last_fire || fires.len() > MAX_FIRES_PER_COMMAND || drops > MAX_TRANSACTIONS_PER_COMMAND {
            return Vec::new();
        }
        *last_fire = index;
        let mut seen = BTreeSet::new();
        fires
            .iter()
            .filter(|f| timer::check_fire(&mut seen, f).is_ok() && self.accepts_head(&f.head, index).is_ok())
            .collect()
    }

    /// Takes the proposer's time `now` unless the clock is already past it.
    fn tick(&mut self, now: Millis) -> Millis {
        self.clock = self.clock.max(now);
        self.clock
    }

    /// Applies the command in the log entry at `log_index`, which must be past every index
    /// applied before.
    pub fn apply(&mut self, log_index: LogIndex, command: &Command) -> Response {
        assert!(
            log_index > self.last_applied,
            "log index {log_index} applied after {}: indexes must grow",
            self.last_applied
        );
        self.last_applied = log_index;
        let clock_before = self.clock;
        let response = self.dispatch(log_index, command);
        assert!(self.clock >= clock_before, "the state machine's clock went backwards");
        response
    }

    fn dispatch(&mut self, log_index: LogIndex, command: &Command) -> Response {
        match command {
            Command::UpsertTopic { topic, config } => match self.upsert_topic(log_index, topic, config) {
                Ok(()) => Response::Done,
                Err(e) => Response::Failed(e),
            },
            Command::DeleteTopic { topic } => {
                if self.topics.remove(topic).is_none() {
                    return Response::Failed(CommandError::TopicNotFound(topic.to_string()));
                }
                self.pops.retain(|(_, t, _), _| t != topic);
                self.offsets.retain(|(_, t, _), _| t != topic);
                Response::Done
            }
            Command::Send { now, messages, .. } => {
                self.tick(*now);
                Response::Sent(messages.heads().map(|(slot, m)| self.store(*now, slot, m)).collect())
            }
            Command::FireTimers { now, prev_fire, fires, drops } => {
                self.tick(*now);
                match self.fire(log_index, *prev_fire, fires, drops) {
                    Ok(results) => Response::Sent(results),
                    Err(e) => Response::Failed(e),
                }
            }
            Command::CheckTransactions { now, keys } => {
                let now = self.tick(*now);
                if keys.len() > MAX_TRANSACTIONS_PER_COMMAND {
                    return Response::Failed(CommandError::LimitReached(format!(
                        "{} transactions in one check, the limit is {MAX_TRANSACTIONS_PER_COMMAND}",
                        keys.len()
                    )));
                }
                for key in keys {
                    if let Some(t) = self.transactions.get_mut(key) {
                        t.checks = t.checks.saturating_add(1);
                        t.last_check = Some(now);
                    }
                }
                Response::Done
            }
            Command::Pop { now, group, topic, invisible_ms, takes } => {
                let now = self.tick(*now);
                self.dead_letters(log_index, now, group, topic, takes);
                match self.pop(now, group, topic, *invisible_ms, takes) {
                    Ok(popped) => Response::Popped(popped),
                    Err(e) => Response::Failed(e),
                }
            }
            Command::ForwardToDeadLetter { group, topic, queue, letter } => {
                self.forward_to_dead_letter(log_index, group, topic, *queue, letter);
                Response::Done
            }
            Command::Ack { group, topic, receipts } => {
                if receipts.len() > MAX_RECEIPTS_PER_ACK {
                    return Response::Failed(CommandError::LimitReached(format!(
                        "{} receipts in one ack, the limit is {MAX_RECEIPTS_PER_ACK}",
                        receipts.len()
                    )));
                }
                Response::Acked(receipts.iter().map(|r| self.ack(group, topic, r)).collect())
            }
            Command::ChangeInvisible { now, group, topic, receipt, invisible_ms } => {
                let now = self.tick(*now);
                match self.change_invisible(now, group, topic, receipt, *invisible_ms) {
                    Ok(r) => Response::Changed(r),
                    Err(e) => Response::Failed(e),
                }
            }
            Command::CommitOffset { group, topic, queue, offset } => {
                let key = (group.clone(), topic.clone(), *queue);
                if let Err(e) = self.check_queue(topic, *queue).and_then(|_| self.check_group(&key)) {
                    return Response::Failed(e);
                }
                self.offsets.insert(key, *offset);
                Response::Done
            }
            Command::ResetOffset { group, topic, offsets } => match self.reset_offset(group, topic, offsets) {
                Ok(()) => Response::Done,
                Err(e) => Response::Failed(e),
            },
            Command::UpsertGroup { group, config } => {
                if !(1..=types::MAX_MAX_ATTEMPTS).contains(&config.max_attempts) {
                    return Response::Failed(CommandError::BadConfig(format!(
                        "max attempts {} is outside 1..={}",
                        config.max_attempts,
                        types::MAX_MAX_ATTEMPTS
                    )));
                }
                if !self.groups.contains_key(group) && self.groups.len() >= MAX_GROUPS {
                    return Response::Failed(CommandError::LimitReached(format!(
                        "the broker group holds {MAX_GROUPS} configured consumer groups, the limit"
                    )));
                }
                self.groups.insert(group.clone(), *config);
                Response::Done
            }
            Command::TrimQueues { mins } => match self.trim_queues(mins) {
                Ok(()) => Response::Done,
                Err(e) => Response::Failed(e),
            },
        }
    }

    /// Stores one message of a `Send`: the next offset of its queue. A message whose bytes
    /// are damaged is refused alike on every node (dispatch skips it too).
    /// A message whose delivery time is later than `now`, the entry's time, is scheduled: it
    /// gets no offset until its timer fires. A transactional half message gets none until
    /// it is committed.
    fn store(&mut self, now: Millis, slot: Slot, m: Result<MessageHead, CodecError>) -> Result<Sent, CommandError> {
        let m = m.map_err(|e| CommandError::Damaged(format!("message {} of the entry: {e}", slot.0)))?;
        self.accepts_head(&m, self.last_applied)?;
        if m.transactional {
            if self.transactions.len() >= MAX_OPEN_TRANSACTIONS {
                return Err(CommandError::LimitReached(format!(
                    "{MAX_OPEN_TRANSACTIONS} transactions are open, the limit; commit or roll back some first"
                )));
            }
            let queue = m.queue;
            let open = OpenTransaction { head: m, born: now, checks: 0, last_check: None };
            self.transactions.insert((self.last_applied, slot), open);
            return Ok(Sent { queue, offset: None });
        }
        if timer::scheduled(m.deliver_at, now) {
            self.timers.pending += 1;
            return Ok(Sent { queue: m.queue, offset: None });
        }
        Ok(Sent { queue: m.queue, offset: Some(self.append_to_queue(&m)) })
    }

    /// The next offset of an accepted message's queue, taken.
    fn append_to_queue(&mut self, m: &MessageHead) -> QueueOffset {
        let queue = &mut self.topics.get_mut(&m.topic).expect("accepted by the caller").queues[m.queue.0 as usize];
        let offset = queue.max_offset;
        queue.max_offset += 1;
        QueueOffset(offset)
    }

    /// Fires due timers and committed half messages if the plan was made after the last
    /// accepted fire; each message whose topic incarnation still exists gets the next offset
    /// of its queue. Rolled-back half messages (`drops`) leave the open transactions.
    fn fire(
        &mut self,
        log_index: LogIndex,
        prev_fire: LogIndex,
        fires: &[Fire],
        drops: &[TransactionKey],
    ) -> Result<Vec<Result<Sent, CommandError>>, CommandError> {
        if fires.len() > MAX_FIRES_PER_COMMAND {
            return Err(CommandError::LimitReached(format!(
                "{} timers in one fire, the limit is {MAX_FIRES_PER_COMMAND}",
                fires.len()
            )));
        }
        if drops.len() > MAX_TRANSACTIONS_PER_COMMAND {
            return Err(CommandError::LimitReached(format!(
                "{} rollbacks in one fire, the limit is {MAX_TRANSACTIONS_PER_COMMAND}",
                drops.len()
            )));
        }
        if prev_fire != self.timers.last_fire {
            return Err(CommandError::StalePlan(format!(
                "timers were fired at log index {} after the plan's {}",
                self.timers.last_fire.0, prev_fire.0
            )));
        }
        self.timers.last_fire = log_index;
        for key in drops {
            self.transactions.remove(key);
        }
        let mut seen = BTreeSet::new();
        let results = fires
            .iter()
            .map(|f| {
                timer::check_fire(&mut seen, f)?;
                if f.head.transactional {
                    self.transactions.remove(&(f.log_index, f.slot));
                } else {
                    self.timers.pending = self.timers.pending.saturating_sub(1);
                }
                self.accepts_head(&f.head, log_index)?;
                Ok(Sent { queue: f.head.queue, offset: Some(self.append_to_queue(&f.head)) })
            })
            .collect();
        Ok(results)
    }

    /// Moves the named queues' minimum offsets up, and the pop state and committed offsets
    /// behind them with them.
    fn trim_queues(&mut self, mins: &[(TopicName, QueueId, QueueOffset)]) -> Result<(), CommandError> {
        if mins.len() > MAX_TRIM_QUEUES {
            return Err(CommandError::LimitReached(format!(
                "{} queues in one trim, the limit is {MAX_TRIM_QUEUES}",
                mins.len()
            )));
        }
        let mut moved: BTreeMap<(&TopicName, QueueId), u64> = BTreeMap::new();
        for (topic, queue, min) in mins {
            let Some(q) = self.topics.get_mut(topic).and_then(|t| t.queues.get_mut(queue.0 as usize)) else {
                continue;
            };
            let new_min = min.0.min(q.max_offset).max(q.min_offset);
            if new_min > q.min_offset {
                q.min_offset = new_min;
                moved.insert((topic, *queue), new_min);
            }
        }
        for ((_, topic, queue), state) in &mut self.pops {
            if let Some(&min) = moved.get(&(topic, *queue)) {
                state.trim_below(min);
            }
        }
        for ((_, topic, queue), offset) in &mut self.offsets {
            if let Some(&min) = moved.get(&(topic, *queue)) {
                offset.0 = offset.0.max(min);
            }
        }
        Ok(())
    }

    fn upsert_topic(
        &mut self,
        log_index: LogIndex,
        name: &TopicName,
        config: &TopicConfig,
    ) -> Result<(), CommandError> {
        validate_config(config)?;
        if !self.topics.contains_key(name) && self.topics.len() >= MAX_TOPICS {
            return Err(CommandError::LimitReached(format!(
                "the broker group holds {MAX_TOPICS} topics, the limit; delete one first"
            )));
        }
        let topic = self.topics.entry(name.clone()).or_insert_with(|| Topic {
            config: config.clone(),
            created_at: log_index,
            queues: Vec::new(),
            queue_counts: Vec::new(),
        });
        if (config.queue_count as usize) < topic.queues.len() {
            return Err(CommandError::BadConfig(format!(
                "topic {name} has {} queues; the queue count cannot shrink",
                topic.queues.len()
            )));
        }
        if topic.queue_counts.last().is_none_or(|&(_, count)| count < config.queue_count) {
            topic.queue_counts.push((log_index, config.queue_count));
        }
        topic.config = config.clone();
        topic.queues.resize_with(config.queue_count as usize, Queue::default);
        Ok(())
    }

    fn check_queue(&self, topic: &TopicName, queue: QueueId) -> Result<&Topic, CommandError> {
        let t = self.topics.get(topic).ok_or_else(|| CommandError::TopicNotFound(topic.to_string()))?;
        if queue.0 >= t.config.queue_count {
            return Err(CommandError::QueueNotFound {
                topic: topic.to_string(),
                queue: queue.0,
                count: t.config.queue_count,
            });
        }
        Ok(t)
    }

    /// Moves `group`'s position on `topic`'s named queues; all or nothing.
    fn reset_offset(
        &mut self,
        group: &GroupName,
        topic: &TopicName,
        offsets: &[(QueueId, QueueOffset)],
    ) -> Result<(), CommandError> {
        if offsets.len() > types::MAX_QUEUES as usize {
            return Err(CommandError::LimitReached(format!(
                "{} queues in one reset, the limit is {}",
                offsets.len(),
                types::MAX_QUEUES
            )));
        }
        for (queue, _) in offsets {
            self.check_queue(topic, *queue)?;
            self.check_group(&(group.clone(), topic.clone(), *queue))?;
        }
        for &(queue, offset) in offsets {
            let q = self.queue(topic, queue).copied().expect("checked above");
            let at = offset.0.clamp(q.min_offset, q.max_offset);
            let key = (group.clone(), topic.clone(), queue);
            self.pops.insert(key.clone(), PopState::starting_at(at));
            self.offsets.insert(key, QueueOffset(at));
        }
        Ok(())
    }

    /// Refuses state for `key` when its group is new and [`MAX_GROUPS`] groups have state
    /// already (the count is taken only when a group's state on a queue is created).
    fn check_group(&self, key: &GroupQueue) -> Result<(), CommandError> {
        if self.pops.contains_key(key) || self.offsets.contains_key(key) {
            return Ok(());
        }
        let groups: BTreeSet<&GroupName> =
            self.pops.keys().map(|(g, _, _)| g).chain(self.offsets.keys().map(|(g, _, _)| g)).collect();
        if groups.len() >= MAX_GROUPS && !groups.contains(&key.0) {
            return Err(CommandError::LimitReached(format!(
                "the broker group holds state of {MAX_GROUPS} consumer groups, the limit"
            )));
        }
        Ok(())
    }

    fn pop(
        &mut self,
        now: Millis,
        group: &GroupName,
        topic: &TopicName,
        invisible_ms: u64,
        takes: &[PopTake],
    ) -> Result<Vec<Popped>, CommandError> {
        let t = self.topics.get(topic).ok_or_else(|| CommandError::TopicNotFound(topic.to_string()))?;
        if t.config.permission == Permission::Write {
            return Err(CommandError::NotPermitted(format!("topic {topic} is write-only")));
        }
        for take in takes {
            self.check_queue(topic, take.queue)?;
            self.check_group(&(group.clone(), topic.clone(), take.queue))?;
        }
        let pop_id = PopId(self.next_pop_id);
        self.next_pop_id += 1;
        let visible_at = now.plus_ms(invisible_ms);
        let mut out = Vec::new();
        for take in takes {
            let queue = self.topics[topic].queues[take.queue.0 as usize];
            let key = (group.clone(), topic.clone(), take.queue);
            let state = self.pops.entry(key).or_insert_with(|| PopState::starting_at(queue.min_offset));
            if state.ack_offset < queue.min_offset {
                state.trim_below(queue.min_offset);
            }
            let budget = MAX_POP_BATCH as usize - out.len().min(MAX_POP_BATCH as usize);
            for (offset, attempt) in pop::take(state, take, queue.max_offset, now, visible_at, pop_id, budget) {
                out.push(Popped {
                    queue: take.queue,
                    offset,
                    attempt,
                    receipt: Receipt { broker_group: self.broker_group.clone(), queue: take.queue, offset, pop_id },
                    visible_at,
                });
            }
        }
        Ok(out)
    }

    /// Moves the dead letters a pop names to the group's dead-letter queue: each leaves the
    /// group if still in flight from the pop named and expired, and each is appended to
    /// `%DLQ%<group>` (created here on first use) whatever happened to it since the plan, so
    /// dispatch, which cannot tell, gives it the same offset: a message acknowledged between
    /// the plan and this entry is then both consumed and dead-lettered, never lost.
    fn dead_letters(
        &mut self,
        log_index: LogIndex,
        now: Millis,
        group: &GroupName,
        topic: &TopicName,
        takes: &[PopTake],
    ) {
        let count = takes.iter().map(|t| t.dead.len()).sum::<usize>() as u64;
        if count == 0 {
            return;
        }
        for take in takes {
            if let Some(state) = self.pops.get_mut(&(group.clone(), topic.clone(), take.queue)) {
                for d in &take.dead {
                    if state.inflight(d.offset.0).is_some_and(|i| i.pop_id == d.pop_id && i.visible_at <= now) {
                        state.dead(d.offset.0);
                    }
                }
            }
        }
        self.append_dead_letters(log_index, group, count);
    }

    /// A consumer's own dead letter ([`Command::ForwardToDeadLetter`]): out of the group if
    /// still in flight from the pop named, into its dead-letter queue either way (never
    /// refused, so dispatch, which appends it whenever the dead-letter topic exists, agrees;
    /// the leader checked the request).
    fn forward_to_dead_letter(
        &mut self,
        log_index: LogIndex,
        group: &GroupName,
        topic: &TopicName,
        queue: QueueId,
        letter: &DeadLetter,
    ) {
        if let Some(state) = self.pops.get_mut(&(group.clone(), topic.clone(), queue))
            && state.inflight(letter.offset.0).is_some_and(|i| i.pop_id == letter.pop_id)
        {
            state.dead(letter.offset.0);
        }
        self.append_dead_letters(log_index, group, 1);
    }

    /// Appends `count` messages to `group`'s `%DLQ%<group>` topic, creating it on first use
    /// (one queue, every message type), unless the topic limit is reached.
    fn append_dead_letters(&mut self, log_index: LogIndex, group: &GroupName, count: u64) {
        let Some(dlq) = group.dead_letter_topic() else { return };
        if !self.topics.contains_key(&dlq) {
            if self.topics.len() >= MAX_TOPICS {
                return;
            }
            let config = TopicConfig::all_types(1);
            let topic = Topic {
                config,
                created_at: log_index,
                queues: vec![Queue::default()],
                queue_counts: vec![(log_index, 1)],
            };
            self.topics.insert(dlq.clone(), topic);
        }
        if let Some(t) = self.topics.get_mut(&dlq) {
            t.queues[0].max_offset += count;
        }
    }

    /// The dead-letter topic the dead letters of `group`'s `Pop` at `index` went to (asked
    /// of the state after that entry, or of any later one): the group's `%DLQ%` topic if the
    /// incarnation that exists now existed then.
    pub fn dead_letter_topic_at(&self, group: &GroupName, index: LogIndex) -> Option<TopicName> {
        let dlq = group.dead_letter_topic()?;
        self.topics.get(&dlq).filter(|t| t.created_at <= index).map(|_| dlq)
    }

    fn ack(&mut self, group: &GroupName, topic: &TopicName, receipt: &Receipt) -> Result<(), CommandError> {
        self.check_queue(topic, receipt.queue)?;
        let state = self
            .pops
            .get_mut(&(group.clone(), topic.clone(), receipt.queue))
            .ok_or_else(|| CommandError::InvalidReceipt(format!("group {group} has not received from this queue")))?;
        state.ack(receipt.offset.0, receipt.pop_id).map_err(CommandError::InvalidReceipt)
    }

    fn change_invisible(
        &mut self,
        now: Millis,
        group: &GroupName,
        topic: &TopicName,
        receipt: &Receipt,
        invisible_ms: u64,
    ) -> Result<Receipt, CommandError> {
        self.check_queue(topic, receipt.queue)?;
        let new_pop_id = PopId(self.next_pop_id);
        let state = self
            .pops
            .get_mut(&(group.clone(), topic.clone(), receipt.queue))
            .ok_or_else(|| CommandError::InvalidReceipt(format!("group {group} has not received from this queue")))?;
        state
            .change_invisible(receipt.offset.0, receipt.pop_id, now.plus_ms(invisible_ms), new_pop_id)
            .map_err(CommandError::InvalidReceipt)?;
        self.next_pop_id += 1;
        Ok(Receipt { pop_id: new_pop_id, ..receipt.clone() })
    }
}

#[cfg(test)]
mod tests;
