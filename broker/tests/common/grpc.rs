//! Calls to a node's RocketMQ service over real gRPC, shared by the group tests: sends
//! into queue 0 of [`TOPIC`] and pulls from it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use broker::node::Node;
use bytes::Bytes;
use raftmq_machine::types::{QueueId, TopicName};
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;

/// The topic the helpers send to and pull from.
pub const TOPIC: &str = "acks";

pub fn message(body: &str) -> pb::Message {
    pb::Message {
        topic: Some(pb::Resource { resource_namespace: String::new(), name: TOPIC.into() }),
        // Queue 0 of the topic.
        system_properties: Some(pb::SystemProperties { born_host: "test".into(), ..Default::default() }),
        body: Bytes::from(body.to_string()),
        ..Default::default()
    }
}

pub async fn client(addr: &str) -> anyhow::Result<MessagingServiceClient<tonic::transport::Channel>> {
    Ok(MessagingServiceClient::connect(format!("http://{addr}")).await?)
}

/// Sends `bodies` in one request to `addr`, giving up after `timeout`.
pub async fn send(addr: &str, bodies: &[String], timeout: Duration) -> anyhow::Result<pb::SendMessageResponse> {
    let mut request =
        tonic::Request::new(pb::SendMessageRequest { messages: bodies.iter().map(|b| message(b)).collect() });
    request.set_timeout(timeout);
    let mut c = client(addr).await?;
    Ok(tokio::time::timeout(timeout, c.send_message(request)).await??.into_inner())
}

/// Sends `bodies` until the group stores them (a new leader refuses writes until a quorum
/// has acknowledged it).
pub async fn send_until_ok(
    addr: &str,
    bodies: &[String],
    deadline: Duration,
) -> anyhow::Result<pb::SendMessageResponse> {
    let start = Instant::now();
    loop {
        let answer = send(addr, bodies, deadline).await?;
        if ok(answer.status.as_ref()) {
            return Ok(answer);
        }
        anyhow::ensure!(start.elapsed() < deadline, "not stored within {deadline:?}: {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn ok(status: Option<&pb::Status>) -> bool {
    status.is_some_and(|s| s.code == Code::Ok as i32)
}

/// Messages in queue 0 of the topic in `node`'s applied state.
pub fn applied_messages(node: &Node) -> u64 {
    let topic = TopicName::new(TOPIC).expect("valid name");
    node.state.read(|a| a.machine.queue(&topic, QueueId(0)).map_or(0, |q| q.max_offset()))
}

/// Bodies a pull consumer reads from queue 0 on `addr`, pulling until it has `want` or the
/// deadline passes.
pub async fn pull_bodies(addr: &str, want: usize, deadline: Duration) -> anyhow::Result<BTreeSet<String>> {
    let start = Instant::now();
    let mut c = client(addr).await?;
    let mut bodies = BTreeSet::new();
    let mut offset = 0i64;
    while bodies.len() < want {
        anyhow::ensure!(start.elapsed() < deadline, "{addr}: {} of {want} messages after {deadline:?}", bodies.len());
        let request = pb::PullMessageRequest {
            group: Some(pb::Resource { resource_namespace: String::new(), name: "readers".into() }),
            message_queue: Some(pb::MessageQueue {
                topic: Some(pb::Resource { resource_namespace: String::new(), name: TOPIC.into() }),
                id: 0,
                ..Default::default()
            }),
            offset,
            batch_size: 32,
            filter_expression: Some(pb::FilterExpression {
                r#type: pb::FilterType::Tag as i32,
                expression: "*".into(),
            }),
            long_polling_timeout: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
        };
        let mut stream = c.pull_message(request).await?.into_inner();
        let mut refused = false;
        while let Some(item) = stream.message().await? {
            match item.content {
                Some(pb::pull_message_response::Content::Message(m)) => {
                    bodies.insert(String::from_utf8(m.body.to_vec())?);
                }
                Some(pb::pull_message_response::Content::NextOffset(next)) => offset = next,
                // The topic is not on this node's state yet: pull again shortly.
                Some(pb::pull_message_response::Content::Status(s)) => refused |= s.code != Code::Ok as i32,
                None => {}
            }
        }
        if refused {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(bodies)
}

/// One receive of up to 32 messages of `topic` by `group` on `addr` (a pop: a Raft entry):
/// the messages' names (their body up to a `|`) and the final status code.
pub async fn receive(addr: &str, topic: &str, group: &str) -> anyhow::Result<(Vec<String>, Option<i32>)> {
    let resource = |name: &str| Some(pb::Resource { resource_namespace: String::new(), name: name.into() });
    let request = pb::ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(pb::MessageQueue { topic: resource(topic), id: -1, ..Default::default() }),
        filter_expression: Some(pb::FilterExpression { r#type: pb::FilterType::Tag as i32, expression: "*".into() }),
        batch_size: 32,
        invisible_duration: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
        attempt_id: None,
    };
    let mut client = MessagingServiceClient::connect(format!("http://{addr}")).await?;
    let mut stream =
        tokio::time::timeout(Duration::from_secs(10), client.receive_message(request)).await??.into_inner();
    let (mut names, mut status) = (Vec::new(), None);
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), stream.message()).await?? {
        match item.content {
            Some(pb::receive_message_response::Content::Message(m)) => {
                let body = String::from_utf8_lossy(&m.body).into_owned();
                names.push(body.split('|').next().unwrap_or_default().to_string());
            }
            Some(pb::receive_message_response::Content::Status(s)) => status = Some(s.code),
            _ => {}
        }
        anyhow::ensure!(names.len() <= 64, "a receive of 32 returned more than 64 messages");
    }
    Ok((names, status))
}
