//! The derived stores of a three-node group in one process: after sends over several
//! topics (one deleted and created anew while sends checked against the old one were in
//! flight), every node's ConsumeQueue, IndexFile and timer store hold the same records; a
//! node restarted on its data cuts back to its checkpoint and holds them still; a node whose
//! stores were deleted, or damaged, rebuilds them from its CommitLog to exactly the same
//! records.

use std::collections::BTreeMap;
use std::time::Duration;

mod common;

use broker::node::{Node, NodeConfig};
use broker::raft::slot::read_message;
use broker::store::index_file::IndexKey;
use broker::store::timer::Timer;
use bytes::Bytes;
use raft_log::LogConfig;
use raftmq_machine::codec::ENTRY_VERSION;
use raftmq_machine::timer::Fire;
use raftmq_machine::types::{Millis, QueueId, StoredMessage, TopicConfig, TopicName};
use raftmq_machine::{Command, LogIndex, MessageBatch, Response, Sent, Slot};

fn configs(dir: &std::path::Path) -> anyhow::Result<Vec<NodeConfig>> {
    common::three_nodes(dir, "st", |c| NodeConfig {
        log: LogConfig { segment_size: 4 << 20, max_payload: 1 << 20, ..LogConfig::default() },
        store: broker::settings::StoreConfig { cq_records_per_file: 16, index_slots: 64, index_entries: 128 },
        ..c
    })
}

fn message(topic: &str, epoch: LogIndex, i: u32, queues: u32) -> StoredMessage {
    StoredMessage {
        topic: TopicName::new(topic).expect("valid"),
        queue: QueueId(i % queues),
        topic_epoch: epoch,
        message_id: format!("{topic}-{i}"),
        tag: Some(if i.is_multiple_of(3) { "A" } else { "B" }.into()),
        keys: vec![format!("order-{}", i % 7), format!("user-{i}")],
        message_group: None,
        properties: BTreeMap::new(),
        born: Millis(common::now_ms()),
        deliver_at: None,
        transactional: false,
        born_host: "test".into(),
        body: Bytes::from(format!("{topic} body {i}")),
        body_gzip: false,
    }
}

async fn write(nodes: &[&Node], cmd: Command) -> anyhow::Result<Response> {
    Ok(common::write_until_served(nodes, cmd, Duration::from_secs(10)).await?.data)
}

async fn create(nodes: &[&Node], topic: &str, queues: u32) -> anyhow::Result<()> {
    let config = TopicConfig::all_types(queues);
    anyhow::ensure!(
        write(nodes, Command::UpsertTopic { topic: TopicName::new(topic)?, config }).await? == Response::Done
    );
    Ok(())
}

/// Sends messages `from..to` of `topic` in entries of 5.
async fn send(nodes: &[&Node], topic: &str, queues: u32, from: u32, to: u32) -> anyhow::Result<()> {
    let epoch = common::epoch(nodes, topic);
    for start in (from..to).step_by(5) {
        let messages: Vec<_> = (start..to.min(start + 5)).map(|i| message(topic, epoch, i, queues)).collect();
        let messages = MessageBatch::encode(&messages)?;
        let r = write(nodes, Command::Send { now: Millis(common::now_ms()), messages, proposal: None }).await?;
        anyhow::ensure!(matches!(&r, Response::Sent(s) if s.iter().all(Result::is_ok)), "{r:?}");
    }
    Ok(())
}

/// Everything a node's stores say about the messages: every ConsumeQueue record of every
/// queue, and the hits of every id and key looked up that name a message of a topic that
/// still exists (the IndexFile may keep entries of a deleted topic; a query drops them).
type Contents = (BTreeMap<(String, u32, u64), String>, BTreeMap<String, Vec<(u64, u32)>>);

fn contents(node: &Node, topics: &[(&str, u32)], keys: &[String]) -> anyhow::Result<Contents> {
    let mut records = BTreeMap::new();
    for &(topic, queues) in topics {
        let name = TopicName::new(topic)?;
        for q in 0..queues {
            let (min, max) = node
                .state
                .read(|a| a.machine.queue(&name, QueueId(q)).map(|x| (x.min_offset(), x.max_offset())))
                .ok_or_else(|| anyhow::anyhow!("no queue {topic}:{q}"))?;
            for (offset, r) in node.stores.records(&name, QueueId(q), min, max)? {
                let value = format!("{}/{}/{}/{:?}", r.log_index.0, r.slot.0, r.size_bytes, r.tag_hash);
                records.insert((topic.to_string(), q, offset.0), value);
            }
        }
    }
    let mut hits = BTreeMap::new();
    for key in keys {
        let lookup = |k| node.stores.lookup(k, Millis(0), Millis(i64::MAX));
        let (kind, k) = key.split_once(':').ok_or_else(|| anyhow::anyhow!("bad key {key}"))?;
        let found = if kind == "id" { lookup(IndexKey::Id(k))? } else { lookup(IndexKey::Key(k))? };
        let mut positions = Vec::new();
        for h in found {
            let m = read_message(&node.log, &(ENTRY_VERSION..=ENTRY_VERSION), h.log_index.0, h.slot)?
                .ok_or_else(|| anyhow::anyhow!("hit {h:?} names no message"))?;
            if node.state.read(|a| a.machine.accepts(&m, h.log_index).is_ok()) {
                positions.push((h.log_index.0, h.slot.0));
            }
        }
        positions.sort_unstable();
        hits.insert(key.clone(), positions);
    }
    Ok((records, hits))
}

/// The delay timers waiting in a node's timer store, all of them (as if every one were due).
fn waiting(node: &Node) -> anyhow::Result<Vec<Timer>> {
    Ok(node.stores.due_timers(Millis(i64::MAX), 10_000)?.timers)
}

async fn caught_up(nodes: &[&Node]) -> anyhow::Result<()> {
    let applied = |n: &Node| n.state.read(|a| a.last_applied.map_or(0, |l| l.index()));
    let target = nodes.iter().map(|n| applied(n)).max().unwrap_or(0);
    common::wait_for("every node dispatched everything", Duration::from_secs(20), || {
        nodes.iter().all(|n| applied(n) >= target && n.stores.dispatched().0 >= target)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilt_and_recovered_stores_equal_the_ones_written_as_messages_arrived() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfgs = configs(dir.path())?;
    let mut nodes = Vec::new();
    for cfg in cfgs.clone() {
        nodes.push(Node::start(cfg).await?);
    }
    let all: Vec<&Node> = nodes.iter().collect();
    common::wait_for("a leader", Duration::from_secs(10), || common::leader_of(&all).is_some()).await?;
    create(&all, "orders", 4).await?;
    create(&all, "audit", 2).await?;
    send(&all, "orders", 4, 0, 60).await?;
    send(&all, "audit", 2, 0, 20).await?;
    // "audit" is deleted and created anew; a send checked against the old one is refused.
    let old_epoch = common::epoch(&all, "audit");
    write(&all, Command::DeleteTopic { topic: TopicName::new("audit")? }).await?;
    create(&all, "audit", 3).await?;
    let stale = Command::Send {
        now: Millis(common::now_ms()),
        messages: MessageBatch::encode(&[message("audit", old_epoch, 99, 2)])?,
        proposal: None,
    };
    anyhow::ensure!(matches!(write(&all, stale).await?, Response::Sent(s) if s.iter().all(Result::is_err)));
    send(&all, "audit", 3, 100, 130).await?;
    send(&all, "orders", 4, 60, 90).await?;
    // Two delay messages wait for their timers (found by id at once, in no queue yet); one
    // fires; a stale fire (planned before it) fires nothing.
    let epoch = common::epoch(&all, "orders");
    let at = Millis(common::now_ms() + 3_600_000);
    let delayed: Vec<StoredMessage> =
        (200..202).map(|i| StoredMessage { deliver_at: Some(at), ..message("orders", epoch, i, 4) }).collect();
    let messages = MessageBatch::encode(&delayed)?;
    let r = write(&all, Command::Send { now: Millis(common::now_ms()), messages, proposal: None }).await?;
    anyhow::ensure!(
        matches!(&r, Response::Sent(s) if s.iter().all(|x| matches!(x, Ok(Sent { offset: None, .. })))),
        "{r:?}"
    );
    let send_index = common::leader_of(&all).map(|l| l.state.read(|a| a.machine.last_applied())).expect("a leader");
    let fire = |slot: u32| Fire { log_index: send_index, slot: Slot(slot), head: delayed[slot as usize].head() };
    let fired = Command::FireTimers { now: at, prev_fire: LogIndex(0), fires: vec![fire(1)], drops: vec![] };
    let r = write(&all, fired).await?;
    anyhow::ensure!(matches!(&r, Response::Sent(s) if s.len() == 1 && s[0].is_ok()), "{r:?}");
    let stale = Command::FireTimers { now: at, prev_fire: LogIndex(0), fires: vec![fire(0), fire(1)], drops: vec![] };
    anyhow::ensure!(matches!(write(&all, stale).await?, Response::Failed(_)), "a stale fire is refused");
    send(&all, "orders", 4, 90, 95).await?;
    caught_up(&all).await?;

    let topics = [("orders", 4), ("audit", 3)];
    let mut keys: Vec<String> = (0..7).map(|k| format!("key:order-{k}")).collect();
    keys.extend((0..90).map(|i| format!("id:orders-{i}")));
    keys.extend((100..130).map(|i| format!("id:audit-{i}")));
    keys.push("id:audit-5".into());
    keys.extend(["id:orders-200".to_string(), "id:orders-201".to_string()]);
    let expected = contents(&nodes[0], &topics, &keys)?;
    anyhow::ensure!(expected.0.len() == 95 + 30 + 1, "{} ConsumeQueue records", expected.0.len());
    // The fired message (slot 1 of its send) is in queue 1 (201 % 4) after the 23 sent before
    // it; message 93, sent after the fire, follows it.
    let at_offset = |o: u64| expected.0.get(&("orders".to_string(), 1, o)).cloned().unwrap_or_default();
    anyhow::ensure!(at_offset(23).starts_with(&format!("{}/1/", send_index.0)), "offset 23: {}", at_offset(23));
    anyhow::ensure!(!at_offset(24).is_empty() && !at_offset(24).starts_with(&format!("{}/", send_index.0)));
    anyhow::ensure!(expected.1["id:orders-200"].len() == 1 && expected.1["id:orders-201"].len() == 1);
    // order-3: orders 3, 10, .., 94 and the new audit's 101, 108, .., 129 (not the old audit's).
    anyhow::ensure!(expected.1["key:order-3"].len() == 14 + 5, "order-3 hits: {:?}", expected.1["key:order-3"]);
    anyhow::ensure!(expected.1["id:audit-5"].is_empty(), "a message of the deleted topic is found");
    anyhow::ensure!(expected.1["id:orders-42"].len() == 1);
    for (i, n) in nodes.iter().enumerate() {
        anyhow::ensure!(contents(n, &topics, &keys)? == expected, "node {} differs", i + 1);
    }
    // The unfired one waits in every node's timer store, which keeps its entry from retention.
    let still_waiting = vec![Timer { deliver_at: at, log_index: send_index, slot: Slot(0) }];
    for n in &nodes {
        anyhow::ensure!(waiting(n)? == still_waiting, "timers of {}: {:?}", n.raft_addr, waiting(n)?);
        anyhow::ensure!(n.stores.timers().keeps_from() == Some(send_index));
    }

    // Restarted on its data: cut back to its checkpoint, then the same.
    let follower = (0..3).find(|&i| common::leader_of(&all).map(|l| std::ptr::eq(l, &nodes[i])) == Some(false));
    let f = follower.ok_or_else(|| anyhow::anyhow!("no follower"))?;
    drop(all);
    let node = nodes.remove(f);
    node.shutdown().await;
    nodes.insert(f, Node::start(cfgs[f].clone()).await?);
    caught_up(&nodes.iter().collect::<Vec<_>>()).await?;
    anyhow::ensure!(contents(&nodes[f], &topics, &keys)? == expected, "the restarted node differs");
    anyhow::ensure!(waiting(&nodes[f])? == still_waiting, "timers: {:?}", waiting(&nodes[f])?);

    // Deleted: rebuilt from the CommitLog to the same records.
    let node = nodes.remove(f);
    node.shutdown().await;
    std::fs::remove_dir_all(cfgs[f].data_dir.join("store"))?;
    nodes.insert(f, Node::start(cfgs[f].clone()).await?);
    caught_up(&nodes.iter().collect::<Vec<_>>()).await?;
    anyhow::ensure!(contents(&nodes[f], &topics, &keys)? == expected, "the rebuilt node differs");
    anyhow::ensure!(waiting(&nodes[f])? == still_waiting, "timers: {:?}", waiting(&nodes[f])?);

    // Damaged (a ConsumeQueue file cut short in its middle): rebuilt as well.
    let node = nodes.remove(f);
    node.shutdown().await;
    let file = cfgs[f].data_dir.join("store/consumequeue/orders/1/00000000000000000000.cq");
    let f_len = std::fs::metadata(&file)?.len();
    std::fs::OpenOptions::new().write(true).open(&file)?.set_len(f_len / 2)?;
    nodes.insert(f, Node::start(cfgs[f].clone()).await?);
    caught_up(&nodes.iter().collect::<Vec<_>>()).await?;
    common::wait_for("the damaged node rebuilds its stores", Duration::from_secs(20), || {
        contents(&nodes[f], &topics, &keys).is_ok_and(|c| c == expected)
    })
    .await?;
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}
