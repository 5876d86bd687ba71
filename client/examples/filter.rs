//! Filters: a tag expression (judged from the tag alone) and a SQL92 condition over the
//! message's properties and tag. `cargo run -p raftmq-client --example filter [ENDPOINTS]`.

#![allow(clippy::print_stdout, reason = "an example prints what happens")]

mod common;

use std::time::Duration;

use raftmq_client::{FilterExpression, Message, Producer, SimpleConsumer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = common::endpoints();
    let topic = common::fresh("orders");
    let producer = Producer::new(&endpoints)?;
    for (i, (region, amount)) in [("eu", 50), ("eu", 150), ("us", 300), ("eu", 900)].into_iter().enumerate() {
        let m = Message::new(format!("order {i}: {region} {amount}"))
            .with_tag(if amount > 100 { "large" } else { "small" })
            .with_property("region", region)
            .with_property("amount", amount.to_string());
        producer.send(&topic, m).await?;
    }
    let large = SimpleConsumer::new(&endpoints, &common::fresh("large"), &topic, "large")?;
    let sql = FilterExpression::sql("region = 'eu' AND amount > 100");
    let big_eu = SimpleConsumer::new(&endpoints, &common::fresh("big-eu"), &topic, sql)?;
    for (name, consumer, want) in [("tag 'large'", &large, 3), ("SQL92 region = 'eu' AND amount > 100", &big_eu, 2)] {
        let got = common::receive(consumer, want, Duration::from_secs(30)).await?;
        let bodies: Vec<String> = got.iter().map(|(m, _)| common::body(m)).collect();
        println!("{name}: {bodies:?}");
        anyhow::ensure!(got.len() == want, "{name}: expected {want}");
    }
    match SimpleConsumer::new(&endpoints, "bad", &topic, FilterExpression::sql("amount >")) {
        Err(e) => println!("a malformed condition is refused at once: {e}"),
        Ok(_) => anyhow::bail!("a malformed condition was accepted"),
    }
    Ok(())
}
