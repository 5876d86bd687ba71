//! Message queries through the admin client, over real gRPC against a three-node group: by
//! id, by key (within a time range) and by queue offset on every node, bad input, and the
//! same queries after the whole group restarts and after the leader is lost.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Group;
use raftmq_client::{Admin, Message, MessageQuery, Producer, QueriedMessage, TopicSpec};

/// How long a node may take to index a message the group acknowledged (dispatch runs
/// behind apply, and a restarted node first catches up).
const INDEXED_WITHIN: Duration = Duration::from_secs(15);
const TOPIC: &str = "orders";
const SHARED_KEY: &str = "customer-7";

/// A message the group acknowledged, as the tests expect to find it.
#[derive(Debug, Clone)]
struct Sent {
    message_id: String,
    queue: u32,
    offset: u64,
    body: Vec<u8>,
    keys: Vec<String>,
}

fn now_ms() -> anyhow::Result<i64> {
    Ok(i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?)
}

fn by_id(message_id: &str) -> MessageQuery {
    MessageQuery::Id { message_id: message_id.to_string(), topic: None }
}

fn by_key(key: &str, topic: Option<&str>, range: (Option<i64>, Option<i64>)) -> MessageQuery {
    MessageQuery::Key { key: key.to_string(), topic: topic.map(Into::into), begin_ms: range.0, end_ms: range.1 }
}

/// Sends `body` with `keys` and returns it as acknowledged.
async fn send(producer: &Producer, body: Vec<u8>, keys: &[&str]) -> anyhow::Result<Sent> {
    let message = keys.iter().fold(Message::new(body.clone()), |m, k| m.with_key(*k));
    let r = producer.send(TOPIC, message.with_property("origin", "query-test")).await?;
    let offset = r.offset.ok_or_else(|| anyhow::anyhow!("{} was acknowledged without an offset", r.message_id))?;
    Ok(Sent {
        message_id: r.message_id,
        queue: r.queue_id,
        offset,
        body,
        keys: keys.iter().map(|k| k.to_string()).collect(),
    })
}

/// Three messages share [`SHARED_KEY`] (the second with a body longer than a preview), two
/// carry another key.
async fn send_all(group: &Group) -> anyhow::Result<Vec<Sent>> {
    let producer = Producer::new(&group.endpoints())?;
    let mut sent = Vec::new();
    for i in 0..3 {
        let body = if i == 1 { vec![b'x'; 1000] } else { format!("order {i}").into_bytes() };
        sent.push(send(&producer, body, &[SHARED_KEY, &format!("order-{i}")]).await?);
    }
    for i in 3..5 {
        sent.push(send(&producer, format!("refund {i}").into_bytes(), &["customer-8"]).await?);
    }
    Ok(sent)
}

/// Asks `admin` until it answers exactly `want` messages, failing at the deadline.
async fn query_until(admin: &Admin, query: &MessageQuery, want: usize) -> anyhow::Result<Vec<QueriedMessage>> {
    let start = Instant::now();
    loop {
        let found = admin.query_messages(query.clone(), None).await?;
        if found.len() == want {
            return Ok(found);
        }
        anyhow::ensure!(
            start.elapsed() < INDEXED_WITHIN,
            "{query:?} found {} messages, not {want}, within {INDEXED_WITHIN:?}: {found:?}",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// By id and by queue offset, every message is found whole on node `id`.
async fn check_ids_and_offsets(admin: &Admin, id: u64, sent: &[Sent]) -> anyhow::Result<()> {
    for s in sent {
        let found = query_until(admin, &by_id(&s.message_id), 1).await?;
        let m = &found[0];
        let place = (m.message_id.as_str(), m.topic.as_str(), m.queue, m.queue_offset);
        assert_eq!(place, (s.message_id.as_str(), TOPIC, s.queue, Some(s.offset)), "node {id}");
        assert_eq!(m.body_preview, s.body[..s.body.len().min(256)], "node {id}: preview of {}", s.message_id);
        assert_eq!((m.body_size_bytes, m.body_gzip), (s.body.len() as u64, false));
        assert_eq!(m.keys, s.keys);
        assert_eq!(m.properties.get("origin").map(String::as_str), Some("query-test"));
        assert!((m.store_time_ms - m.born_time_ms).abs() < 60_000, "stored when it was sent: {m:?}");
        let at = MessageQuery::QueueOffset { topic: TOPIC.into(), queue: s.queue, offset: s.offset };
        assert_eq!(admin.query_messages(at, None).await?, found, "node {id}: the same message by queue offset");
        let in_topic = MessageQuery::Id { message_id: s.message_id.clone(), topic: Some(TOPIC.into()) };
        assert_eq!(admin.query_messages(in_topic, None).await?, found);
        let elsewhere = MessageQuery::Id { message_id: s.message_id.clone(), topic: Some("payments".into()) };
        assert!(admin.query_messages(elsewhere, None).await?.is_empty(), "node {id}: another topic has no such id");
    }
    Ok(())
}

/// By key: every message with the key, newest first, and nothing else; time ranges apply.
async fn check_keys(admin: &Admin, id: u64, sent: &[Sent]) -> anyhow::Result<()> {
    let shared: Vec<&str> = sent[..3].iter().rev().map(|s| s.message_id.as_str()).collect();
    let ids = |found: &[QueriedMessage]| found.iter().map(|m| m.message_id.clone()).collect::<Vec<_>>();
    let found = query_until(admin, &by_key(SHARED_KEY, None, (None, None)), 3).await?;
    assert_eq!(ids(&found), shared, "node {id}: the messages with the key, newest first");
    assert!(found.iter().all(|m| m.keys.iter().any(|k| k == SHARED_KEY)));
    let found = admin.query_messages(by_key(SHARED_KEY, Some(TOPIC), (None, None)), None).await?;
    assert_eq!(ids(&found), shared);
    let found = admin.query_messages(by_key("customer-8", None, (None, None)), None).await?;
    assert_eq!(ids(&found), [sent[4].message_id.clone(), sent[3].message_id.clone()]);
    let found = admin.query_messages(by_key(SHARED_KEY, None, (None, None)), Some(2)).await?;
    assert_eq!(ids(&found), shared[..2], "at most max_results");

    let now = now_ms()?;
    let around = (Some(now - 3_600_000), Some(now + 3_600_000));
    assert_eq!(ids(&admin.query_messages(by_key(SHARED_KEY, None, around), None).await?), shared);
    for excluding in [(Some(0), Some(1_000)), (Some(now + 3_600_000), None), (None, Some(now - 3_600_000))] {
        let found = admin.query_messages(by_key(SHARED_KEY, None, excluding), None).await?;
        assert!(found.is_empty(), "node {id}: {excluding:?} excludes them all: {found:?}");
    }
    assert!(admin.query_messages(by_key("customer-9", None, (None, None)), None).await?.is_empty());
    assert!(admin.query_messages(by_key(SHARED_KEY, Some("payments"), (None, None)), None).await?.is_empty());
    Ok(())
}

/// Unknown messages are an empty list; bad input is INVALID_ARGUMENT.
async fn check_misses_and_bad_input(admin: &Admin, id: u64) -> anyhow::Result<()> {
    assert!(admin.query_messages(by_id("no-such-message"), None).await?.is_empty(), "node {id}");
    for (topic, queue, offset) in [(TOPIC, 0, 1_000_000), (TOPIC, 99, 0), ("payments", 0, 0), ("nowhere", 0, 0)] {
        let at = MessageQuery::QueueOffset { topic: topic.into(), queue, offset };
        assert!(admin.query_messages(at.clone(), None).await?.is_empty(), "node {id}: {at:?}");
    }
    let bad = [
        by_id(""),
        by_id(&"i".repeat(129)),
        by_key("", None, (None, None)),
        by_key(&"k".repeat(129), None, (None, None)),
        by_key(SHARED_KEY, None, (Some(10), Some(9))),
        MessageQuery::Id { message_id: "x".into(), topic: Some("a b".into()) },
        MessageQuery::QueueOffset { topic: "a/b".into(), queue: 0, offset: 0 },
    ];
    for query in bad {
        let e = admin.query_messages(query.clone(), None).await.expect_err("must be refused");
        assert_eq!(e.grpc_code(), Some(tonic::Code::InvalidArgument), "node {id}: {query:?}: {e}");
    }
    let e = admin.query_messages(MessageQuery::Id { message_id: "x".into(), topic: Some("a b".into()) }, None).await;
    let e = e.expect_err("bad topic");
    assert!(e.to_string().contains("\"a b\""), "the error names the topic: {e}");
    Ok(())
}

async fn check_node(group: &Group, id: u64, sent: &[Sent]) -> anyhow::Result<()> {
    // Each node answers from its own stores: ask it alone.
    let admin = Admin::new(&group.endpoint(id))?;
    check_ids_and_offsets(&admin, id, sent).await?;
    check_keys(&admin, id, sent).await
}

async fn start_with_messages() -> anyhow::Result<(Group, Vec<Sent>)> {
    let group = Group::start(None).await?;
    let admin = Admin::new(&group.endpoints())?;
    admin.create_topic(TopicSpec::new(TOPIC).with_queues(4)).await?;
    admin.create_topic(TopicSpec::new("payments").with_queues(1)).await?;
    let sent = send_all(&group).await?;
    Ok((group, sent))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_finds_messages_by_id_key_and_queue_offset() -> anyhow::Result<()> {
    let (group, sent) = start_with_messages().await?;
    for id in 1..=3 {
        check_node(&group, id, &sent).await?;
        check_misses_and_bad_input(&Admin::new(&group.endpoint(id))?, id).await?;
    }
    group.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_work_after_a_restart_and_a_leader_change() -> anyhow::Result<()> {
    let (mut group, mut sent) = start_with_messages().await?;
    for id in 1..=3 {
        check_node(&group, id, &sent).await?;
    }
    // Two more messages, one right after the other, then the whole group stops at once and
    // starts again on its data: dispatch checkpoints at most once a second, so the second
    // one at least is past each node's checkpoint.
    let producer = Producer::new(&group.endpoints())?;
    for i in 5..7 {
        sent.push(send(&producer, format!("late {i}").into_bytes(), &["late"]).await?);
    }
    for id in 1..=3 {
        query_until(&Admin::new(&group.endpoint(id))?, &by_key("late", None, (None, None)), 2).await?;
    }
    for id in 1..=3 {
        group.stop(id).await;
    }
    for id in 1..=3 {
        group.restart(id).await?;
    }
    // A restarted node serves its stores as they were: every message, with its queue offset,
    // at the first asking (its stores are recovered before it serves).
    for id in 1..=3 {
        let admin = Admin::new(&group.endpoint(id))?;
        for s in &sent {
            let found = admin.query_messages(by_id(&s.message_id), None).await?;
            let places: Vec<_> = found.iter().map(|m| (m.queue, m.queue_offset)).collect();
            assert_eq!(places, [(s.queue, Some(s.offset))], "node {id}, at once after its restart: {}", s.message_id);
        }
    }
    let leader = group.settled(Duration::from_secs(10)).await?;
    for id in 1..=3 {
        check_node(&group, id, &sent).await?;
    }
    // The leader goes; the others still answer, and index what the new leader stores.
    group.stop(leader).await;
    let new_leader = group.leader(Duration::from_secs(10)).await?;
    assert_ne!(new_leader, leader);
    let producer = Producer::new(&group.endpoint(new_leader))?;
    let later = send(&producer, b"order 5".to_vec(), &[SHARED_KEY]).await?;
    sent.insert(3, later);
    let remaining = (1..=3).filter(|id| *id != leader);
    for id in remaining {
        let admin = Admin::new(&group.endpoint(id))?;
        check_ids_and_offsets(&admin, id, &sent).await?;
        let found = query_until(&admin, &by_key(SHARED_KEY, None, (None, None)), 4).await?;
        let ids: Vec<&str> = found.iter().map(|m| m.message_id.as_str()).collect();
        let want: Vec<&str> = sent[..4].iter().rev().map(|s| s.message_id.as_str()).collect();
        assert_eq!(ids, want, "node {id}: the new message comes first");
    }
    group.shutdown().await;
    Ok(())
}
