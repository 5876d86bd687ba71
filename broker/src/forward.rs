//! Forwarding to the leader, shared by the messaging and admin services: who leads (waiting
//! a bounded time for an election), the leader's client endpoint, lazily connected channels
//! to members, and the mark that stops a call from being forwarded twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use parking_lot::Mutex;
use tonic::Request;
use tonic::transport::{Channel, Endpoint};

use crate::raft::Raft;
use crate::settings::{NodeId, NodeInfo};

/// Metadata key marking a call forwarded by a follower.
pub const FORWARDED: &str = "x-raftmq-forwarded";
/// How long a call waits for a leader to be known before giving up.
const LEADER_WAIT: Duration = Duration::from_secs(3);
/// Most member channels kept (a group has a handful of members; this bounds a churning one).
const MAX_CHANNELS: usize = 64;

/// The leader could not be reached; the message says why and that a retry may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Finds the leader and holds channels to the members' client endpoints. Clones share them.
#[derive(Clone)]
pub struct Forwarder {
    node_id: NodeId,
    /// This node's addresses as configured (the membership may not list them yet).
    me: NodeInfo,
    raft: Raft,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").field("node", &self.node_id).finish()
    }
}

impl Forwarder {
    /// Forwarding for node `node_id` (at addresses `me`) of the group `raft` runs.
    pub fn new(node_id: NodeId, me: NodeInfo, raft: Raft) -> Self {
        Self { node_id, me, raft, channels: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// This node's addresses: from the membership, or as configured while the membership
    /// does not list this node yet (a member that has not applied it).
    pub fn me(&self) -> NodeInfo {
        self.member(self.node_id).unwrap_or_else(|| self.me.clone())
    }

    /// This node's addresses as configured.
    pub fn configured(&self) -> &NodeInfo {
        &self.me
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// A member's addresses, from the current membership.
    pub fn member(&self, id: NodeId) -> Option<NodeInfo> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.membership_config.membership().get_node(&id).cloned()
    }

    /// The current leader, waiting up to [`LEADER_WAIT`] for one to be elected.
    pub async fn leader(&self) -> Result<NodeId, Unavailable> {
        self.leader_other_than(None).await
    }

    /// The current leader unless it is `old`: waits up to [`LEADER_WAIT`] for a leader
    /// other than `old` to be elected (a call forwarded to `old` failed as it lost the lead).
    pub async fn leader_other_than(&self, old: Option<NodeId>) -> Result<NodeId, Unavailable> {
        let mut rx = self.raft.metrics();
        let wait = async {
            loop {
                if let Some(l) = rx.borrow_watched().current_leader
                    && Some(l) != old
                {
                    return Ok(l);
                }
                if rx.changed().await.is_err() {
                    return Err(Unavailable("this node is shutting down".into()));
                }
            }
        };
        tokio::time::timeout(LEADER_WAIT, wait)
            .await
            .unwrap_or_else(|_| Err(Unavailable("no leader elected in the broker group; retry shortly".into())))
    }

    /// Resolves once this node no longer sees `leader` as the leader (an election started,
    /// or another member leads): a call forwarded to it is then abandoned and forwarded
    /// again to the next leader.
    pub async fn leader_lost(&self, leader: NodeId) {
        let mut rx = self.raft.metrics();
        loop {
            if rx.borrow_watched().current_leader != Some(leader) {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Where a call that needs the leader is served: `None` on this node (it leads), or the
    /// leader with its client endpoint. A call already forwarded once is refused, not
    /// forwarded. With `not` set, waits for a leader other than that one.
    pub async fn leader_endpoint<T>(
        &self,
        request: &Request<T>,
        not: Option<NodeId>,
    ) -> Result<Option<(NodeId, String)>, Unavailable> {
        let leader = self.leader_other_than(not).await?;
        if leader == self.node_id {
            return Ok(None);
        }
        if request.metadata().get(FORWARDED).is_some() {
            return Err(Unavailable(format!(
                "node {} is not the leader (node {leader} is); leadership is moving, retry",
                self.node_id
            )));
        }
        Ok(Some((leader, self.member_address(leader).await?.client_addr)))
    }

    /// A member's addresses, waiting up to [`LEADER_WAIT`] for this node to learn them (a
    /// node that just started knows who leads before it has the membership that says where).
    async fn member_address(&self, id: NodeId) -> Result<NodeInfo, Unavailable> {
        let mut rx = self.raft.metrics();
        let wait = async {
            loop {
                if let Some(info) = rx.borrow_watched().membership_config.membership().get_node(&id) {
                    return Ok(info.clone());
                }
                if rx.changed().await.is_err() {
                    return Err(Unavailable("this node is shutting down".into()));
                }
            }
        };
        tokio::time::timeout(LEADER_WAIT, wait).await.unwrap_or_else(|_| {
            Err(Unavailable(format!("leader {id} has no address in this node's membership yet; retry")))
        })
    }

    /// A lazily connected channel to a member's client endpoint, shared by every call to it.
    pub fn channel(&self, addr: &str) -> Result<Channel, Unavailable> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Unavailable(format!("bad member address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        if channels.len() >= MAX_CHANNELS {
            channels.clear();
        }
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Copies a request for forwarding, marking it forwarded and keeping its deadline.
pub fn forward<T>(request: &Request<T>, body: T) -> Request<T> {
    let mut req = Request::new(body);
    if let Some(t) = request.metadata().get("grpc-timeout") {
        req.metadata_mut().insert("grpc-timeout", t.clone());
    }
    req.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    req
}
