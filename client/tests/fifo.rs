//! FIFO consumption over real gRPC against a three-node group: a consumer group configured
//! `fifo` gets each message group's messages in send order, the next only after the one
//! before it is acknowledged (an unacknowledged one comes again first), while other message
//! groups keep flowing; its push consumers are told `fifo` in their settings.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Group;
use raftmq_client::proto::rocketmq::v2 as pb;
use raftmq_client::proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use raftmq_client::{Admin, Message, Producer, ReceivedMessage, SimpleConsumer};

const GROUPS: [&str; 3] = ["order-a", "order-b", "order-c"];
const PER_GROUP: usize = 6;

/// The message group and sequence number of a received message (`order-a/3`).
fn parse(m: &ReceivedMessage) -> (String, usize) {
    let body = String::from_utf8_lossy(&m.body).to_string();
    let (g, i) = body.split_once('/').expect("group/sequence");
    (g.to_string(), i.parse().expect("a sequence number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_group_receives_each_message_group_in_order_one_at_a_time() -> anyhow::Result<()> {
    let group = Group::start(Some(2)).await?;
    let admin = Admin::new(&group.endpoints())?;
    admin.upsert_group("ordered", true, 0).await?;
    let listed = admin.list_groups().await?;
    assert!(listed.iter().any(|g| g.group == "ordered" && g.fifo), "{listed:?}");

    let producer = Producer::new(&group.endpoints())?;
    for i in 0..PER_GROUP {
        for g in GROUPS {
            producer.send("orders", Message::new(format!("{g}/{i}")).with_message_group(g)).await?;
        }
    }
    let consumer = SimpleConsumer::new(&group.endpoints(), "ordered", "orders", "*")?;
    let mut next: BTreeMap<String, usize> = GROUPS.iter().map(|g| (g.to_string(), 0)).collect();
    let mut held_back = false;
    let start = Instant::now();
    while next.values().any(|&n| n < PER_GROUP) {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(60), "not all delivered in order: {next:?}");
        let batch = consumer.receive(32, Duration::from_secs(1), Duration::from_secs(2)).await?;
        let mut in_batch = BTreeMap::new();
        for m in &batch {
            let (g, i) = parse(m);
            *in_batch.entry(g.clone()).or_insert(0) += 1;
            assert_eq!(i, next[&g], "{g}: got {i} out of order (attempt {})", m.delivery_attempt);
        }
        assert!(in_batch.values().all(|&n| n == 1), "one message per group at a time: {in_batch:?}");
        for m in &batch {
            let (g, i) = parse(m);
            // Once, order-a's third message is not acked: it must come again before its fourth.
            if g == "order-a" && i == 2 && !held_back {
                held_back = true;
                continue;
            }
            consumer.ack(m).await?;
            *next.get_mut(&g).expect("known group") = i + 1;
        }
    }
    assert!(held_back);

    // A push consumer of the group is told to consume in order.
    let mut node = MessagingServiceClient::connect(format!("http://{}", group.endpoint(1))).await?;
    let settings = pb::Settings {
        client_type: Some(pb::ClientType::PushConsumer as i32),
        pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
            group: Some(pb::Resource { name: "ordered".into(), ..Default::default() }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let command =
        pb::TelemetryCommand { status: None, command: Some(pb::telemetry_command::Command::Settings(settings)) };
    let mut answers = node.telemetry(futures::stream::iter(vec![command])).await?.into_inner();
    let answer = answers.message().await?.ok_or_else(|| anyhow::anyhow!("no settings answer"))?;
    let fifo = match answer.command {
        Some(pb::telemetry_command::Command::Settings(pb::Settings {
            pub_sub: Some(pb::settings::PubSub::Subscription(s)),
            ..
        })) => s.fifo,
        other => anyhow::bail!("unexpected answer {other:?}"),
    };
    assert_eq!(fifo, Some(true));

    // `mqadmin group update` and `group list`.
    let out =
        common::mqadmin(&["--endpoints", &group.endpoints(), "group", "update", "audit", "--fifo", "true"]).await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = common::mqadmin(&["--endpoints", &group.endpoints(), "group", "list"]).await?;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().any(|l| l.contains("audit") && l.contains("true")), "{table}");
    assert!(table.lines().any(|l| l.contains("ordered") && l.contains("true")), "{table}");
    group.shutdown().await;
    Ok(())
}
