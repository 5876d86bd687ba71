//! Transactional messages over real gRPC against a three-node group: a half message is
//! invisible until committed, a rolled-back one is never delivered, a transaction ends once,
//! an open one left by its producer is rolled back after its last check-back, and a commit
//! after a leader stop goes through the new leader.

mod common;

use std::time::{Duration, Instant};

use broker::settings::{ServiceSettings, TransactionSettings};
use common::Group;
use raftmq_client::{Error, Message, Producer, SimpleConsumer};
use raftmq_proto::rocketmq::v2::Code;

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
    assert!(open_transactions(&group).iter().all(|&n| n == 0), "{:?}", open_transactions(&group));
    group.shutdown().await;
    Ok(())
}
