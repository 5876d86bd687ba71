//! A broker group of real `mqbroker` processes on free loopback ports, each with its own
//! `broker.toml` and data directory under one temporary directory; nodes can be killed with
//! SIGKILL and restarted on the same data.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftmq_proto::admin::v1 as admin;
use raftmq_proto::admin::v1::admin_service_client::AdminServiceClient;
use raftmq_proto::namesrv::v1::Role;

/// Settings of a test group.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Members (ids 1..=nodes).
    pub nodes: u64,
    /// `snapshot_every` of every node.
    pub snapshot_every: u64,
    /// `keep_after_snapshot` of every node.
    pub keep_after_snapshot: u64,
    /// `segment_size_bytes` of every node.
    pub segment_size_bytes: u64,
    /// `election_timeout_ms` of every node.
    pub election_timeout_ms: u64,
    /// `auto_create_topics` of every node.
    pub auto_create_topics: bool,
    /// `max_body_bytes` of every node (at most half a segment).
    pub max_body_bytes: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            snapshot_every: 100_000,
            keep_after_snapshot: 10_000,
            segment_size_bytes: 16 << 20,
            election_timeout_ms: 500,
            auto_create_topics: true,
            max_body_bytes: 4 << 20,
        }
    }
}

/// One member's addresses and process.
#[derive(Debug)]
struct Member {
    client: String,
    raft: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running group; dropping it kills every process.
#[derive(Debug)]
pub struct Cluster {
    /// The group's name.
    pub group: String,
    dir: PathBuf,
    binary: PathBuf,
    members: BTreeMap<u64, Member>,
}

/// The path of a workspace binary built next to this test executable
/// (`target/<profile>/<name>`).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| anyhow::anyhow!("cannot find the target directory from {}", exe.display()))?;
    let path = dir.join(name);
    anyhow::ensure!(path.exists(), "{} is missing: build it first (cargo build --bin {name})", path.display());
    Ok(path)
}

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

/// Waits until `check` returns `Some`, polling every 20 ms, or fails after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        anyhow::ensure!(start.elapsed() < deadline, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Cluster {
    /// Writes the configs and starts every node.
    pub fn start(dir: &Path, opts: &ClusterOptions) -> anyhow::Result<Cluster> {
        let binary = binary("mqbroker")?;
        let group = "broker-t".to_string();
        let mut addrs = BTreeMap::new();
        for id in 1..=opts.nodes {
            addrs.insert(id, (free_addr()?, free_addr()?));
        }
        let mut peers = String::new();
        for (id, (client, raft)) in &addrs {
            write!(peers, "\n[[peers]]\nid = {id}\nraft = \"{raft}\"\nclient = \"{client}\"\n")?;
        }
        let mut members = BTreeMap::new();
        for (id, (client, raft)) in addrs {
            let data = dir.join(format!("node-{id}"));
            let config = dir.join(format!("node-{id}.toml"));
            let text = format!(
                "group = \"{group}\"\nnode_id = {id}\ndata_dir = \"{}\"\nsnapshot_every = {}\n\
                 keep_after_snapshot = {}\nsegment_size_bytes = {}\nelection_timeout_ms = {}\n\
                 auto_create_topics = {}\nmax_body_bytes = {}\n{peers}",
                data.display(),
                opts.snapshot_every,
                opts.keep_after_snapshot,
                opts.segment_size_bytes,
                opts.election_timeout_ms,
                opts.auto_create_topics,
                opts.max_body_bytes,
            );
            std::fs::write(&config, text)?;
            let log = dir.join(format!("node-{id}.log"));
            members.insert(id, Member { client, raft, config, log, child: None });
        }
        let mut cluster = Cluster { group, dir: dir.to_path_buf(), binary, members };
        for id in 1..=opts.nodes {
            cluster.restart(id)?;
        }
        Ok(cluster)
    }

    /// Starts node `id` (again) on its data directory.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let m = self.members.get_mut(&id).ok_or_else(|| anyhow::anyhow!("no node {id}"))?;
        anyhow::ensure!(m.child.is_none(), "node {id} is running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log)?;
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(&m.config)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        m.child = Some(child);
        Ok(())
    }

    /// SIGKILL: the process dies without flushing anything.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let m = self.members.get_mut(&id).ok_or_else(|| anyhow::anyhow!("no node {id}"))?;
        let mut child = m.child.take().ok_or_else(|| anyhow::anyhow!("node {id} is not running"))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Every node's client endpoint, in id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.values().map(|m| m.client.clone()).collect()
    }

    /// Node `id`'s client endpoint.
    pub fn endpoint(&self, id: u64) -> String {
        self.members.get(&id).map(|m| m.client.clone()).unwrap_or_default()
    }

    /// Ids of the running nodes.
    pub fn running(&self) -> Vec<u64> {
        self.members.iter().filter(|(_, m)| m.child.is_some()).map(|(id, _)| *id).collect()
    }

    /// Node `id`'s own status, or `None` if it does not answer within a second.
    pub async fn status(&self, id: u64) -> Option<admin::NodeStatus> {
        let m = self.members.get(&id)?;
        let call = async {
            let mut c = AdminServiceClient::connect(format!("http://{}", m.client)).await.ok()?;
            c.node_status(admin::NodeStatusRequest {}).await.ok()?.into_inner().node
        };
        tokio::time::timeout(Duration::from_secs(1), call).await.ok().flatten()
    }

    /// The leader every running node agrees on, if they do.
    pub async fn agreed_leader(&self) -> Option<u64> {
        let mut leader = None;
        for id in self.running() {
            let s = self.status(id).await?;
            if s.leader_id == 0 || leader.is_some_and(|l| l != s.leader_id) {
                return None;
            }
            if s.leader_id == id && s.role != Role::Leader as i32 {
                return None;
            }
            leader = Some(s.leader_id);
        }
        leader.filter(|l| self.running().contains(l))
    }

    /// Waits for a leader all running nodes agree on.
    pub async fn wait_leader(&self, deadline: Duration) -> anyhow::Result<u64> {
        wait_for("an agreed leader", deadline, || self.agreed_leader()).await.map_err(|e| self.explain(e))
    }

    /// `e` with the tail of every node's output appended.
    pub fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        let mut text = format!("{e:#}");
        for id in self.members.keys() {
            let _ = write!(text, "\n--- node {id} ---\n{}", self.log_tail(*id));
        }
        anyhow::anyhow!(text)
    }

    /// The tail of node `id`'s output, for failure messages.
    pub fn log_tail(&self, id: u64) -> String {
        let text = self.log_text(id);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Everything node `id` printed, across its restarts.
    pub fn log_text(&self, id: u64) -> String {
        let Some(m) = self.members.get(&id) else { return String::new() };
        std::fs::read_to_string(&m.log).unwrap_or_default()
    }

    /// Node `id`'s Raft address (for completeness in failure messages).
    pub fn raft_addr(&self, id: u64) -> String {
        self.members.get(&id).map(|m| m.raft.clone()).unwrap_or_default()
    }

    /// The directory holding configs, logs and data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in self.members.values_mut() {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
