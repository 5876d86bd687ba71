//! A property test over a real node (one member, real files): random sends, receives,
//! acks, trims, restarts and deleted derived stores. After every step the node's
//! ConsumeQueue holds exactly the messages the model says, at the offsets apply gave them,
//! and its IndexFile finds each message by id; a receive never returns a message that is
//! invisible or acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

mod common;

use broker::node::{Node, NodeConfig};
use broker::store::index_file::IndexKey;
use bytes::Bytes;
use proptest::prelude::*;
use raft_log::LogConfig;
use raftmq_machine::plan::{Fresh, PopScope};
use raftmq_machine::types::{GroupName, StoredMessage, TagFilter, TopicConfig, TopicName};
use raftmq_machine::{Command, MessageBatch, Millis, NodeId, QueueId, QueueOffset, Receipt, Response};

const QUEUES: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    /// Messages to these queues, with these tags (0: none).
    Send(Vec<(u32, u8)>),
    /// A receive of at most n by the group, with a tag filter ("*" or "t1").
    Receive(u8, bool),
    /// Ack the i-th held receipt.
    Ack(prop::sample::Index),
    /// Move a queue's minimum up to a fraction of its length.
    Trim(u32, u8),
    Restart,
    DeleteStores,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0..QUEUES, 0u8..3), 1..6).prop_map(Op::Send),
        3 => (1u8..8, any::<bool>()).prop_map(|(n, f)| Op::Receive(n, f)),
        3 => any::<prop::sample::Index>().prop_map(Op::Ack),
        1 => (0..QUEUES, 0u8..=4).prop_map(|(q, f)| Op::Trim(q, f)),
        1 => Just(Op::Restart),
        1 => Just(Op::DeleteStores),
    ]
}

fn config(dir: &std::path::Path) -> anyhow::Result<NodeConfig> {
    let peers = BTreeMap::from([(
        NodeId(1),
        broker::raft::NodeInfo { raft_addr: common::free_addr()?, client_addr: common::free_addr()? },
    )]);
    Ok(NodeConfig {
        group: "props".into(),
        node_id: NodeId(1),
        peers,
        data_dir: dir.to_path_buf(),
        log: LogConfig { segment_size: 1 << 20, max_payload: 256 << 10, ..LogConfig::default() },
        heartbeat: Duration::from_millis(50),
        election_timeout: Duration::from_millis(150),
        snapshot_every: 7,
        keep_after_snapshot: 3,
        store: broker::settings::StoreConfig { cq_records_per_file: 8, index_slots: 16, index_entries: 32 },
        ..NodeConfig::default()
    })
}

async fn write(node: &Node, cmd: Command) -> anyhow::Result<Response> {
    Ok(common::write_until_served(&[node], cmd, Duration::from_secs(10)).await?.data)
}

/// Waits until dispatch reached what was applied.
async fn dispatched(node: &Node) -> anyhow::Result<()> {
    let applied = || node.state.read(|a| a.last_applied.map_or(0, |l| l.index()));
    common::wait_for("dispatch catches up", Duration::from_secs(10), || node.stores.dispatched().0 >= applied()).await
}

/// The model: per queue the message ids by offset, and the minimum offset.
#[derive(Debug, Default)]
struct Model {
    queues: BTreeMap<u32, Vec<String>>,
    mins: BTreeMap<u32, u64>,
}

async fn check(node: &Node, model: &Model, topic: &TopicName) -> anyhow::Result<()> {
    dispatched(node).await?;
    for q in 0..QUEUES {
        let ids = model.queues.get(&q).cloned().unwrap_or_default();
        let min = model.mins.get(&q).copied().unwrap_or(0);
        let (state_min, state_max) = node
            .state
            .read(|a| a.machine.queue(topic, QueueId(q)).map(|x| (x.min_offset(), x.max_offset())))
            .ok_or_else(|| anyhow::anyhow!("no queue {q}"))?;
        anyhow::ensure!((state_min, state_max) == (min, ids.len() as u64), "q{q} bounds {state_min}..{state_max}");
        let records = node.stores.records(topic, QueueId(q), min, ids.len() as u64)?;
        anyhow::ensure!(records.len() as u64 == ids.len() as u64 - min, "q{q}: {} records", records.len());
        for (offset, record) in records {
            let id =
                ids.get(offset.0 as usize).ok_or_else(|| anyhow::anyhow!("q{q}: a record at offset {}", offset.0))?;
            let hits = node.stores.lookup(IndexKey::Id(id), Millis(0), Millis(i64::MAX))?;
            let positions: BTreeSet<(u64, u32)> = hits.iter().map(|h| (h.log_index.0, h.slot.0)).collect();
            anyhow::ensure!(
                positions.contains(&(record.log_index.0, record.slot.0)),
                "{id} at q{q}:{} not found by id: {positions:?}",
                offset.0
            );
        }
    }
    Ok(())
}

async fn run(ops: Vec<Op>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = config(dir.path())?;
    let mut node = Node::start(cfg.clone()).await?;
    let topic = TopicName::new("props")?;
    let group = GroupName::new("g")?;
    anyhow::ensure!(
        write(&node, Command::UpsertTopic { topic: topic.clone(), config: TopicConfig::all_types(QUEUES) }).await?
            == Response::Done
    );
    let epoch = node.state.read(|a| a.machine.topic_epoch(&topic)).ok_or_else(|| anyhow::anyhow!("no topic"))?;
    let mut model = Model::default();
    let mut held: Vec<(Receipt, Millis)> = Vec::new();
    let mut acked: BTreeSet<(u32, u64)> = BTreeSet::new();
    let mut sent = 0u32;
    for op in ops {
        match op {
            Op::Send(messages) => {
                let stored: Vec<StoredMessage> = messages
                    .iter()
                    .map(|&(q, tag)| {
                        sent += 1;
                        StoredMessage {
                            topic: topic.clone(),
                            queue: QueueId(q),
                            topic_epoch: epoch,
                            message_id: format!("m{sent}"),
                            tag: (tag > 0).then(|| format!("t{tag}")),
                            keys: vec![format!("k{}", sent % 4)],
                            message_group: None,
                            properties: BTreeMap::new(),
                            born: Millis(common::now_ms()),
                            deliver_at: None,
                            transactional: false,
                            born_host: "test".into(),
                            body: Bytes::from(format!("body {sent}")),
                            body_gzip: false,
                        }
                    })
                    .collect();
                let ids: Vec<String> = stored.iter().map(|m| m.message_id.clone()).collect();
                let r = write(
                    &node,
                    Command::Send {
                        now: Millis(common::now_ms()),
                        messages: MessageBatch::encode(&stored)?,
                        proposal: None,
                    },
                )
                .await?;
                let Response::Sent(results) = r else { anyhow::bail!("send answered {r:?}") };
                for (id, result) in ids.into_iter().zip(results) {
                    let s = result.map_err(|e| anyhow::anyhow!("send refused: {e}"))?;
                    let queue = model.queues.entry(s.queue.0).or_default();
                    anyhow::ensure!(
                        s.offset == Some(QueueOffset(queue.len() as u64)),
                        "offset {:?} for {id}",
                        s.offset
                    );
                    queue.push(id);
                }
            }
            Op::Receive(max, tagged) => {
                dispatched(&node).await?;
                let filter = TagFilter::parse(if tagged { "t1" } else { "*" }).map_err(anyhow::Error::msg)?;
                let now = Millis(common::now_ms());
                let stores = node.stores.clone();
                let takes = node.state.read(|a| {
                    let accept = |f: &Fresh| Ok(filter.matches(f.tag));
                    let scope = PopScope::all(&group, &topic);
                    a.machine
                        .plan_pop(now, scope, u32::from(max), accept, |q, from, end| stores.tags(&topic, q, from, end))
                })?;
                if takes.is_empty() {
                    continue;
                }
                let cmd = Command::Pop { now, group: group.clone(), topic: topic.clone(), invisible_ms: 60_000, takes };
                let Response::Popped(popped) = write(&node, cmd).await? else { anyhow::bail!("pop refused") };
                for p in popped {
                    let key = (p.queue.0, p.offset.0);
                    anyhow::ensure!(!acked.contains(&key), "acked message {key:?} delivered again");
                    anyhow::ensure!(
                        !held.iter().any(|(r, until)| (r.queue.0, r.offset.0) == key && *until > now),
                        "invisible message {key:?} delivered again"
                    );
                    anyhow::ensure!(p.offset.0 >= model.mins.get(&p.queue.0).copied().unwrap_or(0), "trimmed {key:?}");
                    held.retain(|(r, _)| (r.queue.0, r.offset.0) != key);
                    held.push((p.receipt, p.visible_at));
                }
            }
            Op::Ack(i) => {
                if held.is_empty() {
                    continue;
                }
                let (receipt, _) = held.remove(i.index(held.len()));
                let key = (receipt.queue.0, receipt.offset.0);
                let cmd = Command::Ack { group: group.clone(), topic: topic.clone(), receipts: vec![receipt] };
                let Response::Acked(r) = write(&node, cmd).await? else { anyhow::bail!("ack refused") };
                if r[0].is_ok() {
                    acked.insert(key);
                } else {
                    anyhow::ensure!(key.1 < model.mins.get(&key.0).copied().unwrap_or(0), "ack of {key:?}: {:?}", r[0]);
                }
            }
            Op::Trim(q, fifths) => {
                let len = model.queues.get(&q).map_or(0, Vec::len) as u64;
                let min = model.mins.entry(q).or_default();
                let to = (len * u64::from(fifths) / 4).min(len).max(*min);
                *min = to;
                let mins = vec![(topic.clone(), QueueId(q), QueueOffset(to))];
                anyhow::ensure!(write(&node, Command::TrimQueues { mins }).await? == Response::Done);
            }
            Op::Restart | Op::DeleteStores => {
                dispatched(&node).await?;
                node.shutdown().await;
                if matches!(op, Op::DeleteStores) {
                    std::fs::remove_dir_all(cfg.data_dir.join("store"))?;
                }
                node = Node::start(cfg.clone()).await?;
            }
        }
        check(&node, &model, &topic).await?;
    }
    node.shutdown().await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn stores_follow_the_log_across_restarts_and_rebuilds(ops in prop::collection::vec(op(), 1..25)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        runtime.block_on(run(ops)).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    }
}
