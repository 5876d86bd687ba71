//! A node killed with SIGKILL while messages are being written, three times over: once
//! left as it died (its ConsumeQueue and IndexFile hold unsynced, possibly torn, records past
//! their checkpoint), once with a ConsumeQueue file damaged in the middle, once with its
//! derived stores deleted. Each time it comes back, cuts back or rebuilds what it must (and
//! says so in its log), and at the end, leading the group, it serves every acknowledged
//! message exactly as sent.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use raftmq_client::{Admin, TopicSpec};
use raftmq_tests::cluster::{Cluster, ClusterOptions, wait_for};
use raftmq_tests::workload::{self, patient};

/// Every ConsumeQueue file under a node's data directory, largest first.
fn consume_queue_files(data: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![data.join("store").join("consumequeue")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "cq") {
                files.push(path);
            }
        }
    }
    files.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)));
    Ok(files)
}

/// Flips bytes of the third record of a ConsumeQueue file (past its 64-byte header).
fn damage(file: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(file)?;
    let at = 64 + 2 * 40 + 3;
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, at)?;
    f.write_all_at(&[byte[0] ^ 0x5a], at)?;
    f.sync_all()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_write_recovers_its_derived_stores_and_serves_every_message() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = ClusterOptions { segment_size_bytes: 4 << 20, max_body_bytes: 256 << 10, ..ClusterOptions::default() };
    let mut cluster = Cluster::start(dir.path(), &opts)?;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    let endpoints = cluster.endpoints().join(";");
    Admin::with_options(&endpoints, patient())?.create_topic(TopicSpec::new("orders").with_queues(4)).await?;
    let victim = (1..=3).find(|id| *id != leader).expect("a follower");
    let data = dir.path().join(format!("node-{victim}"));

    let stop = Arc::new(AtomicBool::new(false));
    let producing = tokio::spawn({
        let (endpoints, stop) = (endpoints.clone(), stop.clone());
        async move { workload::produce(&endpoints, "orders", 4, None, 1024, stop).await }
    });

    let mut started = std::time::SystemTime::now();
    for round in 0..3 {
        // Let it recover its stores (a checkpoint written since it started) and take new
        // writes, then kill it in the middle of them.
        let checkpoint = data.join("store").join("checkpoint");
        wait_for("the node's stores checkpoint", Duration::from_secs(60), || async {
            std::fs::metadata(&checkpoint).and_then(|m| m.modified()).ok().filter(|t| *t > started)
        })
        .await
        .map_err(|e| cluster.explain(e))?;
        let target = wait_for("the leader's last log index", Duration::from_secs(10), || async {
            cluster.status(leader).await?.last_log_index
        })
        .await?
            + 50;
        wait_for("the node applies new writes", Duration::from_secs(60), || async {
            cluster.status(victim).await?.last_applied_index.filter(|a| *a >= target)
        })
        .await
        .map_err(|e| cluster.explain(e))?;
        cluster.kill(victim)?;
        match round {
            0 => {}
            1 => {
                let files = consume_queue_files(&data)?;
                anyhow::ensure!(!files.is_empty(), "no ConsumeQueue files under {}", data.display());
                damage(&files[0])?;
            }
            _ => std::fs::remove_dir_all(data.join("store"))?,
        }
        started = std::time::SystemTime::now();
        cluster.restart(victim)?;
    }
    stop.store(true, Ordering::Relaxed);
    let sent = producing.await??;
    anyhow::ensure!(!sent.acked.is_empty(), "no send was acknowledged");

    // It catches up, takes the leadership, and a new group reads everything from it.
    let leader_last = cluster
        .status(leader)
        .await
        .and_then(|s| s.last_log_index)
        .ok_or_else(|| anyhow::anyhow!("the leader did not report its last log index"))?;
    wait_for("the node applied everything", Duration::from_secs(60), || async {
        cluster.status(victim).await?.last_applied_index.filter(|a| *a >= leader_last)
    })
    .await
    .map_err(|e| cluster.explain(e))?;
    Admin::with_options(&cluster.endpoint(victim), patient())?.transfer_leader(&cluster.group, victim).await?;
    let now_leading = cluster.wait_leader(Duration::from_secs(10)).await?;
    anyhow::ensure!(now_leading == victim, "node {now_leading} leads, not {victim}");
    let want = sent.acked.len();
    let received =
        workload::consume_within(&cluster.endpoint(victim), "audit", "orders", 4, Duration::from_secs(120), move |r| {
            r.delivered.len() >= want
        })
        .await?;
    workload::check(&sent, &received).map_err(|e| cluster.explain(e))?;

    let log = cluster.log_text(victim);
    let rebuilds = log.matches("rebuilt the ConsumeQueue and IndexFile from the CommitLog").count();
    anyhow::ensure!(
        rebuilds >= 3,
        "the damaged and the deleted stores were rebuilt ({rebuilds} rebuilds); node {victim} log ({} bytes):\n{log}",
        log.len()
    );
    let recovered = log.matches("derived stores recovered to their checkpoint").count();
    anyhow::ensure!(recovered >= 1, "the stores left as they died were cut back to their checkpoint:\n{log}");
    let damaged = log.matches("is damaged").count() + log.matches("do not match their checkpoint").count();
    eprintln!(
        "crash: node {victim} killed 3 times under load; {} sends acknowledged ({} failed after retries), all {} \
         received from it; its stores recovered from their checkpoint {recovered} times, found damaged {damaged} \
         times, rebuilt {rebuilds} times",
        sent.acked.len(),
        sent.failed,
        received.delivered.len()
    );
    Ok(())
}
