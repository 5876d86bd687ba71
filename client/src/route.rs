//! Topic routes from the RocketMQ `QueryRoute` call (no nameserver needed: every broker
//! node answers for its group), and a small bounded cache of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftmq_proto::rocketmq::v2 as pb;
use tokio::time::Instant;

use crate::Error;
use crate::conn::Conn;

/// How long a cached route is used before it is asked for again.
const ROUTE_TTL: Duration = Duration::from_secs(30);
/// After a call about a topic failed, its routes are asked for again this often for
/// [`UNSETTLED_FOR`]: a route fetched during an election still names the old leader first,
/// and the next one names the new leader.
const UNSETTLED_TTL: Duration = Duration::from_secs(1);
const UNSETTLED_FOR: Duration = Duration::from_secs(10);
/// Most topics whose routes one client caches.
const MAX_CACHED_ROUTES: usize = 1024;
/// Most queues a route may list.
const MAX_ROUTE_QUEUES: usize = 64 * 1024;

/// One queue of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteQueue {
    /// Queue id.
    pub id: u32,
    /// The broker group serving it.
    pub broker: String,
    /// The group's live members' client endpoints (`host:port`), the leader first.
    pub endpoints: Vec<String>,
    /// What clients may do with it.
    pub permission: pb::Permission,
    /// Message types it accepts.
    pub message_types: Vec<pb::MessageType>,
}

impl RouteQueue {
    /// Whether producers may send to it.
    pub fn writable(&self) -> bool {
        matches!(self.permission, pb::Permission::Write | pb::Permission::ReadWrite)
    }
}

/// Where a topic's queues are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRoute {
    /// Topic.
    pub topic: String,
    /// Its queues, by broker group, then id (queue ids repeat across groups).
    pub queues: Vec<RouteQueue>,
}

impl TopicRoute {
    /// Every endpoint the route names, each once, in order (leaders first per group).
    pub fn endpoints(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for q in &self.queues {
            for e in &q.endpoints {
                if !out.contains(e) {
                    out.push(e.clone());
                }
            }
        }
        out
    }

    /// The queues producers may send to.
    pub fn writable_queues(&self) -> Vec<&RouteQueue> {
        self.queues.iter().filter(|q| q.writable()).collect()
    }

    /// The queues consumers may read.
    pub fn readable_queues(&self) -> Vec<&RouteQueue> {
        self.queues
            .iter()
            .filter(|q| matches!(q.permission, pb::Permission::Read | pb::Permission::ReadWrite))
            .collect()
    }

    /// The broker groups serving the topic, each once, in the order of [`Self::queues`].
    pub fn brokers(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for q in &self.queues {
            if !out.contains(&q.broker.as_str()) {
                out.push(&q.broker);
            }
        }
        out
    }

    /// The client endpoints of broker group `broker` (its leader first), as the first of
    /// its queues naming any lists them; empty when the route does not know the group.
    pub fn broker_endpoints(&self, broker: &str) -> &[String] {
        self.queues
            .iter()
            .find(|q| q.broker == broker && !q.endpoints.is_empty())
            .map_or(&[], |q| q.endpoints.as_slice())
    }
}

/// The `host:port` strings of `e`'s addresses.
pub(crate) fn endpoint_strings(e: Option<&pb::Endpoints>) -> Vec<String> {
    e.map(|e| {
        e.addresses
            .iter()
            .map(|a| {
                if a.host.contains(':') { format!("[{}]:{}", a.host, a.port) } else { format!("{}:{}", a.host, a.port) }
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The access point the client calls, as the protocol sends it along.
fn access_point(endpoint: &str) -> pb::Endpoints {
    let (host, port) = endpoint.rsplit_once(':').unwrap_or((endpoint, "0"));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let scheme = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => pb::AddressScheme::IPv4,
        Ok(std::net::IpAddr::V6(_)) => pb::AddressScheme::IPv6,
        Err(_) => pb::AddressScheme::DomainName,
    };
    pb::Endpoints {
        scheme: scheme as i32,
        addresses: vec![pb::Address { host: host.to_string(), port: port.parse().unwrap_or(0) }],
    }
}

/// Asks `endpoint` once for the route of `topic`.
pub(crate) async fn query_route(
    conn: &Conn,
    endpoint: &str,
    topic: &str,
    timeout: Duration,
) -> Result<TopicRoute, Error> {
    const OP: &str = "query route";
    let body = pb::QueryRouteRequest {
        topic: Some(pb::Resource { resource_namespace: String::new(), name: topic.to_string() }),
        endpoints: Some(access_point(endpoint)),
    };
    let mut client = conn.messaging(endpoint)?;
    let resp = conn.call(OP, endpoint, timeout, client.query_route(conn.request(body, timeout))).await?;
    if resp.status.as_ref().map(|s| s.code) != Some(pb::Code::Ok as i32) {
        return Err(Error::broker(OP, endpoint, resp.status.as_ref()));
    }
    if resp.message_queues.len() > MAX_ROUTE_QUEUES {
        return Err(Error::protocol(OP, endpoint, format!("{} queues in one route", resp.message_queues.len())));
    }
    let mut queues = Vec::with_capacity(resp.message_queues.len());
    for q in resp.message_queues {
        let id = u32::try_from(q.id).map_err(|_| Error::protocol(OP, endpoint, format!("queue id {}", q.id)))?;
        queues.push(RouteQueue {
            id,
            broker: q.broker.as_ref().map(|b| b.name.clone()).unwrap_or_default(),
            endpoints: endpoint_strings(q.broker.as_ref().and_then(|b| b.endpoints.as_ref())),
            permission: pb::Permission::try_from(q.permission).unwrap_or(pb::Permission::Unspecified),
            message_types: q.accept_message_types.iter().filter_map(|t| pb::MessageType::try_from(*t).ok()).collect(),
        });
    }
    queues.sort_by(|a, b| (&a.broker, a.id).cmp(&(&b.broker, b.id)));
    Ok(TopicRoute { topic: topic.to_string(), queues })
}

/// Routes by topic, each kept for a while (briefly after a failure); bounded.
#[derive(Debug, Default)]
pub(crate) struct RouteCache {
    /// Topic → route and when it expires.
    routes: Mutex<HashMap<String, (Arc<TopicRoute>, Instant)>>,
    /// Topic → when a call about it last failed.
    unsettled: Mutex<HashMap<String, Instant>>,
}

impl RouteCache {
    /// The cached route of `topic`, if fresh.
    pub(crate) fn get(&self, topic: &str) -> Option<Arc<TopicRoute>> {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.get(topic).filter(|(_, expires)| *expires > Instant::now()).map(|(r, _)| r.clone())
    }

    pub(crate) fn put(&self, route: TopicRoute) -> Arc<TopicRoute> {
        let failed_lately = {
            let unsettled = self.unsettled.lock().unwrap_or_else(|e| e.into_inner());
            unsettled.get(&route.topic).is_some_and(|at| at.elapsed() < UNSETTLED_FOR)
        };
        let expires = Instant::now() + if failed_lately { UNSETTLED_TTL } else { ROUTE_TTL };
        let route = Arc::new(route);
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if routes.len() >= MAX_CACHED_ROUTES && !routes.contains_key(&route.topic) {
            routes.retain(|_, (_, expires)| *expires > Instant::now());
            if routes.len() >= MAX_CACHED_ROUTES {
                routes.clear();
            }
        }
        routes.insert(route.topic.clone(), (route.clone(), expires));
        route
    }

    /// Drops the route of `topic` (after a failure: the next call asks again).
    pub(crate) fn forget(&self, topic: &str) {
        self.routes.lock().unwrap_or_else(|e| e.into_inner()).remove(topic);
        let mut unsettled = self.unsettled.lock().unwrap_or_else(|e| e.into_inner());
        if unsettled.len() >= MAX_CACHED_ROUTES {
            unsettled.retain(|_, at| at.elapsed() < UNSETTLED_FOR);
            if unsettled.len() >= MAX_CACHED_ROUTES {
                unsettled.clear();
            }
        }
        unsettled.insert(topic.to_string(), Instant::now());
    }

    /// The route of `topic`: cached, or asked of the seed for `attempt`.
    pub(crate) async fn route(
        &self,
        conn: &Conn,
        topic: &str,
        attempt: u32,
        timeout: Duration,
    ) -> Result<Arc<TopicRoute>, Error> {
        if let Some(r) = self.get(topic) {
            return Ok(r);
        }
        let seed = conn.seed(attempt);
        let route = query_route(conn, &seed, topic, timeout).await?;
        if route.queues.is_empty() {
            return Err(Error::protocol("query route", &seed, format!("topic {topic} has no queues")));
        }
        Ok(self.put(route))
    }
}

/// Where attempt `attempt` of a call about `route` goes: the route's endpoints (leader
/// first), then the seeds, in rotation.
pub(crate) fn target(route: &TopicRoute, seeds: &[String], attempt: u32) -> String {
    let mut candidates = route.endpoints();
    for s in seeds {
        if !candidates.contains(s) {
            candidates.push(s.clone());
        }
    }
    crate::conn::rotate(&candidates, attempt)
}

/// Where attempt `attempt` of a call about `queue` goes: the endpoints of the broker group
/// serving it (leader first, then its other members, in rotation); [`target`] when the
/// queue names none.
pub(crate) fn queue_target(route: &TopicRoute, queue: &RouteQueue, seeds: &[String], attempt: u32) -> String {
    match queue.endpoints.len() {
        0 => target(route, seeds, attempt),
        _ => crate::conn::rotate(&queue.endpoints, attempt),
    }
}

/// Where attempt `attempt` of a call about a message held by broker group `broker` goes
/// (an ack, an invisibility change, a transaction's end): that group's endpoints in
/// rotation, leader first; [`target`] when the route does not know the group.
pub(crate) fn broker_target(route: &TopicRoute, broker: &str, seeds: &[String], attempt: u32) -> String {
    match route.broker_endpoints(broker) {
        [] => target(route, seeds, attempt),
        endpoints => crate::conn::rotate(endpoints, attempt),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn queue(id: u32, endpoints: &[&str]) -> RouteQueue {
        RouteQueue {
            id,
            broker: "g".into(),
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            permission: pb::Permission::ReadWrite,
            message_types: vec![pb::MessageType::Normal],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn routes_live_briefly_after_a_failure() {
        let cache = RouteCache::default();
        let route = || TopicRoute { topic: "t".into(), queues: vec![queue(0, &["a:1"])] };
        cache.put(route());
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(cache.get("t").is_some(), "a route lives 30 s");
        cache.forget("t");
        assert!(cache.get("t").is_none());
        cache.put(route());
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert!(cache.get("t").is_none(), "after a failure a route lives 1 s");
        tokio::time::advance(Duration::from_secs(10)).await;
        cache.put(route());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(cache.get("t").is_some(), "10 s after the failure routes live long again");
    }

    #[test]
    fn targets_start_at_the_leader_then_rotate_through_members_and_seeds() {
        let route =
            TopicRoute { topic: "t".into(), queues: vec![queue(0, &["a:1", "b:1"]), queue(1, &["a:1", "b:1"])] };
        let seeds = vec!["b:1".to_string(), "c:1".to_string()];
        let picks: Vec<String> = (0..4).map(|i| target(&route, &seeds, i)).collect();
        assert_eq!(picks, ["a:1", "b:1", "c:1", "a:1"]);
    }

    fn group_queue(broker: &str, id: u32, endpoints: &[&str]) -> RouteQueue {
        RouteQueue { broker: broker.into(), ..queue(id, endpoints) }
    }

    /// broker-a on a:1..a:3 (leader a:1), broker-b on b:1..b:3 (leader b:2), 2 queues each.
    pub(crate) fn two_groups() -> TopicRoute {
        let a = ["a:1", "a:2", "a:3"];
        let b = ["b:2", "b:1", "b:3"];
        let mut queues = vec![
            group_queue("broker-b", 1, &b),
            group_queue("broker-a", 1, &a),
            group_queue("broker-b", 0, &b),
            group_queue("broker-a", 0, &a),
        ];
        queues.sort_by(|x, y| (&x.broker, x.id).cmp(&(&y.broker, y.id)));
        TopicRoute { topic: "t".into(), queues }
    }

    #[test]
    fn two_groups_are_told_apart_by_broker_then_queue() {
        let route = two_groups();
        let order: Vec<(&str, u32)> = route.queues.iter().map(|q| (q.broker.as_str(), q.id)).collect();
        assert_eq!(order, [("broker-a", 0), ("broker-a", 1), ("broker-b", 0), ("broker-b", 1)]);
        assert_eq!(route.brokers(), ["broker-a", "broker-b"]);
        assert_eq!(route.broker_endpoints("broker-b"), ["b:2", "b:1", "b:3"]);
        assert!(route.broker_endpoints("broker-c").is_empty());
    }

    #[test]
    fn calls_about_a_queue_or_a_group_go_to_that_group_leader_first() {
        let route = two_groups();
        let seeds = vec!["b:1".to_string()];
        let b0 = &route.queues[2];
        let picks: Vec<String> = (0..4).map(|i| queue_target(&route, b0, &seeds, i)).collect();
        assert_eq!(picks, ["b:2", "b:1", "b:3", "b:2"]);
        let picks: Vec<String> = (0..4).map(|i| broker_target(&route, "broker-a", &seeds, i)).collect();
        assert_eq!(picks, ["a:1", "a:2", "a:3", "a:1"]);
        // A group the route does not know, or a queue naming no endpoint: as before.
        assert_eq!(broker_target(&route, "broker-c", &seeds, 0), target(&route, &seeds, 0));
        assert_eq!(broker_target(&route, "", &seeds, 4), target(&route, &seeds, 4));
        let bare = group_queue("broker-b", 0, &[]);
        let lonely = TopicRoute { topic: "t".into(), queues: vec![bare.clone()] };
        assert_eq!(queue_target(&lonely, &bare, &seeds, 0), "b:1");
    }

    #[test]
    fn access_points_and_addresses() {
        assert_eq!(access_point("127.0.0.1:8081").scheme, pb::AddressScheme::IPv4 as i32);
        assert_eq!(access_point("[::1]:8081").addresses[0].host, "::1");
        let e = pb::Endpoints {
            scheme: pb::AddressScheme::IPv6 as i32,
            addresses: vec![pb::Address { host: "::1".into(), port: 9 }],
        };
        assert_eq!(endpoint_strings(Some(&e)), ["[::1]:9"]);
    }
}
