//! A group of one node is its own quorum: it stores sends however long it runs without
//! followers (a leader that hears from no quorum for longer than its lease refuses sends,
//! and a lone voter never hears from anyone). And the limits of a node's ports, seen on
//! one node: connections on the client port, message sizes and snapshots on the Raft port.

use std::collections::BTreeMap;
use std::time::Duration;

use broker::node::{Node, NodeConfig};
use broker::raft::NodeInfo;
use broker::settings::ServiceSettings;
use raft_log::LogConfig;
use raftmq_machine::NodeId;

mod common;

use common::grpc::{applied_messages, ok, send, send_until_ok};

fn one_node(dir: &std::path::Path, group: &str, service: ServiceSettings) -> anyhow::Result<NodeConfig> {
    let peers =
        BTreeMap::from([(NodeId(1), NodeInfo { raft_addr: common::free_addr()?, client_addr: common::free_addr()? })]);
    Ok(NodeConfig {
        group: group.into(),
        node_id: NodeId(1),
        peers,
        data_dir: dir.join("n1"),
        heartbeat: Duration::from_millis(50),
        election_timeout: Duration::from_millis(200),
        log: LogConfig { segment_size: 4 << 20, max_payload: 1 << 20, ..LogConfig::default() },
        service: ServiceSettings { auto_create_queues: Some(1), ..service },
        ..NodeConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_voter_keeps_storing_sends_past_its_lease() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = Node::start(one_node(dir.path(), "alone", ServiceSettings::default())?).await?;
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

/// Whether the server closes `stream` (end of stream or a reset) within 5 s.
async fn closed_by_server(mut stream: tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// A client on its own connection that had a send stored, within 10 s (a connection of
/// an earlier try may still hold a slot for a moment after it was dropped).
async fn served_client(
    addr: &str,
) -> anyhow::Result<
    raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient<tonic::transport::Channel>,
> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut c) = common::grpc::client(addr).await {
            let request = raftmq_proto::rocketmq::v2::SendMessageRequest { messages: vec![common::grpc::message("x")] };
            if let Ok(Ok(answer)) = tokio::time::timeout(Duration::from_secs(2), c.send_message(request)).await
                && ok(answer.get_ref().status.as_ref())
            {
                return Ok(c);
            }
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "no client was served within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_port_closes_connections_past_its_limit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let service = ServiceSettings { max_connections: 2, ..ServiceSettings::default() };
    let node = Node::start(one_node(dir.path(), "limited", service)?).await?;
    let addr = node.client_addr.to_string();
    // Two clients take both slots and are served.
    let first = served_client(&addr).await?;
    let second = served_client(&addr).await?;
    // A third connection is closed as it arrives.
    let third = tokio::net::TcpStream::connect(&addr).await?;
    assert!(closed_by_server(third).await, "a connection past the limit of 2 was kept open");
    // Once a client goes away its slot serves the next one.
    drop(first);
    let mut served = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !served && std::time::Instant::now() < deadline {
        if let Ok(answer) = send(&addr, &["c".to_string()], Duration::from_secs(2)).await {
            served = ok(answer.status.as_ref());
        }
        if !served {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(served, "no new connection was served after a client left");
    let _ = second;
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_port_refuses_oversized_messages_and_snapshots() -> anyhow::Result<()> {
    use raftmq_machine::codec::{MAX_SNAPSHOT_BYTES, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
    use raftmq_proto::raft::v1 as pb;
    use raftmq_proto::raft::v1::raft_service_client::RaftServiceClient;

    let dir = tempfile::tempdir()?;
    let node = Node::start(one_node(dir.path(), "raftport", ServiceSettings::default())?).await?;
    let addr = node.client_addr.to_string();
    send_until_ok(&addr, &["before".to_string()], Duration::from_secs(10)).await?;
    let mut raft =
        RaftServiceClient::connect(format!("http://{}", node.raft_addr)).await?.max_encoding_message_size(usize::MAX);

    // A message past the Raft port's limit is refused before it is decoded.
    let huge = bytes::Bytes::from(vec![0u8; broker::raft::codec::MAX_RAFT_MESSAGE + 1]);
    let vote = pb::VoteRequest { group: "raftport".into(), target_node: 1, payload: huge, pre_vote: true };
    let err = raft.vote(vote).await.expect_err("an oversized vote request was accepted");
    assert!(err.message().contains("too large"), "{err:?}");

    let header = |body_len: u64| {
        let mut h = SNAPSHOT_MAGIC.to_vec();
        h.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        h.extend_from_slice(&body_len.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h
    };
    let chunk = |offset: u64, data: Vec<u8>, done: bool| pb::SnapshotChunk {
        group: "raftport".into(),
        target_node: 1,
        meta: bytes::Bytes::from_static(b"meta"),
        offset,
        data: data.into(),
        done,
    };
    // A header declaring more than a snapshot may hold: refused at the first chunk.
    let err = raft
        .install_snapshot(futures::stream::iter(vec![chunk(0, header(MAX_SNAPSHOT_BYTES + 1), false)]))
        .await
        .expect_err("a snapshot over the limit was accepted");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("more than"), "{err:?}");
    // More bytes than the header declares: refused at the chunk that runs past.
    let mut first = header(10);
    first.extend_from_slice(&[7; 100]);
    let err = raft
        .install_snapshot(futures::stream::iter(vec![chunk(0, first, true)]))
        .await
        .expect_err("a snapshot longer than its header was accepted");
    assert!(err.message().contains("runs past"), "{err:?}");
    // A stream that stops before its last chunk.
    let mut first = header(100);
    first.extend_from_slice(&[7; 10]);
    let err = raft
        .install_snapshot(futures::stream::iter(vec![chunk(0, first, false)]))
        .await
        .expect_err("a cut-short snapshot was accepted");
    assert_eq!(err.code(), tonic::Code::Aborted, "{err:?}");
    // Nothing of the refused snapshots is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("n1").join("state"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("snapshot.recv"))
        .collect();
    assert!(leftovers.is_empty(), "spool files left: {leftovers:?}");

    // The node serves on.
    let answer = send(&addr, &["after".to_string()], Duration::from_secs(5)).await?;
    assert!(ok(answer.status.as_ref()), "{answer:?}");
    assert_eq!(applied_messages(&node), 2);
    node.shutdown().await;
    Ok(())
}
