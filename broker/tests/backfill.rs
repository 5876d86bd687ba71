//! A member that catches up through a snapshot copies in the message bodies below it: three
//! nodes over real gRPC on loopback, small snapshots and segments; a follower stopped (or
//! never started) while the others snapshot and purge past it comes back, installs a
//! snapshot, and then serves every message its ConsumeQueues reference from its own
//! CommitLog, byte for byte. Reads meanwhile fail only with the retryable "still being
//! copied" error. Retention then deletes expired segments by message store time.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

mod common;

use broker::node::{Node, NodeConfig};
use broker::raft::slot::read_message;
use broker::raft::{NodeId, TypeConfig};
use broker::retention::{self, RetentionConfig};
use broker::store::index_file::IndexKey;
use bytes::Bytes;
use openraft::async_runtime::watch::WatchReceiver;
use raft_log::{LogConfig, RaftLogStore};
use raftmq_machine::codec::ENTRY_VERSION;
use raftmq_machine::types::{Millis, QueueId, StoredMessage, TopicConfig, TopicName};
use raftmq_machine::{Command, LogIndex, MessageBatch, Response, Slot};

const TOPIC: &str = "orders";
const QUEUES: u32 = 4;

fn configs(dir: &Path) -> anyhow::Result<Vec<NodeConfig>> {
    common::three_nodes(dir, "g1", |c| NodeConfig {
        log: LogConfig { segment_size: 1 << 20, max_payload: 256 << 10, ..LogConfig::default() },
        snapshot_every: 50,
        keep_after_snapshot: 10,
        // The test runs retention itself, at a chosen time.
        retention: RetentionConfig { interval: Duration::from_secs(3600), ..RetentionConfig::default() },
        ..c
    })
}

/// Proposes `cmd` on whichever node claims leadership until one commits it.
async fn write(nodes: &[&Node], cmd: Command) -> anyhow::Result<(u64, Response)> {
    let r = common::write_until_served(nodes, cmd, Duration::from_secs(10)).await?;
    Ok((r.log_id.index(), r.data))
}

fn leader_id(nodes: &[&Node]) -> Option<NodeId> {
    common::leader_of(nodes).map(|n| n.raft.metrics().borrow_watched().id)
}

/// Message `i`: 3 KiB body that names it.
fn message(i: u32, epoch: LogIndex) -> StoredMessage {
    let mut body = format!("message {i} ").into_bytes();
    body.resize(3 << 10, b'a' + (i % 26) as u8);
    StoredMessage {
        topic: TopicName::new(TOPIC).expect("valid"),
        queue: QueueId(i % QUEUES),
        topic_epoch: epoch,
        message_id: format!("m{i}"),
        tag: Some("A".into()),
        keys: vec![],
        message_group: None,
        properties: BTreeMap::new(),
        born: Millis(common::now_ms()),
        deliver_at: None,
        transactional: false,
        born_host: "test".into(),
        body: Bytes::from(body),
        body_gzip: false,
    }
}

/// Sends `entries` entries of 4 messages each, numbered from `first`; returns the bodies
/// by message id.
async fn send(nodes: &[&Node], first: u32, entries: u32) -> anyhow::Result<BTreeMap<String, Bytes>> {
    let mut sent = BTreeMap::new();
    let epoch = common::epoch(nodes, TOPIC);
    for e in 0..entries {
        let messages: Vec<StoredMessage> = (0..4).map(|k| message(first + e * 4 + k, epoch)).collect();
        for m in &messages {
            sent.insert(m.message_id.clone(), m.body.clone());
        }
        let messages = MessageBatch::encode(&messages)?;
        let (_, r) = write(nodes, Command::Send { now: Millis(common::now_ms()), messages, proposal: None }).await?;
        anyhow::ensure!(matches!(&r, Response::Sent(s) if s.iter().all(|x| x.is_ok())), "send refused: {r:?}");
    }
    Ok(sent)
}

/// What reading every message `node`'s ConsumeQueues reference from its own CommitLog gives.
enum Reads {
    /// Every body as sent.
    All,
    /// Some entries are still being copied in (the retryable error).
    Copying(String),
}

fn read_all(node: &Node, sent: &BTreeMap<String, Bytes>) -> anyhow::Result<Reads> {
    let Some(locations) = common::locations(node, TOPIC, QUEUES) else {
        return Ok(Reads::Copying("the ConsumeQueue is not dispatched that far yet".into()));
    };
    anyhow::ensure!(locations.len() == sent.len(), "{} queue records for {} messages", locations.len(), sent.len());
    for (index, slot) in locations {
        let m = match read_message(&node.log, &(ENTRY_VERSION..=ENTRY_VERSION), index, Slot(slot)) {
            Ok(Some(m)) => m,
            Ok(None) => anyhow::bail!("entry {index} slot {slot} is missing and not marked as being copied in"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(Reads::Copying(e.to_string())),
            Err(e) => anyhow::bail!("reading entry {index}: {e} (not the retryable error)"),
        };
        anyhow::ensure!(sent.get(&m.message_id) == Some(&m.body), "entry {index} slot {slot}: wrong body");
    }
    Ok(Reads::All)
}

/// Waits until `node` applied what the leader did, then until it reads every message.
async fn caught_up_and_readable(node: &Node, others: &[&Node], sent: &BTreeMap<String, Bytes>) -> anyhow::Result<()> {
    // The state machines, not the metrics (which lag behind them).
    let applied = |n: &Node| n.state.read(|a| a.last_applied.map(|l| l.index()));
    let target = others.iter().filter_map(|n| applied(n)).max();
    common::wait_for("the returning node applies everything", Duration::from_secs(20), || applied(node) >= target)
        .await?;
    let start = Instant::now();
    let mut copying = 0;
    loop {
        match read_all(node, sent)? {
            Reads::All => break,
            Reads::Copying(why) => {
                copying += 1;
                anyhow::ensure!(start.elapsed() < Duration::from_secs(20), "still not readable: {why}");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("all {} messages readable after {:?} ({copying} retryable refusals)", sent.len(), start.elapsed());
    common::wait_for("the backfill is done", Duration::from_secs(5), || {
        node.backfill.pending().is_none() && node.log.incomplete().is_none()
    })
    .await
}

/// Sends at least `min_entries` entries, and until every running node purged past `past`.
async fn send_until_purged(
    nodes: &[&Node],
    past: u64,
    first: u32,
    min_entries: u32,
) -> anyhow::Result<BTreeMap<String, Bytes>> {
    let mut sent = BTreeMap::new();
    let mut next = first;
    let deadline = Instant::now() + Duration::from_secs(60);
    let purged = |n: &&Node| n.raft.metrics().borrow_watched().purged.is_some_and(|p| p.index() > past + 20);
    while next < first + min_entries * 4 || !nodes.iter().all(purged) {
        anyhow::ensure!(Instant::now() < deadline, "the running nodes did not purge past {past}");
        sent.extend(send(nodes, next, 20).await?);
        next += 80;
    }
    Ok(sent)
}

async fn start_group(cfgs: &[NodeConfig], which: &[usize]) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for &i in which {
        nodes.push(Node::start(cfgs[i].clone()).await?);
    }
    let all: Vec<&Node> = nodes.iter().collect();
    common::wait_for("a leader", Duration::from_secs(10), || common::leader_of(&all).is_some()).await?;
    let topic = TopicName::new(TOPIC)?;
    write(&all, Command::UpsertTopic { topic, config: TopicConfig::all_types(QUEUES) }).await?;
    Ok(nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_back_after_the_purge_installs_a_snapshot_and_copies_the_messages_in() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfgs = configs(dir.path())?;
    let mut nodes = start_group(&cfgs, &[0, 1, 2]).await?;
    let mut sent = send(&nodes.iter().collect::<Vec<_>>(), 0, 30).await?;

    // Stop a follower; the others go on, snapshot and purge past everything it holds.
    let leader = leader_id(&nodes.iter().collect::<Vec<_>>()).ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let pos = nodes.iter().position(|n| n.raft.metrics().borrow_watched().id != leader).expect("a follower");
    let follower = nodes.remove(pos);
    let id = follower.raft.metrics().borrow_watched().id;
    let held = follower.log.view().last.map_or(0, |l| l.0);
    follower.shutdown().await;
    let rest: Vec<&Node> = nodes.iter().collect();
    sent.extend(send_until_purged(&rest, held, 1000, 100).await?);
    let purged = rest.iter().filter_map(|n| n.raft.metrics().borrow_watched().purged).map(|p| p.index()).min();
    assert!(purged > Some(held), "the others purged past {held}: {purged:?}");

    // Back on its old data: entries up to `held` are local, the rest must come from others.
    let back = Node::start(cfgs[(id.0 - 1) as usize].clone()).await?;
    caught_up_and_readable(&back, &rest, &sent).await?;
    let snapshot = back.raft.metrics().borrow_watched().snapshot.map(|s| s.index());
    assert!(snapshot >= purged, "it caught up through a snapshot at or past {purged:?}: {snapshot:?}");
    let view = back.log.view();
    assert!(view.first.is_some_and(|f| f <= 1), "its old records are still there: {view:?}");

    // It also takes new messages normally afterwards.
    let mut all: Vec<&Node> = nodes.iter().collect();
    all.push(&back);
    sent.extend(send(&all, 5000, 5).await?);
    caught_up_and_readable(&back, &rest, &sent).await?;
    back.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_first_started_after_the_purge_gets_every_retained_message_then_retention_applies()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfgs = configs(dir.path())?;
    // Node 3 is in the group from the start but has never run.
    let nodes = start_group(&cfgs, &[0, 1]).await?;
    let rest: Vec<&Node> = nodes.iter().collect();
    // About 3.5 MiB of messages: several 1 MiB segments.
    let sent = send_until_purged(&rest, 0, 0, 300).await?;

    let fresh = Node::start(cfgs[2].clone()).await?;
    caught_up_and_readable(&fresh, &rest, &sent).await?;
    let snapshot = fresh.raft.metrics().borrow_watched().snapshot.map(|s| s.index());
    assert!(snapshot.is_some_and(|s| s > 20), "it caught up through a snapshot: {snapshot:?}");
    let segments = fresh.log.segment_ranges();
    assert!(segments.len() >= 3, "the copy spans several 1 MiB segments: {segments:?}");

    // It answers queries by message id from the IndexFile it built from the copied segments:
    // the first message sent (in a segment copied in) and the last.
    let ids = [
        sent.keys().min_by_key(|id| id[1..].parse::<u32>().unwrap_or(0)),
        sent.keys().max_by_key(|id| id[1..].parse::<u32>().unwrap_or(0)),
    ];
    for id in ids.into_iter().flatten() {
        let hits = fresh.stores.lookup(IndexKey::Id(id), Millis(0), Millis(i64::MAX))?;
        anyhow::ensure!(hits.len() == 1, "{id}: {hits:?}");
        let m = read_message(&fresh.log, &(ENTRY_VERSION..=ENTRY_VERSION), hits[0].log_index.0, hits[0].slot)?;
        anyhow::ensure!(m.as_ref().map(|m| &m.message_id) == Some(id), "{id}: wrong message at {:?}", hits[0]);
    }

    // Three days on every message is past the reserved time, but on this follower the queues
    // still start at their first messages (only the leader trims them, through the log):
    // retention must not delete anything a queue references, and never past the purge point.
    let later = SystemTime::now() + Duration::from_secs(73 * 3600);
    let removed =
        retention::run_once(&fresh.raft, &fresh.log, &fresh.state, &fresh.stores, &RetentionConfig::default(), later)
            .await?;
    let keep = common::locations(&fresh, TOPIC, QUEUES)
        .and_then(|l| l.iter().map(|&(index, _)| index).min())
        .expect("queues hold dispatched messages");
    let purge = fresh.log.view().purged.map(|p| p.index).expect("purged");
    assert!(removed.iter().all(|s| s.next <= keep && s.next <= purge + 1), "{removed:?} (keep from {keep})");
    caught_up_and_readable(&fresh, &rest, &sent).await?;
    let store = RaftLogStore::<TypeConfig>::with_entry_version(fresh.log.clone(), ENTRY_VERSION);
    assert_eq!(store.retained_entries(keep, keep + 1)?.len(), 1, "the first referenced entry stays");
    fresh.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}
