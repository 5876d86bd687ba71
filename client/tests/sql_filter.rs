//! SQL92 filters over real gRPC against a three-node group: a consumer group subscribed with
//! a condition over user properties and the tag gets exactly the messages it holds for, with
//! RocketMQ's rules for missing properties; a pull consumer filters the same way; a bad
//! condition is refused before any call by our client and, from any client, by the broker
//! with ILLEGAL_FILTER_EXPRESSION saying where.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::Group;
use raftmq_client::proto::rocketmq::v2 as pb;
use raftmq_client::proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use raftmq_client::{Error, FilterExpression, Message, Producer, PullConsumer, SimpleConsumer, StartFrom};

/// Receives and acks until nothing more comes for a second; the bodies, as a set.
async fn drain(consumer: &SimpleConsumer, want: usize) -> anyhow::Result<BTreeSet<String>> {
    let mut got = BTreeSet::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let batch = consumer.receive(32, Duration::from_secs(30), Duration::from_secs(1)).await?;
        if batch.is_empty() && got.len() >= want {
            break;
        }
        for m in batch {
            anyhow::ensure!(got.insert(String::from_utf8_lossy(&m.body).into_owned()), "delivered twice");
            consumer.ack(&m).await?;
        }
    }
    Ok(got)
}

fn bodies(range: impl IntoIterator<Item = u32>) -> BTreeSet<String> {
    range.into_iter().map(|i| format!("m{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql92_filters_pass_exactly_what_their_condition_holds_for() -> anyhow::Result<()> {
    let group = Group::start(Some(4)).await?;
    let endpoints = group.endpoints();
    let producer = Producer::new(&endpoints)?;
    // m0..m19: n = i, tag TagA for even i; m20..m23 carry no n; m22, m23 have region eu.
    for i in 0..24u32 {
        let mut m = Message::new(format!("m{i}")).with_tag(if i % 2 == 0 { "TagA" } else { "TagB" });
        if i < 20 {
            m = m.with_property("n", i.to_string());
        }
        if i >= 22 {
            m = m.with_property("region", "eu");
        }
        producer.send("orders", m).await?;
    }
    let cases: [(&str, BTreeSet<String>); 5] = [
        ("n > 10 AND TAGS = 'TagA'", bodies([12, 14, 16, 18])),
        ("n BETWEEN 3 AND 5 OR region IN ('eu', 'us')", bodies([3, 4, 5, 22, 23])),
        // A missing n is unknown, never true: neither condition passes m20..m23.
        ("n < 2", bodies([0, 1])),
        ("NOT (n >= 2)", bodies([0, 1])),
        ("n IS NULL AND region IS NOT NULL", bodies([22, 23])),
    ];
    for (i, (condition, want)) in cases.iter().enumerate() {
        let consumer =
            SimpleConsumer::new(&endpoints, &format!("sql-{i}"), "orders", FilterExpression::sql(*condition))?;
        let got = drain(&consumer, want.len()).await?;
        assert_eq!(&got, want, "{condition}");
    }

    // A pull consumer (broadcasting) filters the same way.
    let pull =
        PullConsumer::new(&endpoints, "sql-pull", "orders", FilterExpression::sql("n >= 18"), StartFrom::Earliest)?;
    let mut pulled = BTreeSet::new();
    let start = Instant::now();
    while pulled.len() < 2 {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(20), "pulled only {pulled:?}");
        for m in pull.pull(32, Duration::from_secs(1)).await? {
            pulled.insert(String::from_utf8_lossy(&m.body).into_owned());
        }
    }
    assert_eq!(pulled, bodies([18, 19]));

    // A bad condition: our client refuses it before any call...
    match SimpleConsumer::new(&endpoints, "sql-bad", "orders", FilterExpression::sql("n > AND x")) {
        Err(Error::InvalidArgument(why)) => assert!(why.contains("column 5"), "{why}"),
        other => panic!("a malformed condition must be refused: {other:?}"),
    }
    // ...and the broker refuses it from any client, saying where.
    let mut node = MessagingServiceClient::connect(format!("http://{}", group.endpoint(3))).await?;
    let req = pb::ReceiveMessageRequest {
        group: Some(pb::Resource { name: "sql-bad".into(), ..Default::default() }),
        message_queue: Some(pb::MessageQueue {
            topic: Some(pb::Resource { name: "orders".into(), ..Default::default() }),
            ..Default::default()
        }),
        filter_expression: Some(pb::FilterExpression { r#type: pb::FilterType::Sql as i32, expression: "n >".into() }),
        batch_size: 1,
        ..Default::default()
    };
    let mut stream = node.receive_message(req).await?.into_inner();
    let first = stream.message().await?.ok_or_else(|| anyhow::anyhow!("empty answer"))?;
    match first.content {
        Some(pb::receive_message_response::Content::Status(s)) => {
            assert_eq!(s.code, pb::Code::IllegalFilterExpression as i32, "{s:?}");
            assert!(s.message.contains("column"), "{}", s.message);
        }
        other => panic!("expected a status, got {other:?}"),
    }
    group.shutdown().await;
    Ok(())
}
