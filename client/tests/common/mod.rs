//! A three-node broker group in the test process, on free loopback ports, with real files.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use broker::node::{Node, NodeConfig};
use broker::raft::{NodeId, NodeInfo};
use broker::settings::ServiceSettings;
use openraft::async_runtime::watch::WatchReceiver;
use raft_log::LogConfig;

/// The group's name.
pub const GROUP: &str = "g1";

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

/// A running group; `nodes[i]` is node `i + 1` until it is stopped.
pub struct Group {
    pub nodes: Vec<Option<Node>>,
    pub client_addrs: Vec<String>,
    /// Each node's configuration, to start it again on its data.
    configs: Vec<NodeConfig>,
    _dir: tempfile::TempDir,
}

impl Group {
    /// Starts three nodes; `auto_create` creates unknown topics with that many queues.
    pub async fn start(auto_create: Option<u32>) -> anyhow::Result<Group> {
        Self::start_with(ServiceSettings { auto_create_queues: auto_create, ..ServiceSettings::default() }).await
    }

    /// Starts three nodes with these service settings.
    pub async fn start_with(service: ServiceSettings) -> anyhow::Result<Group> {
        let dir = tempfile::tempdir()?;
        let mut peers = BTreeMap::new();
        for id in 1..=3u64 {
            peers.insert(NodeId(id), NodeInfo { raft_addr: free_addr()?, client_addr: free_addr()? });
        }
        let mut nodes = Vec::new();
        let mut configs = Vec::new();
        for id in 1..=3u64 {
            let cfg = NodeConfig {
                group: GROUP.into(),
                node_id: NodeId(id),
                peers: peers.clone(),
                data_dir: dir.path().join(format!("n{id}")),
                log: LogConfig { segment_size: 4 << 20, max_payload: 1 << 20, ..LogConfig::default() },
                heartbeat: Duration::from_millis(100),
                election_timeout: Duration::from_millis(500),
                snapshot_every: 10_000,
                keep_after_snapshot: 1_000,
                service: service.clone(),
                ..NodeConfig::default()
            };
            configs.push(cfg.clone());
            nodes.push(Some(Node::start(cfg).await?));
        }
        let client_addrs = peers.values().map(|p| p.client_addr.clone()).collect();
        let group = Group { nodes, client_addrs, configs, _dir: dir };
        group.leader(Duration::from_secs(10)).await?;
        Ok(group)
    }

    /// Every node's client endpoint, `a;b;c`.
    pub fn endpoints(&self) -> String {
        self.client_addrs.join(";")
    }

    /// The client endpoint of node `id`.
    pub fn endpoint(&self, id: u64) -> String {
        self.client_addrs[(id - 1) as usize].clone()
    }

    /// Node `id`, if running.
    pub fn node(&self, id: u64) -> Option<&Node> {
        self.nodes.get((id - 1) as usize).and_then(Option::as_ref)
    }

    /// The leader every running node agrees on, waiting up to `deadline`.
    pub async fn leader(&self, deadline: Duration) -> anyhow::Result<u64> {
        let start = Instant::now();
        loop {
            let seen: Vec<Option<u64>> = self
                .nodes
                .iter()
                .flatten()
                .map(|n| n.raft.metrics().borrow_watched().current_leader.map(|l| l.0))
                .collect();
            if let Some(Some(l)) = seen.first()
                && seen.iter().all(|s| *s == Some(*l))
                && self.node(*l).is_some()
            {
                return Ok(*l);
            }
            anyhow::ensure!(start.elapsed() < deadline, "no agreed leader within {deadline:?}: {seen:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every running node is a voter that knows the leader (a node that has not
    /// yet received the membership reports itself a learner).
    pub async fn settled(&self, deadline: Duration) -> anyhow::Result<u64> {
        let start = Instant::now();
        loop {
            let leader = self.leader(deadline).await?;
            let states: Vec<openraft::ServerState> =
                self.nodes.iter().flatten().map(|n| n.raft.metrics().borrow_watched().state).collect();
            if states.iter().all(|s| matches!(s, openraft::ServerState::Leader | openraft::ServerState::Follower)) {
                return Ok(leader);
            }
            anyhow::ensure!(start.elapsed() < deadline, "members not settled within {deadline:?}: {states:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A running node other than the leader and `not`.
    pub async fn follower(&self, not: Option<u64>) -> anyhow::Result<u64> {
        let leader = self.leader(Duration::from_secs(5)).await?;
        (1..=3u64)
            .find(|id| *id != leader && Some(*id) != not && self.node(*id).is_some())
            .ok_or_else(|| anyhow::anyhow!("no follower running"))
    }

    /// Stops node `id`.
    pub async fn stop(&mut self, id: u64) {
        if let Some(n) = self.nodes.get_mut((id - 1) as usize).and_then(Option::take) {
            n.shutdown().await;
        }
    }

    /// Starts node `id` again on its data, on the same addresses (stopping it first if it runs).
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.stop(id).await;
        let cfg = self.configs.get((id - 1) as usize).ok_or_else(|| anyhow::anyhow!("no node {id}"))?.clone();
        self.nodes[(id - 1) as usize] = Some(Node::start(cfg).await?);
        Ok(())
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for id in 1..=3 {
            self.stop(id).await;
        }
    }
}

/// Runs `mqadmin` with `args` (errors only in its log) and returns its output.
pub async fn mqadmin(args: &[&str]) -> anyhow::Result<std::process::Output> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mqadmin")).args(&args).env("RUST_LOG", "error").output()
    })
    .await??;
    Ok(out)
}
