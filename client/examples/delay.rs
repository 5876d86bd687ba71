//! DELAY: a message with a delivery time (or RocketMQ 4's delay level) becomes visible at
//! its time, not before. `cargo run -p raftmq-client --example delay [ENDPOINTS]`.

#![allow(clippy::print_stdout, reason = "an example prints what happens")]

mod common;

use std::time::{Duration, SystemTime};

use raftmq_client::{Message, Producer, SimpleConsumer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = common::endpoints();
    let topic = common::fresh("delay");
    let producer = Producer::new(&endpoints)?;
    let sent = SystemTime::now();
    let at = sent + Duration::from_secs(3);
    producer.send(&topic, Message::new("remind in 3 s").with_delivery_time(at)).await?;
    // Level 1 is 1 s (levels: 1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h).
    producer.send(&topic, Message::new("level 1").with_delay_level(1)).await?;

    let consumer = SimpleConsumer::new(&endpoints, &common::fresh("reminders"), &topic, "*")?;
    let got = common::receive(&consumer, 2, Duration::from_secs(30)).await?;
    for (m, when) in &got {
        let after = when.duration_since(sent).unwrap_or_default();
        println!("received {:?} {:.2} s after sending", common::body(m), after.as_secs_f64());
    }
    anyhow::ensure!(got.len() == 2, "expected 2 messages, got {}", got.len());
    let (_, reminded) = got.iter().find(|(m, _)| common::body(m) == "remind in 3 s").expect("received");
    anyhow::ensure!(*reminded >= at, "delivered before its time");
    Ok(())
}
