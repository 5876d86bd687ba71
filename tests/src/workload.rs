//! Producers and consumers that record what the broker acknowledged, and the checks over
//! those records: every acknowledged send is received with its exact body, and no message
//! whose ack succeeded is delivered again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftmq_client::{ClientOptions, Message, Producer, SimpleConsumer};
use tokio::sync::Mutex;

/// The body of message `seq` of producer `producer`: its name, then a pattern derived from
/// both, so a body that comes back altered or swapped is caught.
pub fn body(producer: u32, seq: u64, size: usize) -> Bytes {
    let head = format!("p{producer}-s{seq}:");
    let mut b = head.into_bytes();
    let mut x = (u64::from(producer) << 40) ^ seq ^ 0x9e37_79b9_7f4a_7c15;
    while b.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.push(b'a' + (x % 26) as u8);
    }
    Bytes::from(b)
}

/// Client options for a workload that must ride through a failover.
pub fn patient() -> ClientOptions {
    ClientOptions {
        retry_deadline: Duration::from_secs(15),
        max_backoff: Duration::from_millis(200),
        ..ClientOptions::default()
    }
}

/// What the producers had acknowledged: message id → body, and the time of each ack.
#[derive(Debug, Default)]
pub struct Sent {
    /// Acknowledged sends.
    pub acked: HashMap<String, Bytes>,
    /// When each ack arrived.
    pub ack_times: Vec<Instant>,
    /// Sends that failed after all retries (their outcome is unknown).
    pub failed: u64,
    /// Queues the acknowledged sends went to.
    pub queues: HashSet<u32>,
}

/// What the consumers saw.
#[derive(Debug, Default)]
pub struct Received {
    /// Every delivered message id with its body (the last delivery's).
    pub delivered: HashMap<String, Bytes>,
    /// Stored messages (queue, offset) whose ack the broker confirmed. A producer retry
    /// can store one message id twice, so a stored message is named by its position.
    pub acked: HashSet<(u32, u64)>,
    /// Stored messages delivered again after their ack was confirmed: must stay empty.
    pub redelivered_after_ack: Vec<(u32, u64)>,
    /// Deliveries in all.
    pub deliveries: u64,
    /// Receives that failed after the client's retries (reported, not fatal: a failover
    /// makes some).
    pub receive_errors: u64,
    /// The last such failure.
    pub last_receive_error: Option<String>,
}

/// Runs `producers` tasks, each sending `per_producer` messages (or until `stop` is set when
/// `per_producer` is `None`), each send awaited before the next.
pub async fn produce(
    endpoints: &str,
    topic: &str,
    producers: u32,
    per_producer: Option<u64>,
    body_size: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Sent> {
    let producer = Arc::new(Producer::with_options(endpoints, patient())?);
    let sent = Arc::new(Mutex::new(Sent::default()));
    let mut tasks = Vec::new();
    for p in 0..producers {
        let (producer, sent, stop, topic) = (producer.clone(), sent.clone(), stop.clone(), topic.to_string());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while per_producer.map_or(!stop.load(Ordering::Relaxed), |n| seq < n) {
                let b = body(p, seq, body_size);
                seq += 1;
                match producer.send(&topic, Message::new(b.clone())).await {
                    Ok(r) => {
                        let mut s = sent.lock().await;
                        s.acked.insert(r.message_id, b);
                        s.ack_times.push(Instant::now());
                        s.queues.insert(r.queue_id);
                    }
                    Err(_) => sent.lock().await.failed += 1,
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(Arc::try_unwrap(sent).map_err(|_| anyhow::anyhow!("producer tasks still hold the record"))?.into_inner())
}

/// Consumes `topic` for `group` with `consumers` tasks until `done` says the record is
/// complete or `stop` is set; acks everything it receives.
pub async fn consume(
    endpoints: &str,
    group: &str,
    topic: &str,
    consumers: u32,
    stop: Arc<AtomicBool>,
    done: impl Fn(&Received) -> bool + Send + Sync + 'static,
) -> anyhow::Result<Received> {
    let consumer = Arc::new(SimpleConsumer::with_options(endpoints, group, topic, "*", patient())?);
    let received = Arc::new(Mutex::new(Received::default()));
    let done = Arc::new(done);
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let (consumer, received, stop, done) = (consumer.clone(), received.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) && !done(&*received.lock().await) {
                let batch = match consumer.receive(32, Duration::from_secs(20), Duration::from_millis(500)).await {
                    Ok(b) => b,
                    Err(e) => {
                        let mut r = received.lock().await;
                        r.receive_errors += 1;
                        r.last_receive_error = Some(e.to_string());
                        drop(r);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                for m in batch {
                    {
                        let mut r = received.lock().await;
                        r.deliveries += 1;
                        if r.acked.contains(&(m.queue_id, m.offset)) {
                            r.redelivered_after_ack.push((m.queue_id, m.offset));
                        }
                        r.delivered.insert(m.message_id.clone(), m.body.clone());
                    }
                    if consumer.ack(&m).await.is_ok() {
                        received.lock().await.acked.insert((m.queue_id, m.offset));
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(Arc::try_unwrap(received).map_err(|_| anyhow::anyhow!("consumer tasks still hold the record"))?.into_inner())
}

/// [`consume`] that gives up after `deadline` (then returns what it received so far).
pub async fn consume_within(
    endpoints: &str,
    group: &str,
    topic: &str,
    consumers: u32,
    deadline: Duration,
    done: impl Fn(&Received) -> bool + Send + Sync + 'static,
) -> anyhow::Result<Received> {
    let stop = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let received = consume(endpoints, group, topic, consumers, stop, done).await;
    watchdog.abort();
    received
}

/// Every acknowledged send was delivered with its exact body; nothing was delivered again
/// after its ack was confirmed.
pub fn check(sent: &Sent, received: &Received) -> anyhow::Result<()> {
    let missing: Vec<&String> = sent.acked.keys().filter(|id| !received.delivered.contains_key(*id)).collect();
    anyhow::ensure!(
        missing.is_empty(),
        "{} of {} acknowledged messages were never received, e.g. {:?} ({} receives failed, the last with {:?})",
        missing.len(),
        sent.acked.len(),
        &missing[..missing.len().min(5)],
        received.receive_errors,
        received.last_receive_error,
    );
    for (id, b) in &sent.acked {
        anyhow::ensure!(received.delivered.get(id) == Some(b), "message {id} came back with a different body");
    }
    anyhow::ensure!(
        received.redelivered_after_ack.is_empty(),
        "{} messages were delivered again after their ack was confirmed: {:?}",
        received.redelivered_after_ack.len(),
        &received.redelivered_after_ack[..received.redelivered_after_ack.len().min(5)]
    );
    Ok(())
}
