//! kill -9 the leader of a three-process group while producers and consumers run: a new
//! leader serves within 2 s, sends resume through the same endpoints, no acknowledged
//! message is missing and no acked message is delivered again; the killed node, restarted,
//! catches up to the same last log index.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftmq_client::{Admin, TopicSpec};
use raftmq_tests::cluster::{Cluster, ClusterOptions, wait_for};
use raftmq_tests::workload::{self, patient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_without_losing_acknowledged_work() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = Cluster::start(dir.path(), &ClusterOptions::default())?;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    let endpoints = cluster.endpoints().join(";");
    Admin::with_options(&endpoints, patient())?.create_topic(TopicSpec::new("orders").with_queues(8)).await?;

    let stop_producing = Arc::new(AtomicBool::new(false));
    let producers = {
        let (e, stop) = (endpoints.clone(), stop_producing.clone());
        tokio::spawn(async move { workload::produce(&e, "orders", 4, None, 256, stop).await })
    };
    let stop_consuming = Arc::new(AtomicBool::new(false));
    // Set once the producers are done: the consumers stop when they have all of it.
    let target: Arc<Mutex<Option<HashSet<String>>>> = Arc::default();
    let consumers = {
        let (e, stop, target) = (endpoints.clone(), stop_consuming.clone(), target.clone());
        let done = move |r: &workload::Received| {
            target.lock().expect("lock").as_ref().is_some_and(|t| t.iter().all(|id| r.delivered.contains_key(id)))
        };
        tokio::spawn(async move { workload::consume(&e, "orders-group", "orders", 2, stop, done).await })
    };

    // Load for a while, then kill the leader.
    let before = wait_for("a loaded group", Duration::from_secs(30), || async {
        let s = cluster.status(leader).await?;
        s.commit_index.filter(|&c| c >= 300)
    })
    .await
    .map_err(|e| cluster.explain(e))?;
    cluster.kill(leader)?;
    let killed_at = Instant::now();
    let new_leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    let elected = killed_at.elapsed();
    anyhow::ensure!(new_leader != leader, "node {leader} was killed but still leads");

    // Sends resume through the same endpoints: commits move past the old leader's.
    let resumed = wait_for("sends committed by the new leader", Duration::from_secs(15), || async {
        let s = cluster.status(new_leader).await?;
        s.commit_index.filter(|&c| c >= before + 20)
    })
    .await
    .map_err(|e| cluster.explain(e));
    stop_producing.store(true, Ordering::Relaxed);
    let sent = producers.await??;
    resumed?;
    let first_ack_after = sent.ack_times.iter().filter(|t| **t > killed_at).min().map(|t| *t - killed_at);
    eprintln!(
        "failover: node {leader} killed at commit index {before}; node {new_leader} leads after {elected:?}; \
         first send acknowledged {first_ack_after:?} after the kill; {} sends acknowledged, {} failed after retries",
        sent.acked.len(),
        sent.failed
    );
    anyhow::ensure!(first_ack_after.is_some(), "no send was acknowledged after the kill");

    // Drain: every acknowledged send must arrive; nothing acked may come back.
    *target.lock().expect("lock") = Some(sent.acked.keys().cloned().collect());
    let received = match tokio::time::timeout(Duration::from_secs(120), consumers).await {
        Ok(r) => r??,
        Err(_) => {
            stop_consuming.store(true, Ordering::Relaxed);
            anyhow::bail!("the consumers did not receive every acknowledged message within 120 s");
        }
    };
    workload::check(&sent, &received)?;
    eprintln!(
        "{} deliveries of {} distinct messages, {} acked; 0 acknowledged sends missing; 0 redelivered after ack",
        received.deliveries,
        received.delivered.len(),
        received.acked.len()
    );
    anyhow::ensure!(elected < Duration::from_secs(2), "a new leader took {elected:?} (limit 2 s)");

    // The killed node comes back and catches up to the same last log index.
    cluster.restart(leader)?;
    wait_for("the restarted node caught up", Duration::from_secs(30), || async {
        let mut last = Vec::new();
        for id in cluster.running() {
            last.push(cluster.status(id).await?.last_log_index?);
        }
        (last.len() == 3 && last.iter().all(|l| *l == last[0])).then_some(())
    })
    .await
    .map_err(|e| cluster.explain(e))?;
    Ok(())
}
