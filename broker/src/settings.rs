//! Settings of a node as plain data: what `broker.toml` and `mqbroker dev` produce and the
//! rest of the broker reads. A leaf: it imports nothing else of the broker, so every module
//! may depend on it without import circles.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use raft_log::LogConfig;
use serde::{Deserialize, Serialize};

/// Raft node ids: never reused.
pub use raftmq_machine::NodeId;

/// The cluster name when none is configured (RocketMQ's default).
pub const DEFAULT_CLUSTER: &str = "DefaultCluster";
/// How often a node heartbeats to each nameserver by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// Addresses of a group member, stored in the Raft membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:port` of the node's Raft service.
    pub raft_addr: String,
    /// `host:port` of the node's client (RocketMQ v2) service.
    pub client_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} client={}", self.raft_addr, self.client_addr)
    }
}

/// Limits and defaults of the client service.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Largest message body (default 4 MiB).
    pub max_body_bytes: usize,
    /// Create unknown topics on first use with this many queues (None: refuse them).
    pub auto_create_queues: Option<u32>,
    /// Invisible time when a receive names none (push consumers), default 30 s.
    pub default_invisible_ms: u64,
    /// Shortest and longest invisible time a client may ask for.
    pub invisible_range_ms: (u64, u64),
    /// Longest long-polling wait (default 30 s).
    pub max_long_polling_ms: u64,
    /// Most messages one receive returns (default 32).
    pub max_receive_batch: u32,
    /// Largest log entry the CommitLog takes (its `max_payload`): group commit keeps each
    /// entry below it and refuses a send that alone would not fit.
    pub max_entry_bytes: usize,
    /// Longest delay a delay message may ask for (default 24 h); a later delivery time is
    /// refused.
    pub max_delay_ms: u64,
    /// When a send is answered: after commit (`Quorum`, the default), or once the leader's own
    /// write is durable (`Leader`: the receipt's offset is -1, a failover can lose the tail).
    pub ack: AckMode,
    /// When open transactions are checked back.
    pub transactions: TransactionSettings,
    /// Most client connections open at once (default 10,000); more are closed as they
    /// arrive.
    pub max_connections: usize,
    /// Most requests served at once on one client connection (default 1,000; more wait).
    pub max_requests_per_connection: usize,
}

/// Check-back of open transactions (RocketMQ's `transactionTimeOut`,
/// `transactionCheckInterval`, `transactionCheckMax`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionSettings {
    /// How long after its half message an open transaction is first checked (default 6 s).
    pub timeout_ms: u64,
    /// How long between later checks (default 60 s).
    pub check_interval_ms: u64,
    /// Checks before an open transaction is rolled back (default 15).
    pub max_checks: u32,
}

impl Default for TransactionSettings {
    fn default() -> Self {
        Self { timeout_ms: 6_000, check_interval_ms: 60_000, max_checks: 15 }
    }
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
            auto_create_queues: None,
            default_invisible_ms: 30_000,
            invisible_range_ms: (1_000, 12 * 3600 * 1000),
            max_long_polling_ms: 30_000,
            max_receive_batch: 32,
            max_delay_ms: 24 * 3600 * 1000,
            max_entry_bytes: LogConfig::default().max_payload as usize,
            ack: AckMode::Quorum,
            transactions: TransactionSettings::default(),
            max_connections: 10_000,
            max_requests_per_connection: 1_000,
        }
    }
}

/// When a send is acknowledged to the producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// After a quorum has the entry (the default).
    #[default]
    Quorum,
    /// After the leader alone has it durably: a failover can lose the tail, and the send
    /// receipt's offset is -1 (assigned only when the entry is applied).
    Leader,
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Broker group (one Raft cluster).
    pub group: String,
    /// This node's id; never reused within the group.
    pub node_id: NodeId,
    /// Every member of the group, this node included.
    pub peers: BTreeMap<NodeId, NodeInfo>,
    /// Address to bind the client service on, when it differs from this node's advertised
    /// `client_addr` (e.g. `0.0.0.0:8081` in a container).
    pub listen_client: Option<String>,
    /// Address to bind the Raft service on, when it differs from `raft_addr`.
    pub listen_raft: Option<String>,
    /// Where the CommitLog and the state live.
    pub data_dir: PathBuf,
    /// Log engine settings.
    pub log: LogConfig,
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Shortest election timeout (the longest is 1.5 times this).
    pub election_timeout: Duration,
    /// Take a state snapshot after this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept in the Raft view after a snapshot (older ones are purged logically;
    /// their files stay until retention deletes them).
    pub keep_after_snapshot: u64,
    /// Limits and defaults of the client service.
    pub service: ServiceSettings,
    /// The cluster the group belongs to, as reported to the nameservers.
    pub cluster: String,
    /// Nameservers (`host:port` each) to heartbeat to and to take routes from; none: the node
    /// answers routes from its own Raft view.
    pub nameservers: Vec<String>,
    /// How often the node heartbeats to each nameserver; also the age at which a cached route
    /// is refreshed.
    pub namesrv_heartbeat: Duration,
    /// When CommitLog segments are deleted.
    pub retention: RetentionConfig,
    /// Sizes of the derived stores (ConsumeQueue, IndexFile).
    pub store: StoreConfig,
    /// The file system the CommitLog (and the vote) live on; `None`: the operating
    /// system's. Crash tests give a simulated one that loses every unsynced byte.
    pub log_fs: Option<std::sync::Arc<dyn raft_log::fs::Fs>>,
}

impl Default for NodeConfig {
    /// The defaults of `broker.toml` for a node with no peers yet: fill in `group`,
    /// `node_id`, `peers` and `data_dir`.
    fn default() -> Self {
        NodeConfig {
            group: String::new(),
            node_id: NodeId(0),
            peers: BTreeMap::new(),
            listen_client: None,
            listen_raft: None,
            data_dir: PathBuf::new(),
            log: LogConfig::default(),
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(500),
            snapshot_every: 2_000,
            keep_after_snapshot: 10_000,
            service: ServiceSettings::default(),
            cluster: DEFAULT_CLUSTER.to_string(),
            nameservers: Vec::new(),
            namesrv_heartbeat: DEFAULT_INTERVAL,
            retention: RetentionConfig::default(),
            store: StoreConfig::default(),
            log_fs: None,
        }
    }
}

impl NodeConfig {
    /// This node's addresses.
    pub fn me(&self) -> Result<&NodeInfo, String> {
        self.peers.get(&self.node_id).ok_or_else(|| format!("node {} is not among the peers", self.node_id))
    }
}

/// When CommitLog segments are deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// How often retention runs (default 60 s).
    pub interval: Duration,
    /// Messages stored longer ago than this are deleted with their segment (default 72 h);
    /// `None` keeps messages whatever their age.
    pub max_age: Option<Duration>,
    /// Delete the oldest purged segments while the CommitLog holds more bytes than this
    /// (default: no limit).
    pub max_bytes: Option<u64>,
    /// Sends are refused while the disk holding the data is past this (default: 90% full,
    /// RocketMQ's `diskSpaceWarningLevelRatio`, with less than 2 GiB free).
    pub disk_refuse: crate::disk::Threshold,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            max_age: Some(Duration::from_secs(72 * 3600)),
            max_bytes: None,
            disk_refuse: crate::disk::Threshold::default(),
        }
    }
}

/// Sizes of the derived stores.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Records per ConsumeQueue file.
    pub cq_records_per_file: u32,
    /// Hash slots per IndexFile.
    pub index_slots: u32,
    /// Entries per IndexFile.
    pub index_entries: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { cq_records_per_file: 300_000, index_slots: 1_000_000, index_entries: 4_000_000 }
    }
}
