//! Membership changes (`ChangeMembers`): add a node, remove one, or replace one, through
//! Raft joint consensus on the leader.
//!
//! A new node joins as a learner and becomes a voter only once it holds the log up to the
//! change and has copied in every retained message ([`crate::raft::backfill`]), as its own
//! status reports: a voter that cannot serve what it acknowledged would weaken every
//! quorum it is part of. Every id that leaves the group is retired in the replicated state
//! (`Applied::retired`) and refused ever after, since the old node's data and votes may
//! still exist on some disk.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::async_runtime::watch::WatchReceiver;
use raftmq_proto::admin::v1 as pb;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::{Admin, PEER_TIMEOUT, forward, forwarded_error, invalid};
use crate::raft::NodeId;
use crate::settings::NodeInfo;

/// How long a new node may take to catch up when the request does not say.
const DEFAULT_CATCH_UP: Duration = Duration::from_secs(600);
/// Longest catch-up a request may ask for.
const MAX_CATCH_UP: Duration = Duration::from_secs(24 * 3600);
/// How often the new node's progress is read while it catches up.
const POLL: Duration = Duration::from_millis(200);
/// How often the wait logs the new node's progress.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// A validated request.
struct Change {
    add: Option<(NodeId, NodeInfo)>,
    remove: Option<NodeId>,
    catch_up: Duration,
}

impl Change {
    fn parse(req: &pb::ChangeMembersRequest) -> Result<Change, Status> {
        let add = match &req.add {
            None => None,
            Some(n) => {
                if n.node_id == 0 {
                    return Err(invalid("node id 0 is not valid; node ids start at 1"));
                }
                for (what, addr) in [("client", &n.client_endpoint), ("raft", &n.raft_endpoint)] {
                    crate::config::check_addr(addr)
                        .map_err(|e| invalid(format!("the new node's {what} endpoint: {e}")))?;
                }
                let info = NodeInfo { raft_addr: n.raft_endpoint.clone(), client_addr: n.client_endpoint.clone() };
                Some((NodeId(n.node_id), info))
            }
        };
        let remove = (req.remove != 0).then_some(NodeId(req.remove));
        if add.is_none() && remove.is_none() {
            return Err(invalid("the change names no node to add and none to remove"));
        }
        if let (Some((new, _)), Some(old)) = (&add, remove)
            && *new == old
        {
            return Err(invalid(format!("node {old} cannot replace itself: a replacement takes a new id")));
        }
        let catch_up = match req.catch_up_timeout_ms {
            0 => DEFAULT_CATCH_UP,
            ms => Duration::from_millis(ms).min(MAX_CATCH_UP),
        };
        Ok(Change { add, remove, catch_up })
    }
}

/// The membership as this leader knows it.
struct Members {
    voters: BTreeSet<NodeId>,
    nodes: BTreeMap<NodeId, NodeInfo>,
    retired: BTreeSet<NodeId>,
}

impl Admin {
    fn members_now(&self) -> Members {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        Members {
            voters: membership.voter_ids().collect(),
            nodes: membership.nodes().map(|(id, info)| (*id, info.clone())).collect(),
            retired: self.state().read(|a| a.retired.clone()),
        }
    }

    /// `ChangeMembers`: forwarded to the leader, which runs one change at a time.
    pub(super) async fn change_members(
        &self,
        request: Request<pb::ChangeMembersRequest>,
    ) -> Result<Response<pb::ChangeMembersResponse>, Status> {
        let req = request.get_ref();
        self.check_group(&req.group)?;
        let change = Change::parse(req)?;
        if let Some((addr, mut client)) = self.leader_client(&request).await? {
            return client.change_members(forward(&request, req.clone())).await.map_err(|s| forwarded_error(&addr, s));
        }
        let _one_at_a_time = self.inner.membership.lock().await;
        self.linearize().await?;
        let group = self.inner.group.clone();
        let now = self.members_now();
        // A retry of a change that was committed (its answer lost) finds it done.
        let added =
            change.add.as_ref().is_none_or(|(id, info)| now.voters.contains(id) && now.nodes.get(id) == Some(info));
        if added && change.remove.is_none_or(|old| now.retired.contains(&old)) {
            return Ok(Response::new(answer(&now)));
        }
        if let Some(old) = change.remove {
            if !now.nodes.contains_key(&old) {
                let why = if now.retired.contains(&old) { "it has already left" } else { "it is not a member" };
                return Err(Status::not_found(format!(
                    "node {old} cannot be removed from group {group}: {why}; the members are {:?}",
                    now.nodes.keys().map(|id| id.0).collect::<Vec<_>>()
                )));
            }
            if change.add.is_none() && now.voters.len() == 1 && now.voters.contains(&old) {
                return Err(Status::failed_precondition(format!(
                    "node {old} is the only voter of group {group}; add another node before removing it"
                )));
            }
        }
        if let Some((id, info)) = &change.add {
            self.admit(*id, info, &now, change.catch_up).await?;
        }
        let mut voters = now.voters.clone();
        if let Some(old) = change.remove {
            voters.remove(&old);
        }
        if let Some((id, _)) = &change.add {
            voters.insert(*id);
        }
        tracing::info!(%group, from = ?now.voters, to = ?voters, "changing the voters");
        let mut changes = vec![ChangeMembers::ReplaceAllVoters(voters.clone())];
        if let Some(old) = change.remove.filter(|old| !now.voters.contains(old)) {
            // A learner (a node whose joining was given up) leaves as a node.
            changes.push(ChangeMembers::RemoveNodes(BTreeSet::from([old])));
        }
        for step in changes {
            self.inner.raft.change_membership(step, false).await.map_err(|e| {
                Status::unavailable(format!(
                    "the membership change of group {group} to voters {voters:?} was not committed: {e}; check \
                     `mqadmin cluster list` and retry"
                ))
            })?;
        }
        Ok(Response::new(answer(&self.members_now())))
    }

    /// Adds `id` as a learner (unless it already is one at the same endpoints) and waits
    /// until it holds the log and every retained message.
    async fn admit(&self, id: NodeId, info: &NodeInfo, now: &Members, wait: Duration) -> Result<(), Status> {
        let group = &self.inner.group;
        if now.retired.contains(&id) {
            return Err(Status::failed_precondition(format!(
                "node id {id} was a member of group {group} before and left; an id is never used twice (its old \
                 data and votes may still exist), so give the new node an id that was never used"
            )));
        }
        if now.voters.contains(&id) {
            return Err(Status::already_exists(format!("node {id} is already a voter of group {group}")));
        }
        match now.nodes.get(&id) {
            Some(known) if known != info => {
                return Err(Status::already_exists(format!(
                    "node {id} is already a learner of group {group} at {known}; remove it first to change its \
                     endpoints"
                )));
            }
            Some(_) => tracing::info!(%id, "node is already a learner; waiting for it to catch up"),
            None => {
                tracing::info!(%id, node = %info, "adding a learner");
                self.inner.raft.add_learner(id, info.clone(), false).await.map_err(|e| {
                    Status::unavailable(format!("cannot add node {id} to group {group} as a learner: {e}; retry"))
                })?;
            }
        }
        self.await_caught_up(id, info, wait).await
    }

    /// Waits until the learner `id` has the log up to what is committed now, has applied
    /// it, and has nothing left to copy in.
    async fn await_caught_up(&self, id: NodeId, info: &NodeInfo, wait: Duration) -> Result<(), Status> {
        let started = Instant::now();
        let deadline = started + wait;
        let target = self.inner.raft.metrics().borrow_watched().local_committed.as_ref().map(|l| l.index());
        let mut last_report = started;
        loop {
            let matched = {
                let metrics = self.inner.raft.metrics();
                let m = metrics.borrow_watched();
                m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map(|l| l.index())
            };
            let status =
                self.ask_peer(id, &info.client_addr, pb::NodeStatusRequest {}, |mut c, r| async move {
                    c.node_status(r).await
                })
                .await;
            let last_seen = match status.map(|s| s.node) {
                Ok(Some(s)) => {
                    let backfilling = s.backfill_from.zip(s.backfill_through);
                    if matched >= target && s.last_applied_index >= target && backfilling.is_none() {
                        tracing::info!(%id, waited = ?started.elapsed(), "the new node holds the log and every retained message");
                        return Ok(());
                    }
                    format!(
                        "holds the log through {}, applied {}, {}",
                        show(matched),
                        show(s.last_applied_index),
                        backfilling.map_or("nothing to copy in".to_string(), |(f, t)| format!(
                            "still copying in records {f}..={t}"
                        ))
                    )
                }
                Ok(None) => "its status answer was empty".to_string(),
                Err(e) => format!("not answering: {}", e.message),
            };
            if last_report.elapsed() >= REPORT_EVERY {
                tracing::info!(%id, target = show(target), progress = %last_seen, "waiting for the new node");
                last_report = Instant::now();
            }
            if Instant::now() + POLL > deadline {
                return Err(Status::deadline_exceeded(format!(
                    "node {id} did not catch up with group {} within {wait:?} (the log through {}): it {last_seen}; \
                     it stays a learner: send the same request to wait again, or remove it",
                    self.inner.group,
                    show(target)
                )));
            }
            tokio::time::sleep(POLL.min(PEER_TIMEOUT)).await;
        }
    }
}

fn answer(m: &Members) -> pb::ChangeMembersResponse {
    pb::ChangeMembersResponse {
        voters: m.voters.iter().map(|id| id.0).collect(),
        retired: m.retired.iter().map(|id| id.0).collect(),
    }
}

fn show(index: Option<u64>) -> String {
    index.map_or_else(|| "-".to_string(), |i| i.to_string())
}
