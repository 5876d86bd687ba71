//! Producer and simple consumer over real gRPC against a three-node group: every message
//! sent is received intact and acked once; follower endpoints work; sends survive the loss
//! of the leader.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::Group;
use raftmq_client::{Admin, Message, Producer, ReceivedMessage, SimpleConsumer, TopicSpec};

/// Receives until `want` distinct messages arrived (acking none), or fails at `deadline`.
async fn receive_all(
    consumer: &SimpleConsumer,
    want: usize,
    deadline: Duration,
) -> anyhow::Result<BTreeMap<String, ReceivedMessage>> {
    let start = Instant::now();
    let mut got = BTreeMap::new();
    while got.len() < want {
        anyhow::ensure!(start.elapsed() < deadline, "received {} of {want} within {deadline:?}", got.len());
        for m in consumer.receive(32, Duration::from_secs(60), Duration::from_secs(2)).await? {
            let id = m.message_id.clone();
            anyhow::ensure!(got.insert(id.clone(), m).is_none(), "message {id} delivered twice");
        }
    }
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sent_message_is_received_intact_and_acked_once() -> anyhow::Result<()> {
    let group = Group::start(None).await?;
    Admin::new(&group.endpoints())?.create_topic(TopicSpec::new("orders").with_queues(4)).await?;
    let producer = Producer::new(&group.endpoints())?;
    let mut sent = BTreeMap::new();
    for i in 0..200u32 {
        let tag = if i % 2 == 0 { "even" } else { "odd" };
        let m = Message::new(format!("order {i}"))
            .with_tag(tag)
            .with_key(format!("k{i}"))
            .with_property("i", i.to_string());
        let r = producer.send("orders", m).await?;
        sent.insert(r.message_id.clone(), (i, r));
    }
    assert_eq!(sent.len(), 200, "message ids are unique");
    let queues: BTreeSet<u32> = sent.values().map(|(_, r)| r.queue_id).collect();
    assert_eq!(queues, (0..4).collect(), "round robin over every queue");
    for q in 0..4 {
        let mut offsets: Vec<u64> =
            sent.values().filter(|(_, r)| r.queue_id == q).filter_map(|(_, r)| r.offset).collect();
        offsets.sort_unstable();
        assert_eq!(offsets, (0..50).collect::<Vec<u64>>(), "queue {q} holds offsets 0..50");
    }

    let consumer = SimpleConsumer::new(&group.endpoints(), "billing", "orders", "*")?;
    let got = receive_all(&consumer, 200, Duration::from_secs(30)).await?;
    assert_eq!(got.keys().collect::<Vec<_>>(), sent.keys().collect::<Vec<_>>());
    for (id, m) in &got {
        let (i, receipt) = &sent[id];
        assert_eq!(m.body, format!("order {i}").as_bytes(), "body of {id}");
        assert_eq!(m.tag.as_deref(), Some(if i % 2 == 0 { "even" } else { "odd" }));
        assert_eq!(m.keys, [format!("k{i}")]);
        assert_eq!(m.properties.get("i"), Some(&i.to_string()));
        assert_eq!((m.topic.as_str(), m.queue_id, Some(m.offset)), ("orders", receipt.queue_id, receipt.offset));
        assert_eq!(m.delivery_attempt, 1);
        consumer.ack(m).await?;
    }
    let rest = consumer.receive(32, Duration::from_secs(1), Duration::from_secs(1)).await?;
    assert!(rest.is_empty(), "acked messages came back: {rest:?}");
    // An ack with a used receipt is refused.
    let first = got.values().next().ok_or_else(|| anyhow::anyhow!("nothing received"))?;
    assert!(consumer.ack(first).await.is_err(), "a second ack of one delivery must fail");

    // Another group sees everything again, filtered by tag.
    let odd = SimpleConsumer::new(&group.endpoints(), "audit", "orders", "odd")?;
    let got = receive_all(&odd, 100, Duration::from_secs(30)).await?;
    assert!(got.values().all(|m| m.tag.as_deref() == Some("odd")));
    group.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_endpoint_works_as_well_as_the_leaders() -> anyhow::Result<()> {
    let group = Group::start(Some(8)).await?;
    let follower = group.endpoint(group.follower(None).await?);
    let producer = Producer::new(&follower)?;
    let bodies: Vec<String> = (0..20).map(|i| format!("via follower {i}")).collect();
    let receipts = producer.send_batch("auto", bodies.iter().map(|b| Message::new(b.clone())).collect()).await?;
    assert_eq!(receipts.len(), 20);
    assert_eq!(
        receipts.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (0..20).map(Some).collect::<Vec<_>>(),
        "one queue"
    );
    // A FIFO message group always lands on one queue.
    let fifo: Vec<u32> = {
        let mut q = Vec::new();
        for i in 0..5 {
            q.push(producer.send("auto", Message::new(format!("f{i}")).with_message_group("order-7")).await?.queue_id);
        }
        q
    };
    assert!(fifo.windows(2).all(|w| w[0] == w[1]), "{fifo:?}");

    let consumer = SimpleConsumer::new(&follower, "g", "auto", "*")?;
    let got = receive_all(&consumer, 25, Duration::from_secs(30)).await?;
    let mut received: Vec<String> = got.values().map(|m| String::from_utf8_lossy(&m.body).into_owned()).collect();
    received.sort();
    let mut expected: Vec<String> = bodies.clone();
    expected.extend((0..5).map(|i| format!("f{i}")));
    expected.sort();
    assert_eq!(received, expected);
    let mut first = got.into_values().next().ok_or_else(|| anyhow::anyhow!("nothing received"))?;
    let old = first.receipt_handle.clone();
    consumer.change_invisible_duration(&mut first, Duration::from_secs(30)).await?;
    assert_ne!(first.receipt_handle, old, "a new receipt after changing invisibility");
    consumer.ack(&first).await?;
    group.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_fail_over_when_the_leader_stops() -> anyhow::Result<()> {
    let mut group = Group::start(Some(4)).await?;
    let producer = Producer::new(&group.endpoints())?;
    for i in 0..10 {
        producer.send("failover", Message::new(format!("before {i}"))).await?;
    }
    let leader = group.leader(Duration::from_secs(5)).await?;
    group.stop(leader).await;
    let stopped = Instant::now();
    // The producer's route still names the stopped leader first; it must find the new one.
    let mut offsets = BTreeMap::new();
    for i in 0..10 {
        let r = producer.send("failover", Message::new(format!("after {i}"))).await?;
        offsets.entry(r.queue_id).or_insert_with(Vec::new).push(r.offset.expect("quorum acks carry offsets"));
    }
    assert!(stopped.elapsed() < Duration::from_secs(10), "failover took {:?}", stopped.elapsed());
    let new_leader = group.leader(Duration::from_secs(5)).await?;
    assert_ne!(new_leader, leader);
    // Offsets continue where they were (10 before, round robin over 4 queues).
    let total: usize = offsets.values().map(Vec::len).sum();
    assert_eq!(total, 10);
    assert!(offsets.values().flatten().all(|o| *o >= 2), "offsets restarted: {offsets:?}");
    group.shutdown().await;
    Ok(())
}

/// `send_async` (RocketMQ's `sendAsync`): many sends started at once from one producer,
/// their receipts collected later; every message is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_sends_run_concurrently_and_each_gives_its_receipt() -> anyhow::Result<()> {
    let group = Group::start(Some(4)).await?;
    let producer = std::sync::Arc::new(Producer::new(&group.endpoints())?);
    let pending: Vec<_> = (0..100).map(|i| producer.send_async("orders", Message::new(format!("async-{i}")))).collect();
    let mut ids = BTreeSet::new();
    for send in pending {
        let receipt = send.await?;
        assert!(receipt.offset.is_some(), "a committed send has its queue offset");
        ids.insert(receipt.message_id);
    }
    assert_eq!(ids.len(), 100, "each send has its own message id");
    let consumer = SimpleConsumer::new(&group.endpoints(), "async-readers", "orders", "*")?;
    let got = receive_all(&consumer, 100, Duration::from_secs(30)).await?;
    assert_eq!(got.len(), 100);
    group.shutdown().await;
    Ok(())
}
