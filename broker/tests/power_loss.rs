//! Coordinated power loss, which containers cannot make (they share the host's page cache):
//! three nodes over real gRPC, each with its CommitLog and vote on the fault-injecting file
//! system of raft-log's crash tests ([`raft_log::sim::SimFs`]). Producers send while the
//! whole group loses power at once: from that moment every write fails, then each node's
//! file system keeps only what was synced plus a random prefix of what was not (the next
//! write torn). The group restarts on what is left, elects a leader and must hold every
//! message it acknowledged before the cut (`flush = "sync"`, `ack = "quorum"`: the
//! defaults). The state snapshot and the derived stores stay on the real disk (the former
//! is written with fsync; the latter are rebuilt from the log when they run ahead of it).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use broker::node::{Node, NodeConfig};
use raft_log::LogConfig;
use raft_log::sim::SimFs;
use tokio::sync::Mutex;

mod common;

use common::grpc::{applied_messages, ok, pull_bodies, send};

const PRODUCERS: usize = 8;
const ROUNDS: u64 = 2;

/// A small deterministic generator (xorshift), seeded per round and printed on failure.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_message_survives_a_power_loss_of_the_whole_group() -> anyhow::Result<()> {
    let base = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64 | 1;
    for round in 0..ROUNDS {
        let seed = base.wrapping_add(round.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
        power_loss_round(round, seed).await.map_err(|e| anyhow::anyhow!("round {round}, seed {seed}: {e:#}"))?;
    }
    Ok(())
}

async fn power_loss_round(round: u64, seed: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let disks: Vec<SimFs> = (0..3).map(|_| SimFs::new()).collect();
    let cfgs = common::three_nodes(dir.path(), "power", |c| NodeConfig {
        log: LogConfig { segment_size: 1 << 20, max_payload: 256 << 10, ..LogConfig::default() },
        service: broker::settings::ServiceSettings { auto_create_queues: Some(1), ..Default::default() },
        log_fs: Some(Arc::new(disks[c.node_id.0 as usize - 1].clone())),
        ..c
    })?;
    let nodes = common::start_all(&cfgs).await?;
    let endpoints: Vec<String> = nodes.iter().map(|n| n.client_addr.to_string()).collect();
    // The topic exists and a leader serves before the load starts.
    common::grpc::send_until_ok(&endpoints[0], &["warm-up".to_string()], Duration::from_secs(20)).await?;

    // Closed-loop producers, each recording what the group acknowledged.
    let acked = Arc::new(Mutex::new(BTreeSet::from(["warm-up".to_string()])));
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let (acked, endpoints) = (acked.clone(), endpoints.clone());
        producers.push(tokio::spawn(async move {
            for i in 0u64.. {
                let body = format!("r{round}-p{p}-m{i}");
                let at = &endpoints[(p + i as usize) % endpoints.len()];
                if let Ok(answer) = send(at, std::slice::from_ref(&body), Duration::from_secs(2)).await
                    && ok(answer.status.as_ref())
                {
                    acked.lock().await.insert(body);
                }
            }
        }));
    }
    let mut rng = seed;
    tokio::time::sleep(Duration::from_millis(1000 + next(&mut rng) % 1000)).await;

    // The power goes out on all three at once: every write from now on fails.
    for disk in &disks {
        disk.crash_after_ops(0, next(&mut rng));
    }
    let cut = Instant::now();
    // What was acknowledged before the cut: a send answered after it was synced before it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for p in producers {
        p.abort();
        let _ = p.await;
    }
    let acked = acked.lock().await.clone();
    anyhow::ensure!(acked.len() > 50, "only {} sends acknowledged before the cut", acked.len());
    for n in nodes {
        n.shutdown().await;
    }
    // Each disk keeps its synced bytes and a random part of the rest.
    let mut kept = Vec::new();
    for disk in &disks {
        let pending = disk.pending_ops();
        let keep = (next(&mut rng) % (pending as u64 + 1)) as usize;
        let tear = disk.pending_write_len(keep).map(|len| (next(&mut rng) % (len as u64 + 1)) as usize);
        disk.crash(keep, tear);
        kept.push(format!("{keep} of {pending} unsynced operations kept, next torn to {tear:?} bytes"));
    }

    // Power returns: the group restarts on what its disks hold.
    let nodes = common::start_all(&cfgs).await?;
    let refs: Vec<&Node> = nodes.iter().collect();
    common::wait_for("a leader after the power returns", Duration::from_secs(20), || {
        common::leader_of(&refs).is_some()
    })
    .await?;
    let leader = common::leader_of(&refs).map(|n| n.client_addr.to_string()).expect("a leader");
    // A send after the restart commits everything of the leader's term before it.
    common::grpc::send_until_ok(&leader, &[format!("r{round}-after")], Duration::from_secs(20)).await?;
    let leader_node = nodes.iter().find(|n| n.client_addr.to_string() == leader).expect("the leader");
    let stored = applied_messages(leader_node) as usize;
    let bodies = pull_bodies(&leader, stored, Duration::from_secs(30)).await?;
    let lost: Vec<&String> = acked.iter().filter(|b| !bodies.contains(*b)).collect();
    anyhow::ensure!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost after the power loss ({:?} after the cut; disks: {kept:?}); e.g. {:?}",
        lost.len(),
        acked.len(),
        cut.elapsed(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}
