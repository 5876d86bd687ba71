//! Push consumers over real gRPC against a three-node group, as the official clients drive
//! them: `QueryAssignment` splits a topic's queues over the group's live push consumers
//! (registered on whichever member they connect to), every member answering alike; when one
//! drops its connection or says it terminates, the others take its queues within seconds; a
//! push consumer's receive reads only the queue it names; its settings carry RocketMQ's
//! consumption backoff and the group's max attempts.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::Group;
use raftmq_client::proto::rocketmq::v2 as pb;
use raftmq_client::proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use raftmq_client::{Message, Producer};
use tokio::sync::mpsc;
use tonic::Request;
use tonic::transport::Channel;

const TOPIC: &str = "orders";
const GROUP: &str = "shipping";

fn named<T>(body: T, client_id: &str) -> Request<T> {
    let mut r = Request::new(body);
    r.metadata_mut().insert("x-mq-client-id", client_id.parse().expect("ascii"));
    r
}

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource { name: name.into(), ..Default::default() })
}

/// A push consumer with its Telemetry stream open on one node; dropping it closes the
/// stream, as a consumer's death closes its connection.
struct Push {
    id: String,
    _stream: mpsc::Sender<pb::TelemetryCommand>,
    settings: pb::Settings,
}

async fn connect(group: &Group, node: u64) -> anyhow::Result<MessagingServiceClient<Channel>> {
    Ok(MessagingServiceClient::connect(format!("http://{}", group.endpoint(node))).await?)
}

async fn push_consumer(group: &Group, node: u64, id: &str) -> anyhow::Result<Push> {
    let mut client = connect(group, node).await?;
    let (tx, rx) = mpsc::channel::<pb::TelemetryCommand>(4);
    let settings = pb::Settings {
        client_type: Some(pb::ClientType::PushConsumer as i32),
        pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
            group: resource(GROUP),
            subscriptions: vec![pb::SubscriptionEntry { topic: resource(TOPIC), expression: None }],
            ..Default::default()
        })),
        ..Default::default()
    };
    tx.send(pb::TelemetryCommand { status: None, command: Some(pb::telemetry_command::Command::Settings(settings)) })
        .await?;
    let outgoing = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut answers = client.telemetry(named(outgoing, id)).await?.into_inner();
    let first = answers.message().await?.ok_or_else(|| anyhow::anyhow!("no settings answer"))?;
    let Some(pb::telemetry_command::Command::Settings(settings)) = first.command else {
        anyhow::bail!("the first answer is not settings: {first:?}");
    };
    // The answers stream is read no further; the request side stays open while `tx` lives.
    tokio::spawn(async move { while let Ok(Some(_)) = answers.message().await {} });
    Ok(Push { id: id.to_string(), _stream: tx, settings })
}

/// The queue ids `id` is assigned when asking node `node`.
async fn assigned(group: &Group, node: u64, id: &str) -> anyhow::Result<BTreeSet<i32>> {
    let mut client = connect(group, node).await?;
    let req = pb::QueryAssignmentRequest { topic: resource(TOPIC), group: resource(GROUP), endpoints: None };
    let resp = client.query_assignment(named(req, id)).await?.into_inner();
    anyhow::ensure!(resp.status.as_ref().map(|s| s.code) == Some(pb::Code::Ok as i32), "{:?}", resp.status);
    Ok(resp.assignments.iter().filter_map(|a| a.message_queue.as_ref()).map(|q| q.id).collect())
}

/// Waits, with a deadline, until asking `ids` (each through the node given) gives shares
/// that are disjoint, cover all `queues` and differ in size by at most one.
async fn balanced(group: &Group, ids: &[(u64, &str)], queues: i32, deadline: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let mut shares = Vec::new();
        for (node, id) in ids {
            shares.push(assigned(group, *node, id).await?);
        }
        let total: usize = shares.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<i32> = shares.iter().flatten().copied().collect();
        let sizes: Vec<usize> = shares.iter().map(BTreeSet::len).collect();
        let even = sizes.iter().max().zip(sizes.iter().min()).is_some_and(|(hi, lo)| hi - lo <= 1);
        if total == queues as usize && union == (0..queues).collect() && even {
            return Ok(());
        }
        anyhow::ensure!(start.elapsed() < deadline, "shares {shares:?} of {ids:?} not balanced within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_balanced_over_live_push_consumers_and_reassigned_when_one_leaves() -> anyhow::Result<()> {
    let group = Group::start(Some(8)).await?;
    let c1 = push_consumer(&group, 1, "push-1").await?;
    let c2 = push_consumer(&group, 2, "push-2").await?;
    let c3 = push_consumer(&group, 3, "push-3").await?;

    // Settings: RocketMQ's growing consumption backoff and the group's max attempts.
    let Some(backoff) = &c1.settings.backoff_policy else { anyhow::bail!("no backoff policy") };
    assert_eq!(backoff.max_attempts, 16);
    match &backoff.strategy {
        Some(pb::retry_policy::Strategy::CustomizedBackoff(c)) => {
            let secs: Vec<i64> = c.next.iter().map(|d| d.seconds).collect();
            assert_eq!(secs[..4], [10, 30, 60, 120]);
            assert_eq!(secs.last(), Some(&7200));
        }
        other => panic!("a push consumer gets a customized backoff: {other:?}"),
    }

    // Three consumers on three nodes, each asking a different node: 3 + 3 + 2 queues.
    balanced(&group, &[(3, &c1.id), (1, &c2.id), (2, &c3.id)], 8, Duration::from_secs(5)).await?;
    let a1 = assigned(&group, 1, &c1.id).await?;
    assert_eq!(a1, assigned(&group, 2, &c1.id).await?, "every member answers alike");

    // push-2 dies with its connection: the other two share its queues within seconds.
    drop(c2);
    balanced(&group, &[(1, &c1.id), (3, &c3.id)], 8, Duration::from_secs(5)).await?;

    // push-3 says it terminates: push-1 reads every queue.
    let mut node3 = connect(&group, 3).await?;
    let bye = pb::NotifyClientTerminationRequest { group: resource(GROUP) };
    node3.notify_client_termination(named(bye, &c3.id)).await?;
    balanced(&group, &[(2, &c1.id)], 8, Duration::from_secs(5)).await?;
    drop(c3);

    // A push consumer's receive reads only the queue it names.
    let producer = Producer::new(&group.endpoints())?;
    for i in 0..40 {
        producer.send(TOPIC, Message::new(format!("m{i}"))).await?;
    }
    let mut node1 = connect(&group, 1).await?;
    let queue = pb::MessageQueue { topic: resource(TOPIC), id: 5, ..Default::default() };
    let mut got = Vec::new();
    let start = Instant::now();
    while got.is_empty() {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "nothing received from queue 5");
        let req = pb::ReceiveMessageRequest {
            group: resource(GROUP),
            message_queue: Some(queue.clone()),
            batch_size: 32,
            auto_renew: true,
            long_polling_timeout: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
            ..Default::default()
        };
        let mut stream = node1.receive_message(named(req, &c1.id)).await?.into_inner();
        while let Some(item) = stream.message().await? {
            if let Some(pb::receive_message_response::Content::Message(m)) = item.content {
                got.push(m.system_properties.map_or(-1, |s| s.queue_id));
            }
        }
    }
    assert!(got.iter().all(|q| *q == 5), "queues delivered: {got:?}");
    drop(c1);
    group.shutdown().await;
    Ok(())
}
