//! Broadcasting over real gRPC against a three-node group: pull consumers of one consumer
//! group each get every message, from offsets each keeps itself; a tag filter applies; one
//! starting at the end gets only what is sent after it started; seeking reads again.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Group;
use raftmq_client::{Message, Producer, PullConsumer, StartFrom};

/// Pulls until `want` messages arrived (bodies, each counted), or fails after 30 s.
async fn pull_all(consumer: &PullConsumer, want: usize) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    let start = Instant::now();
    while got.values().sum::<usize>() < want {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(30), "only {} of {want}: {got:?}", got.len());
        for m in consumer.pull(16, Duration::from_secs(1)).await? {
            *got.entry(String::from_utf8_lossy(&m.body).to_string()).or_default() += 1;
        }
    }
    // Nothing more.
    let more = consumer.pull(16, Duration::from_millis(300)).await?;
    anyhow::ensure!(more.is_empty(), "more than {want}: {:?}", more.iter().map(|m| m.offset).collect::<Vec<_>>());
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pull_consumer_of_a_group_gets_every_message() -> anyhow::Result<()> {
    let group = Group::start(Some(3)).await?;
    let producer = Producer::new(&group.endpoints())?;
    for i in 0..30 {
        let tag = if i % 3 == 0 { "A" } else { "B" };
        producer.send("news", Message::new(format!("news-{i}")).with_tag(tag)).await?;
    }
    let first = PullConsumer::new(&group.endpoints(), "readers", "news", "*", StartFrom::Earliest)?;
    let second = PullConsumer::new(&group.endpoints(), "readers", "news", "*", StartFrom::Earliest)?;
    let only_a = PullConsumer::new(&group.endpoints(), "readers", "news", "A", StartFrom::Earliest)?;
    let (a, b) = (pull_all(&first, 30).await?, pull_all(&second, 30).await?);
    assert_eq!(a.len(), 30, "{a:?}");
    assert!(a.values().all(|&n| n == 1), "each once: {a:?}");
    assert_eq!(a, b, "both members of the group get every message");
    let tagged = pull_all(&only_a, 10).await?;
    assert!(tagged.keys().all(|k| k.trim_start_matches("news-").parse::<u32>().is_ok_and(|i| i % 3 == 0)));

    // One that starts at the end gets only what comes after.
    let late = PullConsumer::new(&group.endpoints(), "readers", "news", "*", StartFrom::Latest)?;
    assert!(late.pull(16, Duration::from_millis(300)).await?.is_empty());
    for i in 30..35 {
        producer.send("news", Message::new(format!("news-{i}"))).await?;
    }
    let got = pull_all(&late, 5).await?;
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), (30..35).map(|i| format!("news-{i}")).collect::<Vec<_>>());
    // Its offsets are its own: seeking back reads a queue again.
    let offsets = late.offsets();
    assert_eq!(offsets.len(), 3, "{offsets:?}");
    late.seek(0, 0);
    let again = pull_all(&late, offsets[&0] as usize).await?;
    assert_eq!(again.values().sum::<usize>() as u64, offsets[&0]);
    group.shutdown().await;
    Ok(())
}
