//! Pops of one consumer group on one topic are planned and proposed one at a time on the
//! leader (a plan made while another is in flight would be stale). So that the consumers of
//! a group do not take turns of a whole Raft round each, the receives that wait while a pop
//! is in flight are served together by the next one: whoever gets the lock takes every
//! waiting receive with the same scope, filter and invisible time, plans one pop for all of
//! them and hands each its share. The locks are striped, so their number is bounded.

use parking_lot::Mutex;
use raftmq_machine::Popped;
use raftmq_machine::types::{GroupName, QueueId, TopicName};
use std::sync::Arc;
use tokio::sync::{OwnedMutexGuard, oneshot};

use super::filter::Filter;
use super::status::Refusal;

/// What one receive's pop gets: its messages (maybe none) or why none.
pub(super) type PopOutcome = Result<Vec<Popped>, Refusal>;

/// What receives must share to be served by one pop.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PopKey {
    pub(super) group: GroupName,
    pub(super) topic: TopicName,
    pub(super) queue: Option<QueueId>,
    pub(super) filter: Filter,
    pub(super) invisible_ms: u64,
}

/// A receive waiting for a pop.
#[derive(Debug)]
pub(super) struct PopWaiter {
    key: PopKey,
    /// Most messages it takes.
    pub(super) max: u32,
    done: oneshot::Sender<PopOutcome>,
}

#[derive(Debug, Default)]
struct Stripe {
    lock: Arc<tokio::sync::Mutex<()>>,
    waiting: Mutex<Vec<PopWaiter>>,
}

/// The striped pop locks with their waiting receives.
#[derive(Debug)]
pub(super) struct PopLocks([Stripe; 64]);

impl Default for PopLocks {
    fn default() -> Self {
        Self(std::array::from_fn(|_| Stripe::default()))
    }
}

/// How a receive's turn came.
pub(super) enum Turn {
    /// Another receive's pop served it.
    Served(PopOutcome),
    /// It holds the lock and serves these receives (its own among them) with one pop.
    Serve { guard: OwnedMutexGuard<()>, waiters: Vec<PopWaiter>, answer: oneshot::Receiver<PopOutcome> },
}

impl PopLocks {
    fn stripe(&self, group: &str, topic: &str) -> &Stripe {
        let hash = raftmq_machine::types::tag_hash(group) ^ raftmq_machine::types::tag_hash(topic).rotate_left(17);
        &self.0[(hash % self.0.len() as u64) as usize]
    }

    /// Waits until a pop in flight served this receive, or until it holds the lock.
    pub(super) async fn turn(&self, key: PopKey, max: u32) -> Turn {
        let stripe = self.stripe(key.group.as_str(), key.topic.as_str());
        let (done, mut answer) = oneshot::channel();
        stripe.waiting.lock().push(PopWaiter { key: key.clone(), max, done });
        let guard = tokio::select! {
            biased;
            served = &mut answer => return Turn::Served(served.unwrap_or(Ok(Vec::new()))),
            guard = stripe.lock.clone().lock_owned() => guard,
        };
        // A holder answers its waiters before it lets go of the lock: an answer not here now
        // means this receive is still waiting in the list.
        if let Ok(served) = answer.try_recv() {
            return Turn::Served(served);
        }
        let waiters = {
            let mut waiting = stripe.waiting.lock();
            let (same, rest): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|w| w.key == key);
            *waiting = rest;
            same
        };
        Turn::Serve { guard, waiters, answer }
    }
}

/// Hands each waiter its share of one pop's messages, in order, up to its `max`; a refusal
/// goes to all of them.
pub(super) fn answer(waiters: Vec<PopWaiter>, outcome: PopOutcome) {
    match outcome {
        Ok(popped) => {
            let mut popped = popped.into_iter();
            for w in waiters {
                let share: Vec<Popped> = popped.by_ref().take(w.max as usize).collect();
                let _ = w.done.send(Ok(share));
            }
        }
        Err(refusal) => {
            for w in waiters {
                let _ = w.done.send(Err(refusal.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftmq_machine::{Millis, PopId, QueueOffset, Receipt};

    fn key(group: &str) -> PopKey {
        PopKey {
            group: GroupName::new(group).expect("valid group"),
            topic: TopicName::new("t").expect("valid topic"),
            queue: None,
            filter: Filter::of(None).expect("no filter"),
            invisible_ms: 30_000,
        }
    }

    fn popped(offset: u64) -> Popped {
        let queue = QueueId(0);
        let receipt = Receipt { broker_group: "g".into(), queue, offset: QueueOffset(offset), pop_id: PopId(offset) };
        Popped { queue, offset: QueueOffset(offset), attempt: 1, receipt, visible_at: Millis(0) }
    }

    fn waiter(max: u32) -> (PopWaiter, oneshot::Receiver<PopOutcome>) {
        let (done, rx) = oneshot::channel();
        (PopWaiter { key: key("g"), max, done }, rx)
    }

    fn offsets(rx: &mut oneshot::Receiver<PopOutcome>) -> Vec<u64> {
        match rx.try_recv() {
            Ok(Ok(p)) => p.iter().map(|p| p.offset.0).collect(),
            other => panic!("expected messages, got {other:?}"),
        }
    }

    #[test]
    fn one_pop_is_shared_in_order_up_to_each_max() {
        let (a, mut ra) = waiter(2);
        let (b, mut rb) = waiter(3);
        let (c, mut rc) = waiter(4);
        answer(vec![a, b, c], Ok((0..6).map(popped).collect()));
        assert_eq!(offsets(&mut ra), [0, 1]);
        assert_eq!(offsets(&mut rb), [2, 3, 4]);
        assert_eq!(offsets(&mut rc), [5], "the last waiter gets what is left");
    }

    #[test]
    fn a_refusal_reaches_every_waiter() {
        let (a, mut ra) = waiter(1);
        let (b, mut rb) = waiter(1);
        answer(vec![a, b], Err(Refusal::unavailable("no leader")));
        for rx in [&mut ra, &mut rb] {
            assert!(matches!(rx.try_recv(), Ok(Err(r)) if r.message.contains("no leader")));
        }
    }

    #[tokio::test]
    async fn receives_waiting_behind_a_pop_are_served_by_one_pop() {
        let locks = Arc::new(PopLocks::default());
        let Turn::Serve { guard, waiters, answer: first } = locks.turn(key("g"), 1).await else {
            panic!("the first receive holds the lock");
        };
        assert_eq!(waiters.len(), 1, "only itself was waiting");
        // Two receives of the group queue while the first pop is in flight.
        let queued: Vec<_> = [2, 3]
            .into_iter()
            .map(|max| {
                let locks = locks.clone();
                tokio::spawn(async move {
                    match locks.turn(key("g"), max).await {
                        Turn::Served(outcome) => (false, outcome),
                        Turn::Serve { guard, waiters, answer: mut mine } => {
                            assert_eq!(waiters.len(), 2, "the holder takes both waiting receives");
                            pops_answer(waiters, 0..5);
                            drop(guard);
                            (true, mine.try_recv().expect("answered itself"))
                        }
                    }
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while locks.stripe("g", "t").waiting.lock().len() < 2 {
            assert!(std::time::Instant::now() < deadline, "the receives did not queue");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        answer(waiters, Ok(vec![popped(9)]));
        drop(first);
        drop(guard);
        let mut served_by_other = 0;
        let mut got = Vec::new();
        for task in queued {
            let (held, outcome) = task.await.expect("receive task");
            served_by_other += usize::from(!held);
            got.extend(outcome.expect("messages").into_iter().map(|p| p.offset.0));
        }
        assert_eq!(served_by_other, 1, "one receive held the lock, the other was served by its pop");
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 3, 4], "one pop of five messages, shared without overlap");
    }

    fn pops_answer(waiters: Vec<PopWaiter>, offsets: std::ops::Range<u64>) {
        answer(waiters, Ok(offsets.map(popped).collect()));
    }
}
