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

/// Proposes `command` as `raft.client_write` does, and proposes it again while this node
/// leads without a valid lease (just elected, before a quorum acknowledged it): openraft
/// then refuses the write without appending it. Gives up after the longest election
/// timeout, when another node may lead.
pub async fn client_write(
    raft: &Raft,
    command: Command,
) -> Result<
    openraft::raft::ClientWriteResponse<TypeConfig>,
    openraft::error::RaftError<TypeConfig, openraft::error::ClientWriteError<TypeConfig>>,
> {
    use openraft::async_runtime::watch::WatchReceiver as _;
    use openraft::error::{ClientWriteError, ForwardReason, RaftError};
    let lease_wait = std::time::Duration::from_millis(raft.config().election_timeout_max);
    let deadline = tokio::time::Instant::now() + lease_wait;
    let mut metrics = raft.metrics();
    loop {
        match raft.client_write(command.clone()).await {
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                if f.reason == ForwardReason::LeaseExpired && tokio::time::Instant::now() < deadline =>
            {
                // An acknowledgement from a quorum renews the lease and changes the metrics.
                let _ = tokio::time::timeout_at(deadline, metrics.changed()).await;
            }
            other => return other,
        }
    }
}

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
