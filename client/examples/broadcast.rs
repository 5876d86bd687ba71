//! Broadcasting: every member of a group gets every message, each from its own offsets
//! (the broker keeps none for them). `cargo run -p raftmq-client --example broadcast [ENDPOINTS]`.

#![allow(clippy::print_stdout, reason = "an example prints what happens")]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use raftmq_client::{Message, Producer, PullConsumer, StartFrom};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = common::endpoints();
    let (topic, group) = (common::fresh("prices"), common::fresh("dashboards"));
    let producer = Producer::new(&endpoints)?;
    for i in 0..5 {
        producer.send(&topic, Message::new(format!("price {i}"))).await?;
    }
    for member in ["screen-a", "screen-b"] {
        let consumer = PullConsumer::new(&endpoints, &group, &topic, "*", StartFrom::Earliest)?;
        let mut got = BTreeSet::new();
        let start = Instant::now();
        while got.len() < 5 && start.elapsed() < Duration::from_secs(30) {
            for m in consumer.pull(16, Duration::from_secs(1)).await? {
                got.insert(common::body(&m));
            }
        }
        println!("{member} got {} messages; its offsets {:?}", got.len(), consumer.offsets());
        anyhow::ensure!(got.len() == 5, "{member} got {got:?}");
    }
    Ok(())
}
