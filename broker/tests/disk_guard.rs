//! The disk guard in a three-node group over real gRPC: while the disk holding the data is
//! past the threshold, a send is refused with a status that names the node, the directory
//! and how full it is, nothing of it is stored, and consumers still receive (a Raft entry
//! per receive) what was stored before; with the threshold back above the usage, sends
//! are stored again.
//!
//! The threshold moves instead of the disk filling: the test lowers it below what the
//! machine's disk already holds (it needs a disk at least 1% full).

use std::time::Duration;

use broker::disk::{Threshold, Usage};
use broker::node::{Node, NodeConfig};
use broker::retention::RetentionConfig;
use broker::settings::ServiceSettings;
use raft_log::LogConfig;
use raftmq_proto::rocketmq::v2::Code;

mod common;

use common::grpc::{TOPIC, applied_messages, ok, receive, send, send_until_ok};

/// Starts the group `cfgs` describes (the same addresses and directories each time),
/// refusing sends at `refuse_percent` whatever space is left.
async fn start(cfgs: &[NodeConfig], refuse_percent: u8) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for cfg in cfgs {
        let retention = RetentionConfig {
            disk_refuse: Threshold { percent: refuse_percent, free_mib: u64::MAX },
            ..cfg.retention.clone()
        };
        nodes.push(Node::start(NodeConfig { retention, ..cfg.clone() }).await?);
    }
    Ok(nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_sends_but_not_consumption() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let usage = Usage::of(dir.path())?;
    anyhow::ensure!(usage.basis_points() >= 100, "this test needs a disk at least 1% full: {usage:?}");

    let cfgs = common::three_nodes(dir.path(), "disk", |c| NodeConfig {
        log: LogConfig { segment_size: 4 << 20, max_payload: 1 << 20, ..LogConfig::default() },
        service: ServiceSettings { auto_create_queues: Some(1), ..ServiceSettings::default() },
        ..c
    })?;

    // Room on the disk: two messages are stored.
    let nodes = start(&cfgs, 100).await?;
    let addr = nodes[0].client_addr.to_string();
    send_until_ok(&addr, &["one|".to_string(), "two|".to_string()], Duration::from_secs(20)).await?;
    common::wait_for("every member applies the two", Duration::from_secs(10), || {
        nodes.iter().all(|n| applied_messages(n) == 2)
    })
    .await?;
    for n in nodes {
        n.shutdown().await;
    }

    // The same group, now refusing at 1%: the disk counts as full.
    let nodes = start(&cfgs, 1).await?;
    let addr = nodes[1].client_addr.to_string();
    let started = std::time::Instant::now();
    let answer = loop {
        // Until a leader is elected, sends are refused for that reason instead.
        let answer = send(&addr, &["three|".to_string()], Duration::from_secs(10)).await?;
        let status = answer.status.clone().unwrap_or_default();
        if status.message.contains("full") {
            break status;
        }
        anyhow::ensure!(!ok(answer.status.as_ref()), "a send was stored with the disk full: {answer:?}");
        anyhow::ensure!(started.elapsed() < Duration::from_secs(20), "no refusal for a full disk: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(answer.code, Code::InternalServerError as i32, "{answer:?}");
    let dirs: Vec<String> = cfgs.iter().map(|c| c.data_dir.display().to_string()).collect();
    assert!(
        dirs.iter().any(|d| answer.message.contains(d.as_str()))
            && answer.message.contains("refuses new messages at 1%"),
        "the refusal names the directory and the threshold: {}",
        answer.message
    );
    assert!(answer.message.starts_with("node "), "and the node: {}", answer.message);

    // Consumption goes on: a receive (itself a Raft entry) gets both stored messages.
    let mut names = Vec::new();
    let started = std::time::Instant::now();
    while names.len() < 2 {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(20), "received only {names:?} within 20 s");
        let (got, status) = receive(&addr, TOPIC, "readers").await?;
        anyhow::ensure!(
            got.is_empty() || status.is_none_or(|c| c == Code::Ok as i32),
            "receive ended with status {status:?}"
        );
        names.extend(got);
    }
    names.sort();
    assert_eq!(names, ["one", "two"]);
    assert!(nodes.iter().all(|n| applied_messages(n) == 2), "the refused send was not stored");
    for n in nodes {
        n.shutdown().await;
    }

    // Space again (the threshold above the usage): sends are stored.
    let nodes = start(&cfgs, 100).await?;
    send_until_ok(&nodes[2].client_addr.to_string(), &["four|".to_string()], Duration::from_secs(20)).await?;
    common::wait_for("every member applies the third message", Duration::from_secs(10), || {
        nodes.iter().all(|n| applied_messages(n) == 3)
    })
    .await?;
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}
