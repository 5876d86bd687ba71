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

/// The official FIFO push consumer's way out for a message it cannot consume: it forwards
/// the message to the dead-letter topic itself (ForwardMessageToDeadLetterQueue); the next
/// message of the message group follows at once. `mqadmin dlq resend` sends it again to
/// its original topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_forwards_a_message_to_the_dead_letter_topic_and_mqadmin_resends_it() -> anyhow::Result<()> {
    use raftmq_client::proto::rocketmq::v2 as pb;
    use raftmq_client::proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;

    let group = Group::start(Some(1)).await?;
    let endpoints = group.endpoints();
    Admin::new(&endpoints)?.upsert_group("ordered", true, 16).await?;
    let producer = Producer::new(&endpoints)?;
    let poison = producer
        .send("orders", Message::new("poison").with_key("order-7").with_tag("paid").with_message_group("o-7"))
        .await?;
    producer.send("orders", Message::new("next").with_message_group("o-7")).await?;
    let consumer = SimpleConsumer::new(&endpoints, "ordered", "orders", "*")?;
    let first = consumer.receive(16, Duration::from_secs(60), Duration::from_secs(5)).await?;
    assert_eq!(first.iter().map(|m| &m.body[..]).collect::<Vec<_>>(), [b"poison"], "FIFO: one at a time");

    let resource = |name: &str| Some(pb::Resource { name: name.into(), ..Default::default() });
    let mut node = MessagingServiceClient::connect(format!("http://{}", group.endpoint(2))).await?;
    let forward = pb::ForwardMessageToDeadLetterQueueRequest {
        group: resource("ordered"),
        topic: resource("orders"),
        receipt_handle: first[0].receipt_handle.clone(),
        message_id: first[0].message_id.clone(),
        delivery_attempt: 1,
        max_delivery_attempts: 16,
        ..Default::default()
    };
    let resp = node.forward_message_to_dead_letter_queue(forward.clone()).await?.into_inner();
    assert_eq!(resp.status.as_ref().map(|s| s.code), Some(pb::Code::Ok as i32), "{resp:?}");
    // Its successor comes now, though the poison message's invisible time has not ended.
    let next = consumer.receive(16, Duration::from_secs(60), Duration::from_secs(5)).await?;
    assert_eq!(next.iter().map(|m| &m.body[..]).collect::<Vec<_>>(), [b"next"]);
    consumer.ack(&next[0]).await?;
    // The same request again dead-letters nothing twice.
    let again = node.forward_message_to_dead_letter_queue(forward).await?.into_inner();
    assert_eq!(again.status.as_ref().map(|s| s.code), Some(pb::Code::InvalidReceiptHandle as i32), "{again:?}");

    let out = common::mqadmin(&["--endpoints", &endpoints, "dlq", "list", "ordered"]).await?;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(table.lines().filter(|l| l.contains(&poison.message_id)).count(), 1, "{table}");

    // Resent by id (an unknown id is refused and nothing is sent), it comes to the group
    // again as a new message with its key, tag and message group.
    let out = common::mqadmin(&["--endpoints", &endpoints, "dlq", "resend", "ordered", "--id", "nope"]).await?;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nope"), "{out:?}");
    let out =
        common::mqadmin(&["--endpoints", &endpoints, "dlq", "resend", "ordered", "--id", &poison.message_id]).await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("resent 1 dead letters"), "{out:?}");
    let back = consumer.receive(16, Duration::from_secs(60), Duration::from_secs(5)).await?;
    assert_eq!(back.len(), 1);
    let m = &back[0];
    assert_eq!(
        (&m.body[..], m.keys.as_slice(), m.tag.as_deref()),
        (&b"poison"[..], &["order-7".to_string()][..], Some("paid"))
    );
    assert_eq!(m.message_group.as_deref(), Some("o-7"));
    assert_eq!(m.properties.get("ORIGIN_MESSAGE_ID"), Some(&poison.message_id));
    assert_ne!(m.message_id, poison.message_id);
    consumer.ack(m).await?;
    group.shutdown().await;
    Ok(())
}
