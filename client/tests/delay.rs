//! Delay messages over real gRPC against a three-node group: each becomes visible once, never
//! before its delivery time (a `delivery_timestamp` or a RocketMQ 4 delay level), also when
//! the leader stops while they wait and when the whole group restarts.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use common::Group;
use raftmq_client::{Message, Producer, SimpleConsumer};

/// Receives and acks until `want` distinct bodies arrived (or `deadline`), then polls once
/// more for anything delivered twice. Returns each body with the times it was received.
async fn collect(
    consumer: &SimpleConsumer,
    want: usize,
    deadline: Duration,
) -> anyhow::Result<BTreeMap<String, Vec<SystemTime>>> {
    let mut got: BTreeMap<String, Vec<SystemTime>> = BTreeMap::new();
    let start = Instant::now();
    let mut extra_poll = false;
    loop {
        let batch = match consumer.receive(32, Duration::from_secs(60), Duration::from_secs(1)).await {
            Ok(batch) => batch,
            // A node of the group may be restarting: the client tries the others.
            Err(e) if start.elapsed() < deadline => {
                eprintln!("receive failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let at = SystemTime::now();
        for m in batch {
            got.entry(String::from_utf8_lossy(&m.body).to_string()).or_default().push(at);
            consumer.ack(&m).await?;
        }
        if extra_poll {
            return Ok(got);
        }
        if got.len() >= want {
            extra_poll = true;
        } else {
            anyhow::ensure!(start.elapsed() < deadline, "only {} of {want} messages within {deadline:?}", got.len());
        }
    }
}

/// Checks that every body of `due` arrived exactly once and not before its time; returns
/// the largest lateness.
fn check_delivered(
    got: &BTreeMap<String, Vec<SystemTime>>,
    due: &BTreeMap<String, SystemTime>,
) -> anyhow::Result<Duration> {
    let mut latest = Duration::ZERO;
    for (body, at) in due {
        let times = got.get(body).ok_or_else(|| anyhow::anyhow!("{body} was never delivered"))?;
        anyhow::ensure!(times.len() == 1, "{body} was delivered {} times", times.len());
        let late = times[0]
            .duration_since(*at)
            .map_err(|e| anyhow::anyhow!("{body} was delivered {:?} before its time", e.duration()))?;
        latest = latest.max(late);
    }
    let unexpected: Vec<&String> = got.keys().filter(|b| !due.contains_key(*b)).collect();
    anyhow::ensure!(unexpected.is_empty(), "delivered but never sent: {unexpected:?}");
    Ok(latest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_messages_become_visible_at_their_time_once() -> anyhow::Result<()> {
    let group = Group::start(Some(4)).await?;
    let producer = Producer::new(&group.endpoints())?;
    let consumer = SimpleConsumer::new(&group.endpoints(), "later-readers", "later", "*")?;
    producer.send("later", Message::new("warm-up")).await?;
    let first = collect(&consumer, 1, Duration::from_secs(30)).await?;
    anyhow::ensure!(first.contains_key("warm-up"), "{first:?}");

    let mut due = BTreeMap::new();
    let start = SystemTime::now();
    for i in 0..6u64 {
        let at = start + Duration::from_millis(1500 + 300 * i);
        let body = format!("timestamp-{i}");
        let receipt = producer.send("later", Message::new(body.clone()).with_delivery_time(at)).await?;
        anyhow::ensure!(receipt.offset.is_none(), "a scheduled message has no queue offset yet: {receipt:?}");
        due.insert(body, at);
    }
    // RocketMQ 4 delay levels: 1 is 1 s, 2 is 5 s, counted from the broker's receipt.
    let sent = SystemTime::now();
    producer.send("later", Message::new("level-1").with_delay_level(1)).await?;
    producer.send("later", Message::new("level-2").with_delay_level(2)).await?;
    due.insert("level-1".into(), sent + Duration::from_secs(1));
    due.insert("level-2".into(), sent + Duration::from_secs(5));
    // A batch of delay messages, and one already due, delivered at once.
    let at = SystemTime::now() + Duration::from_secs(2);
    let batch = (0..3).map(|i| Message::new(format!("batch-{i}")).with_delivery_time(at)).collect();
    producer.send_batch("later", batch).await?;
    for i in 0..3 {
        due.insert(format!("batch-{i}"), at);
    }
    let past = SystemTime::now() - Duration::from_secs(1);
    producer.send("later", Message::new("past")).await?;
    due.insert("past".into(), past);

    // Nothing scheduled shows before its time: at first only "past" is there.
    let early = consumer.receive(32, Duration::from_secs(60), Duration::from_millis(500)).await?;
    let early: Vec<String> = early.iter().map(|m| String::from_utf8_lossy(&m.body).to_string()).collect();
    assert_eq!(early, ["past"], "only the message already due is visible at once");
    due.remove("past");

    let got = collect(&consumer, due.len(), Duration::from_secs(30)).await?;
    let latest = check_delivered(&got, &due)?;
    eprintln!("{} delay messages delivered once each, none early, the latest {latest:?} after its time", due.len());
    // Every member applied every fire (followers a moment after the leader).
    let pending =
        || group.nodes.iter().flatten().map(|n| n.state.read(|a| a.machine.timers().pending)).collect::<Vec<_>>();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pending().iter().any(|&p| p > 0) {
        anyhow::ensure!(Instant::now() < deadline, "timers still pending: {:?}", pending());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    group.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_timers_survive_a_leader_stop_and_a_group_restart() -> anyhow::Result<()> {
    let mut group = Group::start(Some(2)).await?;
    let producer = Producer::new(&group.endpoints())?;
    let consumer = SimpleConsumer::new(&group.endpoints(), "patient", "waits", "*")?;

    // The leader stops while 20 messages wait; the new leader fires them.
    let mut due = BTreeMap::new();
    let at = SystemTime::now() + Duration::from_secs(3);
    for i in 0..20 {
        let body = format!("failover-{i}");
        producer.send("waits", Message::new(body.clone()).with_delivery_time(at)).await?;
        due.insert(body, at);
    }
    let leader = group.leader(Duration::from_secs(5)).await?;
    group.stop(leader).await;
    let new_leader = group.leader(Duration::from_secs(10)).await?;
    anyhow::ensure!(new_leader != leader, "a new leader");
    let got = collect(&consumer, due.len(), Duration::from_secs(60)).await?;
    let latest = check_delivered(&got, &due)?;
    eprintln!("after a leader stop: {} delivered once each, the latest {latest:?} after its time", due.len());
    group.restart(leader).await?;

    // The whole group stops while 10 wait, and starts again.
    let mut due = BTreeMap::new();
    let at = SystemTime::now() + Duration::from_secs(3);
    for i in 0..10 {
        let body = format!("restart-{i}");
        producer.send("waits", Message::new(body.clone()).with_delivery_time(at)).await?;
        due.insert(body, at);
    }
    for id in 1..=3 {
        group.stop(id).await;
    }
    for id in 1..=3 {
        group.restart(id).await?;
    }
    group.settled(Duration::from_secs(20)).await?;
    let got = collect(&consumer, due.len(), Duration::from_secs(60)).await?;
    let latest = check_delivered(&got, &due)?;
    eprintln!("after a group restart: {} delivered once each, the latest {latest:?} after its time", due.len());
    group.shutdown().await;
    Ok(())
}
