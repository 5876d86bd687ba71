//! Message types across kill -9 of the leader of a three-process group: delay messages
//! waiting when it dies are delivered once, at their time, by the new leader; transactions
//! left open are committed or rolled back through the new leader (a rolled-back message is
//! never delivered); a FIFO consumer group receives each message group in order across the
//! failover, the next message only after the one before was acked.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use raftmq_client::{Admin, Message, Producer, ReceivedMessage, SimpleConsumer};
use raftmq_tests::cluster::{Cluster, ClusterOptions};
use raftmq_tests::workload::patient;

fn body(m: &ReceivedMessage) -> String {
    String::from_utf8_lossy(&m.body).into_owned()
}

/// One FIFO receive round: checks each message is its group's next (a message seen
/// before, whose ack was lost in the failover, may come again and is acked again), acks.
async fn fifo_round(consumer: &SimpleConsumer, next: &mut BTreeMap<String, u32>) -> anyhow::Result<()> {
    for m in consumer.receive(16, Duration::from_secs(30), Duration::from_secs(1)).await? {
        let text = body(&m);
        let (group, i) = text.split_once('/').ok_or_else(|| anyhow::anyhow!("unexpected body {text}"))?;
        let i: u32 = i.parse()?;
        let want = next.get(group).copied().unwrap_or(0);
        anyhow::ensure!(i <= want, "FIFO broken: {group}/{i} delivered while {group}/{want} was next");
        consumer.ack(&m).await?;
        if i == want {
            next.insert(group.to_string(), want + 1);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_transactions_and_fifo_keep_their_promises_across_a_leader_kill() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = Cluster::start(dir.path(), &ClusterOptions::default())?;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    let endpoints = cluster.endpoints().join(";");
    Admin::with_options(&endpoints, patient())?.upsert_group("ordered", true, 16).await?;
    let producer = Producer::with_options(&endpoints, patient())?;

    // Delay messages due 4-5 s from now: delivery times, and level 2 (5 s).
    let mut due = BTreeMap::new();
    for i in 0..4 {
        let at = SystemTime::now() + Duration::from_millis(4_000 + 250 * i);
        producer.send("reminders", Message::new(format!("at-{i}")).with_delivery_time(at)).await?;
        due.insert(format!("at-{i}"), at);
    }
    let level_sent = SystemTime::now();
    producer.send("reminders", Message::new("level-2b").with_delay_level(2)).await?;
    due.insert("level-2b".to_string(), level_sent + Duration::from_secs(5));

    // Transactions: one committed now, two left open over the failover.
    let before = producer.send_in_transaction("payments", Message::new("committed-before")).await?;
    producer.commit(&before).await?;
    let commit_after = producer.send_in_transaction("payments", Message::new("committed-after")).await?;
    let roll_back = producer.send_in_transaction("payments", Message::new("rolled-back")).await?;

    // FIFO: two message groups of 10; three of each consumed before the kill.
    for i in 0..10 {
        for g in ["a", "b"] {
            producer.send("orders", Message::new(format!("{g}/{i}")).with_message_group(format!("order-{g}"))).await?;
        }
    }
    let fifo = SimpleConsumer::with_options(&endpoints, "ordered", "orders", "*", patient())?;
    let mut next: BTreeMap<String, u32> = BTreeMap::new();
    let start = Instant::now();
    while next.values().filter(|n| **n >= 3).count() < 2 {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(30), "FIFO before the kill: {next:?}");
        fifo_round(&fifo, &mut next).await?;
    }

    cluster.kill(leader)?;
    let new_leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    anyhow::ensure!(new_leader != leader, "node {leader} was killed but still leads");

    producer.commit(&commit_after).await?;
    producer.rollback(&roll_back).await?;

    let start = Instant::now();
    while next.values().filter(|n| **n >= 10).count() < 2 {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(60), "FIFO after the kill: {next:?}");
        fifo_round(&fifo, &mut next).await.map_err(|e| cluster.explain(e))?;
    }

    let reminders = SimpleConsumer::with_options(&endpoints, "reminder-readers", "reminders", "*", patient())?;
    let mut seen: BTreeMap<String, SystemTime> = BTreeMap::new();
    let start = Instant::now();
    while seen.len() < due.len() {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(60), "delay messages received: {seen:?}");
        for m in reminders.receive(16, Duration::from_secs(30), Duration::from_secs(1)).await? {
            let now = SystemTime::now();
            anyhow::ensure!(seen.insert(body(&m), now).is_none(), "delay message {} delivered twice", body(&m));
            reminders.ack(&m).await?;
        }
    }
    let mut latest = Duration::ZERO;
    for (name, at) in &seen {
        let due_at = due[name];
        let late = at.duration_since(due_at).map_err(|_| anyhow::anyhow!("{name} delivered before its time"))?;
        latest = latest.max(late);
    }
    eprintln!("delay messages across a leader kill: latest {:.1} ms after its time", latest.as_secs_f64() * 1e3);

    let ledger = SimpleConsumer::with_options(&endpoints, "ledger", "payments", "*", patient())?;
    let mut paid = Vec::new();
    let start = Instant::now();
    // Wait for both commits, then a little longer for anything that should not come.
    while paid.len() < 2 || start.elapsed() < Duration::from_secs(3) {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(30), "transactions delivered: {paid:?}");
        for m in ledger.receive(16, Duration::from_secs(30), Duration::from_millis(500)).await? {
            paid.push(body(&m));
            ledger.ack(&m).await?;
        }
    }
    paid.sort();
    assert_eq!(paid, ["committed-after", "committed-before"], "a rolled-back message is never delivered");
    Ok(())
}
