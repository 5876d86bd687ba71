//! Dead letters over real gRPC against a three-node group: a message its consumer group
//! never acknowledges is delivered as often as the group allows, then moves to the group's
//! dead-letter topic `%DLQ%<group>`, where a consumer reads it with its original topic named;
//! producers cannot write to a dead-letter topic.

mod common;

use std::time::{Duration, Instant};

use common::Group;
use raftmq_client::{Admin, Error, Message, Producer, SimpleConsumer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_never_acknowledged_goes_to_the_dead_letter_topic() -> anyhow::Result<()> {
    let group = Group::start(Some(2)).await?;
    let admin = Admin::new(&group.endpoints())?;
    admin.upsert_group("billing", false, 2).await?;
    let producer = Producer::new(&group.endpoints())?;
    producer.send("orders", Message::new("poison").with_key("order-13")).await?;
    producer.send("orders", Message::new("fine")).await?;

    let consumer = SimpleConsumer::new(&group.endpoints(), "billing", "orders", "*")?;
    let mut poison_deliveries = Vec::new();
    let mut fine = 0;
    let start = Instant::now();
    // Long enough for a third delivery to show if there were one.
    while start.elapsed() < Duration::from_secs(6) {
        for m in consumer.receive(16, Duration::from_secs(1), Duration::from_millis(500)).await? {
            match &m.body[..] {
                b"poison" => poison_deliveries.push(m.delivery_attempt),
                _ => {
                    fine += 1;
                    consumer.ack(&m).await?;
                }
            }
        }
    }
    assert_eq!(poison_deliveries, [1, 2], "delivered as often as the group allows, then no more");
    assert_eq!(fine, 1);

    let dead = SimpleConsumer::new(&group.endpoints(), "auditors", "%DLQ%billing", "*")?;
    let mut got = Vec::new();
    let start = Instant::now();
    while got.is_empty() {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(20), "nothing in the dead-letter topic");
        got = dead.receive(16, Duration::from_secs(30), Duration::from_secs(1)).await?;
    }
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(&m.body[..], b"poison");
    assert_eq!(m.topic, "%DLQ%billing");
    assert_eq!(m.keys, ["order-13"]);
    assert_eq!(m.properties.get("RETRY_TOPIC").map(String::as_str), Some("orders"));
    dead.ack(m).await?;
    // `mqadmin dlq list` shows it.
    let out = common::mqadmin(&["--endpoints", &group.endpoints(), "dlq", "list", "billing"]).await?;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains("order-13") && table.contains("orders") && table.contains("poison"), "{table}");
    let out = common::mqadmin(&["--endpoints", &group.endpoints(), "dlq", "list", "nobody"]).await?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("no dead letters"), "{out:?}");

    match producer.send("%DLQ%billing", Message::new("forged")).await {
        Err(Error::InvalidArgument(_) | Error::Broker { .. } | Error::GaveUp { .. }) => {}
        other => panic!("a producer must not write to a dead-letter topic: {other:?}"),
    }
    group.shutdown().await;
    Ok(())
}
