//! A group of one node is its own quorum: it stores sends however long it runs without
//! followers (a leader that hears from no quorum for longer than its lease refuses sends,
//! and a lone voter never hears from anyone).

use std::collections::BTreeMap;
use std::time::Duration;

use broker::node::{Node, NodeConfig};
use broker::raft::NodeInfo;
use broker::settings::ServiceSettings;
use raft_log::LogConfig;
use raftmq_machine::NodeId;

mod common;

use common::grpc::{applied_messages, ok, send, send_until_ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_voter_keeps_storing_sends_past_its_lease() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let peers =
        BTreeMap::from([(NodeId(1), NodeInfo { raft_addr: common::free_addr()?, client_addr: common::free_addr()? })]);
    let cfg = NodeConfig {
        group: "alone".into(),
        node_id: NodeId(1),
        peers,
        data_dir: dir.path().join("n1"),
        heartbeat: Duration::from_millis(50),
        election_timeout: Duration::from_millis(200),
        log: LogConfig { segment_size: 4 << 20, max_payload: 1 << 20, ..LogConfig::default() },
        service: ServiceSettings { auto_create_queues: Some(1), ..ServiceSettings::default() },
        ..NodeConfig::default()
    };
    let node = Node::start(cfg).await?;
    let addr = node.client_addr.to_string();
    send_until_ok(&addr, &["first".to_string()], Duration::from_secs(10)).await?;
    // Well past the lease (1.5 × the election timeout) with nobody to acknowledge it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answer = send(&addr, &["second".to_string()], Duration::from_secs(5)).await?;
    assert!(ok(answer.status.as_ref()), "a lone voter refused a send: {answer:?}");
    assert_eq!(applied_messages(&node), 2);
    node.shutdown().await;
    Ok(())
}
