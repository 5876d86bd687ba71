//! QueryRoute and QueryAssignment: the group is one RocketMQ "broker" whose endpoints are
//! its live members, leader first; topics are created on first use when auto-create is on.

use std::net::IpAddr;
use std::time::Duration;

use openraft::Instant as _;
use openraft::async_runtime::watch::WatchReceiver;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;

use super::Broker;
use super::status::{self, Refusal};
use raftmq_machine::types::{GroupName, MessageType, Permission, TopicConfig, TopicName};
use raftmq_machine::{Command, Response};

/// A follower that acknowledged no heartbeat for this long is left out of routes.
const LIVE_WITHIN: Duration = Duration::from_secs(3);

/// A `host:port` endpoint as a v2 address and its scheme.
pub(super) fn address(addr: &str) -> Option<(pb::AddressScheme, pb::Address)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: i32 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let scheme = match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => pb::AddressScheme::IPv4,
        Ok(IpAddr::V6(_)) => pb::AddressScheme::IPv6,
        Err(_) => pb::AddressScheme::DomainName,
    };
    Some((scheme, pb::Address { host: host.to_string(), port }))
}

fn message_type(t: MessageType) -> pb::MessageType {
    match t {
        MessageType::Normal => pb::MessageType::Normal,
        MessageType::Fifo => pb::MessageType::Fifo,
        MessageType::Delay => pb::MessageType::Delay,
        MessageType::Transaction => pb::MessageType::Transaction,
    }
}

fn permission(p: Permission) -> pb::Permission {
    match p {
        Permission::ReadWrite => pb::Permission::ReadWrite,
        Permission::Read => pb::Permission::Read,
        Permission::Write => pb::Permission::Write,
    }
}

/// The group name of a request's resource, validated.
pub fn group_of(resource: Option<&pb::Resource>) -> Result<GroupName, Refusal> {
    let name = resource.map(|r| r.name.as_str()).unwrap_or_default();
    GroupName::new(name).map_err(|e| Refusal::group(name, e))
}

/// The topic name of a request's resource, validated.
pub fn topic_of(resource: Option<&pb::Resource>) -> Result<TopicName, Refusal> {
    let name = resource.map(|r| r.name.as_str()).unwrap_or_default();
    TopicName::readable(name).map_err(|e| Refusal::topic(name, e))
}

/// The topic a producer writes to: a user topic (dead-letter topics are the broker's).
pub fn write_topic_of(resource: Option<&pb::Resource>) -> Result<TopicName, Refusal> {
    let name = resource.map(|r| r.name.as_str()).unwrap_or_default();
    TopicName::new(name).map_err(|e| Refusal::topic(name, e))
}

/// The queues of `topic` that `broker` (one group) serves, as `config` describes them.
pub(super) fn message_queues(topic: &TopicName, config: &TopicConfig, broker: &pb::Broker) -> Vec<pb::MessageQueue> {
    (0..config.queue_count)
        .map(|id| pb::MessageQueue {
            topic: Some(pb::Resource { resource_namespace: String::new(), name: topic.as_str().to_string() }),
            id: id as i32,
            permission: permission(config.permission) as i32,
            broker: Some(broker.clone()),
            accept_message_types: config.message_types.iter().map(|t| message_type(*t) as i32).collect(),
        })
        .collect()
}

impl Broker {
    /// The client endpoints of the live members, this (leader) node first.
    pub(super) fn live_endpoints(&self) -> pb::Endpoints {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        let mut ids = vec![self.inner.node_id];
        if let Some(hb) = &m.heartbeat {
            for (id, last) in hb {
                if *id != self.inner.node_id && last.as_ref().is_some_and(|t| t.elapsed() < LIVE_WITHIN) {
                    ids.push(*id);
                }
            }
        }
        let mut scheme = pb::AddressScheme::Unspecified;
        let mut addresses = Vec::new();
        for id in ids {
            if let Some((s, a)) = membership.get_node(&id).and_then(|n| address(&n.client_addr)) {
                if scheme == pb::AddressScheme::Unspecified {
                    scheme = s;
                }
                addresses.push(a);
            }
        }
        pb::Endpoints { scheme: scheme as i32, addresses }
    }

    /// The topic's configuration, creating it through Raft if auto-create is on.
    pub(super) async fn ensure_topic(&self, topic: &TopicName) -> Result<TopicConfig, Refusal> {
        if let Some(config) = self.inner.state.read(|a| a.machine.topic(topic).cloned()) {
            return Ok(config);
        }
        if topic.is_dead_letter() {
            return Err(Refusal::new(
                Code::TopicNotFound,
                format!("dead-letter topic {topic} does not exist yet: no message of its group was dead-lettered"),
            ));
        }
        let Some(queues) = self.inner.settings.auto_create_queues else {
            return Err(Refusal::new(
                Code::TopicNotFound,
                format!("topic {topic} does not exist (auto-create is off)"),
            ));
        };
        let config = TopicConfig::all_types(queues);
        let resp = crate::raft::client_write(
            &self.inner.raft,
            Command::UpsertTopic { topic: topic.clone(), config: config.clone() },
        )
        .await
        .map_err(|e| Refusal::unavailable(format!("creating topic {topic}: {e}")))?;
        match resp.data {
            Response::Done => Ok(config),
            Response::Failed(e) => Err(e.into()),
            other => Err(Refusal::unavailable(format!("unexpected answer creating topic {topic}: {other:?}"))),
        }
    }

    fn queues(&self, topic: &TopicName, config: &TopicConfig) -> Vec<pb::MessageQueue> {
        let broker = pb::Broker { name: self.inner.group.clone(), id: 0, endpoints: Some(self.live_endpoints()) };
        message_queues(topic, config, &broker)
    }

    /// The queues of the topic a request names, creating the topic if allowed.
    async fn queues_of(&self, resource: Option<&pb::Resource>) -> Result<Vec<pb::MessageQueue>, Refusal> {
        let topic = topic_of(resource)?;
        let config = self.ensure_topic(&topic).await?;
        Ok(self.queues(&topic, &config))
    }

    pub(super) async fn serve_query_route(&self, req: pb::QueryRouteRequest) -> pb::QueryRouteResponse {
        match self.queues_of(req.topic.as_ref()).await {
            Ok(message_queues) => pb::QueryRouteResponse { status: Some(status::ok()), message_queues },
            Err(r) => pb::QueryRouteResponse { status: Some(r.status()), message_queues: vec![] },
        }
    }

    pub(super) async fn serve_query_assignment(&self, req: pb::QueryAssignmentRequest) -> pb::QueryAssignmentResponse {
        match self.queues_of(req.topic.as_ref()).await {
            Ok(queues) => pb::QueryAssignmentResponse {
                status: Some(status::ok()),
                assignments: queues.into_iter().map(|q| pb::Assignment { message_queue: Some(q) }).collect(),
            },
            Err(r) => pb::QueryAssignmentResponse { status: Some(r.status()), assignments: vec![] },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_schemes() {
        assert_eq!(
            address("127.0.0.1:8081"),
            Some((pb::AddressScheme::IPv4, pb::Address { host: "127.0.0.1".into(), port: 8081 }))
        );
        assert_eq!(address("[::1]:9").map(|a| a.0), Some(pb::AddressScheme::IPv6));
        assert_eq!(address("broker-1:8081").map(|a| a.0), Some(pb::AddressScheme::DomainName));
        assert_eq!(address("nope"), None);
    }
}
