//! 10,000 messages sent across 8 queues of a three-process group are all received and
//! acked with their bodies intact, and nothing is left afterwards.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use raftmq_client::{Admin, SimpleConsumer, TopicSpec};
use raftmq_tests::cluster::{Cluster, ClusterOptions};
use raftmq_tests::workload::{self, patient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_across_eight_queues() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::start(dir.path(), &ClusterOptions::default())?;
    cluster.wait_leader(Duration::from_secs(20)).await?;
    let endpoints = cluster.endpoints().join(";");
    let admin = Admin::with_options(&endpoints, patient())?;
    let topic = admin.create_topic(TopicSpec::new("orders").with_queues(8)).await?;
    assert_eq!(topic.queue_count, 8);

    let stop = Arc::new(AtomicBool::new(false));
    let sent = workload::produce(&endpoints, "orders", 8, Some(1250), 300, stop.clone()).await?;
    assert_eq!(sent.failed, 0, "sends failed");
    assert_eq!(sent.acked.len(), 10_000);
    assert_eq!(sent.queues.len(), 8, "sends reached queues {:?}", sent.queues);

    let want = sent.acked.len();
    let received =
        workload::consume_within(&endpoints, "orders-group", "orders", 4, Duration::from_secs(180), move |r| {
            r.acked.len() >= want
        })
        .await?;
    workload::check(&sent, &received)?;
    assert_eq!(received.acked.len(), 10_000, "acked {} of 10000", received.acked.len());

    // Everything is acked: a further receive finds nothing.
    let consumer = SimpleConsumer::with_options(&endpoints, "orders-group", "orders", "*", patient())?;
    let rest = consumer.receive(32, Duration::from_secs(30), Duration::from_millis(500)).await?;
    assert!(rest.is_empty(), "{} messages delivered after all were acked", rest.len());
    Ok(())
}
