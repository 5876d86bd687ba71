//! A three-node group in one process over real gRPC on loopback: election, replication of
//! commands to every state machine, and failover when the leader stops.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

mod common;

use broker::node::{Node, NodeConfig};
use broker::raft::NodeId;
use bytes::Bytes;
use openraft::async_runtime::watch::WatchReceiver;
use raft_log::LogConfig;
use raftmq_machine::types::{Millis, QueueId, StoredMessage, TopicConfig, TopicName};
use raftmq_machine::{Command, LogIndex, MessageBatch, QueueOffset, Response, Slot};

fn configs(dir: &std::path::Path) -> anyhow::Result<Vec<NodeConfig>> {
    common::three_nodes(dir, "g1", |c| NodeConfig {
        log: LogConfig { segment_size: 4 << 20, max_payload: 1 << 20, ..LogConfig::default() },
        snapshot_every: 1000,
        keep_after_snapshot: 100,
        ..c
    })
}

async fn wait_leader(nodes: &[&Node], not: Option<NodeId>, deadline: Duration) -> anyhow::Result<NodeId> {
    let start = Instant::now();
    loop {
        let leaders: Vec<Option<NodeId>> =
            nodes.iter().map(|n| n.raft.metrics().borrow_watched().current_leader).collect();
        if let Some(Some(l)) = leaders.first()
            && leaders.iter().all(|x| *x == Some(*l))
            && Some(*l) != not
            && nodes.iter().any(|n| n.raft.metrics().borrow_watched().id == *l)
        {
            return Ok(*l);
        }
        anyhow::ensure!(start.elapsed() < deadline, "no agreed leader after {deadline:?}: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_applied(nodes: &[&Node], index: u64, deadline: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while !nodes.iter().all(|n| n.raft.metrics().borrow_watched().last_applied.is_some_and(|l| l.index() >= index)) {
        anyhow::ensure!(start.elapsed() < deadline, "not every node applied {index} within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn message(i: u32, epoch: LogIndex) -> StoredMessage {
    StoredMessage {
        topic: TopicName::new("orders").expect("valid"),
        queue: QueueId(i % 4),
        topic_epoch: epoch,
        message_id: format!("m{i}"),
        tag: Some("A".into()),
        keys: vec![],
        message_group: None,
        properties: BTreeMap::new(),
        born: Millis(1),
        deliver_at: None,
        transactional: false,
        born_host: "test".into(),
        body: Bytes::from(format!("body {i}")),
        body_gzip: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_and_fail_over() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut nodes = Vec::new();
    for cfg in configs(dir.path())? {
        nodes.push(Node::start(cfg).await?);
    }
    let all: Vec<&Node> = nodes.iter().collect();
    wait_leader(&all, None, Duration::from_secs(10)).await?;

    let topic = TopicName::new("orders")?;
    let r = common::write_until_served(
        &all,
        Command::UpsertTopic { topic: topic.clone(), config: TopicConfig::all_types(4) },
        Duration::from_secs(5),
    )
    .await?;
    assert_eq!(r.data, Response::Done);
    let epoch = LogIndex(r.log_id.index());
    let r = common::write_until_served(
        &all,
        Command::Send {
            now: Millis(10),
            messages: MessageBatch::encode(&(0..8).map(|i| message(i, epoch)).collect::<Vec<_>>())?,
            proposal: None,
        },
        Duration::from_secs(5),
    )
    .await?;
    let Response::Sent(sent) = &r.data else { panic!("expected Sent, got {:?}", r.data) };
    assert_eq!(sent.len(), 8);
    assert!(sent.iter().all(|s| s.is_ok()));
    let index = r.log_id.index();
    wait_applied(&all, index, Duration::from_secs(5)).await?;
    for n in &nodes {
        assert_eq!(n.state.read(|a| a.machine.queue(&topic, QueueId(1)).map(|q| q.max_offset())), Some(2));
        // The message bodies are in every node's CommitLog at the index its ConsumeQueue names.
        let record = || n.stores.record(&topic, QueueId(1), QueueOffset(0)).expect("the ConsumeQueue reads");
        common::wait_for("dispatch writes the record", Duration::from_secs(5), || record().is_some()).await?;
        assert_eq!(record().map(|r| (r.log_index, r.slot)), Some((LogIndex(index), Slot(1))));
        assert_eq!(n.log.read(index, index + 1)?.len(), 1);
    }

    // Stop the leader (whoever leads now); the other two elect a new one.
    let leader = wait_leader(&all, None, Duration::from_secs(5)).await?;
    let old = nodes.remove((leader.0 - 1) as usize);
    let stopped_at = Instant::now();
    old.shutdown().await;
    eprintln!("shutdown took {:?}", stopped_at.elapsed());
    let rest: Vec<&Node> = nodes.iter().collect();
    let new_leader = wait_leader(&rest, Some(leader), Duration::from_secs(5)).await?;
    assert_ne!(new_leader, leader);
    // A node that has just won may still be settling (or lose a re-election); like a client,
    // retry on "forward to leader" until a write commits, and count failover up to that point.
    let r = common::write_until_served(
        &rest,
        Command::Send { now: Millis(20), messages: MessageBatch::encode(&[message(1, epoch)])?, proposal: None },
        Duration::from_secs(5),
    )
    .await?;
    let failover = stopped_at.elapsed();
    eprintln!("failover: node {leader} stopped, a write committed {failover:?} later");
    assert!(failover < Duration::from_secs(2), "failover took {failover:?}");
    let Response::Sent(sent) = &r.data else { panic!("expected Sent") };
    assert_eq!(sent[0].as_ref().map(|s| s.offset), Ok(Some(QueueOffset(2))), "offsets continue after failover");
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}

/// A follower that missed 36 MiB of entries is sent them as one openraft request, which
/// goes over the Raft port in pieces under its message limit; the follower catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_catches_up_over_split_appends() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfgs = configs(dir.path())?;
    let mut nodes = common::start_all(&cfgs).await?;
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = wait_leader(&all, None, Duration::from_secs(10)).await?;
    let topic = TopicName::new("orders")?;
    let r = common::write_until_served(
        &all,
        Command::UpsertTopic { topic: topic.clone(), config: TopicConfig::all_types(4) },
        Duration::from_secs(5),
    )
    .await?;
    let epoch = LogIndex(r.log_id.index());

    let follower = nodes.iter().position(|n| n.raft.metrics().borrow_watched().id != leader).expect("a follower");
    let stopped = nodes.remove(follower);
    let follower_cfg = cfgs[(stopped.raft.metrics().borrow_watched().id.0 - 1) as usize].clone();
    stopped.shutdown().await;
    let rest: Vec<&Node> = nodes.iter().collect();
    let mut last = 0;
    for i in 0..40u32 {
        let mut m = message(i, epoch);
        m.body = Bytes::from(vec![i as u8; 900 << 10]);
        let r = common::write_until_served(
            &rest,
            Command::Send { now: Millis(10), messages: MessageBatch::encode(&[m])?, proposal: None },
            Duration::from_secs(10),
        )
        .await?;
        last = r.log_id.index();
    }
    nodes.push(Node::start(follower_cfg).await?);
    let all: Vec<&Node> = nodes.iter().collect();
    wait_applied(&all, last, Duration::from_secs(30)).await?;
    for n in &nodes {
        let stored: u64 =
            (0..4).filter_map(|q| n.state.read(|a| a.machine.queue(&topic, QueueId(q)).map(|q| q.max_offset()))).sum();
        assert_eq!(stored, 40, "node {} holds {stored} of the 40 messages", n.raft.metrics().borrow_watched().id);
    }
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}
