//! Push consumption: the broker assigns each push consumer of a group its share of the
//! topic's queues and the client calls a listener per message; Success acks, Failure
//! brings the message back after RocketMQ's backoff.
//! `cargo run -p raftmq-client --example push [ENDPOINTS]`.

#![allow(clippy::print_stdout, reason = "an example prints what happens")]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftmq_client::{ConsumeResult, Message, Producer, PushConsumer, ReceivedMessage};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = common::endpoints();
    let (topic, group) = (common::fresh("shipments"), common::fresh("shipping"));
    let producer = Producer::new(&endpoints)?;
    for i in 0..10 {
        producer.send(&topic, Message::new(format!("ship order-{i}"))).await?;
    }
    let done: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let seen = done.clone();
    let listener = move |m: ReceivedMessage| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap_or_else(|e| e.into_inner()).insert(common::body(&m));
            ConsumeResult::Success
        }
    };
    let consumer = PushConsumer::start(&endpoints, &group, &topic, "*", listener).await?;
    let start = Instant::now();
    while done.lock().unwrap_or_else(|e| e.into_inner()).len() < 10 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("assigned queues {:?}", consumer.assigned());
    consumer.shutdown().await;
    let got = done.lock().unwrap_or_else(|e| e.into_inner()).len();
    println!("the listener consumed {got} messages");
    anyhow::ensure!(got == 10, "expected 10, consumed {got}");
    Ok(())
}
