//! `ack = "leader"` in a three-node group in one process over real gRPC: a send is answered
//! once the leader's own write is durable, without a quorum (which `ack = "quorum"` waits
//! for), with offset -1; acknowledged messages reach every node's consumers after commit.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use broker::node::{Node, NodeConfig};
use broker::raft::NodeId;
use broker::settings::AckMode;
use broker::settings::ServiceSettings;
use openraft::async_runtime::watch::WatchReceiver;
use raft_log::LogConfig;

mod common;

use common::grpc::{applied_messages, ok, pull_bodies, send, send_until_ok};

/// Configs of a three-node group answering sends as `ack` says; topics are auto-created.
fn configs(dir: &std::path::Path, ack: AckMode, election_timeout: Duration) -> anyhow::Result<Vec<NodeConfig>> {
    common::three_nodes(dir, "ack", |c| NodeConfig {
        log: LogConfig { segment_size: 4 << 20, max_payload: 1 << 20, ..LogConfig::default() },
        election_timeout,
        service: ServiceSettings { auto_create_queues: Some(2), ack, ..ServiceSettings::default() },
        ..c
    })
}

async fn start(cfgs: &[NodeConfig]) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for cfg in cfgs {
        nodes.push(Node::start(cfg.clone()).await?);
    }
    Ok(nodes)
}

/// The leader every node agrees on.
async fn wait_leader(nodes: &[Node], deadline: Duration) -> anyhow::Result<NodeId> {
    let start = Instant::now();
    loop {
        let leaders: Vec<Option<NodeId>> =
            nodes.iter().map(|n| n.raft.metrics().borrow_watched().current_leader).collect();
        if let Some(Some(l)) = leaders.first()
            && leaders.iter().all(|x| *x == Some(*l))
        {
            return Ok(*l);
        }
        anyhow::ensure!(start.elapsed() < deadline, "no agreed leader after {deadline:?}: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts a group with a long election timeout (so the leader's lease outlives the followers
/// by seconds), stores one message with every node up, and stops both followers.
async fn leader_alone(dir: &std::path::Path, ack: AckMode) -> anyhow::Result<(Node, Vec<NodeConfig>)> {
    let cfgs = configs(dir, ack, Duration::from_secs(3))?;
    let nodes = start(&cfgs).await?;
    let leader = wait_leader(&nodes, Duration::from_secs(20)).await?;
    let addr = nodes[leader.0 as usize - 1].client_addr.to_string();
    send_until_ok(&addr, &["first".to_string()], Duration::from_secs(10)).await?;
    // Committed and applied everywhere before the followers go.
    let start = Instant::now();
    while !nodes.iter().all(|n| applied_messages(n) == 1) {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "the first message was not applied everywhere");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leader_node = {
        let mut leader_node = None;
        for node in nodes {
            if node.raft.metrics().borrow_watched().id == leader {
                leader_node = Some(node);
            } else {
                node.shutdown().await;
            }
        }
        leader_node.ok_or_else(|| anyhow::anyhow!("leader {leader} is not among the nodes"))?
    };
    Ok((leader_node, cfgs))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_ack_answers_without_a_quorum_and_the_message_commits_later() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (leader, cfgs) = leader_alone(dir.path(), AckMode::Leader).await?;
    let addr = leader.client_addr.to_string();
    let answer = send(&addr, &["alone".to_string()], Duration::from_secs(3)).await?;
    assert!(ok(answer.status.as_ref()), "ack = leader without a quorum: {answer:?}");
    assert_eq!(answer.entries.len(), 1);
    let entry = &answer.entries[0];
    assert!(ok(entry.status.as_ref()), "{entry:?}");
    assert_eq!(entry.offset, -1, "answered before apply, so no offset");
    assert!(!entry.message_id.is_empty());
    assert_eq!(applied_messages(&leader), 1, "acknowledged without being committed");

    // One follower returns: the acknowledged message commits and a consumer reads it.
    let leader_id = leader.raft.metrics().borrow_watched().id;
    let follower = cfgs.iter().find(|c| c.node_id != leader_id).expect("two followers").clone();
    let follower = Node::start(follower).await?;
    let bodies = pull_bodies(&addr, 2, Duration::from_secs(20)).await?;
    assert_eq!(bodies, BTreeSet::from(["first".to_string(), "alone".to_string()]));
    let follower_addr = follower.client_addr.to_string();
    let bodies = pull_bodies(&follower_addr, 2, Duration::from_secs(20)).await?;
    assert_eq!(bodies, BTreeSet::from(["first".to_string(), "alone".to_string()]));
    follower.shutdown().await;
    leader.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_ack_waits_for_a_quorum() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (leader, _) = leader_alone(dir.path(), AckMode::Quorum).await?;
    let addr = leader.client_addr.to_string();
    match send(&addr, &["alone".to_string()], Duration::from_secs(2)).await {
        // Refused (the leader's lease ran out) or ...
        Ok(answer) => assert!(!ok(answer.status.as_ref()), "ack = quorum answered OK without a quorum: {answer:?}"),
        // ... still waiting for a quorum when the caller gave up.
        Err(e) => {
            let timed_out = e.downcast_ref::<tokio::time::error::Elapsed>().is_some()
                || e.downcast_ref::<tonic::Status>()
                    .is_some_and(|s| matches!(s.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled));
            assert!(timed_out, "expected a timeout, got {e:#}");
        }
    }
    assert_eq!(applied_messages(&leader), 1, "nothing committed without a quorum");
    leader.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_ack_sends_reach_consumers_on_every_node() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfgs = configs(dir.path(), AckMode::Leader, Duration::from_millis(500))?;
    let nodes = start(&cfgs).await?;
    wait_leader(&nodes, Duration::from_secs(10)).await?;
    let addrs: Vec<String> = nodes.iter().map(|n| n.client_addr.to_string()).collect();
    send_until_ok(&addrs[0], &["first".to_string()], Duration::from_secs(10)).await?;

    // Eight concurrent requests of five messages, through every node (followers forward).
    let mut sends = Vec::new();
    for r in 0..8 {
        let addr = addrs[r % addrs.len()].clone();
        let bodies: Vec<String> = (0..5).map(|i| format!("m{r}-{i}")).collect();
        sends.push(tokio::spawn(async move { send(&addr, &bodies, Duration::from_secs(10)).await }));
    }
    let mut ids = BTreeSet::new();
    for s in sends {
        let answer = s.await??;
        assert!(ok(answer.status.as_ref()), "{answer:?}");
        assert_eq!(answer.entries.len(), 5);
        for e in &answer.entries {
            assert!(ok(e.status.as_ref()), "{e:?}");
            assert!(e.offset >= -1, "{e:?}");
            ids.insert(e.message_id.clone());
        }
    }
    assert_eq!(ids.len(), 40, "every message has its own id");

    let mut want: BTreeSet<String> = (0..8).flat_map(|r| (0..5).map(move |i| format!("m{r}-{i}"))).collect();
    want.insert("first".to_string());
    for addr in &addrs {
        assert_eq!(pull_bodies(addr, want.len(), Duration::from_secs(20)).await?, want, "on {addr}");
    }
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}
