//! A consumer group's progress over real gRPC against a three-node group: per queue the
//! broker offset, consumer offset, in-flight, ready and lag follow receives and acks, on
//! every member, through the admin API and `mqadmin group progress`.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Group;
use raftmq_client::{Admin, Error, Message, Producer, ReceivedMessage, ResetTo, SimpleConsumer, TopicSpec};

/// (inflight, ready, lag) summed over the group's queues, as node `id` sees them.
async fn totals(admin: &Admin, group: &str) -> anyhow::Result<(u64, u64, u64)> {
    let p = admin.group_progress(group).await?;
    Ok(p.queues.iter().fold((0, 0, 0), |(i, r, l), q| (i + q.inflight, r + q.ready, l + q.lag)))
}

/// Receives `n` messages (acking them if `ack`), then checks one more poll brings none.
async fn receive_n(consumer: &SimpleConsumer, n: usize, ack: bool) -> anyhow::Result<Vec<ReceivedMessage>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < n {
        anyhow::ensure!(Instant::now() < deadline, "received {} of {n}", got.len());
        let batch = consumer.receive(32, Duration::from_secs(60), Duration::from_secs(2)).await?;
        for m in batch {
            if ack {
                consumer.ack(&m).await?;
            }
            got.push(m);
        }
    }
    let more = consumer.receive(32, Duration::from_secs(60), Duration::from_secs(1)).await?;
    anyhow::ensure!(more.is_empty(), "{} more than {n} received", more.len());
    Ok(got)
}

fn bodies(messages: &[ReceivedMessage]) -> Vec<String> {
    let mut b: Vec<String> = messages.iter().map(|m| String::from_utf8_lossy(&m.body).to_string()).collect();
    b.sort();
    b
}

/// The next millisecond since the epoch, once the clock has reached it (so everything
/// stored before has an earlier store time).
fn next_millisecond() -> i64 {
    let now = || SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let cut = now() + 1;
    while now() < cut {
        std::hint::spin_loop();
    }
    cut
}

/// Waits until every member reports `want` for `group`.
async fn every_node_says(group: &Group, name: &str, want: (u64, u64, u64)) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let mut seen = Vec::new();
        for id in 1..=3 {
            seen.push(totals(&Admin::new(&group.endpoint(id))?, name).await?);
        }
        if seen.iter().all(|s| *s == want) {
            return Ok(());
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "want {want:?} on every node, saw {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_follows_receives_and_acks_on_every_member() -> anyhow::Result<()> {
    let group = Group::start(None).await?;
    let admin = Admin::new(&group.endpoints())?;
    admin.create_topic(TopicSpec::new("orders").with_queues(2)).await?;
    let producer = Producer::new(&group.endpoints())?;
    for i in 0..10 {
        producer.send("orders", Message::new(format!("order {i}"))).await?;
    }
    assert!(admin.group_progress("billing").await?.queues.is_empty(), "no state before the first receive");

    let consumer = SimpleConsumer::new(&group.endpoints(), "billing", "orders", "*")?;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 4 {
        anyhow::ensure!(Instant::now() < deadline, "received {} of 4", got.len());
        let want = 4 - got.len() as u32;
        got.extend(consumer.receive(want, Duration::from_secs(60), Duration::from_secs(2)).await?);
    }
    // Four in flight, six never delivered, nothing consumed yet.
    every_node_says(&group, "billing", (4, 6, 10)).await?;
    let p = admin.group_progress("billing").await?;
    assert_eq!(
        p.queues.iter().map(|q| (q.topic.as_str(), q.queue, q.broker_offset)).collect::<Vec<_>>(),
        [("orders", 0, 5), ("orders", 1, 5)]
    );
    for m in &got {
        consumer.ack(m).await?;
    }
    every_node_says(&group, "billing", (0, 6, 6)).await?;
    let p = admin.group_progress("billing").await?;
    assert_eq!(p.queues.iter().map(|q| q.consumer_offset).sum::<u64>(), 4);

    let out = common::mqadmin(&["--endpoints", &group.endpoints(), "group", "progress", "billing"]).await?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("BROKER OFFSET") && text.contains("total: inflight 0, ready 6, lag 6"), "{text}");

    // Reset to the earliest: everything again, the acked messages too.
    admin.reset_offset("billing", "orders", ResetTo::Earliest).await?;
    every_node_says(&group, "billing", (0, 10, 10)).await?;
    assert_eq!(receive_n(&consumer, 10, true).await?.len(), 10);
    // To the latest: nothing until a new message.
    let queues = admin.reset_offset("billing", "orders", ResetTo::Latest).await?;
    assert!(queues.iter().all(|q| q.lag == 0 && q.consumer_offset == q.broker_offset), "{queues:?}");
    let cut = next_millisecond();
    for i in 10..12 {
        producer.send("orders", Message::new(format!("order {i}"))).await?;
    }
    let got = receive_n(&consumer, 2, true).await?;
    assert_eq!(bodies(&got), ["order 10", "order 11"]);
    // To a time: the messages stored at or after it, through `mqadmin` on a follower.
    let endpoint = group.endpoint(group.follower(None).await?);
    let cut = cut.to_string();
    let args = ["--endpoints", &endpoint, "group", "reset-offset", "billing", "--topic", "orders", "--to", &cut];
    let out = common::mqadmin(&args).await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    every_node_says(&group, "billing", (0, 2, 2)).await?;
    let got = receive_n(&consumer, 2, false).await?;
    assert_eq!(bodies(&got), ["order 10", "order 11"]);

    // A bad group name is refused, clearly.
    match admin.group_progress("no spaces allowed").await {
        Err(Error::Rpc { code: tonic::Code::InvalidArgument, message, .. }) => {
            assert!(message.contains("no spaces allowed"), "{message}")
        }
        other => panic!("a bad group name must be refused, got {other:?}"),
    }
    Ok(())
}
