//! Message types over real gRPC against a three-node group: a topic created with types
//! refuses a send of another type naming both; an auto-created topic takes every type; a
//! delay message a minute ahead is not delivered at once;
//! bad delivery times and delay levels are refused with what to change; a batch is stored
//! whole or not at all.

mod common;

use std::time::{Duration, SystemTime};

use common::Group;
use raftmq_client::{Admin, Error, Message, Producer, SimpleConsumer, TopicSpec};
use raftmq_proto::rocketmq::v2::Code;

fn refusal(result: Result<raftmq_client::SendReceipt, Error>) -> (Code, String) {
    match result {
        Err(Error::Broker { code, message, .. }) => (code, message),
        other => panic!("expected the broker to refuse the send, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_refuse_other_types_and_delay_messages_wait_for_their_time() -> anyhow::Result<()> {
    let group = Group::start(Some(4)).await?;
    let admin = Admin::new(&group.endpoints())?;
    let mut fifo = TopicSpec::new("payments").with_queues(2);
    fifo.message_types = vec!["FIFO".into()];
    admin.create_topic(fifo).await?;
    let producer = Producer::new(&group.endpoints())?;

    // A FIFO topic takes FIFO messages and refuses a NORMAL one, naming both types.
    producer.send("payments", Message::new("paid").with_message_group("order-1")).await?;
    let (code, message) = refusal(producer.send("payments", Message::new("plain")).await);
    assert_eq!(code, Code::MessagePropertyConflictWithType, "{message}");
    assert!(message.contains("accepts FIFO") && message.contains("is NORMAL"), "{message}");

    // A batch is stored whole or not at all: one message of the wrong type refuses all.
    let batch = vec![Message::new("batch-fifo").with_message_group("order-2"), Message::new("batch-plain")];
    match producer.send_batch("payments", batch).await {
        Err(Error::Broker { code, message, .. }) => {
            assert_eq!(code, Code::MessagePropertyConflictWithType, "{message}")
        }
        other => panic!("a batch with a message of the wrong type must be refused whole, got {other:?}"),
    }

    // A topic created on first use takes every type.
    producer.send("audit", Message::new("plain")).await?;
    producer.send("audit", Message::new("ordered").with_message_group("g")).await?;
    let past = SystemTime::now() - Duration::from_secs(5);
    producer.send("audit", Message::new("due").with_delivery_time(past)).await?;

    // A delay message a minute ahead is taken, and not delivered at once.
    let later = SystemTime::now() + Duration::from_secs(60);
    let receipt = producer.send("audit", Message::new("later").with_delivery_time(later)).await?;
    assert_eq!(receipt.offset, None, "a scheduled message gets its offset when it fires");
    // Beyond the longest delay (24 h) and bad delay levels: refused with what to change.
    let too_late = SystemTime::now() + Duration::from_secs(2 * 24 * 3600);
    let (code, message) = refusal(producer.send("audit", Message::new("x").with_delivery_time(too_late)).await);
    assert_eq!(code, Code::IllegalDeliveryTime, "{message}");
    let (code, message) = refusal(producer.send("audit", Message::new("x").with_property("DELAY", "19")).await);
    assert_eq!(code, Code::IllegalDeliveryTime, "{message}");
    assert!(message.contains("1-18"), "{message}");
    let both = Message::new("x").with_message_group("g").with_delivery_time(later);
    let (code, message) = refusal(producer.send("audit", both).await);
    assert_eq!(code, Code::MessagePropertyConflictWithType, "{message}");

    // Exactly the three messages of "audit" already due are delivered.
    let consumer = SimpleConsumer::new(&group.endpoints(), "auditors", "audit", "*")?;
    let mut bodies = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while bodies.len() < 3 && std::time::Instant::now() < deadline {
        for m in consumer.receive(32, Duration::from_secs(60), Duration::from_secs(2)).await? {
            bodies.push(String::from_utf8_lossy(&m.body).to_string());
            consumer.ack(&m).await?;
        }
    }
    // One more poll: nothing else (the refused messages were never stored).
    for m in consumer.receive(32, Duration::from_secs(60), Duration::from_secs(2)).await? {
        bodies.push(String::from_utf8_lossy(&m.body).to_string());
    }
    bodies.sort();
    assert_eq!(bodies, ["due", "ordered", "plain"]);

    // "payments" holds only the FIFO message sent alone: nothing of the refused batch.
    let payments = SimpleConsumer::new(&group.endpoints(), "payers", "payments", "*")?;
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.is_empty() && std::time::Instant::now() < deadline {
        for m in payments.receive(32, Duration::from_secs(60), Duration::from_secs(2)).await? {
            got.push(String::from_utf8_lossy(&m.body).to_string());
        }
    }
    for m in payments.receive(32, Duration::from_secs(60), Duration::from_secs(2)).await? {
        got.push(String::from_utf8_lossy(&m.body).to_string());
    }
    assert_eq!(got, ["paid"]);
    Ok(())
}
