//! openraft wiring: the type configuration, the state machine adapter, (to come) the Raft
//! network over gRPC.

pub mod ack;
pub mod backfill;
pub mod codec;
pub mod network;
pub mod service;
pub mod state;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::machine::{Command, Response};

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

openraft::declare_raft_types!(
    /// The broker's Raft types: commands in, responses out, the CommitLog as the log.
    pub TypeConfig:
        D = Command,
        R = Response,
        Node = NodeInfo,
);

/// openraft's log id for this configuration.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A broker node's Raft handle.
pub type Raft = openraft::Raft<TypeConfig, state::StateStore>;
/// Raft node ids: never reused.
pub type NodeId = u64;
/// openraft's log entry for this configuration.
pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
