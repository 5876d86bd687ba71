//! FIFO: messages of one message group go to one queue; a consumer group configured for
//! orderly consumption gets each message group in send order, the next message only after
//! the one before is acked. `cargo run -p raftmq-client --example fifo [ENDPOINTS]`.

#![allow(clippy::print_stdout, reason = "an example prints what happens")]

mod common;

use std::time::Duration;

use raftmq_client::{Admin, Message, Producer, SimpleConsumer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = common::endpoints();
    let (topic, group) = (common::fresh("fifo"), common::fresh("ordered"));
    Admin::new(&endpoints)?.upsert_group(&group, true, 16).await?;
    let producer = Producer::new(&endpoints)?;
    for step in ["created", "paid", "shipped"] {
        for order in ["order-1", "order-2"] {
            producer.send(&topic, Message::new(format!("{order} {step}")).with_message_group(order)).await?;
        }
    }
    let consumer = SimpleConsumer::new(&endpoints, &group, &topic, "*")?;
    let got = common::receive(&consumer, 6, Duration::from_secs(30)).await?;
    let bodies: Vec<String> = got.iter().map(|(m, _)| common::body(m)).collect();
    for order in ["order-1", "order-2"] {
        let steps: Vec<&str> = bodies.iter().filter_map(|b| b.strip_prefix(order)).map(str::trim).collect();
        println!("{order}: {}", steps.join(" -> "));
        anyhow::ensure!(steps == ["created", "paid", "shipped"], "{order} out of order: {steps:?}");
    }
    Ok(())
}
