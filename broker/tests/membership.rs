//! Membership changes over real gRPC (`ChangeMembers`, what `mqadmin cluster add-node`,
//! `remove-node` and `replace-node` send): a fourth node with an empty disk joins a group
//! whose log was snapshotted and purged past where it starts, so it must copy in the
//! retained messages before it votes; a node is replaced under a new id; the old id is
//! retired and refused when offered again; a node that never catches up stays a learner
//! and can be removed; the group keeps storing messages with its new voters.

use std::collections::BTreeSet;
use std::time::Duration;

use broker::node::{Node, NodeConfig};
use broker::raft::{NodeId, NodeInfo};
use openraft::async_runtime::watch::WatchReceiver;
use raft_log::LogConfig;
use raftmq_proto::admin::v1 as pb;
use raftmq_proto::admin::v1::admin_service_client::AdminServiceClient;
use tonic::Code;

mod common;

use common::grpc::{applied_messages, pull_bodies, send_until_ok};

async fn change(
    addr: &str,
    add: Option<pb::NewMember>,
    remove: u64,
) -> Result<pb::ChangeMembersResponse, tonic::Status> {
    let mut client = AdminServiceClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let body = pb::ChangeMembersRequest { group: "m".into(), add, remove, catch_up_timeout_ms: 30_000 };
    client.change_members(body).await.map(|r| r.into_inner())
}

fn new_member(cfg: &NodeConfig) -> pb::NewMember {
    let me = cfg.me().expect("configured");
    pb::NewMember {
        node_id: cfg.node_id.0,
        client_endpoint: me.client_addr.clone(),
        raft_endpoint: me.raft_addr.clone(),
    }
}

/// The config of a node joining the group of `cfgs` under `id`.
fn joining(cfgs: &[NodeConfig], id: u64, dir: &std::path::Path) -> anyhow::Result<NodeConfig> {
    let mut peers = cfgs[0].peers.clone();
    peers.insert(NodeId(id), NodeInfo { raft_addr: common::free_addr()?, client_addr: common::free_addr()? });
    Ok(NodeConfig { node_id: NodeId(id), peers, data_dir: dir.join(format!("n{id}")), ..cfgs[0].clone() })
}

fn voters(node: &Node) -> BTreeSet<u64> {
    node.raft.metrics().borrow_watched().membership_config.membership().voter_ids().map(|id| id.0).collect()
}

async fn send_batches(addr: &str, from: usize, batches: usize) -> anyhow::Result<()> {
    for b in from..from + batches {
        let bodies: Vec<String> = (0..5).map(|i| format!("m{b}-{i}")).collect();
        send_until_ok(addr, &bodies, Duration::from_secs(20)).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_join_leave_and_are_replaced_under_new_ids() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfgs = common::three_nodes(dir.path(), "m", |c| NodeConfig {
        log: LogConfig { segment_size: 1 << 20, max_payload: 256 << 10, ..LogConfig::default() },
        snapshot_every: 20,
        keep_after_snapshot: 5,
        service: broker::settings::ServiceSettings { auto_create_queues: Some(1), ..Default::default() },
        ..c
    })?;
    let mut nodes = common::start_all(&cfgs).await?;
    let addr = nodes[1].client_addr.to_string();
    send_batches(&addr, 0, 60).await?;
    common::wait_for("a snapshot purges the log's start", Duration::from_secs(20), || {
        nodes.iter().all(|n| n.raft.metrics().borrow_watched().purged.is_some())
    })
    .await?;

    // Node 4 joins with an empty disk, through a follower's endpoint (forwarded): it must
    // install a snapshot and copy in the purged records before it is made a voter.
    let cfg4 = joining(&cfgs, 4, dir.path())?;
    let n4 = Node::start(cfg4.clone()).await?;
    let done = change(&addr, Some(new_member(&cfg4)), 0).await?;
    assert_eq!(done.voters, vec![1, 2, 3, 4]);
    assert!(done.retired.is_empty(), "{done:?}");
    assert_eq!(n4.backfill.pending(), None, "a voter has nothing left to copy in");
    assert_eq!(applied_messages(&n4), 300);
    let bodies = pull_bodies(&n4.client_addr.to_string(), 300, Duration::from_secs(20)).await?;
    assert_eq!(bodies.len(), 300, "node 4 serves every message from its own CommitLog");

    // Retried, the same change is found done.
    assert_eq!(change(&addr, Some(new_member(&cfg4)), 0).await?.voters, vec![1, 2, 3, 4]);

    // Node 1 is replaced by node 5 in one change; id 1 is retired.
    let cfg5 = joining(&cfgs, 5, dir.path())?;
    let n5 = Node::start(cfg5.clone()).await?;
    let done = change(&n4.client_addr.to_string(), Some(new_member(&cfg5)), 1).await?;
    assert_eq!((done.voters.clone(), done.retired.clone()), (vec![2, 3, 4, 5], vec![1]));
    let n1 = nodes.remove(0);
    n1.shutdown().await;
    nodes.push(n4);
    nodes.push(n5);
    common::wait_for("every member applies the new voters", Duration::from_secs(10), || {
        nodes.iter().all(|n| voters(n) == BTreeSet::from([2, 3, 4, 5]))
    })
    .await?;
    send_batches(&addr, 60, 4).await?;
    common::wait_for("every member applies what the new voters stored", Duration::from_secs(10), || {
        nodes.iter().all(|n| applied_messages(n) == 320)
    })
    .await?;

    // Id 1 is never used again, whatever endpoints it comes with.
    let again = pb::NewMember { node_id: 1, ..new_member(&cfgs[0]) };
    let refused = change(&addr, Some(again), 0).await.expect_err("a retired id is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("never used twice"), "{refused:?}");

    // Bad requests are refused with what is wrong.
    let zero = pb::NewMember { node_id: 0, ..new_member(&cfg5) };
    assert_eq!(change(&addr, Some(zero), 0).await.expect_err("id 0").code(), Code::InvalidArgument);
    let bad = pb::NewMember { node_id: 9, client_endpoint: "nowhere".into(), ..new_member(&cfg5) };
    let e = change(&addr, Some(bad), 0).await.expect_err("bad endpoint");
    assert!(e.code() == Code::InvalidArgument && e.message().contains("client endpoint"), "{e:?}");
    let e = change(&addr, None, 7).await.expect_err("not a member");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let taken = pb::NewMember { node_id: 2, ..new_member(&cfg5) };
    assert_eq!(change(&addr, Some(taken), 0).await.expect_err("a voter").code(), Code::AlreadyExists);

    // A node nobody runs never catches up: it stays a learner, the voters do not change,
    // and it can be removed (its id retired too).
    let ghost = joining(&cfgs, 6, dir.path())?;
    let mut client = AdminServiceClient::connect(format!("http://{addr}")).await?;
    let body = pb::ChangeMembersRequest {
        group: "m".into(),
        add: Some(new_member(&ghost)),
        remove: 0,
        catch_up_timeout_ms: 1500,
    };
    let e = client.change_members(body).await.expect_err("never catches up");
    assert!(e.code() == Code::DeadlineExceeded && e.message().contains("stays a learner"), "{e:?}");
    assert_eq!(voters(&nodes[0]), BTreeSet::from([2, 3, 4, 5]));
    let done = change(&addr, None, 6).await?;
    assert_eq!((done.voters, done.retired), (vec![2, 3, 4, 5], vec![1, 6]));

    // Removing a voter: the group goes on with three, node 5's id retired.
    let done = change(&addr, None, 5).await?;
    assert_eq!((done.voters, done.retired), (vec![2, 3, 4], vec![1, 5, 6]));
    let n5 = nodes.pop().expect("node 5");
    n5.shutdown().await;
    send_batches(&addr, 64, 2).await?;
    common::wait_for("the three voters apply what they stored", Duration::from_secs(10), || {
        nodes.iter().all(|n| applied_messages(n) == 330)
    })
    .await?;
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}
