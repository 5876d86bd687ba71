//! A node kept down while the others snapshot and purge the log it would need catches up
//! through the snapshot path when it returns, receives the retained CommitLog as well,
//! and after a leader transfer to it every retained message is readable from it.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use raftmq_client::{Admin, TopicSpec};
use raftmq_tests::cluster::{Cluster, ClusterOptions, wait_for};
use raftmq_tests::workload::{self, patient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_node_catches_up_through_a_snapshot_and_serves_every_message() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = ClusterOptions {
        snapshot_every: 100,
        keep_after_snapshot: 20,
        segment_size_bytes: 1 << 20,
        max_body_bytes: 256 << 10,
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start(dir.path(), &opts)?;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    let endpoints = cluster.endpoints().join(";");
    let admin = Admin::with_options(&endpoints, patient())?;
    admin.create_topic(TopicSpec::new("orders").with_queues(4)).await?;

    // Some messages while all three run, then take a follower down.
    let never = Arc::new(AtomicBool::new(false));
    let mut sent = workload::produce(&endpoints, "orders", 4, Some(50), 2048, never.clone()).await?;
    let lagging = (1..=3).find(|id| *id != leader).expect("a follower");
    let down_at = wait_for("the follower's status", Duration::from_secs(10), || async {
        cluster.status(lagging).await?.last_log_index
    })
    .await?;
    cluster.kill(lagging)?;

    // Enough entries that the others snapshot and purge past what the lagging node has.
    let more = workload::produce(&endpoints, "orders", 4, Some(150), 2048, never.clone()).await?;
    sent.acked.extend(more.acked);
    anyhow::ensure!(sent.failed + more.failed == 0, "sends failed");
    for id in cluster.running() {
        wait_for("a purge past the lagging node's log", Duration::from_secs(30), || async {
            cluster.status(id).await?.purged_index.filter(|p| *p > down_at + 1)
        })
        .await
        .map_err(|e| cluster.explain(e))?;
    }

    // It returns, catches up through the snapshot, and takes over the leadership.
    cluster.restart(lagging)?;
    let leader_last = cluster
        .status(leader)
        .await
        .and_then(|s| s.last_log_index)
        .ok_or_else(|| anyhow::anyhow!("the leader did not report its last log index"))?;
    wait_for("the returned node applied everything", Duration::from_secs(60), || async {
        cluster.status(lagging).await?.last_applied_index.filter(|a| *a >= leader_last)
    })
    .await
    .map_err(|e| cluster.explain(e))?;
    Admin::with_options(&cluster.endpoint(lagging), patient())?.transfer_leader(&cluster.group, lagging).await?;
    let now_leading = cluster.wait_leader(Duration::from_secs(10)).await?;
    anyhow::ensure!(now_leading == lagging, "node {now_leading} leads, not {lagging}");

    // A new consumer group starts at the first retained offset and is served by the new
    // leader, which reads the bodies from its own CommitLog.
    let want = sent.acked.len();
    let received = workload::consume_within(
        &cluster.endpoint(lagging),
        "audit",
        "orders",
        2,
        Duration::from_secs(120),
        move |r| r.delivered.len() >= want,
    )
    .await?;
    workload::check(&sent, &received).map_err(|e| cluster.explain(e))?;
    eprintln!(
        "node {lagging} was down from log index {down_at}; after catching up and leading it served all {want} messages"
    );
    Ok(())
}
