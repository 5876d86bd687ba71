//! openraft wiring: the type configuration, the state machine adapter, (to come) the Raft
//! network over gRPC.

pub mod ack;
pub mod backfill;
pub mod codec;
pub mod network;
pub mod service;
pub mod slot;
pub mod state;

use raftmq_machine::{Command, Response};

pub use crate::settings::{NodeId, NodeInfo};

openraft::declare_raft_types!(
    /// The broker's Raft types: commands in, responses out, the CommitLog as the log.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
);

/// openraft's log id for this configuration.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A broker node's Raft handle.
pub type Raft = openraft::Raft<TypeConfig, state::StateStore>;
/// openraft's log entry for this configuration.
pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;

/// On the leader: whether `member` acknowledged a heartbeat within `within` (it is up and
/// reachable, so it can take over the lead).
pub fn heard_from_within(
    metrics: &openraft::RaftMetrics<TypeConfig>,
    member: NodeId,
    within: std::time::Duration,
) -> bool {
    use openraft::Instant as _;
    metrics
        .heartbeat
        .as_ref()
        .and_then(|hb| hb.get(&member))
        .is_some_and(|last| last.as_ref().is_some_and(|t| t.elapsed() < within))
}
