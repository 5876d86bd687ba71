//! The replicated state machine: topics and their queues (ConsumeQueue records pointing
//! into the CommitLog), pop state, and consumer offsets.
//!
//! [`Machine::apply`] is plain code over a [`Command`]: no IO, no clock (time comes in the
//! command), so every node computes the same state and it is tested without a network.
//! Message bodies stay in the Raft log: a queue record names the log index and the slot
//! of the message in that entry's batch.

pub mod codec;
pub mod command;
pub mod ids;
pub mod pop;
pub mod receipt;
pub mod types;

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

pub use self::command::{Command, CommandError, Popped, ProposalId, Response, Sent};
pub use self::ids::{LogIndex, Millis, PopId, QueueId, QueueOffset, Slot};
use self::pop::PopState;
pub use self::receipt::Receipt;
use self::types::{GroupName, TagFilter, TopicConfig, TopicName, tag_hash};

/// Most messages one pop may take.
pub const MAX_POP_BATCH: u32 = 256;
/// Most never-delivered records one pop examines per queue (filtered ones included).
const POP_SCAN_LIMIT: usize = 4096;

/// A ConsumeQueue record: where a message is and what filters need to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecord {
    /// Raft log index of the entry holding the message.
    pub log_index: LogIndex,
    /// Position of the message within that entry's batch.
    pub slot: Slot,
    /// Body size in bytes.
    pub size: u32,
    /// Hash of the tag, if any.
    pub tag: Option<u64>,
    /// Store time.
    pub stored: Millis,
}

/// One queue: its records from `base` on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    base: u64,
    records: VecDeque<QueueRecord>,
}

impl Queue {
    /// First offset still held.
    pub fn min_offset(&self) -> u64 {
        self.base
    }

    /// Offset the next message gets.
    pub fn max_offset(&self) -> u64 {
        self.base + self.records.len() as u64
    }

    /// The record at `offset`, if held.
    pub fn get(&self, offset: u64) -> Option<&QueueRecord> {
        offset.checked_sub(self.base).and_then(|i| self.records.get(i as usize))
    }

    /// Drops the records held in log entries below `before_log_index` (they lead the
    /// queue: log indexes grow along it); returns the new minimum offset.
    fn trim_before(&mut self, before_log_index: LogIndex) -> u64 {
        let n = self.records.partition_point(|r| r.log_index < before_log_index);
        self.records.drain(..n);
        self.base += n as u64;
        if self.records.is_empty() {
            self.records.shrink_to_fit();
        }
        self.base
    }

    /// First offset whose store time is at or after `at` (`max_offset` if none).
    pub fn offset_at_time(&self, at: Millis) -> u64 {
        self.base + self.records.partition_point(|r| r.stored < at) as u64
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Topic {
    config: TopicConfig,
    queues: Vec<Queue>,
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

    /// A topic's configuration.
    pub fn topic(&self, topic: &TopicName) -> Option<&TopicConfig> {
        self.topics.get(topic).map(|t| &t.config)
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

    /// Pop state of a group on a queue.
    pub fn pop_state(&self, group: &GroupName, topic: &TopicName, queue: QueueId) -> Option<&PopState> {
        self.pops.get(&(group.clone(), topic.clone(), queue))
    }

    /// Whether a pop by `group` on `topic` at `now` could return something: a message never
    /// delivered to the group, or one whose invisibility ended. When nothing is visible,
    /// also returns when the next invisible message reappears.
    pub fn pop_outlook(&self, group: &GroupName, topic: &TopicName, now: Millis) -> (bool, Option<Millis>) {
        let Some(t) = self.topics.get(topic) else { return (false, None) };
        let mut next: Option<Millis> = None;
        for (i, queue) in t.queues.iter().enumerate() {
            match self.pops.get(&(group.clone(), topic.clone(), QueueId(i as u32))) {
                None if queue.max_offset() > queue.min_offset() => return (true, None),
                None => {}
                Some(state) => {
                    if state.next_fresh.max(queue.min_offset()) < queue.max_offset()
                        || state.expired(now).next().is_some()
                    {
                        return (true, None);
                    }
                    next = match (next, state.next_visible()) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
        }
        (false, next)
    }

    /// The newest log index applied.
    pub fn last_applied(&self) -> LogIndex {
        self.last_applied
    }

    /// The state machine's clock: the largest proposer time applied so far.
    pub fn clock(&self) -> Millis {
        self.clock
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
            Command::UpsertTopic { topic, config } => match self.upsert_topic(topic, config) {
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
            Command::Send { now, auto_create_queues, messages, .. } => {
                let now = self.tick(*now);
                Response::Sent(self.send(log_index, now, *auto_create_queues, messages))
            }
            Command::Pop { now, group, topic, queue, max, invisible_ms, filter } => {
                let now = self.tick(*now);
                match self.pop(now, group, topic, *queue, *max, *invisible_ms, filter) {
                    Ok(popped) => Response::Popped(popped),
                    Err(e) => Response::Failed(e),
                }
            }
            Command::Ack { group, topic, receipts } => {
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
                if let Err(e) = self.check_queue(topic, *queue) {
                    return Response::Failed(e);
                }
                self.offsets.insert((group.clone(), topic.clone(), *queue), *offset);
                Response::Done
            }
            Command::TrimQueues { before_log_index } => {
                self.trim_queues(*before_log_index);
                Response::Done
            }
        }
    }

    /// Moves every queue's minimum offset past its records below `before_log_index`, and
    /// the pop state and committed offsets behind it up to it.
    fn trim_queues(&mut self, before_log_index: LogIndex) {
        let mut mins: BTreeMap<(&TopicName, QueueId), u64> = BTreeMap::new();
        for (name, topic) in &mut self.topics {
            for (i, queue) in topic.queues.iter_mut().enumerate() {
                if queue.get(queue.min_offset()).is_some_and(|r| r.log_index < before_log_index) {
                    mins.insert((name, QueueId(i as u32)), queue.trim_before(before_log_index));
                }
            }
        }
        for ((_, topic, queue), state) in &mut self.pops {
            if let Some(&min) = mins.get(&(topic, *queue)) {
                state.trim_below(min);
            }
        }
        for ((_, topic, queue), offset) in &mut self.offsets {
            if let Some(&min) = mins.get(&(topic, *queue)) {
                offset.0 = offset.0.max(min);
            }
        }
    }

    fn upsert_topic(&mut self, name: &TopicName, config: &TopicConfig) -> Result<(), CommandError> {
        validate_config(config)?;
        let topic =
            self.topics.entry(name.clone()).or_insert_with(|| Topic { config: config.clone(), queues: Vec::new() });
        if (config.queue_count as usize) < topic.queues.len() {
            return Err(CommandError::BadConfig(format!(
                "topic {name} has {} queues; the queue count cannot shrink",
                topic.queues.len()
            )));
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

    fn send(
        &mut self,
        log_index: LogIndex,
        now: Millis,
        auto_create: Option<u32>,
        messages: &[types::StoredMessage],
    ) -> Vec<Result<Sent, CommandError>> {
        let mut results = Vec::with_capacity(messages.len());
        for (slot, m) in messages.iter().enumerate() {
            if let Some(queues) = auto_create
                && !self.topics.contains_key(&m.topic)
                && let Err(e) = self.upsert_topic(&m.topic, &TopicConfig::all_types(queues))
            {
                results.push(Err(e));
                continue;
            }
            if let Err(e) = self.check_queue(&m.topic, m.queue) {
                results.push(Err(e));
                continue;
            }
            let topic = self.topics.get_mut(&m.topic).expect("checked above");
            if topic.config.permission == types::Permission::Read {
                results.push(Err(CommandError::NotPermitted(format!("topic {} is read-only", m.topic))));
                continue;
            }
            let queue = &mut topic.queues[m.queue.0 as usize];
            let offset = queue.max_offset();
            queue.records.push_back(QueueRecord {
                log_index,
                slot: Slot(u32::try_from(slot).expect("batches are far below 2^32 messages")),
                size: u32::try_from(m.body.len()).unwrap_or(u32::MAX),
                tag: m.tag.as_deref().map(tag_hash),
                stored: now,
            });
            results.push(Ok(Sent { queue: m.queue, offset: QueueOffset(offset) }));
        }
        results
    }

    #[allow(clippy::too_many_arguments)]
    fn pop(
        &mut self,
        now: Millis,
        group: &GroupName,
        topic: &TopicName,
        queue: Option<QueueId>,
        max: u32,
        invisible_ms: u64,
        filter: &TagFilter,
    ) -> Result<Vec<Popped>, CommandError> {
        let t = self.topics.get(topic).ok_or_else(|| CommandError::TopicNotFound(topic.to_string()))?;
        if t.config.permission == types::Permission::Write {
            return Err(CommandError::NotPermitted(format!("topic {topic} is write-only")));
        }
        let count = t.config.queue_count;
        let order: Vec<QueueId> = match queue {
            Some(q) => {
                self.check_queue(topic, q)?;
                vec![q]
            }
            // Start at a rotating queue so concurrent consumers spread over the queues.
            None => {
                (0..count).map(|i| QueueId(((self.next_pop_id + u64::from(i)) % u64::from(count)) as u32)).collect()
            }
        };
        let pop_id = PopId(self.next_pop_id);
        self.next_pop_id += 1;
        let visible_at = now.plus_ms(invisible_ms);
        let max = max.min(MAX_POP_BATCH) as usize;
        let mut out = Vec::new();
        for q in order {
            if out.len() >= max {
                break;
            }
            let queue_log = &self.topics[topic].queues[q.0 as usize];
            let key = (group.clone(), topic.clone(), q);
            let state = self.pops.entry(key).or_insert_with(|| PopState::starting_at(queue_log.min_offset()));
            if state.ack_offset < queue_log.min_offset() {
                state.trim_below(queue_log.min_offset());
            }
            // Redeliveries first (their invisibility ended), then never-delivered ones.
            let expired: Vec<u64> = state.expired(now).take(max - out.len()).collect();
            for off in expired {
                let Some(rec) = queue_log.get(off) else { continue };
                let attempt = state.deliver(off, visible_at, pop_id);
                out.push(popped(&self.broker_group, q, off, rec, attempt, pop_id, visible_at));
            }
            let mut scanned = 0;
            while out.len() < max && scanned < POP_SCAN_LIMIT && state.next_fresh < queue_log.max_offset() {
                let off = state.next_fresh;
                let rec = queue_log.get(off).expect("offset below max_offset and at or above min_offset");
                scanned += 1;
                if filter.matches(rec.tag) {
                    let attempt = state.deliver(off, visible_at, pop_id);
                    out.push(popped(&self.broker_group, q, off, rec, attempt, pop_id, visible_at));
                } else {
                    state.skip(off);
                }
            }
        }
        Ok(out)
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

fn popped(
    broker_group: &str,
    queue: QueueId,
    offset: u64,
    rec: &QueueRecord,
    attempt: u32,
    pop_id: PopId,
    visible_at: Millis,
) -> Popped {
    Popped {
        queue,
        offset: QueueOffset(offset),
        log_index: rec.log_index,
        slot: rec.slot,
        attempt,
        receipt: Receipt { broker_group: broker_group.to_string(), queue, offset: QueueOffset(offset), pop_id },
        visible_at,
    }
}

#[cfg(test)]
mod tests;
