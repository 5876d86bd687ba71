//! QueryAssignment: a push consumer group's queues balanced over its live members.
//!
//! Push consumers ask every few seconds which queues to read; each reads only those
//! ([`super::receive`] pops from the one queue a push consumer names). The node a consumer
//! asks gathers the group's push consumers from every member of its broker group (clients
//! are registered where they connect), sorts them by client id, and gives each a contiguous
//! share of the route's queues sorted by broker group and queue id (RocketMQ's "averagely"
//! strategy), so every node computes the same assignment from the same members. A member
//! joins when its Telemetry settings or heartbeat arrive and leaves when it says it is
//! terminating or its connection drops ([`crate::sessions::Session::assignable`]); the
//! others take its queues at their next query.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;
use parking_lot::Mutex;
use raftmq_proto::admin::v1 as admin;
use raftmq_proto::admin::v1::admin_service_client::AdminServiceClient;
use raftmq_proto::rocketmq::v2 as pb;
use tonic::Request;

use super::Broker;
use crate::forward::FORWARDED;
use crate::sessions::{self, ClientKind};

/// How long a gathered member list is reused (consumers ask every 5 s each).
const MEMBERS_FRESH: Duration = Duration::from_secs(1);
/// Longest wait for another member's list of clients; one that does not answer in time is
/// left out (its clients reconnect to a live node).
const PEER_TIMEOUT: Duration = Duration::from_millis(500);
/// Most groups whose member lists are cached.
const MAX_CACHED_GROUPS: usize = 4096;

/// A group's push consumers (client ids, sorted) and when they were gathered.
type Gathered = (Instant, Arc<[String]>);

/// Recently gathered push consumers per consumer group.
#[derive(Debug, Default)]
pub struct MemberCache(Mutex<HashMap<String, Gathered>>);

impl MemberCache {
    fn get(&self, group: &str) -> Option<Arc<[String]>> {
        let map = self.0.lock();
        map.get(group).filter(|(at, _)| at.elapsed() < MEMBERS_FRESH).map(|(_, m)| m.clone())
    }

    fn put(&self, group: &str, members: Arc<[String]>) {
        let mut map = self.0.lock();
        if map.len() >= MAX_CACHED_GROUPS && !map.contains_key(group) {
            map.retain(|_, (at, _)| at.elapsed() < MEMBERS_FRESH);
            if map.len() >= MAX_CACHED_GROUPS {
                return;
            }
        }
        map.insert(group.to_string(), (Instant::now(), members));
    }
}

/// The queues of `queues` that member `me` of `members` reads: the queues sorted by broker
/// group and id, split into contiguous shares as even as can be, the first shares one
/// longer; members sorted by id. A member not in `members` is counted in.
pub fn assign(mut queues: Vec<pb::MessageQueue>, members: &[String], me: &str) -> Vec<pb::MessageQueue> {
    let mut members: Vec<&str> = members.iter().map(String::as_str).collect();
    members.push(me);
    members.sort_unstable();
    members.dedup();
    let Some(index) = members.iter().position(|m| *m == me) else { return Vec::new() };
    queues.sort_by(|a, b| {
        let broker = |q: &pb::MessageQueue| q.broker.as_ref().map(|b| b.name.clone()).unwrap_or_default();
        (broker(a), a.id).cmp(&(broker(b), b.id))
    });
    let (n, total) = (members.len(), queues.len());
    let (base, extra) = (total / n, total % n);
    let start = index * base + index.min(extra);
    let len = base + usize::from(index < extra);
    queues.into_iter().skip(start).take(len).collect()
}

impl Broker {
    /// Narrows a `QueryAssignment` answer listing every queue of the topic to the calling
    /// push consumer's share. A call forwarded by another member is answered whole: the
    /// member the consumer called narrows it.
    pub(super) async fn balance(
        &self,
        request_meta: &tonic::metadata::MetadataMap,
        group: Option<&pb::Resource>,
        mut response: pb::QueryAssignmentResponse,
    ) -> pb::QueryAssignmentResponse {
        let ok = response.status.as_ref().is_some_and(|s| s.code == pb::Code::Ok as i32);
        if !ok || request_meta.get(FORWARDED).is_some() {
            return response;
        }
        let (Some(me), Some(group)) = (sessions::client_id(request_meta), group.filter(|g| !g.name.is_empty())) else {
            return response;
        };
        let members = self.push_members(&group.name).await;
        let queues = response.assignments.drain(..).filter_map(|a| a.message_queue).collect();
        response.assignments =
            assign(queues, &members, &me).into_iter().map(|q| pb::Assignment { message_queue: Some(q) }).collect();
        response
    }

    /// The push consumers of `group` taking part in assignment, on every member that answers.
    async fn push_members(&self, group: &str) -> Arc<[String]> {
        if let Some(members) = self.inner.members.get(group) {
            return members;
        }
        let mut ids: Vec<String> = self
            .inner
            .sessions
            .list(Some(group))
            .into_iter()
            .filter(|s| s.group.as_deref() == Some(group) && s.assignable())
            .map(|s| s.client_id)
            .collect();
        let peers: Vec<String> = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow_watched();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.inner.node_id)
                .map(|(_, info)| info.client_addr.clone())
                .collect()
        };
        let asks = peers.iter().map(|addr| self.peer_push_members(addr, group));
        for answer in futures::future::join_all(asks).await {
            match answer {
                Ok(more) => ids.extend(more),
                Err(e) => tracing::debug!(error = %e, group, "a member's clients are left out of queue assignment"),
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let members: Arc<[String]> = ids.into();
        self.inner.members.put(group, members.clone());
        members
    }

    async fn peer_push_members(&self, addr: &str, group: &str) -> Result<Vec<String>, String> {
        let channel = self.channel(addr).map_err(|r| r.message)?;
        let mut request = Request::new(admin::ListClientsRequest { group: group.to_string(), local_only: true });
        request.set_timeout(PEER_TIMEOUT);
        let mut client = AdminServiceClient::new(channel);
        let resp = match tokio::time::timeout(PEER_TIMEOUT, client.list_clients(request)).await {
            Err(_) => return Err(format!("{addr}: no answer within {PEER_TIMEOUT:?}")),
            Ok(Err(s)) => return Err(format!("{addr}: {}", s.message())),
            Ok(Ok(r)) => r.into_inner(),
        };
        Ok(resp
            .clients
            .into_iter()
            .filter(|c| c.assignable && c.group == group && c.kind == ClientKind::PushConsumer.name())
            .map(|c| c.client_id)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(groups: &[(&str, i32)]) -> Vec<pb::MessageQueue> {
        groups
            .iter()
            .flat_map(|(name, count)| {
                (0..*count).map(move |id| pb::MessageQueue {
                    id,
                    broker: Some(pb::Broker { name: name.to_string(), ..Default::default() }),
                    ..Default::default()
                })
            })
            .collect()
    }

    fn ids(qs: &[pb::MessageQueue]) -> Vec<(String, i32)> {
        qs.iter().map(|q| (q.broker.as_ref().map(|b| b.name.clone()).unwrap_or_default(), q.id)).collect()
    }

    #[test]
    fn every_queue_goes_to_exactly_one_member_in_even_shares() {
        for members in 1..=10usize {
            for count in 0..=12 {
                let all = queues(&[("b", count), ("a", 3)]);
                let names: Vec<String> = (0..members).map(|i| format!("client-{i:02}")).collect();
                let mut seen = Vec::new();
                let mut sizes = Vec::new();
                for me in &names {
                    // Each member computes from the list in any order; the shares agree.
                    let mut shuffled = names.clone();
                    shuffled.rotate_left(members / 2);
                    let mine = assign(all.clone(), &shuffled, me);
                    sizes.push(mine.len());
                    seen.extend(ids(&mine));
                }
                seen.sort();
                let mut expected = ids(&all);
                expected.sort();
                assert_eq!(seen, expected, "{members} members, {} queues", all.len());
                let (lo, hi) = (sizes.iter().min().copied(), sizes.iter().max().copied());
                assert!(hi.unwrap_or(0) - lo.unwrap_or(0) <= 1, "shares {sizes:?}");
            }
        }
    }

    #[test]
    fn shares_are_contiguous_in_broker_and_queue_order_and_a_newcomer_counts() {
        let all = queues(&[("b", 2), ("a", 2)]);
        let members = vec!["c1".to_string(), "c2".to_string()];
        assert_eq!(ids(&assign(all.clone(), &members, "c1")), [("a".into(), 0), ("a".into(), 1)]);
        assert_eq!(ids(&assign(all.clone(), &members, "c2")), [("b".into(), 0), ("b".into(), 1)]);
        // A consumer not registered yet counts itself in: three shares of four queues.
        assert_eq!(assign(all.clone(), &members, "c0").len(), 2);
        assert_eq!(assign(all.clone(), &members[..1], "c3").len(), 2);
        // More members than queues: the last ones get nothing.
        let many: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
        assert!(assign(all, &many, "m5").is_empty());
    }
}
