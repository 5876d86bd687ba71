//! Age-based retention in a three-node group over real gRPC on loopback: three days on,
//! the leader trims every queue past the expired messages through the Raft log, every
//! member moves its queues' minimum offsets, the leader and then a follower delete the
//! expired CommitLog segments, and consumers see none of the deleted messages (and no
//! error) but everything sent afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

mod common;

use broker::node::{Node, NodeConfig};
use broker::retention::{self, RetentionConfig};
use bytes::Bytes;
use openraft::async_runtime::watch::WatchReceiver;
use raft_log::LogConfig;
use raftmq_machine::types::{Millis, QueueId, StoredMessage, TopicConfig, TopicName};
use raftmq_machine::{Command, MessageBatch, Response};
use raftmq_proto::rocketmq::v2::Code;

const TOPIC: &str = "events";
const QUEUES: u32 = 4;

fn configs(dir: &Path) -> anyhow::Result<Vec<NodeConfig>> {
    common::three_nodes(dir, "ret", |c| NodeConfig {
        log: LogConfig { segment_size: 1 << 20, max_payload: 256 << 10, ..LogConfig::default() },
        snapshot_every: 50,
        keep_after_snapshot: 10,
        // The test runs retention itself, at a chosen time.
        retention: RetentionConfig { interval: Duration::from_secs(3600), ..RetentionConfig::default() },
        ..c
    })
}

fn leader(nodes: &[Node]) -> Option<&Node> {
    common::leader_of(&nodes.iter().collect::<Vec<_>>())
}

/// Proposes `cmd` on whichever node leads until one commits it.
async fn write(nodes: &[Node], cmd: Command) -> anyhow::Result<Response> {
    let all: Vec<&Node> = nodes.iter().collect();
    Ok(common::write_until_served(&all, cmd, Duration::from_secs(10)).await?.data)
}

/// Sends `entries` entries of 4 messages (3 KiB bodies naming them) from number `first`.
async fn send(nodes: &[Node], first: u32, entries: u32) -> anyhow::Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    let epoch = common::epoch(&nodes.iter().collect::<Vec<_>>(), TOPIC);
    for e in 0..entries {
        let messages: Vec<StoredMessage> = (0..4)
            .map(|k| {
                let i = first + e * 4 + k;
                let name = format!("message {i}");
                names.insert(name.clone());
                let mut body = format!("{name}|").into_bytes();
                body.resize(3 << 10, b'x');
                StoredMessage {
                    topic: TopicName::new(TOPIC).expect("valid"),
                    queue: QueueId(i % QUEUES),
                    topic_epoch: epoch,
                    message_id: format!("m{i}"),
                    tag: None,
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
            })
            .collect();
        let messages = MessageBatch::encode(&messages)?;
        let r = write(nodes, Command::Send { now: Millis(common::now_ms()), messages, proposal: None }).await?;
        anyhow::ensure!(matches!(&r, Response::Sent(s) if s.iter().all(|x| x.is_ok())), "send refused: {r:?}");
    }
    Ok(names)
}

/// (min, max) offsets of every queue in `node`'s applied state.
fn bounds(node: &Node) -> Vec<(u64, u64)> {
    let topic = TopicName::new(TOPIC).expect("valid");
    node.state.read(|a| {
        (0..QUEUES)
            .map(|q| a.machine.queue(&topic, QueueId(q)).map_or((0, 0), |x| (x.min_offset(), x.max_offset())))
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_trims_expired_messages_and_every_member_deletes_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut nodes = Vec::new();
    for cfg in configs(dir.path())? {
        nodes.push(Node::start(cfg).await?);
    }
    common::wait_for("a leader", Duration::from_secs(10), || leader(&nodes).is_some()).await?;
    let topic = TopicName::new(TOPIC)?;
    write(&nodes, Command::UpsertTopic { topic, config: TopicConfig::all_types(QUEUES) }).await?;

    // About 3.5 MiB of messages: several 1 MiB segments, purged on every member.
    let old = send(&nodes, 0, 300).await?;
    let last = |n: &Node| n.state.read(|a| a.last_applied.map_or(0, |l| l.index()));
    let target = nodes.iter().map(last).max().unwrap_or(0);
    common::wait_for("every member applies and purges", Duration::from_secs(20), || {
        nodes.iter().all(|n| {
            last(n) >= target
                && n.stores.dispatched().0 >= target
                && n.raft.metrics().borrow_watched().purged.is_some_and(|p| p.index() > target / 2)
        })
    })
    .await?;
    let before: Vec<Vec<(u64, u64)>> = nodes.iter().map(bounds).collect();
    assert!(before.iter().all(|b| b.iter().all(|&(min, max)| min == 0 && max == 300)), "{before:?}");
    let segments = |n: &Node| n.log.segment_ranges();
    assert!(segments(&nodes[0]).len() >= 3, "several segments: {:?}", segments(&nodes[0]));

    // A follower run first: no trim is applied yet, so it deletes nothing a queue holds.
    let later = SystemTime::now() + Duration::from_secs(73 * 3600);
    let config = RetentionConfig::default();
    let leader_id = leader(&nodes).map(|n| n.raft.metrics().borrow_watched().id).expect("a leader");
    let (lead, follower) = {
        let lead = nodes.iter().position(|n| n.raft.metrics().borrow_watched().id == leader_id).expect("leader");
        (lead, (lead + 1) % nodes.len())
    };
    let first_held =
        |n: &Node| common::locations(n, TOPIC, QUEUES).expect("dispatched").iter().map(|&(index, _)| index).min();
    let held = first_held(&nodes[follower]).expect("queues hold messages");
    let f0 = &nodes[follower];
    let removed = retention::run_once(&f0.raft, &f0.log, &f0.state, &f0.stores, &config, later).await?;
    assert!(removed.iter().all(|s| s.next <= held), "{removed:?} (queues hold from {held})");
    assert_eq!(bounds(&nodes[follower]), before[follower], "a follower does not trim");

    // The leader trims, and deletes the expired segments.
    let n = &nodes[lead];
    let removed = retention::run_once(&n.raft, &n.log, &n.state, &n.stores, &config, later).await?;
    assert!(!removed.is_empty(), "the leader deletes expired segments: {:?}", segments(n));
    eprintln!("leader deleted {} segments", removed.len());
    let purged = n.log.view().purged.map(|p| p.index).expect("purged");
    assert!(removed.iter().all(|s| s.next <= purged + 1), "{removed:?} past the purge point {purged}");

    // Every member applies the trim: each queue is empty at its old maximum.
    common::wait_for("every member applies the trim", Duration::from_secs(10), || {
        nodes.iter().all(|n| bounds(n).iter().all(|&(min, max)| min == 300 && max == 300))
    })
    .await?;
    assert_eq!(first_held(&nodes[lead]), None);

    // Now the follower deletes too.
    let f = &nodes[follower];
    let first_before = segments(f).first().map(|s| s.0);
    let removed = retention::run_once(&f.raft, &f.log, &f.state, &f.stores, &config, later).await?;
    assert!(!removed.is_empty(), "the follower deletes once the trim applied: {:?}", segments(f));
    assert!(segments(f).first().map(|s| s.0) > first_before);

    // A new consumer group gets none of the deleted messages, and no error.
    let addr = nodes[lead].client_addr.to_string();
    let (names, status) = common::grpc::receive(&addr, TOPIC, "fresh").await?;
    assert!(names.is_empty(), "deleted messages delivered: {names:?}");
    assert_eq!(status, Some(Code::MessageNotFound as i32));

    // Messages sent after the trim are received.
    let new = send(&nodes, 10_000, 3).await?;
    let mut got = BTreeSet::new();
    let start = Instant::now();
    while got.len() < new.len() {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "received {got:?} of {new:?}");
        let (names, status) = common::grpc::receive(&addr, TOPIC, "fresh").await?;
        anyhow::ensure!(
            matches!(status, Some(c) if c == Code::Ok as i32 || c == Code::MessageNotFound as i32),
            "receive failed: {status:?}"
        );
        for name in names {
            assert!(!old.contains(&name), "deleted message {name} delivered");
            assert!(got.insert(name.clone()), "{name} delivered twice");
        }
    }
    assert_eq!(got, new);
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}
