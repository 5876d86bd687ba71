//! A leader whose followers are down stays idle: a peer whose port refuses connections is
//! retried with openraft's backoff, not in a tight loop (which kept a core busy and wrote
//! a warning per attempt for as long as the follower was down). Alone in its test binary,
//! so the process's CPU time is this group's.

use std::time::Duration;

use broker::node::Node;
use openraft::async_runtime::watch::WatchReceiver;

mod common;

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks =
        |i: usize| -> anyhow::Result<u64> { Ok(fields.get(i).ok_or_else(|| anyhow::anyhow!("short stat"))?.parse()?) };
    // utime and stime, in clock ticks of 1/100 s on Linux.
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_followers_refuse_connections_does_not_spin() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut nodes = Vec::new();
    for cfg in common::three_nodes(dir.path(), "idle", |c| c)? {
        nodes.push(Node::start(cfg).await?);
    }
    common::wait_for("a leader", Duration::from_secs(10), || {
        nodes.iter().any(|n| n.raft.metrics().borrow_watched().current_leader.is_some())
    })
    .await?;
    for n in nodes {
        n.shutdown().await;
    }
    // The same nodes on fresh ports: the membership they stored names the old ones, where
    // nothing listens, so every connection to a peer is refused at once. The node whose
    // saved vote makes it leader keeps trying to replicate to the other two.
    let mut nodes = Vec::new();
    for cfg in common::three_nodes(dir.path(), "idle", |c| c)? {
        nodes.push(Node::start(cfg).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let before = cpu_time()?;
    let watched = Duration::from_secs(5);
    tokio::time::sleep(watched).await;
    let used = cpu_time()? - before;
    eprintln!("CPU time of three nodes over {watched:?} with every peer refusing connections: {used:?}");
    // Idle is about 0.2 s here (timers, elections); the tight loop used 8 s of the two cores.
    assert!(used < Duration::from_secs(2), "{used:?} of CPU in {watched:?}: something retries without a pause");
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}
