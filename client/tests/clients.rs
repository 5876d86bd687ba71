//! Live clients over real gRPC against a three-node group: a client's Telemetry settings and
//! Heartbeats (naming it in `x-mq-client-id`, as RocketMQ clients do) make it appear in
//! `list_clients` (and `mqadmin group clients`) of every member, for its consumer group and
//! topic; its closed Telemetry stream shows; one that says it terminates is gone.

mod common;

use std::time::{Duration, Instant};

use common::Group;
use raftmq_client::Admin;
use raftmq_client::proto::rocketmq::v2 as pb;
use raftmq_client::proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use tonic::Request;

fn named<T>(body: T, client_id: &str) -> Request<T> {
    let mut r = Request::new(body);
    r.metadata_mut().insert("x-mq-client-id", client_id.parse().expect("ascii"));
    r
}

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource { name: name.into(), ..Default::default() })
}

async fn wait_for(
    what: &str,
    deadline: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !check().await? {
        anyhow::ensure!(start.elapsed() < deadline, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_appear_on_every_member_and_leave_when_they_say_so() -> anyhow::Result<()> {
    let group = Group::start(Some(4)).await?;
    let admin = Admin::new(&group.endpoints())?;

    // A simple consumer of "billing" on node 1, with its Telemetry stream open.
    let mut node1 = MessagingServiceClient::connect(format!("http://{}", group.endpoint(1))).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::TelemetryCommand>(4);
    let settings = pb::Settings {
        client_type: Some(pb::ClientType::SimpleConsumer as i32),
        pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
            group: resource("billing"),
            subscriptions: vec![pb::SubscriptionEntry { topic: resource("orders"), expression: None }],
            ..Default::default()
        })),
        user_agent: Some(pb::Ua {
            language: pb::Language::Python as i32,
            version: "5.1.2".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    tx.send(pb::TelemetryCommand { status: None, command: Some(pb::telemetry_command::Command::Settings(settings)) })
        .await?;
    let outgoing = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut answers = node1.telemetry(named(outgoing, "consumer-1")).await?.into_inner();
    let first = answers.message().await?.ok_or_else(|| anyhow::anyhow!("no settings answer"))?;
    anyhow::ensure!(first.status.map(|s| s.code) == Some(pb::Code::Ok as i32));

    // A push consumer of "billing" heartbeating on node 2.
    let mut node2 = MessagingServiceClient::connect(format!("http://{}", group.endpoint(2))).await?;
    let beat = pb::HeartbeatRequest { group: resource("billing"), client_type: pb::ClientType::PushConsumer as i32 };
    node2.heartbeat(named(beat, "consumer-2")).await?;

    let list = admin.list_clients("billing").await?;
    anyhow::ensure!(list.unreachable.is_empty(), "{:?}", list.unreachable);
    let seen: Vec<(&str, &str, u64)> =
        list.clients.iter().map(|c| (c.client_id.as_str(), c.kind.as_str(), c.node_id)).collect();
    assert_eq!(seen, [("consumer-1", "SIMPLE_CONSUMER", 1), ("consumer-2", "PUSH_CONSUMER", 2)]);
    assert_eq!(list.clients[0].agent, "PYTHON 5.1.2");
    assert_eq!(list.clients[0].topics, ["orders"]);
    assert!(list.clients[0].telemetry && !list.clients[0].address.is_empty());
    // By topic: the consumer subscribed to it; another group has none.
    let by_topic: Vec<String> = admin.list_clients("orders").await?.clients.into_iter().map(|c| c.client_id).collect();
    assert_eq!(by_topic, ["consumer-1"]);
    assert!(admin.list_clients("shipping").await?.clients.is_empty());
    // `mqadmin group clients` prints them.
    let out = common::mqadmin(&["--endpoints", &group.endpoints(), "group", "clients", "billing"]).await?;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        table.contains("consumer-1") && table.contains("SIMPLE_CONSUMER") && table.contains("PYTHON 5.1.2"),
        "{table}"
    );
    assert!(table.contains("consumer-2") && table.contains("PUSH_CONSUMER"), "{table}");

    // The stream closes: still live (it heartbeats), telemetry closed.
    drop(tx);
    drop(answers);
    wait_for("the closed telemetry stream shows", Duration::from_secs(10), async || {
        let list = admin.list_clients("billing").await?;
        Ok(list.clients.iter().any(|c| c.client_id == "consumer-1" && !c.telemetry))
    })
    .await?;

    // Terminated: gone.
    node2
        .notify_client_termination(named(
            pb::NotifyClientTerminationRequest { group: resource("billing") },
            "consumer-2",
        ))
        .await?;
    let left: Vec<String> = admin.list_clients("billing").await?.clients.into_iter().map(|c| c.client_id).collect();
    assert_eq!(left, ["consumer-1"]);
    Ok(())
}
