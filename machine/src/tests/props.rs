//! Property tests over random histories: pops and acks, trims, and the agreement between
//! apply and a dispatch that runs behind it.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::{Rec, World, dispatch, message, topic};
use crate::timer::Fire;
use crate::types::{GroupConfig, StoredMessage, TopicConfig};
use crate::*;

#[derive(Debug, Clone)]
enum Op {
    Send(u32),
    Pop(u32),
    AckSome(prop::sample::Index),
    Advance(u64),
    Trim(u8, prop::sample::Index),
}

fn op(trims: bool) -> impl Strategy<Value = Op> {
    let trim_weight = if trims { 1 } else { 0 };
    prop_oneof![
        3 => (1u32..20).prop_map(Op::Send),
        3 => (1u32..20).prop_map(Op::Pop),
        3 => any::<prop::sample::Index>().prop_map(Op::AckSome),
        2 => (0u64..3000).prop_map(Op::Advance),
        trim_weight => (0u8..3, any::<prop::sample::Index>()).prop_map(|(q, i)| Op::Trim(q, i)),
    ]
}

/// Runs `ops` on a topic of 3 queues; checks that nothing is handed out twice while
/// invisible, nothing acked or trimmed comes back, and, once drained, every message kept was
/// acked exactly once. With `fifo`, the consumer group is FIFO and messages carry one of 5
/// message groups: a message is delivered only when every earlier message of its group in
/// its queue was acknowledged (or trimmed).
fn run_pops(ops: Vec<Op>, fifo: bool) -> Result<(), TestCaseError> {
    let mut w = World::new();
    w.create("t", 3);
    if fifo {
        w.apply(Command::UpsertGroup {
            group: super::group("cg"),
            config: GroupConfig { fifo: true, ..GroupConfig::default() },
        });
    }
    let mut now = 0i64;
    let mut sent = 0u32;
    let mut held: Vec<Popped> = Vec::new();
    let mut acked: BTreeSet<(u32, u64)> = BTreeSet::new();
    // Each queue's messages' message groups, by offset.
    let mut groups: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let min = |w: &World, q: u32| w.m.queue(&topic("t"), QueueId(q)).map_or(0, |x| x.min_offset());
    for op in ops {
        match op {
            Op::Send(n) => {
                let messages = (0..n)
                    .map(|i| {
                        let g = (sent + i) % 5;
                        // A message group goes to one queue.
                        let q = if fifo { g % 3 } else { (sent + i) % 3 };
                        groups.entry(q).or_default().push(g);
                        StoredMessage { message_group: Some(format!("g{g}")), ..w.msg("t", q, None, "b") }
                    })
                    .collect();
                w.send_at(now, messages);
                sent += n;
            }
            Op::Pop(n) => {
                for p in w.pop(now, "cg", "t", n, "*") {
                    let key = (p.queue.0, p.offset.0);
                    if fifo {
                        let of_queue = &groups[&p.queue.0];
                        let g = of_queue[p.offset.0 as usize];
                        let lo = min(&w, p.queue.0);
                        for earlier in lo..p.offset.0 {
                            prop_assert!(
                                of_queue[earlier as usize] != g || acked.contains(&(p.queue.0, earlier)),
                                "{key:?} of group {g} delivered before {earlier} of its group was acked"
                            );
                        }
                    }
                    prop_assert!(p.offset.0 >= min(&w, p.queue.0), "trimmed message delivered: {p:?}");
                    prop_assert!(!acked.contains(&key), "acked message {key:?} delivered again");
                    prop_assert!(
                        !held.iter().any(|h| (h.queue.0, h.offset.0) == key && h.visible_at > Millis(now)),
                        "message {key:?} delivered while invisible"
                    );
                    held.retain(|h| (h.queue.0, h.offset.0) != key);
                    held.push(p);
                }
            }
            Op::AckSome(i) => {
                if !held.is_empty() {
                    let p = held.remove(i.index(held.len()));
                    let r = w.ack("cg", "t", vec![p.receipt.clone()]).remove(0);
                    if p.offset.0 < min(&w, p.queue.0) {
                        prop_assert!(matches!(r, Err(CommandError::InvalidReceipt(_))), "{:?}", r);
                    } else {
                        prop_assert_eq!(r, Ok(()));
                        prop_assert!(acked.insert((p.queue.0, p.offset.0)));
                    }
                }
            }
            Op::Advance(ms) => now += ms as i64,
            Op::Trim(q, i) => {
                let queue = *w.m.queue(&topic("t"), QueueId(u32::from(q))).expect("queue");
                let to = i.index(queue.max_offset() as usize + 1) as u64;
                w.apply(Command::TrimQueues { mins: vec![(topic("t"), QueueId(u32::from(q)), QueueOffset(to))] });
                let after = *w.m.queue(&topic("t"), QueueId(u32::from(q))).expect("queue");
                prop_assert_eq!(after.min_offset(), queue.min_offset().max(to));
                prop_assert_eq!(after.max_offset(), queue.max_offset());
            }
        }
    }
    // Drain: wait out every invisibility and ack everything.
    loop {
        now += 10_000;
        let got = w.pop(now, "cg", "t", MAX_POP_BATCH, "*");
        if got.is_empty() {
            break;
        }
        for p in got {
            prop_assert!(acked.insert((p.queue.0, p.offset.0)), "acked message delivered again");
            prop_assert_eq!(&w.ack("cg", "t", vec![p.receipt])[0], &Ok(()));
        }
    }
    let kept: u64 = (0..3).map(|q| w.m.queue(&topic("t"), QueueId(q)).map_or(0, |x| x.max_offset())).sum::<u64>();
    prop_assert_eq!(kept, u64::from(sent));
    for q in 0..3 {
        let queue = w.m.queue(&topic("t"), QueueId(q)).expect("queue");
        for offset in queue.min_offset()..queue.max_offset() {
            prop_assert!(acked.contains(&(q, offset)), "q{} offset {} kept but never delivered", q, offset);
        }
    }
    // The state survives a snapshot round trip unchanged.
    let bytes = codec::encode_snapshot(&w.m).expect("encodes");
    prop_assert_eq!(codec::decode_snapshot::<Machine>(&bytes, "test").expect("decodes"), w.m);
    Ok(())
}

proptest! {
    #[test]
    fn pop_ack_invariants(ops in prop::collection::vec(op(false), 1..80)) {
        run_pops(ops, false)?;
    }

    #[test]
    fn trim_invariants(ops in prop::collection::vec(op(true), 1..80)) {
        run_pops(ops, false)?;
    }

    #[test]
    fn fifo_groups_are_delivered_in_order_one_at_a_time(ops in prop::collection::vec(op(true), 1..80)) {
        run_pops(ops, true)?;
    }
}

/// Queue offset → (log index, slot), as apply assigned them.
type Positions = BTreeMap<u64, (LogIndex, u32)>;

#[derive(Debug, Clone)]
enum TopicOp {
    Create(u8, u32),
    Grow(u8),
    Delete(u8),
    /// Messages to topic `.0`, queue `.1`, naming its current incarnation or a stale one
    /// (`.2`), delayed or not (`.3`).
    Send(Vec<(u8, u32, bool, bool)>),
    /// Fires delayed messages picked from those sent (fired ones and repeats included), after
    /// the last accepted fire or a stale one.
    Fire(Vec<usize>, bool),
    /// The lagging dispatch catches up.
    Catch,
}

fn topic_op() -> impl Strategy<Value = TopicOp> {
    prop_oneof![
        (0u8..3, 1u32..4).prop_map(|(t, q)| TopicOp::Create(t, q)),
        (0u8..3).prop_map(TopicOp::Grow),
        (0u8..3).prop_map(TopicOp::Delete),
        prop::collection::vec((0u8..3, 0u32..5, any::<bool>(), any::<bool>()), 1..6).prop_map(TopicOp::Send),
        (prop::collection::vec(any::<usize>(), 0..5), any::<bool>()).prop_map(|(p, s)| TopicOp::Fire(p, s)),
        Just(TopicOp::Catch),
    ]
}

proptest! {
    /// Dispatch needs no apply result: judging each message by any later state (one that
    /// lags many entries behind apply, across creates, growth, deletes and re-creates), the
    /// ConsumeQueue of every existing topic gets exactly the messages apply stored, at the
    /// offsets apply gave them.
    #[test]
    fn dispatch_behind_apply_gives_the_offsets_apply_gave(ops in prop::collection::vec(topic_op(), 1..60)) {
        let mut m = Machine::new("g1");
        let mut applied: Vec<(LogIndex, Command)> = Vec::new();
        // What apply said: (topic, epoch, queue) -> offsets -> (log index, slot).
        let mut stored: BTreeMap<(TopicName, LogIndex, QueueId), Positions> = BTreeMap::new();
        let mut cq: BTreeMap<(TopicName, QueueId), Vec<Rec>> = BTreeMap::new();
        let mut last_fire = LogIndex(0);
        let mut dispatched = 0usize;
        let name = |t: u8| topic(&format!("t{t}"));
        let mut stale_epochs: BTreeMap<TopicName, LogIndex> = BTreeMap::new();
        // Delayed messages apply scheduled, and the fires accepted so far.
        let mut waiting: Vec<Fire> = Vec::new();
        let mut fires_taken: Vec<LogIndex> = vec![LogIndex(0)];
        for op in ops {
            let index = m.last_applied().next();
            let command = match op {
                TopicOp::Create(t, q) => Command::UpsertTopic { topic: name(t), config: TopicConfig::all_types(q) },
                TopicOp::Grow(t) => {
                    let count = m.topic(&name(t)).map_or(1, |c| c.queue_count + 1);
                    Command::UpsertTopic { topic: name(t), config: TopicConfig::all_types(count) }
                }
                TopicOp::Delete(t) => {
                    if let Some(e) = m.topic_epoch(&name(t)) {
                        stale_epochs.insert(name(t), e);
                    }
                    Command::DeleteTopic { topic: name(t) }
                }
                TopicOp::Send(msgs) => {
                    let messages = msgs.iter().map(|&(t, q, stale, delayed)| {
                        let epoch = if stale { stale_epochs.get(&name(t)).copied() } else { m.topic_epoch(&name(t)) };
                        let m = message(&format!("t{t}"), epoch.unwrap_or_default(), q, None, "x");
                        StoredMessage { deliver_at: delayed.then_some(Millis(10)), ..m }
                    }).collect::<Vec<_>>();
                    let messages = MessageBatch::encode(&messages).expect("encodes");
                    Command::Send { now: Millis(0), messages, proposal: None }
                }
                TopicOp::Fire(picks, stale) => {
                    let fires = if waiting.is_empty() {
                        Vec::new()
                    } else {
                        picks.iter().map(|p| waiting[p % waiting.len()].clone()).collect()
                    };
                    let prev_fire = if stale { fires_taken[fires_taken.len().saturating_sub(2)] } else { m.timers().last_fire };
                    Command::FireTimers { now: Millis(10), prev_fire, fires, drops: vec![] }
                }
                TopicOp::Catch => {
                    for (i, c) in &applied[dispatched..] {
                        dispatch(&m, &mut cq, &mut last_fire, *i, c);
                    }
                    dispatched = applied.len();
                    continue;
                }
            };
            match (&command, m.apply(index, &command)) {
                (Command::Send { messages, .. }, Response::Sent(results)) => {
                    for ((slot, msg), r) in messages.iter().zip(results) {
                        let msg = msg.expect("decodes");
                        match r {
                            Ok(Sent { offset: Some(offset), queue }) => {
                                stored.entry((msg.topic.clone(), msg.topic_epoch, queue)).or_default()
                                    .insert(offset.0, (index, slot.0));
                            }
                            Ok(Sent { offset: None, .. }) => waiting.push(Fire { log_index: index, slot, head: msg.head() }),
                            Err(_) => {}
                        }
                    }
                }
                (Command::FireTimers { fires, .. }, Response::Sent(results)) => {
                    fires_taken.push(index);
                    for (f, r) in fires.iter().zip(results) {
                        if let Ok(Sent { offset: Some(offset), queue }) = r {
                            stored.entry((f.head.topic.clone(), f.head.topic_epoch, queue)).or_default()
                                .insert(offset.0, (f.log_index, f.slot.0));
                        }
                    }
                }
                _ => {}
            }
            applied.push((index, command));
        }
        for (i, c) in &applied[dispatched..] {
            dispatch(&m, &mut cq, &mut last_fire, *i, c);
        }
        for (t, config) in m.topics() {
            let epoch = m.topic_epoch(t).expect("exists");
            for q in 0..config.queue_count {
                let queue = m.queue(t, QueueId(q)).expect("queue");
                let records = cq.get(&(t.clone(), QueueId(q))).cloned().unwrap_or_default();
                prop_assert_eq!(records.len() as u64, queue.max_offset(), "{} q{}", t, q);
                let want = stored.get(&(t.clone(), epoch, QueueId(q))).cloned().unwrap_or_default();
                for (offset, rec) in records.iter().enumerate() {
                    prop_assert_eq!(Some(&(rec.log_index, rec.slot)), want.get(&(offset as u64)), "{} q{} offset {}", t, q, offset);
                }
            }
        }
    }
}
