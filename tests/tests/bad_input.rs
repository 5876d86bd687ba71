//! Bad input through gRPC against a three-process group: each request gets a clear status
//! code and message, the log does not grow, and every node keeps serving.

use std::time::Duration;

use bytes::Bytes;
use raftmq_client::{Admin, TopicSpec};
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use raftmq_tests::cluster::{Cluster, ClusterOptions};
use raftmq_tests::workload::patient;
use tonic::transport::Channel;

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource { resource_namespace: String::new(), name: name.to_string() })
}

fn message(topic: &str, body: Bytes, digest: Option<pb::Digest>) -> pb::Message {
    pb::Message {
        topic: resource(topic),
        system_properties: Some(pb::SystemProperties {
            message_id: "01BADINPUT0000000000000000000001".into(),
            body_digest: digest,
            born_host: "test".into(),
            ..Default::default()
        }),
        body,
        ..Default::default()
    }
}

/// The code and message of the single entry of a send.
async fn send(client: &mut MessagingServiceClient<Channel>, m: pb::Message) -> anyhow::Result<(i32, String)> {
    let resp = client.send_message(pb::SendMessageRequest { messages: vec![m] }).await?.into_inner();
    let s = resp.entries.first().and_then(|e| e.status.clone()).or(resp.status).unwrap_or_default();
    Ok((s.code, s.message))
}

fn expect(what: &str, got: (i32, String), code: Code, words: &str) -> anyhow::Result<()> {
    anyhow::ensure!(got.0 == code as i32, "{what}: expected {code:?}, got code {} ({:?})", got.0, got.1);
    anyhow::ensure!(got.1.contains(words), "{what}: the message {:?} does not say {words:?}", got.1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_touch_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = ClusterOptions { auto_create_topics: false, ..ClusterOptions::default() };
    let cluster = Cluster::start(dir.path(), &opts)?;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    let endpoints = cluster.endpoints().join(";");
    Admin::with_options(&endpoints, patient())?.create_topic(TopicSpec::new("orders").with_queues(2)).await?;
    let before = cluster.status(leader).await.and_then(|s| s.last_log_index);
    anyhow::ensure!(before.is_some(), "the leader did not report its last log index");

    // Against a follower too: bad input is refused before anything is forwarded.
    for id in 1..=3 {
        let mut c = MessagingServiceClient::connect(format!("http://{}", cluster.endpoint(id))).await?;
        let big = Bytes::from(vec![b'x'; (4 << 20) + 1]);
        expect("body over 4 MiB", send(&mut c, message("orders", big, None)).await?, Code::PayloadTooLarge, "4194304")?;
        expect(
            "bad topic name",
            send(&mut c, message("a b", Bytes::from("x"), None)).await?,
            Code::IllegalTopic,
            "a b",
        )?;
        expect(
            "unknown topic, auto-create off",
            send(&mut c, message("nosuchtopic", Bytes::from("x"), None)).await?,
            Code::TopicNotFound,
            "nosuchtopic",
        )?;
        let wrong = pb::Digest { r#type: pb::DigestType::Crc32 as i32, checksum: "00000000".into() };
        expect(
            "wrong digest",
            send(&mut c, message("orders", Bytes::from("hello"), Some(wrong))).await?,
            Code::MessageCorrupted,
            "digest",
        )?;
        let ack = c
            .ack_message(pb::AckMessageRequest {
                group: resource("orders-group"),
                topic: resource("orders"),
                entries: vec![pb::AckMessageEntry {
                    message_id: "m".into(),
                    receipt_handle: "garbage".into(),
                    ..Default::default()
                }],
            })
            .await?
            .into_inner();
        let s = ack.entries.first().and_then(|e| e.status.clone()).unwrap_or_default();
        expect("malformed receipt handle", (s.code, s.message), Code::InvalidReceiptHandle, "")?;
        let recv = c
            .receive_message(pb::ReceiveMessageRequest {
                group: resource("bad group!"),
                message_queue: Some(pb::MessageQueue { topic: resource("orders"), ..Default::default() }),
                batch_size: 1,
                ..Default::default()
            })
            .await;
        let code = match recv {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                match stream.message().await? {
                    Some(pb::ReceiveMessageResponse {
                        content: Some(pb::receive_message_response::Content::Status(s)),
                    }) => (s.code, s.message),
                    other => anyhow::bail!("bad group: expected a status, got {other:?}"),
                }
            }
            Err(status) => anyhow::bail!("bad group: the call failed instead of answering a status: {status}"),
        };
        expect("bad consumer group name", code, Code::IllegalConsumerGroup, "bad group!")?;
    }

    // Nothing reached the log, and every node still answers.
    let after = cluster.status(leader).await.and_then(|s| s.last_log_index);
    anyhow::ensure!(before == after, "bad input changed the log: last index {before:?} → {after:?}");
    for id in 1..=3 {
        anyhow::ensure!(cluster.status(id).await.is_some(), "node {id} stopped answering");
    }

    // Bodies of exactly the limit, six at once: together they exceed what one log entry
    // holds (half a 16 MiB segment), so group commit must split them, not stop Raft.
    let sends = (0..6u8).map(|i| {
        let endpoint = cluster.endpoint(leader);
        async move {
            let mut c = MessagingServiceClient::connect(format!("http://{endpoint}")).await?;
            let mut m = message("orders", Bytes::from(vec![b'a' + i; 4 << 20]), None);
            if let Some(sys) = m.system_properties.as_mut() {
                sys.message_id = format!("01BADINPUT00000000000000000000F{i}");
            }
            send(&mut c, m).await
        }
    });
    for (i, r) in futures::future::join_all(sends).await.into_iter().enumerate() {
        let (code, text) = r?;
        anyhow::ensure!(code == Code::Ok as i32, "4 MiB send {i}: code {code} ({text})");
    }
    let leader_after = cluster.wait_leader(Duration::from_secs(5)).await?;
    anyhow::ensure!(leader_after == leader, "the leader changed from {leader} to {leader_after} under large sends");
    Ok(())
}
