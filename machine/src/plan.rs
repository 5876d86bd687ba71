//! Planning a pop on the leader: which messages a receive takes, chosen from the state and
//! from what the leader's ConsumeQueue says of the never-delivered ones (their tags). Plain
//! code over values: the ConsumeQueue read comes in as a function.

use crate::command::PopTake;
use crate::ids::{Millis, QueueId, QueueOffset};
use crate::types::{GroupName, TagFilter, TopicName};
use crate::{MAX_POP_BATCH, Machine, POP_SCAN_LIMIT};

/// Tag hashes of a queue's offsets `from..end` as this node's ConsumeQueue holds them (fewer
/// when its dispatch is behind; `None` for a message without a tag).
pub type Tags = Vec<Option<u64>>;

impl Machine {
    /// Plans a pop of at most `max` messages for `group` on `topic` at `now`, queue by queue
    /// from a rotating start (so concurrent consumers spread over the queues): first the
    /// messages whose invisibility ended, then never-delivered ones that pass `filter`, read
    /// with `read(queue, from, end)`; the ones that do not pass are skipped. The plan is
    /// checked again when applied ([`crate::Command::Pop`]).
    pub fn plan_pop<E>(
        &self,
        now: Millis,
        group: &GroupName,
        topic: &TopicName,
        max: u32,
        filter: &TagFilter,
        mut read: impl FnMut(QueueId, u64, u64) -> Result<Tags, E>,
    ) -> Result<Vec<PopTake>, E> {
        let Some(t) = self.topics.get(topic) else { return Ok(Vec::new()) };
        let now = now.max(self.clock);
        let count = t.config.queue_count;
        let mut budget = max.min(MAX_POP_BATCH) as usize;
        let mut takes = Vec::new();
        for i in 0..count {
            if budget == 0 {
                break;
            }
            let q = QueueId(((self.next_pop_id + u64::from(i)) % u64::from(count)) as u32);
            let queue = t.queues[q.0 as usize];
            let state = self.pops.get(&(group.clone(), topic.clone(), q));
            let redeliver: Vec<QueueOffset> = state
                .map(|s| s.expired(now).filter(|&o| o >= queue.min_offset()).take(budget).map(QueueOffset).collect())
                .unwrap_or_default();
            budget -= redeliver.len();
            let from = state.map_or(queue.min_offset(), |s| s.next_fresh).max(queue.min_offset());
            let scan_end = queue.max_offset().min(from + POP_SCAN_LIMIT);
            let mut deliver = Vec::new();
            let mut end = from;
            if budget > 0 && from < scan_end {
                let tags = read(q, from, scan_end)?;
                for (i, tag) in tags.iter().take((scan_end - from) as usize).enumerate() {
                    let offset = from + i as u64;
                    end = offset + 1;
                    if filter.matches(*tag) {
                        deliver.push(QueueOffset(offset));
                        if deliver.len() == budget {
                            break;
                        }
                    }
                }
            }
            budget -= deliver.len();
            if !redeliver.is_empty() || end > from {
                takes.push(PopTake {
                    queue: q,
                    redeliver,
                    fresh_from: QueueOffset(from),
                    fresh_end: QueueOffset(end),
                    deliver,
                });
            }
        }
        Ok(takes)
    }

    /// Whether a pop by `group` on `topic` at `now` could take something: a message never
    /// delivered to the group, or one whose invisibility ended. When nothing is, also returns
    /// when the next invisible message reappears.
    pub fn pop_outlook(&self, group: &GroupName, topic: &TopicName, now: Millis) -> (bool, Option<Millis>) {
        let Some(t) = self.topics.get(topic) else { return (false, None) };
        let now = now.max(self.clock);
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
}
