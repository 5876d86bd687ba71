//! What the in-process group tests share: free loopback addresses and the configs of a
//! three-node group.

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
        peers.insert(id, NodeInfo { raft_addr: free_addr()?, client_addr: free_addr()? });
    }
    Ok((1..=3u64)
        .map(|id| {
            tweak(NodeConfig {
                group: group.into(),
                node_id: id,
                peers: peers.clone(),
                data_dir: dir.join(format!("n{id}")),
                heartbeat: Duration::from_millis(100),
                election_timeout: Duration::from_millis(500),
                ..NodeConfig::default()
            })
        })
        .collect())
}
