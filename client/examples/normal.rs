//! NORMAL messages: send (one, and a batch stored all or nothing), receive, ack.
//! `cargo run -p raftmq-client --example normal [ENDPOINTS]` against `mqbroker dev`.

#![allow(clippy::print_stdout, reason = "an example prints what happens")]

mod common;

use std::time::Duration;

use raftmq_client::{Message, Producer, SimpleConsumer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = common::endpoints();
    let topic = common::fresh("normal");
    let producer = Producer::new(&endpoints)?;
    let receipt =
        producer.send(&topic, Message::new("order 1 created").with_tag("created").with_key("order-1")).await?;
    println!("sent {} to queue {} offset {:?}", receipt.message_id, receipt.queue_id, receipt.offset);
    let batch = (2..=4).map(|i| Message::new(format!("order {i} created")).with_tag("created")).collect();
    let receipts = producer.send_batch(&topic, batch).await?;
    println!("sent a batch of {} in one request", receipts.len());

    let consumer = SimpleConsumer::new(&endpoints, &common::fresh("billing"), &topic, "created")?;
    let got = common::receive(&consumer, 4, Duration::from_secs(30)).await?;
    for (m, _) in &got {
        println!("received {:?} (attempt {}), acked", common::body(m), m.delivery_attempt);
    }
    anyhow::ensure!(got.len() == 4, "expected 4 messages, got {}", got.len());
    Ok(())
}
