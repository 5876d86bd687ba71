//! What the in-process group tests share: free loopback addresses, the configs of a
//! three-node group, and waiting on it.

#![allow(dead_code)] // each test file uses a part of these

pub mod grpc;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use broker::node::NodeConfig;
use broker::raft::NodeInfo;

/// A loopback address with a port nobody listens on right now, never the same twice in
/// this process (a port handed out and released could otherwise be handed out again to a
/// test running beside this one before its node binds it).
pub fn free_addr() -> anyhow::Result<String> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..64 {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        let mut seen = HANDED_OUT.lock().map_err(|_| anyhow::anyhow!("port registry poisoned"))?;
        if !seen.contains(&addr.port()) {
            seen.push(addr.port());
            return Ok(addr.to_string());
        }
    }
    anyhow::bail!("no fresh loopback port after 64 tries")
}

/// Configs of a three-node group `group` on free ports with data under `dir/n<id>`,
/// heartbeat 100 ms and election timeout 500 ms; `tweak` adjusts each.
pub fn three_nodes(
    dir: &Path,
    group: &str,
    tweak: impl Fn(NodeConfig) -> NodeConfig,
) -> anyhow::Result<Vec<NodeConfig>> {
    let mut peers = BTreeMap::new();
    for id in 1..=3u64 {
        peers.insert(raftmq_machine::NodeId(id), NodeInfo { raft_addr: free_addr()?, client_addr: free_addr()? });
    }
    Ok((1..=3u64)
        .map(|id| {
            tweak(NodeConfig {
                group: group.into(),
                node_id: raftmq_machine::NodeId(id),
                peers: peers.clone(),
                data_dir: dir.join(format!("n{id}")),
                heartbeat: Duration::from_millis(100),
                election_timeout: Duration::from_millis(500),
                ..NodeConfig::default()
            })
        })
        .collect())
}

/// Starts a node for each of `cfgs`, in order.
pub async fn start_all(cfgs: &[NodeConfig]) -> anyhow::Result<Vec<broker::node::Node>> {
    let mut nodes = Vec::new();
    for cfg in cfgs {
        nodes.push(broker::node::Node::start(cfg.clone()).await?);
    }
    Ok(nodes)
}

/// The node that claims leadership, if any.
pub fn leader_of<'a>(nodes: &[&'a broker::node::Node]) -> Option<&'a broker::node::Node> {
    use openraft::async_runtime::watch::WatchReceiver;
    nodes
        .iter()
        .find(|n| {
            let m = n.raft.metrics().borrow_watched().clone();
            m.current_leader == Some(m.id)
        })
        .copied()
}

/// Proposes `cmd` on whichever node claims leadership until one commits it (a node that has
/// just won may still refuse, or lose a re-election: a client retries the same way).
pub async fn write_until_served(
    nodes: &[&broker::node::Node],
    cmd: raftmq_machine::Command,
    deadline: Duration,
) -> anyhow::Result<openraft::raft::ClientWriteResponse<broker::raft::TypeConfig>> {
    let start = std::time::Instant::now();
    loop {
        if let Some(n) = leader_of(nodes) {
            match n.raft.client_write(cmd.clone()).await {
                Ok(r) => return Ok(r),
                Err(e) => anyhow::ensure!(start.elapsed() < deadline, "no write served within {deadline:?}: {e}"),
            }
        }
        anyhow::ensure!(start.elapsed() < deadline, "no leader accepted a write within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `done` holds, polling every 20 ms, or fails after `deadline`.
pub async fn wait_for(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    while !done() {
        anyhow::ensure!(start.elapsed() < deadline, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The incarnation of `topic` as the nodes that applied its creation see it (what a send
/// names in `StoredMessage::topic_epoch`).
pub fn epoch(nodes: &[&broker::node::Node], topic: &str) -> raftmq_machine::LogIndex {
    let name = raftmq_machine::types::TopicName::new(topic).expect("valid topic");
    nodes.iter().find_map(|n| n.state.read(|a| a.machine.topic_epoch(&name))).expect("the topic exists")
}

/// The (log index, slot) of every message a node's ConsumeQueue holds for `topic` between
/// each queue's minimum and maximum offset; `None` while its dispatch has not reached them.
pub fn locations(node: &broker::node::Node, topic: &str, queues: u32) -> Option<Vec<(u64, u32)>> {
    let name = raftmq_machine::types::TopicName::new(topic).expect("valid topic");
    let mut out = Vec::new();
    for q in 0..queues {
        let queue = raftmq_machine::QueueId(q);
        let (min, max) =
            node.state.read(|a| a.machine.queue(&name, queue).map(|x| (x.min_offset(), x.max_offset())))?;
        let records = node.stores.records(&name, queue, min, max).expect("the ConsumeQueue reads");
        if records.len() as u64 != max - min {
            return None;
        }
        out.extend(records.iter().map(|(_, r)| (r.log_index.0, r.slot.0)));
    }
    Some(out)
}
