//! State machine tests: plain values in, plain values out.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::types::StoredMessage;

/// The index after the last one applied.
fn next(m: &Machine) -> LogIndex {
    m.last_applied().next()
}

fn topic(name: &str) -> TopicName {
    TopicName::new(name).expect("valid topic")
}

fn group(name: &str) -> GroupName {
    GroupName::new(name).expect("valid group")
}

fn msg(t: &str, queue: u32, tag: Option<&str>, body: &str) -> StoredMessage {
    StoredMessage {
        topic: topic(t),
        queue: QueueId(queue),
        message_id: format!("id-{body}"),
        tag: tag.map(str::to_string),
        keys: vec![],
        message_group: None,
        properties: BTreeMap::new(),
        born: Millis(1),
        deliver_at: None,
        born_host: "127.0.0.1".into(),
        body: Bytes::copy_from_slice(body.as_bytes()),
        body_gzip: false,
    }
}

fn create(m: &mut Machine, t: &str, queues: u32) {
    let r = m.apply(next(m), &Command::UpsertTopic { topic: topic(t), config: TopicConfig::all_types(queues) });
    assert_eq!(r, Response::Done);
}

fn pop(m: &mut Machine, now: i64, g: &str, t: &str, max: u32, filter: &str) -> Vec<Popped> {
    let cmd = Command::Pop {
        now: Millis(now),
        group: group(g),
        topic: topic(t),
        queue: None,
        max,
        invisible_ms: 1000,
        filter: TagFilter::parse(filter).expect("valid filter"),
    };
    match m.apply(next(m), &cmd) {
        Response::Popped(p) => p,
        other => panic!("pop failed: {other:?}"),
    }
}

fn ack(m: &mut Machine, g: &str, t: &str, receipts: Vec<Receipt>) -> Vec<Result<(), CommandError>> {
    match m.apply(next(m), &Command::Ack { group: group(g), topic: topic(t), receipts }) {
        Response::Acked(r) => r,
        other => panic!("ack failed: {other:?}"),
    }
}

#[test]
fn send_assigns_consecutive_offsets_per_queue() {
    let mut m = Machine::new("g1");
    create(&mut m, "t", 2);
    let r = m.apply(
        next(&m),
        &Command::Send {
            now: Millis(50),
            auto_create_queues: None,
            messages: vec![
                msg("t", 0, None, "a"),
                msg("t", 1, None, "b"),
                msg("t", 0, None, "c"),
                msg("t", 5, None, "d"),
            ],
            proposal: None,
        },
    );
    let Response::Sent(results) = r else { panic!("expected Sent") };
    assert_eq!(results[0], Ok(Sent { queue: QueueId(0), offset: QueueOffset(0) }));
    assert_eq!(results[1], Ok(Sent { queue: QueueId(1), offset: QueueOffset(0) }));
    assert_eq!(results[2], Ok(Sent { queue: QueueId(0), offset: QueueOffset(1) }));
    assert!(matches!(results[3], Err(CommandError::QueueNotFound { queue: 5, count: 2, .. })));
    let rec = m.queue(&topic("t"), QueueId(0)).and_then(|q| q.get(1)).copied().expect("record");
    assert_eq!((rec.log_index, rec.slot, rec.size, rec.stored), (LogIndex(2), Slot(2), 1, Millis(50)));
}

#[test]
fn unknown_topic_fails_unless_auto_create() {
    let mut m = Machine::new("g1");
    let send = |auto| Command::Send {
        now: Millis(1),
        auto_create_queues: auto,
        messages: vec![msg("new", 3, None, "x")],
        proposal: None,
    };
    let Response::Sent(r) = m.apply(next(&m), &send(None)) else { panic!() };
    assert_eq!(r, vec![Err(CommandError::TopicNotFound("new".into()))]);
    let Response::Sent(r) = m.apply(next(&m), &send(Some(8))) else { panic!() };
    assert_eq!(r, vec![Ok(Sent { queue: QueueId(3), offset: QueueOffset(0) })]);
    assert_eq!(m.topic(&topic("new")).map(|c| c.queue_count), Some(8));
}

#[test]
fn popped_messages_are_invisible_until_timeout_and_acked_ones_never_return() {
    let mut m = Machine::new("g1");
    create(&mut m, "t", 1);
    let messages = (0..5).map(|i| msg("t", 0, None, &i.to_string())).collect();
    m.apply(next(&m), &Command::Send { now: Millis(0), auto_create_queues: None, messages, proposal: None });
    let first = pop(&mut m, 10, "cg", "t", 3, "*");
    assert_eq!(first.iter().map(|p| p.offset.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(first.iter().all(|p| p.attempt == 1 && p.visible_at == Millis(1010)));
    let second = pop(&mut m, 20, "cg", "t", 10, "*");
    assert_eq!(second.iter().map(|p| p.offset.0).collect::<Vec<_>>(), vec![3, 4]);
    assert!(pop(&mut m, 30, "cg", "t", 10, "*").is_empty(), "everything is invisible");
    assert_eq!(ack(&mut m, "cg", "t", vec![first[0].receipt.clone(), first[2].receipt.clone()]), vec![Ok(()), Ok(())]);
    // After the invisible time, only the unacknowledged ones come back, with attempt 2.
    let again = pop(&mut m, 2000, "cg", "t", 10, "*");
    assert_eq!(again.iter().map(|p| (p.offset.0, p.attempt)).collect::<Vec<_>>(), vec![(1, 2), (3, 2), (4, 2)]);
    // The receipt of the first delivery of offset 1 is stale now.
    assert!(matches!(ack(&mut m, "cg", "t", vec![first[1].receipt.clone()])[0], Err(CommandError::InvalidReceipt(_))));
    // Another group sees every message.
    assert_eq!(pop(&mut m, 2000, "other", "t", 10, "*").len(), 5);
}

#[test]
fn tag_filter_skips_other_tags_for_the_group() {
    let mut m = Machine::new("g1");
    create(&mut m, "t", 1);
    let messages = vec![
        msg("t", 0, Some("A"), "1"),
        msg("t", 0, Some("B"), "2"),
        msg("t", 0, None, "3"),
        msg("t", 0, Some("A"), "4"),
    ];
    m.apply(next(&m), &Command::Send { now: Millis(0), auto_create_queues: None, messages, proposal: None });
    let got = pop(&mut m, 10, "cg", "t", 10, "A");
    assert_eq!(got.iter().map(|p| p.slot).collect::<Vec<_>>(), vec![Slot(0), Slot(3)]);
    ack(&mut m, "cg", "t", got.iter().map(|p| p.receipt.clone()).collect());
    assert_eq!(m.pop_state(&group("cg"), &topic("t"), QueueId(0)).map(|s| s.ack_offset), Some(4));
}

#[test]
fn change_invisible_extends_and_replaces_the_receipt() {
    let mut m = Machine::new("g1");
    create(&mut m, "t", 1);
    m.apply(
        next(&m),
        &Command::Send {
            now: Millis(0),
            auto_create_queues: None,
            messages: vec![msg("t", 0, None, "x")],
            proposal: None,
        },
    );
    let p = pop(&mut m, 0, "cg", "t", 1, "*").remove(0);
    let cmd = |receipt: Receipt| Command::ChangeInvisible {
        now: Millis(500),
        group: group("cg"),
        topic: topic("t"),
        receipt,
        invisible_ms: 5000,
    };
    let Response::Changed(newer) = m.apply(next(&m), &cmd(p.receipt.clone())) else { panic!("change failed") };
    assert_ne!(newer, p.receipt);
    assert!(pop(&mut m, 2000, "cg", "t", 1, "*").is_empty(), "still invisible at 2000");
    assert!(matches!(m.apply(next(&m), &cmd(p.receipt.clone())), Response::Failed(CommandError::InvalidReceipt(_))));
    assert_eq!(ack(&mut m, "cg", "t", vec![newer]), vec![Ok(())]);
}

#[test]
fn offsets_topics_and_deletes() {
    let mut m = Machine::new("g1");
    create(&mut m, "t", 4);
    assert!(matches!(
        m.apply(next(&m), &Command::UpsertTopic { topic: topic("t"), config: TopicConfig::all_types(2) }),
        Response::Failed(CommandError::BadConfig(_))
    ));
    let commit =
        Command::CommitOffset { group: group("g"), topic: topic("t"), queue: QueueId(3), offset: QueueOffset(42) };
    assert_eq!(m.apply(next(&m), &commit), Response::Done);
    assert_eq!(m.committed_offset(&group("g"), &topic("t"), QueueId(3)), Some(QueueOffset(42)));
    assert_eq!(m.apply(next(&m), &Command::DeleteTopic { topic: topic("t") }), Response::Done);
    assert_eq!(m.committed_offset(&group("g"), &topic("t"), QueueId(3)), None);
    assert!(matches!(m.apply(next(&m), &commit), Response::Failed(CommandError::TopicNotFound(_))));
}

#[derive(Debug, Clone)]
enum Op {
    Send(u32),
    Pop(u32),
    AckSome(prop::sample::Index),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u32..20).prop_map(Op::Send),
        (1u32..20).prop_map(Op::Pop),
        any::<prop::sample::Index>().prop_map(Op::AckSome),
        (0u64..3000).prop_map(Op::Advance),
    ]
}

proptest! {
    /// Pop/ack invariants over random histories: a message is never handed out twice while
    /// invisible, an acked message never comes back, and once everything visible is popped
    /// and acked, each sent message was acked exactly once.
    #[test]
    fn pop_ack_invariants(ops in prop::collection::vec(op(), 1..80)) {
        let mut m = Machine::new("g1");
        create(&mut m, "t", 3);
        let mut now = 0i64;
        let mut sent = 0u64;
        let mut held: Vec<Popped> = Vec::new();
        let mut acked: BTreeSet<(u32, u64)> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Send(n) => {
                    let messages = (0..n).map(|i| msg("t", (sent as u32 + i) % 3, None, "b")).collect();
                    m.apply(next(&m), &Command::Send { now: Millis(now), auto_create_queues: None, messages, proposal: None });
                    sent += u64::from(n);
                }
                Op::Pop(n) => {
                    for p in pop(&mut m, now, "cg", "t", n, "*") {
                        let key = (p.queue.0, p.offset.0);
                        prop_assert!(!acked.contains(&key), "acked message {key:?} delivered again");
                        prop_assert!(!held.iter().any(|h| (h.queue.0, h.offset.0) == key && h.visible_at > Millis(now)),
                            "message {key:?} delivered while invisible");
                        held.retain(|h| (h.queue.0, h.offset.0) != key);
                        held.push(p);
                    }
                }
                Op::AckSome(i) => {
                    if !held.is_empty() {
                        let p = held.remove(i.index(held.len()));
                        let r = ack(&mut m, "cg", "t", vec![p.receipt.clone()]);
                        prop_assert_eq!(&r[0], &Ok(()));
                        prop_assert!(acked.insert((p.queue.0, p.offset.0)));
                    }
                }
                Op::Advance(ms) => now += ms as i64,
            }
        }
        // Drain: wait out every invisibility and ack everything.
        loop {
            now += 10_000;
            let got = pop(&mut m, now, "cg", "t", MAX_POP_BATCH, "*");
            if got.is_empty() { break; }
            for p in got {
                prop_assert!(acked.insert((p.queue.0, p.offset.0)), "acked message delivered again");
                prop_assert_eq!(&ack(&mut m, "cg", "t", vec![p.receipt])[0], &Ok(()));
            }
        }
        prop_assert_eq!(acked.len() as u64, sent);
        // The state survives a snapshot round trip unchanged.
        let bytes = bincode::serde::encode_to_vec(&m, bincode::config::standard()).expect("encodes");
        let (back, _): (Machine, usize) = bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).expect("decodes");
        prop_assert_eq!(back, m);
    }
}

#[test]
fn trim_moves_minimums_pop_state_and_committed_offsets() {
    let mut m = Machine::new("g1");
    create(&mut m, "t", 2);
    for (index, queue) in [(10, 0), (11, 1), (12, 0), (13, 0), (14, 1)] {
        let messages = vec![msg("t", queue, None, "x")];
        m.apply(LogIndex(index), &Command::Send { now: Millis(5), auto_create_queues: None, messages, proposal: None });
    }
    let held = pop(&mut m, 0, "cg", "t", 10, "*");
    assert_eq!(held.len(), 5);
    let commit = |q, offset| Command::CommitOffset {
        group: group("pull"),
        topic: topic("t"),
        queue: QueueId(q),
        offset: QueueOffset(offset),
    };
    m.apply(next(&m), &commit(0, 0));
    m.apply(next(&m), &commit(1, 2));

    assert_eq!(m.apply(next(&m), &Command::TrimQueues { before_log_index: LogIndex(13) }), Response::Done);
    let q0 = m.queue(&topic("t"), QueueId(0)).expect("queue");
    let q1 = m.queue(&topic("t"), QueueId(1)).expect("queue");
    assert_eq!((q0.min_offset(), q0.max_offset()), (2, 3), "q0 kept only index 13");
    assert_eq!((q1.min_offset(), q1.max_offset()), (1, 2), "q1 kept only index 14");
    assert_eq!(q0.get(1), None);
    assert_eq!(m.committed_offset(&group("pull"), &topic("t"), QueueId(0)), Some(QueueOffset(2)));
    assert_eq!(m.committed_offset(&group("pull"), &topic("t"), QueueId(1)), Some(QueueOffset(2)), "ahead stays");
    let state = m.pop_state(&group("cg"), &topic("t"), QueueId(0)).expect("popped before");
    assert_eq!((state.ack_offset, state.next_fresh, state.inflight_count()), (2, 3, 1));

    // Receipts of trimmed messages fail cleanly; the kept ones still work.
    for p in &held {
        let result = ack(&mut m, "cg", "t", vec![p.receipt.clone()]).remove(0);
        if p.log_index < LogIndex(13) {
            assert!(matches!(result, Err(CommandError::InvalidReceipt(_))), "{p:?}: {result:?}");
            let change = Command::ChangeInvisible {
                now: Millis(0),
                group: group("cg"),
                topic: topic("t"),
                receipt: p.receipt.clone(),
                invisible_ms: 10,
            };
            assert!(matches!(m.apply(next(&m), &change), Response::Failed(CommandError::InvalidReceipt(_))));
        } else {
            assert_eq!(result, Ok(()), "{p:?}");
        }
    }
    // A new group starts at the new minimums; a trim below them changes nothing.
    let fresh: Vec<u64> = pop(&mut m, 0, "new", "t", 10, "*").iter().map(|p| p.log_index.0).collect();
    assert_eq!(fresh.into_iter().collect::<BTreeSet<_>>(), BTreeSet::from([13, 14]));
    // The same state with only the applied index moved (a refused delete changes nothing).
    let mut unchanged = m.clone();
    unchanged.apply(next(&m), &Command::DeleteTopic { topic: topic("absent") });
    m.apply(next(&m), &Command::TrimQueues { before_log_index: LogIndex(12) });
    assert_eq!(m, unchanged);
}

#[derive(Debug, Clone)]
enum TrimOp {
    Send(u32),
    Pop(u32),
    AckSome(prop::sample::Index),
    Advance(u64),
    Trim(prop::sample::Index),
}

fn trim_op() -> impl Strategy<Value = TrimOp> {
    prop_oneof![
        (1u32..20).prop_map(TrimOp::Send),
        (1u32..20).prop_map(TrimOp::Pop),
        any::<prop::sample::Index>().prop_map(TrimOp::AckSome),
        (0u64..3000).prop_map(TrimOp::Advance),
        any::<prop::sample::Index>().prop_map(TrimOp::Trim),
    ]
}

proptest! {
    /// Trims interleaved with sends, pops and acks: minimum offsets move past every trimmed
    /// record and never back, maximum offsets stay, pops never return a trimmed message,
    /// acks of trimmed receipts are refused, and everything kept is still delivered.
    #[test]
    fn trim_invariants(ops in prop::collection::vec(trim_op(), 1..80)) {
        let mut m = Machine::new("g1");
        create(&mut m, "t", 3);
        let (mut now, mut trimmed_before) = (0i64, LogIndex(0));
        let mut sent: Vec<(u32, u64, LogIndex)> = Vec::new(); // queue, offset, log index
        let mut held: Vec<Popped> = Vec::new();
        let mut acked: BTreeSet<(u32, u64)> = BTreeSet::new();
        let bounds = |m: &Machine| -> Vec<(u64, u64)> {
            (0..3).map(|q| m.queue(&topic("t"), QueueId(q)).map_or((0, 0), |x| (x.min_offset(), x.max_offset()))).collect()
        };
        for op in ops {
            match op {
                TrimOp::Send(n) => {
                    let index = next(&m);
                    let messages: Vec<_> = (0..n).map(|i| msg("t", (index.0 as u32 + i) % 3, None, "b")).collect();
                    let Response::Sent(results) =
                        m.apply(index, &Command::Send { now: Millis(now), auto_create_queues: None, messages, proposal: None })
                    else { panic!("send failed") };
                    for r in results {
                        let s = r.expect("queue exists");
                        sent.push((s.queue.0, s.offset.0, index));
                    }
                }
                TrimOp::Pop(n) => {
                    for p in pop(&mut m, now, "cg", "t", n, "*") {
                        prop_assert!(p.log_index >= trimmed_before, "trimmed message delivered: {p:?}");
                        let key = (p.queue.0, p.offset.0);
                        prop_assert!(!acked.contains(&key), "acked message {key:?} delivered again");
                        held.retain(|h| (h.queue.0, h.offset.0) != key);
                        held.push(p);
                    }
                }
                TrimOp::AckSome(i) => {
                    if !held.is_empty() {
                        let p = held.remove(i.index(held.len()));
                        let r = ack(&mut m, "cg", "t", vec![p.receipt.clone()]).remove(0);
                        if p.log_index < trimmed_before {
                            prop_assert!(matches!(r, Err(CommandError::InvalidReceipt(_))), "{:?}", r);
                        } else {
                            prop_assert_eq!(r, Ok(()));
                            prop_assert!(acked.insert((p.queue.0, p.offset.0)));
                        }
                    }
                }
                TrimOp::Advance(ms) => now += ms as i64,
                TrimOp::Trim(i) => {
                    let before = LogIndex(1 + i.index(m.last_applied().0 as usize + 1) as u64);
                    let old = bounds(&m);
                    prop_assert_eq!(m.apply(next(&m), &Command::TrimQueues { before_log_index: before }), Response::Done);
                    let new = bounds(&m);
                    for q in 0..3 {
                        prop_assert!(new[q].0 >= old[q].0, "minimum went back");
                        prop_assert_eq!(new[q].1, old[q].1, "maximum changed");
                    }
                    trimmed_before = trimmed_before.max(before);
                }
            }
            for &(q, offset, log_index) in &sent {
                let min = bounds(&m)[q as usize].0;
                prop_assert_eq!(log_index < trimmed_before, offset < min, "q{} offset {} at {}", q, offset, log_index);
            }
        }
        // Drain: every kept message not acked yet is delivered once invisibility ends.
        loop {
            now += 10_000;
            let got = pop(&mut m, now, "cg", "t", MAX_POP_BATCH, "*");
            if got.is_empty() { break; }
            for p in got {
                prop_assert!(p.log_index >= trimmed_before);
                prop_assert!(acked.insert((p.queue.0, p.offset.0)), "acked message delivered again");
                prop_assert_eq!(&ack(&mut m, "cg", "t", vec![p.receipt])[0], &Ok(()));
            }
        }
        let kept = sent.iter().filter(|s| s.2 >= trimmed_before).count();
        prop_assert_eq!(acked.iter().filter(|k| sent.iter().any(|s| (s.0, s.1) == **k && s.2 >= trimmed_before)).count(), kept);
    }
}

#[test]
fn store_times_never_go_backwards_when_a_leader_clock_is_behind() {
    let mut m = Machine::new("g1");
    create(&mut m, "t", 1);
    let send = |now| Command::Send {
        now: Millis(now),
        auto_create_queues: None,
        messages: vec![msg("t", 0, None, "x")],
        proposal: None,
    };
    m.apply(next(&m), &send(1_000));
    // A new leader whose clock is 400 ms behind the old one's.
    m.apply(next(&m), &send(600));
    let q = m.queue(&topic("t"), QueueId(0)).expect("queue");
    let times: Vec<Millis> = (0..2).filter_map(|o| q.get(o)).map(|r| r.stored).collect();
    assert_eq!(times, vec![Millis(1_000), Millis(1_000)]);
    assert_eq!(m.clock(), Millis(1_000));
    // Visibility deadlines are computed from the kept clock too.
    let popped = pop(&mut m, 700, "cg", "t", 1, "*");
    assert_eq!(popped[0].visible_at, Millis(2_000), "1 s invisibility from the clock, not from 700");
}

#[test]
#[should_panic(expected = "indexes must grow")]
fn applying_an_older_log_index_is_a_bug() {
    let mut m = Machine::new("g1");
    create(&mut m, "t", 1);
    m.apply(LogIndex(1), &Command::DeleteTopic { topic: topic("t") });
}
