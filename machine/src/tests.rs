//! State machine tests: plain values in, plain values out. [`World`] stands for one node:
//! the machine plus the ConsumeQueue its dispatch derives from the applied entries.

mod props;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::*;
use crate::plan::{Fresh, PopScope};
use crate::timer::{Fire, MAX_FIRES_PER_COMMAND, TimerState};
use crate::types::{StoredMessage, TagFilter, tag_hash};

fn topic(name: &str) -> TopicName {
    TopicName::readable(name).expect("valid topic")
}

fn group(name: &str) -> GroupName {
    GroupName::new(name).expect("valid group")
}

/// A ConsumeQueue record as the tests keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rec {
    log_index: LogIndex,
    slot: u32,
    tag: Option<u64>,
    group: Option<u64>,
}

/// A machine and the ConsumeQueue that dispatch writes after each applied entry: a message
/// gets a record when the state after the entry accepts it, and a deleted topic loses its
/// records, as the broker's dispatch does.
#[derive(Debug, Default)]
struct World {
    m: Machine,
    cq: BTreeMap<(TopicName, QueueId), Vec<Rec>>,
    /// Dispatch's record of the last accepted `FireTimers`.
    last_fire: LogIndex,
}

impl World {
    fn new() -> Self {
        Self { m: Machine::new("g1"), cq: BTreeMap::new(), last_fire: LogIndex(0) }
    }

    fn next(&self) -> LogIndex {
        self.m.last_applied().next()
    }

    /// Applies `command` at the next index and dispatches it.
    fn apply(&mut self, command: Command) -> Response {
        let index = self.next();
        let response = self.m.apply(index, &command);
        dispatch(&self.m, &mut self.cq, &mut self.last_fire, index, &command);
        response
    }

    fn create(&mut self, t: &str, queues: u32) {
        let r = self.apply(Command::UpsertTopic { topic: topic(t), config: TopicConfig::all_types(queues) });
        assert_eq!(r, Response::Done);
    }

    /// A message for the current incarnation of `t` (epoch 0 if there is none).
    fn msg(&self, t: &str, queue: u32, tag: Option<&str>, body: &str) -> StoredMessage {
        let epoch = self.m.topic_epoch(&topic(t)).unwrap_or_default();
        message(t, epoch, queue, tag, body)
    }

    fn send_at(&mut self, now: i64, messages: Vec<StoredMessage>) -> Vec<Result<Sent, CommandError>> {
        let messages = MessageBatch::encode(&messages).expect("encodes");
        match self.apply(Command::Send { now: Millis(now), messages, proposal: None }) {
            Response::Sent(r) => r,
            other => panic!("send answered {other:?}"),
        }
    }

    fn pop_with(&mut self, now: i64, g: &str, t: &str, max: u32, filter: &str, invisible_ms: u64) -> Vec<Popped> {
        let filter = TagFilter::parse(filter).expect("valid filter");
        let takes = self.plan(now, g, t, max, &filter);
        let cmd = Command::Pop { now: Millis(now), group: group(g), topic: topic(t), invisible_ms, takes };
        match self.apply(cmd) {
            Response::Popped(p) => p,
            other => panic!("pop failed: {other:?}"),
        }
    }

    fn pop(&mut self, now: i64, g: &str, t: &str, max: u32, filter: &str) -> Vec<Popped> {
        self.pop_with(now, g, t, max, filter, 1000)
    }

    fn plan(&self, now: i64, g: &str, t: &str, max: u32, filter: &TagFilter) -> Vec<PopTake> {
        let name = topic(t);
        let read = |q: QueueId, from: u64, end: u64| -> Result<Vec<Fresh>, ()> {
            let recs = self.cq.get(&(name.clone(), q)).map_or(&[][..], Vec::as_slice);
            let end = (end as usize).min(recs.len());
            Ok(recs
                .get(from as usize..end)
                .unwrap_or(&[])
                .iter()
                .map(|r| Fresh { tag: r.tag, group: r.group, at: Some((r.log_index, Slot(r.slot))) })
                .collect())
        };
        let g = group(g);
        let accept = |f: &Fresh| Ok(filter.matches(f.tag));
        self.m.plan_pop(Millis(now), PopScope::all(&g, &name), max, accept, read).expect("reads never fail here")
    }

    fn ack(&mut self, g: &str, t: &str, receipts: Vec<Receipt>) -> Vec<Result<(), CommandError>> {
        match self.apply(Command::Ack { group: group(g), topic: topic(t), receipts }) {
            Response::Acked(r) => r,
            other => panic!("ack failed: {other:?}"),
        }
    }

    fn record(&self, t: &str, queue: u32, offset: QueueOffset) -> Rec {
        self.cq[&(topic(t), QueueId(queue))][offset.0 as usize]
    }
}

fn message(t: &str, epoch: LogIndex, queue: u32, tag: Option<&str>, body: &str) -> StoredMessage {
    StoredMessage {
        topic: topic(t),
        queue: QueueId(queue),
        topic_epoch: epoch,
        message_id: format!("id-{body}"),
        tag: tag.map(str::to_string),
        keys: vec![],
        message_group: None,
        properties: BTreeMap::new(),
        born: Millis(1),
        deliver_at: None,
        transactional: false,
        born_host: "127.0.0.1".into(),
        body: Bytes::copy_from_slice(body.as_bytes()),
        body_gzip: false,
    }
}

/// The broker's dispatch rule over an applied entry, judged by the state `m` (the state after
/// the entry, or any later one).
fn dispatch(
    m: &Machine,
    cq: &mut BTreeMap<(TopicName, QueueId), Vec<Rec>>,
    last_fire: &mut LogIndex,
    index: LogIndex,
    command: &Command,
) {
    match command {
        Command::Send { now, messages, .. } => {
            for (slot, msg) in messages.iter() {
                let msg = msg.expect("decodes");
                if m.accepts(&msg, index).is_ok() && !msg.transactional && !timer::scheduled(msg.deliver_at, *now) {
                    let tag = msg.tag.as_deref().map(tag_hash);
                    let group = msg.message_group.as_deref().map(tag_hash);
                    cq.entry((msg.topic.clone(), msg.queue)).or_default().push(Rec {
                        log_index: index,
                        slot: slot.0,
                        tag,
                        group,
                    });
                }
            }
        }
        Command::FireTimers { prev_fire, fires, drops, .. } => {
            for f in m.fired(last_fire, index, *prev_fire, fires, drops.len()) {
                // The broker reads the tag from the message in the log; these tests fire
                // untagged messages.
                let rec = Rec { log_index: f.log_index, slot: f.slot.0, tag: None, group: None };
                cq.entry((f.head.topic.clone(), f.head.queue)).or_default().push(rec);
            }
        }
        Command::Pop { group, takes, .. } => {
            if let Some(dlq) = m.dead_letter_topic_at(group, index) {
                for d in takes.iter().flat_map(|t| &t.dead) {
                    let rec = Rec { log_index: d.log_index, slot: d.slot.0, tag: None, group: None };
                    cq.entry((dlq.clone(), QueueId(0))).or_default().push(rec);
                }
            }
        }
        Command::ForwardToDeadLetter { group, letter, .. } => {
            if let Some(dlq) = m.dead_letter_topic_at(group, index) {
                let rec = Rec { log_index: letter.log_index, slot: letter.slot.0, tag: None, group: None };
                cq.entry((dlq, QueueId(0))).or_default().push(rec);
            }
        }
        Command::DeleteTopic { topic } => cq.retain(|(t, _), _| t != topic),
        _ => {}
    }
}

#[test]
fn send_assigns_consecutive_offsets_per_queue() {
    let mut w = World::new();
    w.create("t", 2);
    let messages =
        vec![w.msg("t", 0, None, "a"), w.msg("t", 1, None, "b"), w.msg("t", 0, None, "c"), w.msg("t", 5, None, "d")];
    let results = w.send_at(50, messages);
    assert_eq!(results[0], Ok(Sent { queue: QueueId(0), offset: Some(QueueOffset(0)) }));
    assert_eq!(results[1], Ok(Sent { queue: QueueId(1), offset: Some(QueueOffset(0)) }));
    assert_eq!(results[2], Ok(Sent { queue: QueueId(0), offset: Some(QueueOffset(1)) }));
    assert!(matches!(results[3], Err(CommandError::QueueNotFound { queue: 5, count: 2, .. })));
    assert_eq!(w.record("t", 0, QueueOffset(1)), Rec { log_index: LogIndex(2), slot: 2, tag: None, group: None });
    let q0 = w.m.queue(&topic("t"), QueueId(0)).expect("queue");
    assert_eq!((q0.min_offset(), q0.max_offset()), (0, 2));
}

#[test]
fn a_message_for_a_missing_or_recreated_topic_is_not_stored() {
    let mut w = World::new();
    let r = w.send_at(1, vec![w.msg("t", 0, None, "x")]);
    assert_eq!(r, vec![Err(CommandError::TopicNotFound("t".into()))]);
    w.create("t", 2);
    let first_epoch = w.m.topic_epoch(&topic("t")).expect("exists");
    assert_eq!(
        w.send_at(1, vec![w.msg("t", 1, None, "x")]),
        vec![Ok(Sent { queue: QueueId(1), offset: Some(QueueOffset(0)) })]
    );
    // Deleted and created anew while a send checked against the old one was in flight.
    assert_eq!(w.apply(Command::DeleteTopic { topic: topic("t") }), Response::Done);
    w.create("t", 2);
    assert_ne!(w.m.topic_epoch(&topic("t")), Some(first_epoch));
    let stale = message("t", first_epoch, 1, None, "late");
    assert_eq!(w.send_at(1, vec![stale]), vec![Err(CommandError::TopicChanged("t".into()))]);
    assert_eq!(w.m.queue(&topic("t"), QueueId(1)).map(Queue::max_offset), Some(0), "the new topic starts empty");
    assert!(!w.cq.contains_key(&(topic("t"), QueueId(1))), "dispatch wrote nothing for it either");
    // An update keeps the incarnation (and the queues' offsets).
    let epoch = w.m.topic_epoch(&topic("t"));
    assert_eq!(w.apply(Command::UpsertTopic { topic: topic("t"), config: TopicConfig::all_types(4) }), Response::Done);
    assert_eq!(w.m.topic_epoch(&topic("t")), epoch);
}

#[test]
fn popped_messages_are_invisible_until_timeout_and_acked_ones_never_return() {
    let mut w = World::new();
    w.create("t", 1);
    let messages = (0..5).map(|i| w.msg("t", 0, None, &i.to_string())).collect();
    w.send_at(0, messages);
    let first = w.pop(10, "cg", "t", 3, "*");
    assert_eq!(first.iter().map(|p| p.offset.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(first.iter().all(|p| p.attempt == 1 && p.visible_at == Millis(1010)));
    let second = w.pop(20, "cg", "t", 10, "*");
    assert_eq!(second.iter().map(|p| p.offset.0).collect::<Vec<_>>(), vec![3, 4]);
    assert!(w.pop(30, "cg", "t", 10, "*").is_empty(), "everything is invisible");
    assert_eq!(w.ack("cg", "t", vec![first[0].receipt.clone(), first[2].receipt.clone()]), vec![Ok(()), Ok(())]);
    // After the invisible time, only the unacknowledged ones come back, with attempt 2.
    let again = w.pop(2000, "cg", "t", 10, "*");
    assert_eq!(again.iter().map(|p| (p.offset.0, p.attempt)).collect::<Vec<_>>(), vec![(1, 2), (3, 2), (4, 2)]);
    // The receipt of the first delivery of offset 1 is stale now.
    assert!(matches!(w.ack("cg", "t", vec![first[1].receipt.clone()])[0], Err(CommandError::InvalidReceipt(_))));
    // Another group sees every message.
    assert_eq!(w.pop(2000, "other", "t", 10, "*").len(), 5);
}

#[test]
fn tag_filter_skips_other_tags_for_the_group() {
    let mut w = World::new();
    w.create("t", 1);
    let messages = vec![
        w.msg("t", 0, Some("A"), "1"),
        w.msg("t", 0, Some("B"), "2"),
        w.msg("t", 0, None, "3"),
        w.msg("t", 0, Some("A"), "4"),
    ];
    w.send_at(0, messages);
    let got = w.pop(10, "cg", "t", 10, "A");
    assert_eq!(got.iter().map(|p| p.offset.0).collect::<Vec<_>>(), vec![0, 3]);
    assert_eq!(got.iter().map(|p| w.record("t", 0, p.offset).slot).collect::<Vec<_>>(), vec![0, 3]);
    w.ack("cg", "t", got.iter().map(|p| p.receipt.clone()).collect());
    assert_eq!(w.m.pop_state(&group("cg"), &topic("t"), QueueId(0)).map(|s| s.ack_offset), Some(4));
}

#[test]
fn a_stale_or_malformed_plan_takes_nothing_twice() {
    let mut w = World::new();
    w.create("t", 1);
    let messages = (0..4).map(|i| w.msg("t", 0, None, &i.to_string())).collect();
    w.send_at(0, messages);
    // Two receives plan from the same state; the second plan is stale once the first applied.
    let plan_a = w.plan(10, "cg", "t", 2, &TagFilter::All);
    let plan_b = w.plan(10, "cg", "t", 2, &TagFilter::All);
    let pop =
        |takes| Command::Pop { now: Millis(10), group: group("cg"), topic: topic("t"), invisible_ms: 1000, takes };
    let Response::Popped(a) = w.apply(pop(plan_a)) else { panic!("pop a") };
    let Response::Popped(b) = w.apply(pop(plan_b)) else { panic!("pop b") };
    assert_eq!(a.iter().map(|p| p.offset.0).collect::<Vec<_>>(), vec![0, 1]);
    assert!(b.is_empty(), "the stale plan took nothing: {b:?}");
    // A plan naming offsets outside its range, or past the queue's end, takes nothing fresh.
    let bad = |from, end, deliver: Vec<u64>| PopTake {
        queue: QueueId(0),
        redeliver: vec![QueueOffset(0)],
        fresh_from: QueueOffset(from),
        fresh_end: QueueOffset(end),
        deliver: deliver.into_iter().map(QueueOffset).collect(),
        ..PopTake::default()
    };
    for take in [bad(2, 3, vec![3]), bad(2, 9, vec![2]), bad(2, 4, vec![3, 2]), bad(3, 4, vec![3])] {
        let Response::Popped(got) = w.apply(pop(vec![take.clone()])) else { panic!("pop") };
        assert!(got.is_empty(), "{take:?} took {got:?} (offset 0 is still invisible)");
    }
    assert_eq!(w.m.pop_state(&group("cg"), &topic("t"), QueueId(0)).map(|s| s.next_fresh), Some(2));
}

#[test]
fn change_invisible_extends_and_replaces_the_receipt() {
    let mut w = World::new();
    w.create("t", 1);
    w.send_at(0, vec![w.msg("t", 0, None, "x")]);
    let p = w.pop(0, "cg", "t", 1, "*").remove(0);
    let cmd = |receipt: Receipt| Command::ChangeInvisible {
        now: Millis(500),
        group: group("cg"),
        topic: topic("t"),
        receipt,
        invisible_ms: 5000,
    };
    let Response::Changed(newer) = w.apply(cmd(p.receipt.clone())) else { panic!("change failed") };
    assert_ne!(newer, p.receipt);
    assert!(w.pop(2000, "cg", "t", 1, "*").is_empty(), "still invisible at 2000");
    assert!(matches!(w.apply(cmd(p.receipt.clone())), Response::Failed(CommandError::InvalidReceipt(_))));
    assert_eq!(w.ack("cg", "t", vec![newer]), vec![Ok(())]);
}

#[test]
fn offsets_topics_and_deletes() {
    let mut w = World::new();
    w.create("t", 4);
    assert!(matches!(
        w.apply(Command::UpsertTopic { topic: topic("t"), config: TopicConfig::all_types(2) }),
        Response::Failed(CommandError::BadConfig(_))
    ));
    let commit =
        Command::CommitOffset { group: group("g"), topic: topic("t"), queue: QueueId(3), offset: QueueOffset(42) };
    assert_eq!(w.apply(commit.clone()), Response::Done);
    assert_eq!(w.m.committed_offset(&group("g"), &topic("t"), QueueId(3)), Some(QueueOffset(42)));
    assert_eq!(w.apply(Command::DeleteTopic { topic: topic("t") }), Response::Done);
    assert_eq!(w.m.committed_offset(&group("g"), &topic("t"), QueueId(3)), None);
    assert!(matches!(w.apply(commit), Response::Failed(CommandError::TopicNotFound(_))));
}

#[test]
fn trim_moves_minimums_pop_state_and_committed_offsets() {
    let mut w = World::new();
    w.create("t", 2);
    for queue in [0, 1, 0, 0, 1] {
        w.send_at(5, vec![w.msg("t", queue, None, "x")]);
    }
    let held = w.pop(0, "cg", "t", 10, "*");
    assert_eq!(held.len(), 5);
    let commit = |q, offset| Command::CommitOffset {
        group: group("pull"),
        topic: topic("t"),
        queue: QueueId(q),
        offset: QueueOffset(offset),
    };
    w.apply(commit(0, 0));
    w.apply(commit(1, 2));

    let mins = vec![(topic("t"), QueueId(0), QueueOffset(2)), (topic("t"), QueueId(1), QueueOffset(1))];
    assert_eq!(w.apply(Command::TrimQueues { mins }), Response::Done);
    let q0 = *w.m.queue(&topic("t"), QueueId(0)).expect("queue");
    let q1 = *w.m.queue(&topic("t"), QueueId(1)).expect("queue");
    assert_eq!((q0.min_offset(), q0.max_offset()), (2, 3));
    assert_eq!((q1.min_offset(), q1.max_offset()), (1, 2));
    assert_eq!(w.m.committed_offset(&group("pull"), &topic("t"), QueueId(0)), Some(QueueOffset(2)));
    assert_eq!(w.m.committed_offset(&group("pull"), &topic("t"), QueueId(1)), Some(QueueOffset(2)), "ahead stays");
    let state = w.m.pop_state(&group("cg"), &topic("t"), QueueId(0)).expect("popped before");
    assert_eq!((state.ack_offset, state.next_fresh, state.inflight_count()), (2, 3, 1));

    // Receipts of trimmed messages fail cleanly; the kept ones still work.
    let kept = |p: &Popped| p.offset.0 >= if p.queue == QueueId(0) { 2 } else { 1 };
    for p in &held {
        let result = w.ack("cg", "t", vec![p.receipt.clone()]).remove(0);
        if kept(p) {
            assert_eq!(result, Ok(()), "{p:?}");
        } else {
            assert!(matches!(result, Err(CommandError::InvalidReceipt(_))), "{p:?}: {result:?}");
        }
    }
    // A new group starts at the new minimums; a trim below them, or past the end, is bounded.
    let fresh: BTreeSet<(u32, u64)> = w.pop(0, "new", "t", 10, "*").iter().map(|p| (p.queue.0, p.offset.0)).collect();
    assert_eq!(fresh, BTreeSet::from([(0, 2), (1, 1)]));
    let mins = vec![(topic("t"), QueueId(0), QueueOffset(1)), (topic("t"), QueueId(1), QueueOffset(99))];
    assert_eq!(w.apply(Command::TrimQueues { mins }), Response::Done);
    assert_eq!(w.m.queue(&topic("t"), QueueId(0)).map(|q| q.min_offset()), Some(2), "never down");
    assert_eq!(w.m.queue(&topic("t"), QueueId(1)).map(|q| (q.min_offset(), q.max_offset())), Some((2, 2)));
}

#[test]
fn limits_are_refused_with_a_clear_error() {
    let mut w = World::new();
    w.create("t", 1);
    let receipt = Receipt { broker_group: "g1".into(), queue: QueueId(0), offset: QueueOffset(0), pop_id: PopId(0) };
    let receipts = vec![receipt; MAX_RECEIPTS_PER_ACK + 1];
    let r = w.apply(Command::Ack { group: group("cg"), topic: topic("t"), receipts });
    assert!(matches!(r, Response::Failed(CommandError::LimitReached(ref m)) if m.contains("receipts")), "{r:?}");
    let mins = vec![(topic("t"), QueueId(0), QueueOffset(0)); MAX_TRIM_QUEUES + 1];
    assert!(matches!(w.apply(Command::TrimQueues { mins }), Response::Failed(CommandError::LimitReached(_))));
}

#[test]
fn store_times_never_go_backwards_when_a_leader_clock_is_behind() {
    let mut w = World::new();
    w.create("t", 1);
    w.send_at(1_000, vec![w.msg("t", 0, None, "x")]);
    // A new leader whose clock is 400 ms behind the old one's.
    w.send_at(600, vec![w.msg("t", 0, None, "y")]);
    assert_eq!(w.m.clock(), Millis(1_000));
    // Visibility deadlines are computed from the kept clock too.
    let popped = w.pop(700, "cg", "t", 1, "*");
    assert_eq!(popped[0].visible_at, Millis(2_000), "1 s invisibility from the clock, not from 700");
}

#[test]
#[should_panic(expected = "indexes must grow")]
fn applying_an_older_log_index_is_a_bug() {
    let mut w = World::new();
    w.create("t", 1);
    w.m.apply(LogIndex(1), &Command::DeleteTopic { topic: topic("t") });
}

/// A message for `t` due at `at` (ms).
fn delayed(w: &World, t: &str, queue: u32, at: i64, body: &str) -> StoredMessage {
    StoredMessage { deliver_at: Some(Millis(at)), ..w.msg(t, queue, None, body) }
}

fn fire_of(index: u64, slot: u32, m: &StoredMessage) -> Fire {
    Fire { log_index: LogIndex(index), slot: Slot(slot), head: m.head() }
}

#[test]
fn a_delay_message_waits_for_its_timer_and_fires_once() {
    let mut w = World::new();
    w.create("t", 2);
    let later = delayed(&w, "t", 0, 5_000, "later");
    let due = delayed(&w, "t", 0, 900, "due");
    let send_index = w.next().0;
    let r = w.send_at(1_000, vec![later.clone(), due, w.msg("t", 0, None, "plain")]);
    // Scheduled: no offset; a delivery time already past and a plain message are stored.
    assert_eq!(r[0], Ok(Sent { queue: QueueId(0), offset: None }));
    assert_eq!(r[1], Ok(Sent { queue: QueueId(0), offset: Some(QueueOffset(0)) }));
    assert_eq!(r[2], Ok(Sent { queue: QueueId(0), offset: Some(QueueOffset(1)) }));
    assert_eq!(w.m.timers().pending, 1);
    assert_eq!(w.cq[&(topic("t"), QueueId(0))].len(), 2, "the scheduled message has no record yet");

    // Fired: the next offset of its queue, once.
    let fire = Command::FireTimers {
        now: Millis(5_000),
        prev_fire: LogIndex(0),
        fires: vec![fire_of(send_index, 0, &later)],
        drops: vec![],
    };
    let fire_index = w.next();
    assert_eq!(
        w.apply(fire.clone()),
        Response::Sent(vec![Ok(Sent { queue: QueueId(0), offset: Some(QueueOffset(2)) })])
    );
    assert_eq!(w.m.timers(), TimerState { pending: 0, last_fire: fire_index });
    assert_eq!(
        w.record("t", 0, QueueOffset(2)),
        Rec { log_index: LogIndex(send_index), slot: 0, tag: None, group: None }
    );

    // The same plan again (an old leader's) is stale: nothing fires twice.
    assert!(matches!(w.apply(fire), Response::Failed(CommandError::StalePlan(_))));
    assert_eq!(w.m.queue(&topic("t"), QueueId(0)).map(Queue::max_offset), Some(3));
    assert_eq!(w.cq[&(topic("t"), QueueId(0))].len(), 3);
}

#[test]
fn a_fire_names_each_message_once_and_skips_deleted_topics() {
    let mut w = World::new();
    w.create("t", 1);
    w.create("gone", 1);
    let a = delayed(&w, "t", 0, 9_000, "a");
    let b = delayed(&w, "gone", 0, 9_000, "b");
    let index = w.next().0;
    w.send_at(1_000, vec![a.clone(), b.clone()]);
    assert_eq!(w.m.timers().pending, 2);
    assert_eq!(w.apply(Command::DeleteTopic { topic: topic("gone") }), Response::Done);
    let fires = vec![fire_of(index, 0, &a), fire_of(index, 0, &a), fire_of(index, 1, &b)];
    let Response::Sent(r) =
        w.apply(Command::FireTimers { now: Millis(9_000), prev_fire: LogIndex(0), fires, drops: vec![] })
    else {
        panic!("the fire is taken");
    };
    assert_eq!(r[0], Ok(Sent { queue: QueueId(0), offset: Some(QueueOffset(0)) }));
    assert!(matches!(r[1], Err(CommandError::StalePlan(_))), "named twice: {:?}", r[1]);
    assert!(matches!(r[2], Err(CommandError::TopicNotFound(_))), "{:?}", r[2]);
    assert_eq!(w.m.timers().pending, 0);
    assert_eq!(w.cq[&(topic("t"), QueueId(0))].len(), 1, "dispatch agrees with apply");

    let too_many = vec![fire_of(index, 0, &a); MAX_FIRES_PER_COMMAND + 1];
    let prev_fire = w.m.timers().last_fire;
    let r = w.apply(Command::FireTimers { now: Millis(9_000), prev_fire, fires: too_many, drops: vec![] });
    assert!(matches!(r, Response::Failed(CommandError::LimitReached(_))), "{r:?}");
    assert_eq!(w.m.timers().last_fire, prev_fire, "a refused fire is not the last fire");
}

#[test]
fn a_fifo_group_gets_each_message_group_in_order_one_at_a_time() {
    let mut w = World::new();
    w.create("t", 1);
    let r = w.apply(Command::UpsertGroup {
        group: group("ordered"),
        config: GroupConfig { fifo: true, ..GroupConfig::default() },
    });
    assert_eq!(r, Response::Done);
    let m = |w: &World, body: &str, g: Option<&str>| StoredMessage {
        message_group: g.map(str::to_string),
        ..w.msg("t", 0, None, body)
    };
    // Offsets 0..6: a1 b1 a2 plain b2 a3.
    let batch = vec![
        m(&w, "a1", Some("a")),
        m(&w, "b1", Some("b")),
        m(&w, "a2", Some("a")),
        m(&w, "plain", None),
        m(&w, "b2", Some("b")),
        m(&w, "a3", Some("a")),
    ];
    w.send_at(10, batch);
    let offsets = |p: &[Popped]| p.iter().map(|p| p.offset.0).collect::<Vec<_>>();

    // One message per group in flight; the one without a group flows.
    let first = w.pop(100, "ordered", "t", 10, "*");
    assert_eq!(offsets(&first), [0, 1, 3]);
    assert!(w.pop(100, "ordered", "t", 10, "*").is_empty(), "a2, b2 and a3 wait for their groups");
    assert!(!w.m.pop_outlook(PopScope::all(&group("ordered"), &topic("t")), Millis(100)).0);
    // Progress counts the deferred as ready (never delivered), not as in flight.
    let p = &w.m.group_progress(&group("ordered"))[0];
    assert_eq!((p.inflight, p.deferred, p.ready()), (3, 3, 3));
    // a1 acked: a2 is next, b2 still waits for b1.
    let a1 = first.iter().find(|p| p.offset.0 == 0).expect("a1").receipt.clone();
    assert_eq!(w.ack("ordered", "t", vec![a1]), vec![Ok(())]);
    assert!(w.m.pop_outlook(PopScope::all(&group("ordered"), &topic("t")), Millis(100)).0);
    let second = w.pop(100, "ordered", "t", 10, "*");
    assert_eq!(offsets(&second), [2]);
    // Nothing more is acked: when their invisibility ends b1, a2 and the plain one come
    // again, a2 before a3.
    let again = w.pop(1_200, "ordered", "t", 10, "*");
    assert_eq!(again.iter().map(|p| (p.offset.0, p.attempt)).collect::<Vec<_>>(), [(1, 2), (2, 2), (3, 2)]);
    let acks: Vec<Receipt> = again.iter().map(|p| p.receipt.clone()).collect();
    assert_eq!(w.ack("ordered", "t", acks), vec![Ok(()), Ok(()), Ok(())]);
    let third = w.pop(1_200, "ordered", "t", 10, "*");
    assert_eq!(offsets(&third), [4, 5], "b2 and a3 once b1 and a2 are acked");

    // A group without the setting gets everything at once.
    assert_eq!(offsets(&w.pop(100, "plain-readers", "t", 10, "*")), [0, 1, 2, 3, 4, 5]);
}

#[test]
fn a_message_delivered_as_often_as_allowed_goes_to_the_dead_letter_queue() {
    let mut w = World::new();
    w.create("t", 1);
    let config = GroupConfig { fifo: true, max_attempts: 2 };
    assert_eq!(w.apply(Command::UpsertGroup { group: group("billing"), config }), Response::Done);
    let bad = w.apply(Command::UpsertGroup { group: group("x"), config: GroupConfig { max_attempts: 0, ..config } });
    assert!(matches!(bad, Response::Failed(CommandError::BadConfig(_))), "{bad:?}");
    let index = w.next();
    let m =
        |w: &World, body: &str| StoredMessage { message_group: Some("order-1".into()), ..w.msg("t", 0, None, body) };
    w.send_at(10, vec![m(&w, "poison"), m(&w, "next")]);
    // Delivered twice, never acked: then dead-lettered, and the next of its group comes.
    assert_eq!(
        w.pop(100, "billing", "t", 10, "*").iter().map(|p| (p.offset.0, p.attempt)).collect::<Vec<_>>(),
        [(0, 1)]
    );
    assert_eq!(
        w.pop(1_200, "billing", "t", 10, "*").iter().map(|p| (p.offset.0, p.attempt)).collect::<Vec<_>>(),
        [(0, 2)]
    );
    let dlq = group("billing").dead_letter_topic().expect("short name");
    assert_eq!(dlq.as_str(), "%DLQ%billing");
    assert!(w.m.topic(&dlq).is_none(), "created on first use");
    assert!(w.pop(2_400, "billing", "t", 10, "*").is_empty(), "the poison message went, its successor waits a plan");
    assert_eq!(w.m.queue(&dlq, QueueId(0)).map(Queue::max_offset), Some(1));
    assert_eq!(w.record("%DLQ%billing", 0, QueueOffset(0)), Rec { log_index: index, slot: 0, tag: None, group: None });
    assert_eq!(w.pop(2_400, "billing", "t", 10, "*").iter().map(|p| p.offset.0).collect::<Vec<_>>(), [1]);
    // The dead-letter queue is read like any topic; nothing comes back to the group.
    assert_eq!(w.pop(2_400, "auditors", "%DLQ%billing", 10, "*").iter().map(|p| p.offset.0).collect::<Vec<_>>(), [0]);
    assert!(w.pop(9_000, "billing", "t", 10, "*").iter().all(|p| p.offset.0 == 1));
}

#[test]
fn a_half_message_is_visible_only_once_committed_and_ends_once() {
    let mut w = World::new();
    w.create("t", 1);
    let half = |body: &str| StoredMessage { transactional: true, ..w.msg("t", 0, None, body) };
    let (commit, rollback, orphan) = (half("commit"), half("rollback"), half("orphan"));
    let index = w.next().0;
    let r = w.send_at(1_000, vec![commit.clone(), rollback.clone(), orphan.clone()]);
    assert!(r.iter().all(|s| *s == Ok(Sent { queue: QueueId(0), offset: None })), "{r:?}");
    assert_eq!(w.m.transactions().len(), 3);
    assert_eq!(w.m.timers().pending, 0, "half messages are not timers");
    assert!(!w.cq.contains_key(&(topic("t"), QueueId(0))), "no record before a commit");
    let open = &w.m.transactions()[&(LogIndex(index), Slot(2))];
    assert_eq!((open.born, open.checks, open.check_due(6_000, 60_000)), (Millis(1_000), 0, Millis(7_000)));

    // A check-back is counted; the next one is due an interval later.
    let keys = vec![(LogIndex(index), Slot(2)), (LogIndex(999), Slot(0))];
    assert_eq!(w.apply(Command::CheckTransactions { now: Millis(7_000), keys }), Response::Done);
    let open = &w.m.transactions()[&(LogIndex(index), Slot(2))];
    assert_eq!((open.checks, open.check_due(6_000, 60_000)), (1, Millis(67_000)));

    // Commit one, roll back another, in one fire: the committed one takes the next offset.
    let fire = Command::FireTimers {
        now: Millis(8_000),
        prev_fire: LogIndex(0),
        fires: vec![fire_of(index, 0, &commit)],
        drops: vec![(LogIndex(index), Slot(1))],
    };
    assert_eq!(w.apply(fire), Response::Sent(vec![Ok(Sent { queue: QueueId(0), offset: Some(QueueOffset(0)) })]));
    assert_eq!(w.m.transactions().keys().copied().collect::<Vec<_>>(), vec![(LogIndex(index), Slot(2))]);
    assert_eq!(w.record("t", 0, QueueOffset(0)), Rec { log_index: LogIndex(index), slot: 0, tag: None, group: None });
    assert_eq!(w.cq[&(topic("t"), QueueId(0))].len(), 1, "dispatch agrees: the rolled-back one has no record");

    let too_many = vec![(LogIndex(index), Slot(2)); MAX_TRANSACTIONS_PER_COMMAND + 1];
    let prev_fire = w.m.timers().last_fire;
    let r = w.apply(Command::FireTimers { now: Millis(9_000), prev_fire, fires: vec![], drops: too_many });
    assert!(matches!(r, Response::Failed(CommandError::LimitReached(_))), "{r:?}");
    assert_eq!(w.m.transactions().len(), 1, "a refused fire rolls nothing back");
}

#[test]
fn group_progress_lists_every_queue_of_the_topics_a_group_consumed() {
    let mut w = World::new();
    w.create("t", 3);
    w.send_at(
        10,
        vec![w.msg("t", 0, None, "a"), w.msg("t", 0, None, "b"), w.msg("t", 1, None, "c"), w.msg("t", 2, None, "d")],
    );
    assert!(w.m.group_progress(&group("g")).is_empty(), "no state, no progress");
    // A pull consumer committed queue 0 at 1.
    let commit =
        Command::CommitOffset { group: group("g"), topic: topic("t"), queue: QueueId(0), offset: QueueOffset(1) };
    assert_eq!(w.apply(commit), Response::Done);
    let p = w.m.group_progress(&group("g"));
    let rows: Vec<(u32, u64, u64, u64)> =
        p.iter().map(|q| (q.queue.0, q.max_offset, q.consumer_offset(), q.lag())).collect();
    assert_eq!(rows, [(0, 2, 1, 1), (1, 1, 0, 1), (2, 1, 0, 1)]);
    assert_eq!(p[1].ready(), 1);
}

#[test]
fn reset_offset_moves_receives_and_commits_and_forgets_what_was_in_flight() {
    let mut w = World::new();
    w.create("t", 2);
    let msgs: Vec<_> = (0..4).map(|i| w.msg("t", 0, None, &format!("m{i}"))).collect();
    w.send_at(10, msgs);
    let popped = w.pop_with(20, "g", "t", 2, "*", 60_000);
    assert_eq!(popped.len(), 2);
    // Back to the start of queue 0 (and far past the end of queue 1: clamped).
    let reset = Command::ResetOffset {
        group: group("g"),
        topic: topic("t"),
        offsets: vec![(QueueId(0), QueueOffset(0)), (QueueId(1), QueueOffset(99))],
    };
    assert_eq!(w.apply(reset), Response::Done);
    let state = w.m.pop_state(&group("g"), &topic("t"), QueueId(0)).expect("state");
    assert_eq!((state.ack_offset, state.next_fresh, state.inflight_count()), (0, 0, 0));
    assert_eq!(w.m.committed_offset(&group("g"), &topic("t"), QueueId(1)), Some(QueueOffset(0)));
    // The old receipts no longer ack; the messages are delivered again.
    let ack = Command::Ack { group: group("g"), topic: topic("t"), receipts: vec![popped[0].receipt.clone()] };
    assert!(matches!(w.apply(ack), Response::Acked(r) if r[0].is_err()));
    assert_eq!(w.pop_with(30, "g", "t", 4, "*", 60_000).len(), 4);
    // A queue that does not exist refuses the whole reset.
    let bad = Command::ResetOffset {
        group: group("g"),
        topic: topic("t"),
        offsets: vec![(QueueId(0), QueueOffset(1)), (QueueId(7), QueueOffset(0))],
    };
    assert!(matches!(w.apply(bad), Response::Failed(CommandError::QueueNotFound { .. })));
    assert_eq!(w.m.pop_state(&group("g"), &topic("t"), QueueId(0)).map(|s| s.next_fresh), Some(4));
}

#[test]
fn a_pop_scoped_to_one_queue_takes_only_from_it() {
    let mut w = World::new();
    w.create("t", 3);
    let batch = (0..3).flat_map(|q| [w.msg("t", q, None, "x"), w.msg("t", q, None, "y")]).collect();
    w.send_at(10, batch);
    let (g, t) = (group("push"), topic("t"));
    let scope = PopScope { group: &g, topic: &t, queue: Some(QueueId(1)) };
    let read = |q: QueueId, from: u64, end: u64| -> Result<Vec<Fresh>, ()> {
        let recs = w.cq.get(&(t.clone(), q)).map_or(&[][..], Vec::as_slice);
        let end = (end as usize).min(recs.len());
        Ok(recs[from as usize..end].iter().map(|r| Fresh { tag: r.tag, group: r.group, at: None }).collect())
    };
    let takes = w.m.plan_pop(Millis(100), scope, 10, |_| Ok(true), read).expect("reads never fail here");
    assert_eq!(takes.iter().map(|t| t.queue).collect::<Vec<_>>(), [QueueId(1)]);
    assert_eq!(takes[0].deliver.len(), 2);
    let popped =
        match w.apply(Command::Pop { now: Millis(100), group: g.clone(), topic: t.clone(), invisible_ms: 1000, takes })
        {
            Response::Popped(p) => p,
            other => panic!("pop failed: {other:?}"),
        };
    assert!(popped.iter().all(|p| p.queue == QueueId(1)) && popped.len() == 2);
    assert!(!w.m.pop_outlook(scope, Millis(100)).0, "queue 1 has nothing left");
    assert!(w.m.pop_outlook(PopScope::all(&g, &t), Millis(100)).0, "queues 0 and 2 still have messages");
    let missing = PopScope { queue: Some(QueueId(7)), ..scope };
    assert!(!w.m.pop_outlook(missing, Millis(100)).0, "a queue the topic lacks has nothing");
}

#[test]
fn a_consumer_forwards_a_message_it_holds_to_the_dead_letter_queue() {
    let mut w = World::new();
    w.create("t", 1);
    let config = GroupConfig { fifo: true, ..GroupConfig::default() };
    assert_eq!(w.apply(Command::UpsertGroup { group: group("ordered"), config }), Response::Done);
    let index = w.next();
    let m = |w: &World, body: &str| StoredMessage { message_group: Some("o-1".into()), ..w.msg("t", 0, None, body) };
    w.send_at(10, vec![m(&w, "poison"), m(&w, "next")]);
    let held = w.pop(100, "ordered", "t", 10, "*");
    assert_eq!(held.iter().map(|p| p.offset.0).collect::<Vec<_>>(), [0], "FIFO: one of the message group at a time");
    let letter =
        |p: &Popped| DeadLetter { offset: p.offset, pop_id: p.receipt.pop_id, log_index: index, slot: Slot(0) };
    let forward = Command::ForwardToDeadLetter {
        group: group("ordered"),
        topic: topic("t"),
        queue: QueueId(0),
        letter: letter(&held[0]),
    };
    // Still invisible for a long while, yet forwarded at once: it leaves the group and its
    // successor in the message group comes next.
    assert_eq!(w.apply(forward.clone()), Response::Done);
    let dlq = group("ordered").dead_letter_topic().expect("short name");
    assert_eq!(w.m.queue(&dlq, QueueId(0)).map(Queue::max_offset), Some(1));
    assert_eq!(w.record("%DLQ%ordered", 0, QueueOffset(0)), Rec { log_index: index, slot: 0, tag: None, group: None });
    assert_eq!(w.pop(200, "ordered", "t", 10, "*").iter().map(|p| p.offset.0).collect::<Vec<_>>(), [1]);
    assert!(
        w.pop(5_000_000, "ordered", "t", 10, "*").iter().all(|p| p.offset.0 == 1),
        "the forwarded one never returns"
    );
    // Forwarded again (a retried request): it is appended again but nothing else changes.
    assert_eq!(w.apply(forward), Response::Done);
    assert_eq!(w.m.queue(&dlq, QueueId(0)).map(Queue::max_offset), Some(2));
}
