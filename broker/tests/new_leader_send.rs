//! A send that reaches a leader the moment it is elected, before a quorum has acknowledged
//! it, is stored: openraft refuses such a write (its lease is not yet valid) without
//! appending it, and the proposer proposes it again once the lease holds. Three nodes over
//! real gRPC: the leader is stopped, and sends go to the next leader as soon as its own
//! metrics say it leads, several times over.

use std::time::{Duration, Instant};

use broker::node::NodeConfig;
use openraft::async_runtime::watch::WatchReceiver;
use raft_log::LogConfig;

mod common;

use common::grpc::{ok, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_to_a_leader_just_elected_is_stored() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfgs = common::three_nodes(dir.path(), "fresh", |c| NodeConfig {
        log: LogConfig { segment_size: 1 << 20, max_payload: 256 << 10, ..LogConfig::default() },
        service: broker::settings::ServiceSettings { auto_create_queues: Some(1), ..Default::default() },
        ..c
    })?;
    let mut nodes: Vec<Option<broker::node::Node>> = common::start_all(&cfgs).await?.into_iter().map(Some).collect();
    let mut refused = Vec::new();
    for round in 0..6 {
        // The current leader, once the group has one and it stores a send.
        let live = || nodes.iter().flatten().collect::<Vec<_>>();
        common::wait_for("a leader", Duration::from_secs(10), || common::leader_of(&live()).is_some()).await?;
        let leader = common::leader_of(&live()).map(|n| n.raft.metrics().borrow_watched().id).expect("a leader");
        let addr = nodes[leader.0 as usize - 1].as_ref().map(|n| n.client_addr.to_string()).expect("live");
        common::grpc::send_until_ok(&addr, &[format!("warm-{round}")], Duration::from_secs(20)).await?;

        // Stop it, and send to the next leader the moment it says it leads.
        let old = nodes[leader.0 as usize - 1].take().expect("live");
        old.shutdown().await;
        let started = Instant::now();
        let next = loop {
            if let Some(n) = common::leader_of(&nodes.iter().flatten().collect::<Vec<_>>()) {
                break n.client_addr.to_string();
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(10), "no new leader");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let answer = send(&next, &[format!("first-{round}")], Duration::from_secs(5)).await?;
        if !ok(answer.status.as_ref()) {
            refused.push(format!("round {round}: {:?}", answer.status));
        }
        nodes[leader.0 as usize - 1] = Some(broker::node::Node::start(cfgs[leader.0 as usize - 1].clone()).await?);
    }
    for n in nodes.into_iter().flatten() {
        n.shutdown().await;
    }
    anyhow::ensure!(refused.is_empty(), "sends to a new leader were refused: {refused:?}");
    Ok(())
}
