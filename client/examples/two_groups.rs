//! A topic with queues in two broker groups: a producer that knows only one group's
//! endpoints sends to the queues of both, and one simple consumer and one push consumer
//! each receive every message (acks, invisibility changes and transactions' ends go to the
//! group holding the message).
//!
//! `cargo run -p raftmq-client --example two_groups -- SEEDS TOPIC` where TOPIC exists in
//! both groups (`mqadmin --endpoints <a node of each group> topic create TOPIC`) and a
//! route from SEEDS lists both groups' queues.

#![allow(clippy::print_stdout, reason = "an example prints what happens")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftmq_client::{Admin, ConsumeResult, Error, Message, Producer, PushConsumer, ReceivedMessage, SimpleConsumer};

/// Messages per broker group, by id: where each of `messages` came from.
fn per_group<'a>(brokers: impl Iterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for b in brokers {
        *out.entry(b.to_string()).or_default() += 1;
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seeds = common::endpoints();
    let topic = std::env::args().nth(2).ok_or_else(|| anyhow::anyhow!("usage: two_groups SEEDS TOPIC"))?;
    let route = Admin::new(&seeds)?.route(&topic).await?;
    let groups: Vec<String> = route.brokers().iter().map(|b| b.to_string()).collect();
    println!("route from {seeds}: {} queues in groups {groups:?}", route.queues.len());
    anyhow::ensure!(groups.len() == 2, "the route lists {} broker groups, not 2", groups.len());

    // Sends: normal, FIFO, transactional; the receipts say which group holds each.
    let producer = Producer::new(&seeds)?;
    // message id -> (broker group, body)
    let mut sent: HashMap<String, (String, String)> = HashMap::new();
    for i in 0..40 {
        let body = format!("normal {i}");
        let r = producer.send(&topic, Message::new(body.clone())).await?;
        sent.insert(r.message_id, (r.broker, body));
    }
    let batch: Vec<Message> = (0..4).map(|i| Message::new(format!("batch {i}"))).collect();
    for r in producer.send_batch(&topic, batch).await? {
        sent.insert(r.message_id.clone(), (r.broker, format!("batch {}", r.queue_id)));
    }
    let mut fifo_places: BTreeMap<String, Vec<(String, u32)>> = BTreeMap::new();
    for i in 0..24 {
        let group = format!("order-{}", i % 6);
        let body = format!("fifo {group} #{}", i / 6);
        let r = producer.send(&topic, Message::new(body.clone()).with_message_group(&group)).await?;
        fifo_places.entry(group).or_default().push((r.broker.clone(), r.queue_id));
        sent.insert(r.message_id, (r.broker, body));
    }
    for (group, places) in &fifo_places {
        anyhow::ensure!(places.iter().all(|p| *p == places[0]), "message group {group} moved: {places:?}");
        println!("message group {group} -> {} queue {}", places[0].0, places[0].1);
    }
    // A batch whose message groups lie in different broker groups is refused.
    let (ga, gb) = {
        let in_group = |b: &str| fifo_places.iter().find(|(_, p)| p[0].0 == b).map(|(g, _)| g.clone());
        (in_group(&groups[0]), in_group(&groups[1]))
    };
    if let (Some(ga), Some(gb)) = (ga, gb) {
        let mixed = vec![Message::new("x").with_message_group(&ga), Message::new("y").with_message_group(&gb)];
        match producer.send_batch(&topic, mixed).await {
            Err(Error::InvalidArgument(why)) => println!("mixed FIFO batch refused: {why}"),
            other => anyhow::bail!("a batch across broker groups was not refused: {other:?}"),
        }
    }
    // Transactions in both groups (round robin over 8 queues: 8 of them reach both):
    // every other one committed, the rest rolled back.
    let mut tx_groups: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for i in 0..8 {
        let body = format!("tx {i}");
        let tx = producer.send_in_transaction(&topic, Message::new(body.clone())).await?;
        let entry = tx_groups.entry(tx.receipt.broker.clone()).or_default();
        if i % 2 == 0 {
            producer.commit(&tx).await?;
            entry.0 += 1;
            sent.insert(tx.receipt.message_id.clone(), (tx.receipt.broker.clone(), body));
        } else {
            producer.rollback(&tx).await?;
            entry.1 += 1;
        }
    }
    println!("transactions (committed, rolled back) per group: {tx_groups:?}");
    let want = per_group(sent.values().map(|(b, _)| b.as_str()));
    println!("sent {} messages, per group (from the receipts): {want:?}", sent.len());
    anyhow::ensure!(want.len() == 2, "the sends did not reach both groups");

    // One simple consumer drains both groups.
    let consumer = SimpleConsumer::new(&seeds, &common::fresh("simple"), &topic, "*")?;
    let start = Instant::now();
    let mut got: HashMap<String, String> = HashMap::new();
    let mut changed = 0;
    while got.len() < sent.len() && start.elapsed() < Duration::from_secs(60) {
        for mut m in consumer.receive(32, Duration::from_secs(30), Duration::from_secs(2)).await? {
            // One invisibility change per group first: it must reach the group holding it.
            if changed < 2 && !got.values().any(|b| *b == m.broker) {
                consumer.change_invisible_duration(&mut m, Duration::from_secs(20)).await?;
                changed += 1;
            }
            consumer.ack(&m).await?;
            got.insert(m.message_id.clone(), m.broker.clone());
        }
    }
    check("simple consumer", &sent, &got)?;

    // One push consumer reads the queues of both groups.
    let pushed: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let seen = pushed.clone();
    let push = PushConsumer::start(&seeds, &common::fresh("push"), &topic, "*", move |m: ReceivedMessage| {
        seen.lock().unwrap_or_else(|e| e.into_inner()).insert(m.message_id.clone(), m.broker.clone());
        async { ConsumeResult::Success }
    })
    .await?;
    let start = Instant::now();
    while pushed.lock().unwrap_or_else(|e| e.into_inner()).len() < sent.len()
        && start.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("push consumer assigned {:?}", push.assigned_queues());
    // Let the last acks land before stopping.
    tokio::time::sleep(Duration::from_secs(1)).await;
    push.shutdown().await;
    let pushed = pushed.lock().unwrap_or_else(|e| e.into_inner()).clone();
    check("push consumer", &sent, &pushed)?;
    Ok(())
}

/// Prints what a consumer received per group and fails unless it is exactly what was sent,
/// each from the group the receipt named.
fn check(who: &str, sent: &HashMap<String, (String, String)>, got: &HashMap<String, String>) -> anyhow::Result<()> {
    println!("{who} received {} messages, per group: {:?}", got.len(), per_group(got.values().map(String::as_str)));
    for (id, (broker, body)) in sent {
        match got.get(id) {
            None => anyhow::bail!("{who} never received {body:?} ({id}, in {broker})"),
            Some(b) if b != broker => anyhow::bail!("{who} received {body:?} from {b}, sent to {broker}"),
            Some(_) => {}
        }
    }
    anyhow::ensure!(got.len() == sent.len(), "{who} received {} messages it was not sent", got.len() - sent.len());
    Ok(())
}
