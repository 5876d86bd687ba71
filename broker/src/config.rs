//! `broker.toml`: the configuration file of one broker node, its defaults, and its
//! validation into a [`NodeConfig`]. Every field and default is listed in the README.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raft_log::{LogConfig, SyncPolicy};
use serde::Deserialize;

use crate::disk::Threshold;
use crate::settings::AckMode;
use crate::settings::{NodeConfig, NodeId, NodeInfo, RetentionConfig, ServiceSettings, TransactionSettings};

/// Largest configuration file read (a config is a few hundred bytes).
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most members of one group.
const MAX_PEERS: usize = 9;
/// Room a message's properties, keys and names may take beside its body in a log entry
/// (the wire limits allow about 25 KiB).
const MESSAGE_METADATA_BYTES: u64 = 64 << 10;

/// When an appended entry counts as durable on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushMode {
    /// `fdatasync` before the node acknowledges the append (the default).
    #[default]
    Sync,
    /// Acknowledge after the write (to the page cache), `fdatasync` at most
    /// `flush_interval_ms` later (sooner when idle, and always before a vote, truncation or
    /// purge is saved). A node that loses power meanwhile comes back without the entries of
    /// that interval; when that leaves fewer than a quorum holding one (always, when a
    /// quorum loses power at once) an acknowledged send is lost. A crash of the process
    /// alone loses nothing.
    Async,
}

/// One member of the group as the file names it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Node id, ≥ 1, never reused.
    pub id: u64,
    /// `host:port` the other members reach its Raft service at.
    pub raft: String,
    /// `host:port` clients reach its RocketMQ endpoint at.
    pub client: String,
}

fn default_cluster() -> String {
    "DefaultCluster".into()
}
fn default_queues() -> u32 {
    8
}
fn default_true() -> bool {
    true
}
fn default_heartbeat_ms() -> u64 {
    50
}
fn default_election_timeout_ms() -> u64 {
    200
}
fn default_snapshot_every() -> u64 {
    2_000
}
fn default_keep_after_snapshot() -> u64 {
    2_000
}
fn default_segment_size() -> u64 {
    1 << 30
}
fn default_max_delay_ms() -> u64 {
    ServiceSettings::default().max_delay_ms
}
fn default_transaction_timeout_ms() -> u64 {
    TransactionSettings::default().timeout_ms
}
fn default_transaction_check_interval_ms() -> u64 {
    TransactionSettings::default().check_interval_ms
}
fn default_transaction_check_max() -> u32 {
    TransactionSettings::default().max_checks
}
/// Longest a transaction check-back timeout or interval may be (1 day).
const MAX_TRANSACTION_WAIT_MS: u64 = 24 * 3600 * 1000;
/// Most check-backs a configuration may allow.
const MAX_TRANSACTION_CHECKS: u32 = 1000;

/// Longest `max_delay_ms` a configuration may set (30 days).
const MAX_DELAY_LIMIT_MS: u64 = 30 * 24 * 3600 * 1000;

fn default_disk_refuse_percent() -> u8 {
    crate::disk::DEFAULT_REFUSE_PERCENT
}
fn default_disk_refuse_free_mib() -> u64 {
    crate::disk::DEFAULT_REFUSE_FREE_MIB
}
fn default_max_body() -> usize {
    4 << 20
}
fn default_flush_interval_ms() -> u64 {
    1000
}

/// The file as written; see [`FileConfig::into_node_config`] for the rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Cluster name reported to nameservers.
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// The broker group (one Raft group; the "broker name" in routes).
    pub group: String,
    /// This node's id; one of `peers`.
    pub node_id: u64,
    /// Where the CommitLog and state live (default `data/<group>-<node_id>`).
    pub data_dir: Option<PathBuf>,
    /// Address to bind the client service on (default: this node's `client` address).
    pub listen_client: Option<String>,
    /// Address to bind the Raft service on (default: this node's `raft` address).
    pub listen_raft: Option<String>,
    /// Every member of the group, this node included.
    pub peers: Vec<PeerConfig>,
    /// Nameservers to heartbeat to (`host:port`).
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// `sync` or `async`.
    #[serde(default)]
    pub flush: FlushMode,
    /// With `flush = "async"`: the longest an acknowledged append stays unsynced
    /// (1-60000 ms).
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// `quorum` or `leader`.
    #[serde(default)]
    pub ack: AckMode,
    /// Create unknown topics on first use.
    #[serde(default = "default_true")]
    pub auto_create_topics: bool,
    /// Queues of an auto-created topic.
    #[serde(default = "default_queues")]
    pub default_queues: u32,
    /// Leader heartbeat interval.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Shortest election timeout; the longest is 1.5 times this.
    #[serde(default = "default_election_timeout_ms")]
    pub election_timeout_ms: u64,
    /// Snapshot the state after this many applied entries.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// Entries kept in the Raft log after a snapshot for lagging followers.
    #[serde(default = "default_keep_after_snapshot")]
    pub keep_after_snapshot: u64,
    /// Size of one CommitLog segment file.
    #[serde(default = "default_segment_size")]
    pub segment_size_bytes: u64,
    /// Largest message body.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Longest delay a delay message may ask for; a later delivery time is refused.
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: u64,
    /// How long after its half message an open transaction is first checked back.
    #[serde(default = "default_transaction_timeout_ms")]
    pub transaction_timeout_ms: u64,
    /// How long between later check-backs.
    #[serde(default = "default_transaction_check_interval_ms")]
    pub transaction_check_interval_ms: u64,
    /// Check-backs before an open transaction is rolled back.
    #[serde(default = "default_transaction_check_max")]
    pub transaction_check_max: u32,
    /// Sends are refused while the disk holding `data_dir` is at least this full, in
    /// percent (50-100).
    #[serde(default = "default_disk_refuse_percent")]
    pub disk_refuse_percent: u8,
    /// ... and has less than this many MiB free (0 turns the guard off).
    #[serde(default = "default_disk_refuse_free_mib")]
    pub disk_refuse_free_mib: u64,
    /// Most client connections open at once (1-1,000,000); more are closed as they arrive.
    #[serde(default = "default_max_client_connections")]
    pub max_client_connections: usize,
    /// Most requests served at once on one client connection (1-100,000); more wait.
    #[serde(default = "default_max_requests_per_connection")]
    pub max_requests_per_connection: usize,
}

fn default_max_client_connections() -> usize {
    ServiceSettings::default().max_connections
}

fn default_max_requests_per_connection() -> usize {
    ServiceSettings::default().max_requests_per_connection
}

/// A configuration that cannot be used, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What the parser said, with line and column.
        message: String,
    },
    /// A field has a value that cannot work.
    #[error("{path}: {field}: {message}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
}

impl FileConfig {
    /// Reads and parses `path` (at most 1 MiB).
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let read = |source| ConfigError::Read { path: path.to_path_buf(), source };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_FILE_BYTES {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                field: "(file)",
                message: format!("{len} bytes is larger than the {MAX_FILE_BYTES} a config may have"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Self::parse(&text, path)
    }

    /// Parses a config's text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })
    }

    /// Checks every field and builds the node's configuration.
    pub fn into_node_config(self, path: &Path) -> Result<NodeConfig, ConfigError> {
        let invalid = |field, message: String| ConfigError::Invalid { path: path.to_path_buf(), field, message };
        if self.cluster.is_empty() || self.cluster.len() > 127 || !self.cluster.bytes().all(name_byte) {
            return Err(invalid("cluster", format!("{:?} must be 1-127 characters of [a-zA-Z0-9_-]", self.cluster)));
        }
        if self.nameservers.len() > 16 {
            return Err(invalid("nameservers", format!("{} listed, the limit is 16", self.nameservers.len())));
        }
        if self.group.is_empty() || self.group.len() > 127 || !self.group.bytes().all(name_byte) {
            return Err(invalid("group", format!("{:?} must be 1-127 characters of [a-zA-Z0-9_-]", self.group)));
        }
        if self.node_id == 0 {
            return Err(invalid("node_id", "node ids start at 1".into()));
        }
        if self.peers.is_empty() || self.peers.len() > MAX_PEERS {
            return Err(invalid("peers", format!("a group has 1 to {MAX_PEERS} members, not {}", self.peers.len())));
        }
        let mut peers = BTreeMap::new();
        for p in &self.peers {
            for (field, addr) in [("peers.raft", &p.raft), ("peers.client", &p.client)] {
                check_addr(addr).map_err(|m| invalid(field, format!("node {}: {m}", p.id)))?;
            }
            if p.id == 0 {
                return Err(invalid("peers.id", "node ids start at 1".into()));
            }
            let info = NodeInfo { raft_addr: p.raft.clone(), client_addr: p.client.clone() };
            if peers.insert(NodeId(p.id), info).is_some() {
                return Err(invalid("peers.id", format!("node {} is listed twice", p.id)));
            }
        }
        if !peers.contains_key(&NodeId(self.node_id)) {
            return Err(invalid("node_id", format!("node {} is not among the peers", self.node_id)));
        }
        for (field, addr) in [("listen_client", &self.listen_client), ("listen_raft", &self.listen_raft)] {
            if let Some(addr) = addr {
                check_addr(addr).map_err(|m| invalid(field, m))?;
            }
        }
        for addr in &self.nameservers {
            check_addr(addr).map_err(|m| invalid("nameservers", m))?;
        }
        if !(1..=60_000).contains(&self.flush_interval_ms) {
            return Err(invalid("flush_interval_ms", format!("{} is not within 1-60000", self.flush_interval_ms)));
        }
        if !(1..=1024).contains(&self.default_queues) {
            return Err(invalid("default_queues", format!("{} is not within 1-1024", self.default_queues)));
        }
        if !(10..=10_000).contains(&self.heartbeat_ms) {
            return Err(invalid("heartbeat_ms", format!("{} is not within 10-10000", self.heartbeat_ms)));
        }
        if self.election_timeout_ms < 3 * self.heartbeat_ms || self.election_timeout_ms > 60_000 {
            return Err(invalid(
                "election_timeout_ms",
                format!(
                    "{} must be at least 3 heartbeats ({}) and at most 60000",
                    self.election_timeout_ms,
                    3 * self.heartbeat_ms
                ),
            ));
        }
        if self.snapshot_every == 0 {
            return Err(invalid("snapshot_every", "must be at least 1".into()));
        }
        if !(1 << 20..=1 << 34).contains(&self.segment_size_bytes) {
            return Err(invalid(
                "segment_size_bytes",
                format!("{} is not within 1 MiB-16 GiB", self.segment_size_bytes),
            ));
        }
        // A log entry holds at most half a segment (and 64 MiB); one message with all its
        // metadata must fit one entry.
        let entry_room = (self.segment_size_bytes / 2).min(64 << 20).saturating_sub(MESSAGE_METADATA_BYTES);
        if self.max_body_bytes == 0 || self.max_body_bytes as u64 > entry_room {
            return Err(invalid(
                "max_body_bytes",
                format!(
                    "{} must be at least 1 and at most {entry_room} (half a segment, at most 64 MiB, less \
                     {MESSAGE_METADATA_BYTES} for a message's properties and keys); raise segment_size_bytes or lower it",
                    self.max_body_bytes
                ),
            ));
        }
        if !(1..=1_000_000).contains(&self.max_client_connections) {
            return Err(invalid(
                "max_client_connections",
                format!("{} is not within 1-1000000", self.max_client_connections),
            ));
        }
        if !(1..=100_000).contains(&self.max_requests_per_connection) {
            return Err(invalid(
                "max_requests_per_connection",
                format!("{} is not within 1-100000", self.max_requests_per_connection),
            ));
        }
        if !(1_000..=MAX_DELAY_LIMIT_MS).contains(&self.max_delay_ms) {
            return Err(invalid(
                "max_delay_ms",
                format!("{} is not within 1000 (1 s) and {MAX_DELAY_LIMIT_MS} (30 days)", self.max_delay_ms),
            ));
        }
        for (key, value) in [
            ("transaction_timeout_ms", self.transaction_timeout_ms),
            ("transaction_check_interval_ms", self.transaction_check_interval_ms),
        ] {
            if !(100..=MAX_TRANSACTION_WAIT_MS).contains(&value) {
                return Err(invalid(key, format!("{value} is not within 100 and {MAX_TRANSACTION_WAIT_MS} (1 day)")));
            }
        }
        if !(1..=MAX_TRANSACTION_CHECKS).contains(&self.transaction_check_max) {
            return Err(invalid(
                "transaction_check_max",
                format!("{} is not within 1 and {MAX_TRANSACTION_CHECKS}", self.transaction_check_max),
            ));
        }
        if !(50..=100).contains(&self.disk_refuse_percent) {
            return Err(invalid(
                "disk_refuse_percent",
                format!("{} is not within 50 and 100", self.disk_refuse_percent),
            ));
        }
        let data_dir =
            self.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("data/{}-{}", self.group, self.node_id)));
        let max_payload = (self.segment_size_bytes / 2).min(u64::from(LogConfig::default().max_payload)) as u32;
        let sync = match self.flush {
            FlushMode::Sync => SyncPolicy::EveryBatch,
            FlushMode::Async => SyncPolicy::Interval(Duration::from_millis(self.flush_interval_ms)),
        };
        Ok(NodeConfig {
            cluster: self.cluster,
            nameservers: self.nameservers,
            group: self.group,
            node_id: NodeId(self.node_id),
            peers,
            data_dir,
            listen_client: self.listen_client,
            listen_raft: self.listen_raft,
            log: LogConfig { segment_size: self.segment_size_bytes, max_payload, sync, ..LogConfig::default() },
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            election_timeout: Duration::from_millis(self.election_timeout_ms),
            snapshot_every: self.snapshot_every,
            keep_after_snapshot: self.keep_after_snapshot,
            service: ServiceSettings {
                max_body_bytes: self.max_body_bytes,
                max_delay_ms: self.max_delay_ms,
                transactions: TransactionSettings {
                    timeout_ms: self.transaction_timeout_ms,
                    check_interval_ms: self.transaction_check_interval_ms,
                    max_checks: self.transaction_check_max,
                },
                auto_create_queues: self.auto_create_topics.then_some(self.default_queues),
                ack: self.ack,
                max_connections: self.max_client_connections,
                max_requests_per_connection: self.max_requests_per_connection,
                ..ServiceSettings::default()
            },
            retention: RetentionConfig {
                disk_refuse: Threshold { percent: self.disk_refuse_percent, free_mib: self.disk_refuse_free_mib },
                ..RetentionConfig::default()
            },
            ..NodeConfig::default()
        })
    }
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// `host:port` with a non-empty host and a port 1-65535 (port 0 allowed for tests).
pub(crate) fn check_addr(addr: &str) -> Result<(), String> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("{addr:?} is not host:port"))?;
    if host.is_empty() || host.len() > 253 {
        return Err(format!("{addr:?} has no host"));
    }
    port.parse::<u16>().map_err(|_| format!("{addr:?}: {port:?} is not a port number"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &str = r#"
group = "broker-a"
node_id = 2
nameservers = ["127.0.0.1:9876"]
[[peers]]
id = 1
raft = "10.0.0.1:9081"
client = "10.0.0.1:8081"
[[peers]]
id = 2
raft = "10.0.0.2:9081"
client = "10.0.0.2:8081"
[[peers]]
id = 3
raft = "10.0.0.3:9081"
client = "10.0.0.3:8081"
"#;

    fn load(text: &str) -> Result<NodeConfig, ConfigError> {
        let path = Path::new("broker.toml");
        FileConfig::parse(text, path)?.into_node_config(path)
    }

    #[test]
    fn defaults_fill_a_minimal_file() {
        let cfg = load(THREE).expect("valid");
        assert_eq!(cfg.group, "broker-a");
        assert_eq!(cfg.node_id, NodeId(2));
        assert_eq!(cfg.peers.len(), 3);
        assert_eq!(cfg.peers[&NodeId(2)].client_addr, "10.0.0.2:8081");
        assert_eq!(cfg.data_dir, PathBuf::from("data/broker-a-2"));
        assert_eq!(cfg.heartbeat, Duration::from_millis(50));
        assert_eq!(cfg.election_timeout, Duration::from_millis(200));
        assert_eq!(cfg.log.segment_size, 1 << 30);
        assert_eq!(cfg.log.sync, SyncPolicy::EveryBatch);
        assert_eq!(cfg.service.max_body_bytes, 4 << 20);
        assert_eq!(cfg.service.max_delay_ms, 24 * 3600 * 1000);
        assert_eq!(
            cfg.service.transactions,
            TransactionSettings { timeout_ms: 6_000, check_interval_ms: 60_000, max_checks: 15 }
        );
        assert_eq!(cfg.service.auto_create_queues, Some(8));
        assert_eq!(cfg.listen_client, None);
        assert_eq!(cfg.cluster, "DefaultCluster");
        assert_eq!(cfg.nameservers, vec!["127.0.0.1:9876".to_string()]);
    }

    fn error_of(text: &str) -> String {
        load(text).expect_err("must be refused").to_string()
    }

    #[test]
    fn bad_files_name_the_field() {
        let e = error_of(&THREE.replace("node_id = 2", "node_id = 4"));
        assert!(e.contains("node_id") && e.contains("not among the peers"), "{e}");
        let e = error_of(&THREE.replace("id = 3", "id = 2"));
        assert!(e.contains("listed twice"), "{e}");
        let e = error_of(&THREE.replace("10.0.0.3:8081", "10.0.0.3"));
        assert!(e.contains("peers.client") && e.contains("not host:port"), "{e}");
        let e = error_of(&format!("flush = \"sometimes\"\n{THREE}"));
        assert!(e.contains("broker.toml") && e.contains("flush"), "{e}");
        let e = error_of(&format!("colour = 1\n{THREE}"));
        assert!(e.contains("unknown field") && e.contains("colour"), "{e}");
        let e = error_of(&format!("max_delay_ms = 500\n{THREE}"));
        assert!(e.contains("max_delay_ms") && e.contains("30 days"), "{e}");
        let e = error_of(&format!("transaction_check_max = 0\n{THREE}"));
        assert!(e.contains("transaction_check_max") && e.contains("within 1 and 1000"), "{e}");
        let e = error_of(&format!("election_timeout_ms = 100\n{THREE}"));
        assert!(e.contains("election_timeout_ms"), "{e}");
        let e = error_of(&format!("group = \"a b\"\n{}", THREE.replace("group = \"broker-a\"", "")));
        assert!(e.contains("group"), "{e}");
        let e = error_of(&format!("segment_size_bytes = 4096\n{THREE}"));
        assert!(e.contains("segment_size_bytes"), "{e}");
    }

    #[test]
    fn ack_leader_reaches_the_service() {
        assert_eq!(load(THREE).expect("valid").service.ack, AckMode::Quorum);
        let cfg = load(&format!("ack = \"leader\"\n{THREE}")).expect("ack = leader is accepted");
        assert_eq!(cfg.service.ack, AckMode::Leader);
    }

    #[test]
    fn async_flush_syncs_on_the_given_interval() {
        let cfg = load(&format!("flush = \"async\"\nflush_interval_ms = 250\n{THREE}")).expect("valid");
        assert_eq!(cfg.log.sync, SyncPolicy::Interval(Duration::from_millis(250)));
        cfg.log.validate().expect("the log accepts what the file accepts");
        let cfg = load(&format!("flush = \"async\"\n{THREE}")).expect("valid");
        assert_eq!(cfg.log.sync, SyncPolicy::Interval(Duration::from_secs(1)), "1000 ms by default");
        for bad in [0, 60_001] {
            let e = error_of(&format!("flush = \"async\"\nflush_interval_ms = {bad}\n{THREE}"));
            assert!(e.contains("flush_interval_ms") && e.contains("1-60000"), "{e}");
        }
        let cfg = load(&format!("flush = \"sync\"\nflush_interval_ms = 60000\n{THREE}")).expect("valid");
        assert_eq!(cfg.log.sync, SyncPolicy::EveryBatch, "the interval only matters with async");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let e = FileConfig::load(Path::new("no/such/broker.toml")).expect_err("missing");
        assert!(e.to_string().contains("no/such/broker.toml"), "{e}");
    }
}
