//! The broker registry: the last heartbeat of every live node, and the routes and cluster view derived from it.
//!
//! IO-free: the time of each call is passed in, so tests are exact. A node is live while it has
//! been silent for at most the expiry; reads skip nodes that are not, and [`Registry::expire`]
//! forgets them.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use raftmq_proto::namesrv::v1::{BrokerHeartbeat, GroupRoute, MemberEndpoint, Role, TopicInfo};

use crate::validate::{self, InvalidHeartbeat};

/// How long a node may stay silent before it drops out of routes.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(5);
/// Most broker groups the registry holds.
pub const MAX_GROUPS: usize = 1024;
/// Most nodes one group may have in the registry.
pub const MAX_NODES_PER_GROUP: usize = 16;

/// A broker node's id within its group (ids start at 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a heartbeat did to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// The node was unknown (or had expired) and is now live.
    Registered,
    /// The node's stored heartbeat was replaced.
    Updated,
    /// Older than the stored heartbeat (lower term, or the same term and an earlier timestamp):
    /// ignored, the stored view stays.
    Stale,
}

/// Why a heartbeat was refused; it changes nothing in the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    /// The heartbeat breaks the protocol's rules.
    #[error(transparent)]
    Invalid(#[from] InvalidHeartbeat),
    /// A new group while [`MAX_GROUPS`] groups are live.
    #[error(
        "the nameserver holds {MAX_GROUPS} live broker groups, its limit; group {group:?} is refused \
         until another group's nodes stop heartbeating"
    )]
    TooManyGroups {
        /// The refused group.
        group: String,
    },
    /// A new node while its group has [`MAX_NODES_PER_GROUP`] live nodes.
    #[error(
        "group {group:?} has {MAX_NODES_PER_GROUP} live nodes, the limit; node {node_id} is refused \
         until another node of the group stops heartbeating"
    )]
    TooManyNodes {
        /// The group.
        group: String,
        /// The refused node.
        node_id: NodeId,
    },
}

#[derive(Debug)]
struct Entry {
    heartbeat: BrokerHeartbeat,
    received_at: Instant,
}

impl Entry {
    fn node_id(&self) -> NodeId {
        NodeId(self.heartbeat.node_id)
    }

    fn topic(&self, name: &str) -> Option<&TopicInfo> {
        let topics = &self.heartbeat.topics;
        topics.binary_search_by(|t| t.name.as_str().cmp(name)).ok().map(|i| &topics[i])
    }
}

/// The last heartbeat of every node, by group and node id.
#[derive(Debug)]
pub struct Registry {
    expiry: Duration,
    groups: BTreeMap<String, BTreeMap<NodeId, Entry>>,
}

impl Registry {
    /// An empty registry whose nodes expire after `expiry` of silence.
    pub fn new(expiry: Duration) -> Self {
        assert!(!expiry.is_zero(), "the heartbeat expiry must be positive");
        Self { expiry, groups: BTreeMap::new() }
    }

    /// How long a node may stay silent.
    pub fn expiry(&self) -> Duration {
        self.expiry
    }

    /// Nodes stored, live or not yet expired away.
    pub fn len(&self) -> usize {
        self.groups.values().map(BTreeMap::len).sum()
    }

    /// Whether no node is stored.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    fn is_live(&self, entry: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(entry.received_at) <= self.expiry
    }

    /// Stores `hb`, received at `now`, as its node's latest heartbeat, unless it is invalid,
    /// over the limits, or older than the stored one (see [`Accepted::Stale`]). The heartbeat's
    /// topics are kept sorted by name.
    pub fn heartbeat(&mut self, hb: BrokerHeartbeat, now: Instant) -> Result<Accepted, HeartbeatError> {
        let hb = validate::heartbeat(hb)?;
        let node = NodeId(hb.node_id);
        let expiry = self.expiry;
        if let Some(entry) = self.groups.get_mut(&hb.group).and_then(|nodes| nodes.get_mut(&node)) {
            let live = now.saturating_duration_since(entry.received_at) <= expiry;
            let stored = (entry.heartbeat.term, entry.heartbeat.timestamp_ms);
            // An expired entry is not compared: a node whose clock went back comes back after
            // one expiry instead of never.
            if live && (hb.term, hb.timestamp_ms) < stored {
                return Ok(Accepted::Stale);
            }
            *entry = Entry { heartbeat: hb, received_at: now };
            return Ok(if live { Accepted::Updated } else { Accepted::Registered });
        }
        if !self.has_room(&hb.group) {
            self.expire(now);
            if !self.has_room(&hb.group) {
                return Err(if self.groups.contains_key(&hb.group) {
                    HeartbeatError::TooManyNodes { group: hb.group, node_id: node }
                } else {
                    HeartbeatError::TooManyGroups { group: hb.group }
                });
            }
        }
        let nodes = self.groups.entry(hb.group.clone()).or_default();
        nodes.insert(node, Entry { heartbeat: hb, received_at: now });
        Ok(Accepted::Registered)
    }

    /// Whether a new node of `group` fits, counting stored nodes, live or not.
    fn has_room(&self, group: &str) -> bool {
        match self.groups.get(group) {
            Some(nodes) => nodes.len() < MAX_NODES_PER_GROUP,
            None => self.groups.len() < MAX_GROUPS,
        }
    }

    /// Forgets the nodes silent for longer than the expiry at `now`; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<(String, NodeId)> {
        let expiry = self.expiry;
        let mut gone = Vec::new();
        self.groups.retain(|group, nodes| {
            nodes.retain(|node, entry| {
                let live = now.saturating_duration_since(entry.received_at) <= expiry;
                if !live {
                    gone.push((group.clone(), *node));
                }
                live
            });
            !nodes.is_empty()
        });
        gone
    }

    /// The groups serving `topic` at `now`, sorted by name: every group where a live node's
    /// topic table lists it.
    ///
    /// A route's members are the group's live nodes, the leader first, then by node id. The
    /// leader is the live node reporting [`Role::Leader`] with the highest term (its member has
    /// `leader: true`). When none does, the `leader_id` of the most recently received heartbeat
    /// of the highest term goes first, if that node is live (with `leader: false`, since it has
    /// not said so itself). The queue count and message types come from the first member's topic
    /// table, or if it lacks the topic from the table of the most advanced node listing it
    /// (highest term, then commit index, then the latest received).
    pub fn route(&self, topic: &str, now: Instant) -> Vec<GroupRoute> {
        let mut routes = Vec::new();
        for (group, nodes) in &self.groups {
            let live: Vec<&Entry> = nodes.values().filter(|e| self.is_live(e, now)).collect();
            if !live.iter().any(|e| e.topic(topic).is_some()) {
                continue;
            }
            let (members, reported) = members(live);
            let info = members.first().and_then(|e| e.topic(topic)).or_else(|| {
                members
                    .iter()
                    .filter_map(|e| e.topic(topic).map(|info| (e, info)))
                    .max_by_key(|(e, _)| {
                        (e.heartbeat.term, e.heartbeat.commit_index, e.received_at, Reverse(e.node_id()))
                    })
                    .map(|(_, info)| info)
            });
            let Some(info) = info else { continue };
            routes.push(GroupRoute {
                group: group.clone(),
                members: members
                    .iter()
                    .map(|e| MemberEndpoint {
                        node_id: e.heartbeat.node_id,
                        client_endpoint: e.heartbeat.client_endpoint.clone(),
                        leader: reported == Some(e.node_id()),
                    })
                    .collect(),
                queue_count: info.queue_count,
                message_types: info.message_types.clone(),
            });
        }
        routes
    }

    /// The last heartbeat of each live node at `now`, sorted by group and node id.
    pub fn cluster_view(&self, now: Instant) -> Vec<BrokerHeartbeat> {
        self.groups
            .values()
            .flat_map(BTreeMap::values)
            .filter(|e| self.is_live(e, now))
            .map(|e| e.heartbeat.clone())
            .collect()
    }
}

/// Orders the live nodes of a group (given by node id) leader first; returns them and the node
/// that reported itself leader, if any.
fn members(mut live: Vec<&Entry>) -> (Vec<&Entry>, Option<NodeId>) {
    let reported = live
        .iter()
        .filter(|e| e.heartbeat.role() == Role::Leader)
        .max_by_key(|e| (e.heartbeat.term, e.received_at, Reverse(e.node_id())))
        .map(|e| e.node_id());
    let first = reported.or_else(|| {
        let top_term = live.iter().map(|e| e.heartbeat.term).max()?;
        let latest = live
            .iter()
            .filter(|e| e.heartbeat.term == top_term)
            .max_by_key(|e| (e.received_at, e.heartbeat.timestamp_ms, Reverse(e.node_id())))?;
        let leader = NodeId(latest.heartbeat.leader_id);
        live.iter().any(|e| e.node_id() == leader).then_some(leader)
    });
    if let Some(first) = first {
        // Stable: the others keep their node id order.
        live.sort_by_key(|e| e.node_id() != first);
    }
    (live, reported)
}

#[cfg(test)]
mod tests;
