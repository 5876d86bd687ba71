//! A member whose data directory was lost comes back under its old id with an empty disk:
//! it no longer knows whom it voted for, so it must not vote until the leader has brought
//! it up to date. Three nodes over real gRPC: after a run, node 1's directory is wiped and
//! it starts beside node 2 alone; without its vote node 2 cannot win, so no leader is
//! elected (had node 1 voted, node 2 would lead on a quorum that includes a node holding
//! none of what the group acknowledged). Once node 3 is back a leader is elected, node 1
//! is brought up to date, and from then on it votes: with node 3 stopped again, nodes 1
//! and 2 elect a leader between them.

use std::time::{Duration, Instant};

use broker::node::{Node, NodeConfig};
use openraft::async_runtime::watch::WatchReceiver;
use raft_log::LogConfig;

mod common;

use common::grpc::{applied_messages, send_until_ok};

fn leader(nodes: &[&Node]) -> Option<u64> {
    common::leader_of(nodes).map(|n| n.raft.metrics().borrow_watched().id.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_a_lost_disk_does_not_vote_until_brought_up_to_date() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfgs = common::three_nodes(dir.path(), "blank", |c| NodeConfig {
        log: LogConfig { segment_size: 1 << 20, max_payload: 256 << 10, ..LogConfig::default() },
        service: broker::settings::ServiceSettings { auto_create_queues: Some(1), ..Default::default() },
        ..c
    })?;
    let nodes = common::start_all(&cfgs).await?;
    let bodies: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    send_until_ok(&nodes[0].client_addr.to_string(), &bodies, Duration::from_secs(20)).await?;
    common::wait_for("every member applies the messages", Duration::from_secs(10), || {
        nodes.iter().all(|n| applied_messages(n) == 20)
    })
    .await?;
    for n in nodes {
        n.shutdown().await;
    }

    // Node 1 loses its disk and comes back beside node 2 only.
    std::fs::remove_dir_all(&cfgs[0].data_dir)?;
    let n1 = Node::start(cfgs[0].clone()).await?;
    let n2 = Node::start(cfgs[1].clone()).await?;
    // Several election timeouts (500-750 ms) pass: node 2 asks for votes, node 1 refuses.
    let window = Instant::now() + Duration::from_secs(4);
    while Instant::now() < window {
        anyhow::ensure!(
            leader(&[&n1, &n2]).is_none(),
            "a leader was elected with the vote of a node that lost its data"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(applied_messages(&n1), 0, "nobody brought node 1 back");

    // Node 3 returns: nodes 2 and 3 elect a leader, which brings node 1 up to date.
    let n3 = Node::start(cfgs[2].clone()).await?;
    common::wait_for("a leader among nodes 2 and 3", Duration::from_secs(10), || {
        matches!(leader(&[&n1, &n2, &n3]), Some(2 | 3))
    })
    .await?;
    common::wait_for("node 1 is brought up to date", Duration::from_secs(10), || applied_messages(&n1) == 20).await?;

    // Now node 1 votes again: without node 3, nodes 1 and 2 elect a leader.
    n3.shutdown().await;
    common::wait_for("nodes 1 and 2 elect a leader", Duration::from_secs(10), || leader(&[&n1, &n2]).is_some()).await?;
    let more: Vec<String> = (20..25).map(|i| format!("m{i}")).collect();
    send_until_ok(&n2.client_addr.to_string(), &more, Duration::from_secs(20)).await?;
    n1.shutdown().await;
    n2.shutdown().await;
    Ok(())
}
