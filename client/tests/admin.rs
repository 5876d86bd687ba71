//! The admin service through the Rust admin client, over real gRPC against a three-node
//! group: topics, bad input, cluster status and leader transfer.

mod common;

use std::time::{Duration, Instant};

use common::{GROUP, Group};
use openraft::async_runtime::watch::WatchReceiver;
use raftmq_client::proto::rocketmq::v2::Code;
use raftmq_client::{Admin, Role, TopicSpec, TopicUpdate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_listed_routed_updated_and_deleted() -> anyhow::Result<()> {
    let group = Group::start(None).await?;
    let leader = group.leader(Duration::from_secs(5)).await?;
    // Through a follower: writes are forwarded, and the follower reads its own write.
    let admin = Admin::new(&group.endpoint(group.follower(None).await?))?;

    let spec =
        TopicSpec { message_types: vec!["NORMAL".into(), "FIFO".into()], ..TopicSpec::new("orders").with_queues(4) };
    let created = admin.create_topic(spec.clone()).await?;
    assert_eq!((created.name.as_str(), created.queue_count, created.perm), ("orders", 4, 6));
    assert_eq!(created.message_types, ["NORMAL", "FIFO"]);
    let listed = admin.list_topics().await?;
    assert_eq!(listed, vec![created.clone()]);
    let again = admin.create_topic(spec).await.expect_err("a second create must fail");
    assert_eq!(again.grpc_code(), Some(tonic::Code::AlreadyExists), "{again}");

    let route = admin.route("orders").await?;
    assert_eq!(route.queues.iter().map(|q| q.id).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert!(route.queues.iter().all(|q| q.broker == GROUP && q.writable()));
    assert_eq!(route.queues[0].endpoints.first(), Some(&group.endpoint(leader)), "the leader comes first");

    let update = TopicUpdate { name: "orders".into(), queue_count: Some(6), perm: Some(4), ..TopicUpdate::default() };
    let updated = admin.update_topic(update).await?;
    assert_eq!((updated.queue_count, updated.perm), (6, 4));
    assert_eq!(updated.message_types, ["NORMAL", "FIFO"], "unset fields stay");
    assert_eq!(admin.list_topics().await?, vec![updated]);
    let shrink = TopicUpdate { name: "orders".into(), queue_count: Some(2), ..TopicUpdate::default() };
    let e = admin.update_topic(shrink).await.expect_err("queues cannot shrink");
    assert_eq!(e.grpc_code(), Some(tonic::Code::InvalidArgument), "{e}");
    let missing = TopicUpdate { name: "nope".into(), queue_count: Some(2), ..TopicUpdate::default() };
    assert_eq!(admin.update_topic(missing).await.err().and_then(|e| e.grpc_code()), Some(tonic::Code::NotFound));

    admin.delete_topic("orders").await?;
    assert!(admin.list_topics().await?.is_empty());
    let e = admin.delete_topic("orders").await.expect_err("already deleted");
    assert_eq!(e.grpc_code(), Some(tonic::Code::NotFound), "{e}");
    // Auto-create is off: the route of a deleted topic is refused.
    let e = admin.route("orders").await.expect_err("no route for a deleted topic");
    assert_eq!(e.broker_code(), Some(Code::TopicNotFound), "{e}");
    // Every node applied the same topic table.
    for id in 1..=3 {
        let topics = Admin::new(&group.endpoint(id))?.list_topics().await?;
        assert!(topics.is_empty(), "node {id} still lists {topics:?}");
    }
    group.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_invalid_argument() -> anyhow::Result<()> {
    let group = Group::start(None).await?;
    let admin = Admin::new(&group.endpoints())?;
    let long = "t".repeat(128);
    let bad_specs = [
        TopicSpec::new("a b"),
        TopicSpec::new(""),
        TopicSpec::new("%RETRY%group"),
        TopicSpec::new(long.as_str()),
        TopicSpec::new("ok").with_queues(5000),
        TopicSpec { message_types: vec!["BULK".into()], ..TopicSpec::new("ok") },
        TopicSpec { perm: Some(1), ..TopicSpec::new("ok") },
        TopicSpec { perm: Some(16), ..TopicSpec::new("ok") },
    ];
    for spec in bad_specs {
        let e = admin.create_topic(spec.clone()).await.expect_err("must be refused");
        assert_eq!(e.grpc_code(), Some(tonic::Code::InvalidArgument), "{spec:?}: {e}");
    }
    let e = admin.create_topic(TopicSpec::new("a b")).await.expect_err("bad name");
    assert!(e.to_string().contains("allowed are letters"), "the message says what is allowed: {e}");
    assert!(admin.list_topics().await?.is_empty(), "nothing was created");
    let e = admin.delete_topic("a/b").await.expect_err("bad name");
    assert_eq!(e.grpc_code(), Some(tonic::Code::InvalidArgument), "{e}");
    group.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_shows_every_member_and_one_leader() -> anyhow::Result<()> {
    let mut group = Group::start(None).await?;
    let leader = group.leader(Duration::from_secs(5)).await?;
    let follower = group.follower(None).await?;
    let admin = Admin::new(&group.endpoint(follower))?;
    // Commit something so the indexes agree on a known entry.
    admin.create_topic(TopicSpec::new("t")).await?;

    // Every member has the entry once it reports it applied (one may still be joining).
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = admin.cluster_status().await?;
        let caught_up = status.nodes.iter().all(|n| n.last_applied_index.is_some() && n.role != Role::Learner as i32);
        if (caught_up && status.nodes.len() == 3) || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.unreachable.is_empty(), "{:?}", status.unreachable);
    assert_eq!(status.nodes.iter().map(|n| n.node_id).collect::<Vec<_>>(), [1, 2, 3]);
    let leaders: Vec<u64> = status.nodes.iter().filter(|n| n.role == Role::Leader as i32).map(|n| n.node_id).collect();
    assert_eq!(leaders, [leader], "exactly one leader");
    let term = status.nodes[0].term;
    for n in &status.nodes {
        assert_eq!((n.group.as_str(), n.leader_id, n.term), (GROUP, leader, term), "{n:?}");
        assert_eq!(n.client_endpoint, group.endpoint(n.node_id));
        assert!(n.commit_index.is_some() && n.last_log_index.is_some() && n.last_applied_index.is_some(), "{n:?}");
        if n.node_id != leader {
            assert_eq!(n.role, Role::Follower as i32);
        }
    }

    // A stopped member is listed as unreachable, and the others still answer.
    let other = group.follower(Some(follower)).await?;
    group.stop(other).await;
    // A connection the stopped node accepted before may still be closing (in-process nodes
    // share the runtime): ask until it is listed, each answer within the peer timeout.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let asked = Instant::now();
        let status = admin.cluster_status().await?;
        assert!(asked.elapsed() < Duration::from_secs(4), "took {:?}", asked.elapsed());
        if !status.unreachable.is_empty() || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.unreachable.iter().map(|u| u.node_id).collect::<Vec<_>>(), [other]);
    assert!(!status.unreachable[0].message.is_empty());
    assert_eq!(status.nodes.len(), 2);
    group.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_leader_moves_the_leadership_to_the_asked_node() -> anyhow::Result<()> {
    let group = Group::start(None).await?;
    let leader = group.leader(Duration::from_secs(5)).await?;
    let target = group.follower(None).await?;
    let third = group.follower(Some(target)).await?;
    // Asked on the node that neither leads nor is the target: it forwards to the leader.
    let admin = Admin::new(&group.endpoint(third))?;

    let e = admin.transfer_leader(GROUP, 9).await.expect_err("node 9 is no member");
    assert_eq!(e.grpc_code(), Some(tonic::Code::InvalidArgument), "{e}");
    let e = admin.transfer_leader("other-group", target).await.expect_err("wrong group");
    assert_eq!(e.grpc_code(), Some(tonic::Code::InvalidArgument), "{e}");

    admin.transfer_leader(GROUP, target).await?;
    // The answer came after the move: the asked node already sees the new leader.
    let third_node = group.node(third).ok_or_else(|| anyhow::anyhow!("node {third} stopped"))?;
    assert_eq!(third_node.raft.metrics().borrow_watched().current_leader.map(|l| l.0), Some(target));
    let now = group.leader(Duration::from_secs(5)).await?;
    assert_eq!(now, target, "leadership moved from {leader} to {target}");
    let status = admin.cluster_status().await?;
    let leaders: Vec<u64> = status.nodes.iter().filter(|n| n.role == Role::Leader as i32).map(|n| n.node_id).collect();
    assert_eq!(leaders, [target]);

    // Transferring to the current leader is a no-op, and writes work after the move.
    admin.transfer_leader("", target).await?;
    admin.create_topic(TopicSpec::new("after-transfer")).await?;
    group.shutdown().await;
    Ok(())
}
