//! The client's PushConsumer against a three-node group: two consumers of one group split
//! a topic's queues and consume every message once between them; when one shuts down the
//! other takes all the queues; a message the listener fails comes again after the
//! consumption backoff and is then consumed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Group;
use raftmq_client::{ConsumeResult, Message, Producer, PushConsumer, PushOptions, ReceivedMessage};

const TOPIC: &str = "orders";
const GROUP: &str = "shipping";

/// What the listeners saw: (consumer, body, delivery attempt), in order.
type Seen = Arc<Mutex<Vec<(usize, String, u32)>>>;

fn options() -> PushOptions {
    PushOptions { assignment_interval: Duration::from_millis(500), ..PushOptions::default() }
}

/// A push consumer numbered `me` recording what it consumes into `seen`.
async fn consumer(group: &Group, me: usize, seen: &Seen) -> anyhow::Result<PushConsumer> {
    let seen = seen.clone();
    let listener = move |m: ReceivedMessage| {
        let seen = seen.clone();
        async move {
            let body = String::from_utf8_lossy(&m.body).to_string();
            seen.lock().unwrap_or_else(|e| e.into_inner()).push((me, body, m.delivery_attempt));
            ConsumeResult::Success
        }
    };
    Ok(PushConsumer::start_with(&group.endpoints(), GROUP, TOPIC, "*", listener, options()).await?)
}

/// Waits, with a deadline, until `check` holds.
async fn until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !check() {
        anyhow::ensure!(start.elapsed() < deadline, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// How many times each body was consumed.
fn counts(seen: &Seen) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, body, _) in seen.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        *out.entry(body.clone()).or_insert(0) += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_push_consumers_share_the_queues_and_one_takes_all_when_the_other_leaves() -> anyhow::Result<()> {
    let group = Group::start(Some(8)).await?;
    let seen: Seen = Arc::default();
    let c1 = consumer(&group, 1, &seen).await?;
    let c2 = consumer(&group, 2, &seen).await?;

    until("disjoint shares covering the 8 queues", Duration::from_secs(15), || {
        let (a, b): (BTreeSet<u32>, BTreeSet<u32>) =
            (c1.assigned().into_iter().collect(), c2.assigned().into_iter().collect());
        !a.is_empty()
            && !b.is_empty()
            && a.is_disjoint(&b)
            && a.union(&b).copied().collect::<BTreeSet<_>>() == (0..8).collect()
    })
    .await?;

    let producer = Producer::new(&group.endpoints())?;
    for i in 0..40 {
        producer.send(TOPIC, Message::new(format!("m{i}"))).await?;
    }
    until("40 messages consumed", Duration::from_secs(30), || counts(&seen).len() == 40).await?;
    let got = counts(&seen);
    assert!(got.values().all(|&n| n == 1), "consumed more than once: {got:?}");
    let by: BTreeSet<usize> = seen.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(c, _, _)| *c).collect();
    assert_eq!(by, BTreeSet::from([1, 2]), "both consumers got some");

    // c2 leaves: c1 reads every queue within seconds and gets everything sent next.
    c2.shutdown().await;
    until("c1 assigned all 8 queues", Duration::from_secs(10), || c1.assigned() == (0..8).collect::<Vec<u32>>())
        .await?;
    seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
    for i in 40..60 {
        producer.send(TOPIC, Message::new(format!("m{i}"))).await?;
    }
    until("20 more messages consumed", Duration::from_secs(30), || counts(&seen).len() == 20).await?;
    let seen_now = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(seen_now.iter().all(|(c, _, _)| *c == 1), "{seen_now:?}");
    assert!(counts(&seen).values().all(|&n| n == 1), "{seen_now:?}");
    c1.shutdown().await;
    group.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_message_comes_again_after_the_backoff_and_is_then_consumed() -> anyhow::Result<()> {
    let group = Group::start(Some(4)).await?;
    let seen: Seen = Arc::default();
    let failed_once = Arc::new(Mutex::new(false));
    let listener = {
        let seen = seen.clone();
        move |m: ReceivedMessage| {
            let (seen, failed_once) = (seen.clone(), failed_once.clone());
            async move {
                let body = String::from_utf8_lossy(&m.body).to_string();
                seen.lock().unwrap_or_else(|e| e.into_inner()).push((1, body.clone(), m.delivery_attempt));
                let mut failed = failed_once.lock().unwrap_or_else(|e| e.into_inner());
                if body == "fail-me" && !*failed {
                    *failed = true;
                    return ConsumeResult::Failure;
                }
                ConsumeResult::Success
            }
        }
    };
    let c = PushConsumer::start_with(&group.endpoints(), GROUP, TOPIC, "*", listener, options()).await?;
    until("all 4 queues assigned", Duration::from_secs(15), || c.assigned() == (0..4).collect::<Vec<u32>>()).await?;

    let producer = Producer::new(&group.endpoints())?;
    producer.send(TOPIC, Message::new("fail-me")).await?;
    producer.send(TOPIC, Message::new("fine")).await?;
    let deliveries = |body: &str| -> Vec<u32> {
        seen.lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, b, _)| b == body)
            .map(|(_, _, a)| *a)
            .collect()
    };
    // The first consumption backoff is 10 s.
    until("the failed message delivered a second time", Duration::from_secs(25), || deliveries("fail-me").len() == 2)
        .await?;
    assert_eq!(deliveries("fail-me"), [1, 2]);
    assert_eq!(deliveries("fine"), [1]);
    c.shutdown().await;
    group.shutdown().await;
    Ok(())
}
