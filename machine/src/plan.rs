//! Planning a pop on the leader: which messages a receive takes, chosen from the state and
//! from what the leader's ConsumeQueue says of the never-delivered ones (their tags and
//! message groups). Plain code over values: the ConsumeQueue read comes in as a function.
//!
//! A FIFO consumer group ([`crate::types::GroupConfig::fifo`]) gets a message group's
//! messages of a queue one at a time, in order: a message whose group has a message in
//! flight, or deferred before it, is deferred (neither delivered nor skipped), and a
//! deferred one is delivered once its group is free; messages of other groups, and those
//! without a group, keep flowing.

use std::collections::BTreeSet;

use crate::command::DeadLetter;
use crate::command::PopTake;
use crate::ids::{LogIndex, Millis, QueueId, QueueOffset, Slot};
use crate::types::{GroupName, TopicName};
use crate::{MAX_POP_BATCH, Machine, POP_SCAN_LIMIT};

/// What a pop plan reads of one never-delivered message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fresh {
    /// Hash of its tag (`None` without one).
    pub tag: Option<u64>,
    /// Hash of its message group (`None` without one).
    pub group: Option<u64>,
    /// Where it is in the log.
    pub at: Option<(LogIndex, Slot)>,
}

/// A queue's offsets `from..end` as this node's ConsumeQueue holds them (fewer when its
/// dispatch is behind).
pub type Tags = Vec<Fresh>;

/// What a pop reads from: a consumer group's view of a topic, all its queues or one.
#[derive(Debug, Clone, Copy)]
pub struct PopScope<'a> {
    /// The consumer group.
    pub group: &'a GroupName,
    /// The topic.
    pub topic: &'a TopicName,
    /// Only this queue (a push consumer reads the queues assigned to it); `None`: any.
    pub queue: Option<QueueId>,
}

impl<'a> PopScope<'a> {
    /// Every queue of `topic`.
    pub fn all(group: &'a GroupName, topic: &'a TopicName) -> Self {
        Self { group, topic, queue: None }
    }

    /// The queues this scope reads of a topic with `count` queues, starting at `start`
    /// (taken modulo `count`).
    fn queues(&self, count: u32, start: u64) -> impl Iterator<Item = QueueId> + use<> {
        let only = self.queue;
        let all = (0..count).map(move |i| QueueId(((start + u64::from(i)) % u64::from(count.max(1))) as u32));
        all.filter(move |q| only.is_none_or(|o| o == *q))
    }
}

impl Machine {
    /// Plans a pop of at most `max` messages for `scope` at `now`, queue by queue from a
    /// rotating start (so concurrent consumers spread over the queues): first the messages
    /// whose invisibility ended, then never-delivered ones that `accept` (the subscription's
    /// filter), read with `read(queue, from, end)`; the ones not accepted are skipped. The
    /// plan is checked again when applied ([`crate::Command::Pop`]).
    pub fn plan_pop<E>(
        &self,
        now: Millis,
        scope: PopScope<'_>,
        max: u32,
        mut accept: impl FnMut(&Fresh) -> Result<bool, E>,
        mut read: impl FnMut(QueueId, u64, u64) -> Result<Tags, E>,
    ) -> Result<Vec<PopTake>, E> {
        let PopScope { group, topic, .. } = scope;
        let Some(t) = self.topics.get(topic) else { return Ok(Vec::new()) };
        let config = self.group_config(group);
        let fifo = config.fifo;
        let now = now.max(self.clock);
        let count = t.config.queue_count;
        let mut budget = max.min(MAX_POP_BATCH) as usize;
        let mut takes = Vec::new();
        for q in scope.queues(count, self.next_pop_id) {
            if budget == 0 {
                break;
            }
            let Some(&queue) = t.queues.get(q.0 as usize) else { continue };
            let state = self.pops.get(&(group.clone(), topic.clone(), q));
            // Expired messages come again, but those delivered as often as the group allows
            // go to its dead-letter queue (where the log holds them: read from the
            // ConsumeQueue; one not dispatched yet waits for the next plan).
            let mut redeliver = Vec::new();
            let mut dead = Vec::new();
            if let Some(s) = state {
                for o in s.expired(now).filter(|&o| o >= queue.min_offset()) {
                    if redeliver.len() >= budget {
                        break;
                    }
                    let Some(inf) = s.inflight(o) else { continue };
                    if inf.attempts < config.max_attempts {
                        redeliver.push(QueueOffset(o));
                        continue;
                    }
                    if dead.len() >= MAX_POP_BATCH as usize {
                        continue;
                    }
                    if let Some((log_index, slot)) = read(q, o, o + 1)?.first().and_then(|f| f.at) {
                        dead.push(DeadLetter { offset: QueueOffset(o), pop_id: inf.pop_id, log_index, slot });
                    }
                }
            }
            budget -= redeliver.len();
            // FIFO: message groups with a message in flight are busy; a deferred message
            // goes when its group is free and nothing of its group is deferred before it.
            let mut busy: BTreeSet<u64> = BTreeSet::new();
            let mut undefer = Vec::new();
            if fifo && let Some(s) = state {
                busy = s.inflight_groups();
                for (offset, g) in s.deferred() {
                    if busy.insert(g) && undefer.len() < budget && offset >= queue.min_offset() {
                        undefer.push(QueueOffset(offset));
                    }
                }
            }
            budget -= undefer.len();
            let from = state.map_or(queue.min_offset(), |s| s.next_fresh).max(queue.min_offset());
            let scan_end = queue.max_offset().min(from + POP_SCAN_LIMIT);
            let (mut deliver, mut defer, mut groups) = (Vec::new(), Vec::new(), Vec::new());
            let mut end = from;
            if budget > 0 && from < scan_end {
                let fresh = read(q, from, scan_end)?;
                for (i, m) in fresh.iter().take((scan_end - from) as usize).enumerate() {
                    let offset = QueueOffset(from + i as u64);
                    end = offset.0 + 1;
                    if !accept(m)? {
                        continue;
                    }
                    match m.group.filter(|_| fifo) {
                        Some(g) if !busy.insert(g) => {
                            defer.push(offset);
                            groups.push((offset, g));
                        }
                        g => {
                            deliver.push(offset);
                            groups.extend(g.map(|g| (offset, g)));
                            if deliver.len() == budget {
                                break;
                            }
                        }
                    }
                }
            }
            budget -= deliver.len();
            if !redeliver.is_empty() || !undefer.is_empty() || !dead.is_empty() || end > from {
                takes.push(PopTake {
                    queue: q,
                    redeliver,
                    fresh_from: QueueOffset(from),
                    fresh_end: QueueOffset(end),
                    deliver,
                    undefer,
                    defer,
                    groups,
                    dead,
                });
            }
        }
        Ok(takes)
    }

    /// Whether a pop in `scope` at `now` could take something: a message never delivered to
    /// the group, or one whose invisibility ended. When nothing is, also returns when the
    /// next invisible message reappears.
    pub fn pop_outlook(&self, scope: PopScope<'_>, now: Millis) -> (bool, Option<Millis>) {
        let PopScope { group, topic, .. } = scope;
        let Some(t) = self.topics.get(topic) else { return (false, None) };
        let now = now.max(self.clock);
        let mut next: Option<Millis> = None;
        for q in scope.queues(t.config.queue_count, 0) {
            let Some(queue) = t.queues.get(q.0 as usize) else { continue };
            match self.pops.get(&(group.clone(), topic.clone(), q)) {
                None if queue.max_offset() > queue.min_offset() => return (true, None),
                None => {}
                Some(state) => {
                    if state.next_fresh.max(queue.min_offset()) < queue.max_offset()
                        || state.expired(now).next().is_some()
                        || state.deferred_ready()
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
}
