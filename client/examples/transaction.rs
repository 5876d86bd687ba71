//! TRANSACTION: a half message stays invisible until committed; a rolled-back one is never
//! delivered. (A transaction left open is checked back with the producer; the official
//! clients answer through their transaction checker.)
//! `cargo run -p raftmq-client --example transaction [ENDPOINTS]`.

#![allow(clippy::print_stdout, reason = "an example prints what happens")]

mod common;

use std::time::Duration;

use raftmq_client::{Message, Producer, SimpleConsumer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = common::endpoints();
    let topic = common::fresh("payments");
    let producer = Producer::new(&endpoints)?;
    let charge = producer.send_in_transaction(&topic, Message::new("charge order-1").with_key("order-1")).await?;
    let refund = producer.send_in_transaction(&topic, Message::new("charge order-2").with_key("order-2")).await?;
    // ... the local transaction runs here; then:
    producer.commit(&charge).await?;
    producer.rollback(&refund).await?;
    println!("committed order-1, rolled back order-2");

    let consumer = SimpleConsumer::new(&endpoints, &common::fresh("ledger"), &topic, "*")?;
    let got = common::receive(&consumer, 2, Duration::from_secs(5)).await?;
    let bodies: Vec<String> = got.iter().map(|(m, _)| common::body(m)).collect();
    println!("the consumer saw: {bodies:?}");
    anyhow::ensure!(bodies == ["charge order-1"], "only the committed message is delivered");
    Ok(())
}
