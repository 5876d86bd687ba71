//! Pop state of one consumer group on one queue: which offsets are delivered and invisible,
//! which are acknowledged, which wait for their message group (FIFO groups), and where
//! never-delivered messages start.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::PopTake;
use crate::ids::{Millis, PopId, QueueOffset};
use crate::{MAX_DEFERRED_PER_QUEUE, MAX_INFLIGHT_PER_QUEUE, POP_SCAN_LIMIT};

/// A delivered, unacknowledged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inflight {
    /// When it becomes visible again.
    pub visible_at: Millis,
    /// Deliveries so far.
    pub attempts: u32,
    /// The pop that delivered it last.
    pub pop_id: PopId,
    /// Hash of its message group (FIFO groups: no later message of it is delivered until
    /// this one is acknowledged).
    pub group: Option<u64>,
}

/// Invariants: every offset below `ack_offset` is acknowledged; every offset in
/// `ack_offset..next_fresh` is in exactly one of `inflight`, `acked` and `deferred`; offsets
/// from `next_fresh` on were never delivered. `by_visible` indexes `inflight` by time.
/// `deferred` (FIFO groups) holds never-delivered messages passed over because a message of
/// their message group was in flight or deferred before them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopState {
    /// Everything below is acknowledged.
    pub ack_offset: u64,
    /// First offset never delivered.
    pub next_fresh: u64,
    inflight: BTreeMap<u64, Inflight>,
    by_visible: BTreeSet<(Millis, u64)>,
    acked: BTreeSet<u64>,
    deferred: BTreeMap<u64, u64>,
}

impl PopState {
    /// A state starting at `offset` (the queue's first retained offset for a new group).
    pub fn starting_at(offset: u64) -> Self {
        Self { ack_offset: offset, next_fresh: offset, ..Default::default() }
    }

    /// Offsets delivered before whose invisibility ended by `now`, oldest first.
    pub fn expired(&self, now: Millis) -> impl Iterator<Item = u64> + '_ {
        self.by_visible.range(..=(now, u64::MAX)).map(|&(_, off)| off)
    }

    /// When the earliest invisible message becomes visible again.
    pub fn next_visible(&self) -> Option<Millis> {
        self.by_visible.first().map(|&(t, _)| t)
    }

    /// Number of delivered, unacknowledged messages.
    pub fn inflight_count(&self) -> usize {
        self.inflight.len()
    }

    /// The inflight record of `offset`.
    pub fn inflight(&self, offset: u64) -> Option<&Inflight> {
        self.inflight.get(&offset)
    }

    /// Deferred offsets (FIFO groups) with their message group hash, oldest first.
    pub fn deferred(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.deferred.iter().map(|(&o, &g)| (o, g))
    }

    /// Number of deferred offsets.
    pub fn deferred_count(&self) -> usize {
        self.deferred.len()
    }

    /// Message groups with a message in flight.
    pub fn inflight_groups(&self) -> BTreeSet<u64> {
        self.inflight.values().filter_map(|i| i.group).collect()
    }

    /// Whether a deferred message may be delivered now: one whose message group has nothing
    /// in flight and no deferred message before it.
    pub fn deferred_ready(&self) -> bool {
        let mut busy = self.inflight_groups();
        self.deferred.values().any(|g| busy.insert(*g))
    }

    /// Marks `offset` delivered (again) until `visible_at`, of message group `group` (kept
    /// from a deferral or an earlier delivery when `None`); returns the attempt number.
    pub fn deliver(&mut self, offset: u64, visible_at: Millis, pop_id: PopId, group: Option<u64>) -> u32 {
        assert!(offset >= self.ack_offset && offset <= self.next_fresh, "deliver {offset} out of order");
        assert!(!self.acked.contains(&offset), "deliver of acked offset {offset}");
        let deferred = self.deferred.remove(&offset);
        let (attempts, group) = match self.inflight.remove(&offset) {
            Some(old) => {
                self.by_visible.remove(&(old.visible_at, offset));
                (old.attempts + 1, group.or(old.group))
            }
            None => (1, group.or(deferred)),
        };
        self.inflight.insert(offset, Inflight { visible_at, attempts, pop_id, group });
        self.by_visible.insert((visible_at, offset));
        if offset == self.next_fresh {
            self.next_fresh += 1;
        }
        attempts
    }

    /// Passes over a never-delivered offset of message group `group` without delivering it
    /// (FIFO: a message of its group is in flight or deferred before it).
    pub fn defer(&mut self, offset: u64, group: u64) {
        assert_eq!(offset, self.next_fresh, "defer must be at the fresh edge");
        self.next_fresh += 1;
        self.deferred.insert(offset, group);
    }

    /// Marks a never-delivered offset consumed without delivery (filtered out).
    pub fn skip(&mut self, offset: u64) {
        assert_eq!(offset, self.next_fresh, "skip must be at the fresh edge");
        self.next_fresh += 1;
        self.acked.insert(offset);
        self.advance();
    }

    /// Takes an in-flight message out of the group for good (dead-lettered): it counts as
    /// consumed.
    pub fn dead(&mut self, offset: u64) {
        if let Some(inf) = self.inflight.remove(&offset) {
            self.by_visible.remove(&(inf.visible_at, offset));
            self.acked.insert(offset);
            self.advance();
        }
    }

    /// Acknowledges `offset` delivered by `pop_id`.
    pub fn ack(&mut self, offset: u64, pop_id: PopId) -> Result<(), String> {
        if offset < self.ack_offset || self.acked.contains(&offset) {
            return Err(format!("offset {offset} is already acknowledged or was deleted by retention"));
        }
        let Some(inf) = self.inflight.get(&offset) else {
            return Err(format!("offset {offset} was never delivered to this group"));
        };
        if inf.pop_id != pop_id {
            return Err(format!("offset {offset} was delivered again since; use the newest receipt"));
        }
        let inf = self.inflight.remove(&offset).expect("checked above");
        self.by_visible.remove(&(inf.visible_at, offset));
        self.acked.insert(offset);
        self.advance();
        Ok(())
    }

    /// Moves the invisibility end of a delivered message; the old receipt stops working.
    pub fn change_invisible(
        &mut self,
        offset: u64,
        pop_id: PopId,
        visible_at: Millis,
        new_pop_id: PopId,
    ) -> Result<(), String> {
        let Some(inf) = self.inflight.get_mut(&offset) else {
            return Err(format!("offset {offset} is not invisible for this group (acknowledged or never delivered)"));
        };
        if inf.pop_id != pop_id {
            return Err(format!("offset {offset} was delivered again since; use the newest receipt"));
        }
        self.by_visible.remove(&(inf.visible_at, offset));
        inf.visible_at = visible_at;
        inf.pop_id = new_pop_id;
        self.by_visible.insert((visible_at, offset));
        Ok(())
    }

    /// Drops everything below `offset` (retention removed those messages).
    pub fn trim_below(&mut self, offset: u64) {
        if offset <= self.ack_offset {
            return;
        }
        let keep_inflight = self.inflight.split_off(&offset);
        for (off, inf) in std::mem::replace(&mut self.inflight, keep_inflight) {
            self.by_visible.remove(&(inf.visible_at, off));
        }
        self.acked = self.acked.split_off(&offset);
        self.deferred = self.deferred.split_off(&offset);
        self.ack_offset = offset;
        self.next_fresh = self.next_fresh.max(offset);
        self.advance();
    }

    fn advance(&mut self) {
        while self.ack_offset < self.next_fresh && self.acked.remove(&self.ack_offset) {
            self.ack_offset += 1;
        }
    }
}

/// Applies one queue's part of a pop plan to `state` (already trimmed to the queue's
/// minimum): delivers again the planned offsets whose invisibility ended by `now`, then the
/// planned deferred ones still deferred, then, if the group is still where the plan found
/// it, delivers, defers or skips the planned never-delivered range. Returns each delivered offset with its attempt number: at most `budget`, and none
/// past [`MAX_INFLIGHT_PER_QUEUE`] (the rest of the range stays never-delivered). A stale or
/// malformed plan takes nothing from the range: a concurrent pop moved the group on.
pub(crate) fn take(
    state: &mut PopState,
    take: &PopTake,
    max_offset: u64,
    now: Millis,
    visible_at: Millis,
    pop_id: PopId,
    budget: usize,
) -> Vec<(QueueOffset, u32)> {
    let mut out = Vec::new();
    for &offset in &take.redeliver {
        if out.len() >= budget {
            return out;
        }
        if state.inflight(offset.0).is_some_and(|inf| inf.visible_at <= now) {
            out.push((offset, state.deliver(offset.0, visible_at, pop_id, None)));
        }
    }
    for &offset in &take.undefer {
        if out.len() >= budget || state.inflight_count() >= MAX_INFLIGHT_PER_QUEUE {
            return out;
        }
        if state.deferred.contains_key(&offset.0) {
            out.push((offset, state.deliver(offset.0, visible_at, pop_id, None)));
        }
    }
    let (from, end) = (take.fresh_from.0, take.fresh_end.0);
    let sorted = |v: &[QueueOffset]| v.windows(2).all(|w| w[0] < w[1]) && v.iter().all(|d| (from..end).contains(&d.0));
    let groups: BTreeMap<u64, u64> = take.groups.iter().map(|(o, g)| (o.0, *g)).collect();
    let well_formed = from == state.next_fresh
        && from <= end
        && end <= max_offset
        && end - from <= POP_SCAN_LIMIT
        && sorted(&take.deliver)
        && sorted(&take.defer)
        && take.defer.iter().all(|d| groups.contains_key(&d.0) && take.deliver.binary_search(d).is_err());
    if !well_formed {
        return out;
    }
    let mut deliver = take.deliver.iter().map(|d| d.0).peekable();
    let mut defer = take.defer.iter().map(|d| d.0).peekable();
    for offset in from..end {
        if deliver.peek() == Some(&offset) {
            if out.len() >= budget || state.inflight_count() >= MAX_INFLIGHT_PER_QUEUE {
                break;
            }
            deliver.next();
            let group = groups.get(&offset).copied();
            out.push((QueueOffset(offset), state.deliver(offset, visible_at, pop_id, group)));
        } else if defer.peek() == Some(&offset) {
            if state.deferred_count() >= MAX_DEFERRED_PER_QUEUE {
                break;
            }
            defer.next();
            state.defer(offset, groups[&offset]);
        } else {
            state.skip(offset);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_acks_advance_the_ack_offset_when_the_gap_closes() {
        let mut s = PopState::starting_at(10);
        for off in 10..15 {
            assert_eq!(s.deliver(off, Millis(100), PopId(1), None), 1);
        }
        assert_eq!(s.next_fresh, 15);
        s.ack(12, PopId(1)).expect("delivered");
        s.ack(11, PopId(1)).expect("delivered");
        assert_eq!(s.ack_offset, 10);
        s.ack(10, PopId(1)).expect("delivered");
        assert_eq!(s.ack_offset, 13);
        assert_eq!(s.inflight_count(), 2);
        assert!(s.ack(10, PopId(1)).is_err(), "double ack is refused");
        assert!(s.ack(20, PopId(1)).is_err(), "never delivered");
    }

    #[test]
    fn redelivery_counts_attempts_and_invalidates_old_receipts() {
        let mut s = PopState::starting_at(0);
        s.deliver(0, Millis(100), PopId(1), None);
        assert_eq!(s.expired(Millis(99)).count(), 0);
        assert_eq!(s.expired(Millis(100)).collect::<Vec<_>>(), vec![0]);
        assert_eq!(s.deliver(0, Millis(300), PopId(2), None), 2);
        assert!(s.ack(0, PopId(1)).is_err(), "the first delivery's receipt is stale");
        s.change_invisible(0, PopId(2), Millis(500), PopId(3)).expect("current receipt");
        assert!(s.ack(0, PopId(2)).is_err(), "change_invisible replaced the receipt");
        assert_eq!(s.expired(Millis(400)).count(), 0);
        s.ack(0, PopId(3)).expect("newest receipt");
        assert_eq!(s.ack_offset, 1);
    }

    #[test]
    fn skipped_messages_count_as_consumed_and_trim_drops_old_state() {
        let mut s = PopState::starting_at(0);
        s.skip(0);
        s.deliver(1, Millis(5), PopId(1), None);
        s.skip(2);
        assert_eq!(s.ack_offset, 1);
        s.trim_below(2);
        assert_eq!(s.ack_offset, 3);
        assert_eq!(s.inflight_count(), 0);
        assert_eq!(s.expired(Millis(10)).count(), 0);
    }
}
