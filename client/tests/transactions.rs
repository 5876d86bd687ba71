//! Transactional messages over real gRPC against a three-node group: a half message is
//! invisible until committed, a rolled-back one is never delivered, a transaction ends once,
//! an open one left by its producer is rolled back after its last check-back, one whose
//! producer is connected to a follower is checked back there and committed by its answer,
//! and a commit after a leader stop goes through the new leader.

mod common;

use std::time::{Duration, Instant};

use broker::settings::{ServiceSettings, TransactionSettings};
use common::Group;
use raftmq_client::{Error, Message, Producer, SimpleConsumer};
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;

/// Receives and acks for `for_at_least`, or until `want` bodies arrived; returns the bodies.
async fn drain(consumer: &SimpleConsumer, want: usize, for_at_least: Duration) -> anyhow::Result<Vec<String>> {
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < want || start.elapsed() < for_at_least {
        if start.elapsed() > for_at_least + Duration::from_secs(30) {
            anyhow::bail!("only {got:?} of {want} messages within {:?}", start.elapsed());
        }
        let batch = match consumer.receive(32, Duration::from_secs(60), Duration::from_millis(500)).await {
            Ok(batch) => batch,
            Err(e) => {
                eprintln!("receive failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        for m in batch {
            got.push(String::from_utf8_lossy(&m.body).to_string());
            consumer.ack(&m).await?;
        }
    }
    got.sort();
    Ok(got)
}

fn refused_code(result: Result<(), Error>) -> Code {
    match result {
        Err(Error::Broker { code, .. }) => code,
        other => panic!("expected the broker to refuse, got {other:?}"),
    }
}

fn open_transactions(group: &Group) -> Vec<usize> {
    group.nodes.iter().flatten().map(|n| n.state.read(|a| a.machine.transactions().len())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_messages_wait_for_commit_and_orphans_are_rolled_back() -> anyhow::Result<()> {
    let transactions = TransactionSettings { timeout_ms: 1_000, check_interval_ms: 500, max_checks: 2 };
    let group =
        Group::start_with(ServiceSettings { auto_create_queues: Some(2), transactions, ..ServiceSettings::default() })
            .await?;
    let producer = Producer::new(&group.endpoints())?;
    let consumer = SimpleConsumer::new(&group.endpoints(), "payments", "orders", "*")?;

    let commit = producer.send_in_transaction("orders", Message::new("commit")).await?;
    let rollback = producer.send_in_transaction("orders", Message::new("rollback")).await?;
    let orphan = producer.send_in_transaction("orders", Message::new("orphan")).await?;
    assert_eq!(commit.receipt.offset, None, "a half message has no queue offset");
    assert!(commit.transaction_id.starts_with("t1."), "{}", commit.transaction_id);
    producer.send("orders", Message::new("plain")).await?;
    // Only the plain message is visible.
    assert_eq!(drain(&consumer, 1, Duration::from_millis(500)).await?, ["plain"]);

    producer.commit(&commit).await?;
    producer.rollback(&rollback).await?;
    assert_eq!(drain(&consumer, 1, Duration::from_millis(500)).await?, ["commit"]);
    // A transaction ends once.
    assert_eq!(refused_code(producer.commit(&rollback).await), Code::InvalidTransactionId);
    assert_eq!(refused_code(producer.rollback(&commit).await), Code::InvalidTransactionId);

    // The orphan: checked back twice (no producer here answers), then rolled back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_transactions(&group).iter().any(|&n| n > 0) {
        anyhow::ensure!(Instant::now() < deadline, "the orphan is still open: {:?}", open_transactions(&group));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refused_code(producer.commit(&orphan).await), Code::InvalidTransactionId, "rolled back for good");
    assert_eq!(drain(&consumer, 0, Duration::from_secs(1)).await?, Vec::<String>::new(), "nothing else comes");
    group.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_opened_before_a_leader_stop_commits_through_the_new_leader() -> anyhow::Result<()> {
    let mut group = Group::start(Some(2)).await?;
    let producer = Producer::new(&group.endpoints())?;
    let consumer = SimpleConsumer::new(&group.endpoints(), "payments", "orders", "*")?;
    let mut open = Vec::new();
    for i in 0..10 {
        open.push(producer.send_in_transaction("orders", Message::new(format!("tx-{i}"))).await?);
    }
    let leader = group.leader(Duration::from_secs(5)).await?;
    group.stop(leader).await;
    group.leader(Duration::from_secs(10)).await?;
    for (i, t) in open.iter().enumerate() {
        if i % 2 == 0 {
            producer.commit(t).await?;
        } else {
            producer.rollback(t).await?;
        }
    }
    let want: Vec<String> = (0..10).step_by(2).map(|i| format!("tx-{i}")).collect();
    assert_eq!(drain(&consumer, want.len(), Duration::from_secs(1)).await?, want);
    // Every member applies the ends (followers a moment later).
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_transactions(&group).iter().any(|&n| n > 0) {
        anyhow::ensure!(Instant::now() < deadline, "still open: {:?}", open_transactions(&group));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    group.shutdown().await;
    Ok(())
}

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource { name: name.into(), ..Default::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_on_a_follower_gets_the_check_back_from_a_new_leader_and_its_answer_commits() -> anyhow::Result<()> {
    let transactions = TransactionSettings { timeout_ms: 2_000, check_interval_ms: 60_000, max_checks: 15 };
    let group =
        Group::start_with(ServiceSettings { auto_create_queues: Some(2), transactions, ..ServiceSettings::default() })
            .await?;
    let producer = Producer::new(&group.endpoints())?;
    producer.send("orders", Message::new("create the topic")).await?;
    // A producer of "orders" whose Telemetry stream is open on a follower only, as an
    // official client's may be after a failover.
    let follower = group.follower(None).await?;
    let mut node = MessagingServiceClient::connect(format!("http://{}", group.endpoint(follower))).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::TelemetryCommand>(4);
    let settings = pb::Settings {
        client_type: Some(pb::ClientType::Producer as i32),
        pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing {
            topics: vec![pb::Resource { name: "orders".into(), ..Default::default() }],
            ..Default::default()
        })),
        ..Default::default()
    };
    tx.send(pb::TelemetryCommand { status: None, command: Some(pb::telemetry_command::Command::Settings(settings)) })
        .await?;
    let outgoing = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut request = tonic::Request::new(outgoing);
    request.metadata_mut().insert("x-mq-client-id", "checker-1".parse()?);
    let mut commands = node.telemetry(request).await?.into_inner();
    commands.message().await?.ok_or_else(|| anyhow::anyhow!("no settings answer"))?;

    let orphan = producer.send_in_transaction("orders", Message::new("orphan").with_key("order-7")).await?;
    // The leader stops before the transaction is due for a check: the new leader checks it
    // back (the open transaction is replicated state).
    let leader = group.leader(Duration::from_secs(10)).await?;
    anyhow::ensure!(leader != follower, "the producer's node must outlive the leader");
    let mut group = group;
    group.stop(leader).await;
    let recover = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match commands.message().await? {
                Some(pb::TelemetryCommand {
                    command: Some(pb::telemetry_command::Command::RecoverOrphanedTransactionCommand(c)),
                    ..
                }) => return anyhow::Ok(c),
                Some(_) => continue,
                None => anyhow::bail!("the telemetry stream ended"),
            }
        }
    })
    .await??;
    // The command carries what the official clients need: the message, its topic and
    // system properties, and the transaction id.
    assert_eq!(recover.transaction_id, orphan.transaction_id);
    let message = recover.message.ok_or_else(|| anyhow::anyhow!("no message in the check-back"))?;
    assert_eq!(message.topic.as_ref().map(|t| t.name.as_str()), Some("orders"));
    assert_eq!(&message.body[..], b"orphan");
    let sys = message.system_properties.ok_or_else(|| anyhow::anyhow!("no system properties"))?;
    assert_eq!(sys.message_id, orphan.receipt.message_id);
    assert_eq!(sys.keys, ["order-7"]);
    assert_eq!(sys.message_type, pb::MessageType::Transaction as i32);

    // The checker's answer, sent to the follower, commits it.
    let end = pb::EndTransactionRequest {
        topic: resource("orders"),
        message_id: sys.message_id.clone(),
        transaction_id: recover.transaction_id.clone(),
        resolution: pb::TransactionResolution::Commit as i32,
        source: pb::TransactionSource::SourceServerCheck as i32,
        trace_context: String::new(),
    };
    let status = node.end_transaction(end).await?.into_inner().status;
    assert_eq!(status.map(|s| s.code), Some(Code::Ok as i32));
    let consumer = SimpleConsumer::new(&group.endpoints(), "payments", "orders", "*")?;
    let got = drain(&consumer, 2, Duration::ZERO).await?;
    assert_eq!(got, ["create the topic", "orphan"]);
    drop(tx);
    group.shutdown().await;
    Ok(())
}
