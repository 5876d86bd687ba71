//! The nameservers' view of routes for the client service: a bounded per-topic cache of their
//! `QueryRoute` answers, served while fresh, served and refreshed in the background once older
//! than the refresh interval, and dropped once too old to trust.
//!
//! A `QueryRoute` is answered from this view when it has a route for the topic; otherwise (no
//! nameserver configured, none answered and nothing cached, or a topic this group has but the
//! nameservers do not list yet) the node answers from its own Raft view.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use raftmq_proto::namesrv::v1::name_service_client::NameServiceClient;
use raftmq_proto::namesrv::v1::{GroupRoute, QueryRouteRequest};
use raftmq_proto::rocketmq::v2 as pb;
use tonic::Request;
use tonic::transport::Channel;

use super::Broker;
use super::route::{self, address};
use crate::forward::FORWARDED;
use crate::registration::{NamesrvConfigError, nameserver_clients};
use raftmq_machine::types::{MAX_QUEUES, MessageType, Permission, TopicConfig};

/// Most topics whose routes are cached.
pub const MAX_CACHED_TOPICS: usize = 4096;
/// Longest wait for the nameservers' answer to one route query.
pub const QUERY_TIMEOUT: Duration = Duration::from_millis(500);
/// A cached route older than this is not served: the nameservers are asked again, and if none
/// answers the node's own view is used.
pub const MAX_STALE: Duration = Duration::from_secs(10);
/// Most background refreshes running at once.
const MAX_REFRESHES: usize = 64;
/// Most queues one route lists (over all groups); further groups are left out.
const MAX_ROUTE_QUEUES: usize = 16 * 1024;

/// A cached answer: the groups serving a topic (empty: the nameservers know no such topic).
#[derive(Debug)]
struct Cached {
    groups: Arc<[GroupRoute]>,
    fetched: Instant,
    refreshing: bool,
}

/// What the cache holds for a topic.
#[derive(Debug, PartialEq)]
enum Lookup {
    /// Younger than the refresh interval.
    Fresh(Arc<[GroupRoute]>),
    /// Older than the refresh interval, younger than [`MAX_STALE`]; `refresh` is true for the one
    /// caller that must start a refresh.
    Stale { groups: Arc<[GroupRoute]>, refresh: bool },
    /// Not cached, or too old.
    Missing,
}

/// The per-topic cache, IO-free: time is passed in.
#[derive(Debug)]
struct RouteCache {
    entries: HashMap<String, Cached>,
    capacity: usize,
    refresh_after: Duration,
    max_stale: Duration,
    /// No nameserver answered the last query: until then, uncached topics are not asked for.
    unreachable_until: Option<Instant>,
}

impl RouteCache {
    fn new(capacity: usize, refresh_after: Duration, max_stale: Duration) -> Self {
        assert!(capacity > 0, "the route cache needs room for one topic");
        Self { entries: HashMap::new(), capacity, refresh_after, max_stale, unreachable_until: None }
    }

    /// Whether the nameservers failed to answer so recently that asking again is pointless.
    fn unreachable(&self, now: Instant) -> bool {
        self.unreachable_until.is_some_and(|until| now < until)
    }

    /// No nameserver answered at `now`: uncached topics skip asking for one refresh interval.
    fn none_answered(&mut self, now: Instant) {
        self.unreachable_until = Some(now + self.refresh_after);
    }

    fn get(&mut self, topic: &str, now: Instant) -> Lookup {
        let Some(entry) = self.entries.get_mut(topic) else { return Lookup::Missing };
        let age = now.saturating_duration_since(entry.fetched);
        if age < self.refresh_after {
            Lookup::Fresh(entry.groups.clone())
        } else if age < self.max_stale {
            let refresh = !entry.refreshing;
            entry.refreshing = true;
            Lookup::Stale { groups: entry.groups.clone(), refresh }
        } else {
            Lookup::Missing
        }
    }

    /// Stores a fresh answer, evicting the oldest entry when full.
    fn put(&mut self, topic: &str, groups: Arc<[GroupRoute]>, now: Instant) {
        self.unreachable_until = None;
        if !self.entries.contains_key(topic) && self.entries.len() >= self.capacity {
            let oldest = self.entries.iter().min_by_key(|(_, e)| e.fetched).map(|(t, _)| t.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(topic.to_string(), Cached { groups, fetched: now, refreshing: false });
    }

    /// A refresh did not happen (none answered, or too many refreshes ran): the next stale read
    /// may start another.
    fn refresh_failed(&mut self, topic: &str) {
        if let Some(entry) = self.entries.get_mut(topic) {
            entry.refreshing = false;
        }
    }
}

type Clients = Vec<(String, NameServiceClient<Channel>)>;

#[derive(Debug)]
struct ViewInner {
    nameservers: Clients,
    cache: Mutex<RouteCache>,
    refreshes: AtomicUsize,
}

/// Routes as the nameservers see them, cached. Clones share the cache.
#[derive(Debug, Clone, Default)]
pub struct RouteView {
    /// `None`: no nameserver is configured.
    inner: Option<Arc<ViewInner>>,
}

impl RouteView {
    /// A view over `nameservers` (`host:port` each) whose routes are refreshed once older than
    /// `refresh_after`. With no nameserver, every lookup finds nothing.
    pub fn new(nameservers: &[String], refresh_after: Duration) -> Result<Self, NamesrvConfigError> {
        if refresh_after.is_zero() {
            return Err(NamesrvConfigError::ZeroInterval);
        }
        let clients = nameserver_clients(nameservers)?;
        if clients.is_empty() {
            return Ok(Self::default());
        }
        let cache = RouteCache::new(MAX_CACHED_TOPICS, refresh_after, MAX_STALE.max(refresh_after));
        Ok(Self {
            inner: Some(Arc::new(ViewInner {
                nameservers: clients,
                cache: Mutex::new(cache),
                refreshes: AtomicUsize::new(0),
            })),
        })
    }

    /// The groups serving `topic` (empty when the nameservers know none), or `None` when no
    /// nameserver is configured, or none answered (now or within the last refresh interval) and
    /// nothing recent is cached.
    pub async fn lookup(&self, topic: &str) -> Option<Arc<[GroupRoute]>> {
        let inner = self.inner.as_ref()?;
        let found = {
            let mut cache = inner.cache.lock();
            let now = Instant::now();
            match cache.get(topic, now) {
                Lookup::Missing if cache.unreachable(now) => return None,
                found => found,
            }
        };
        match found {
            Lookup::Fresh(groups) => Some(groups),
            Lookup::Stale { groups, refresh } => {
                if refresh {
                    inner.spawn_refresh(topic);
                }
                Some(groups)
            }
            Lookup::Missing => {
                let Some(groups) = fetch(&inner.nameservers, topic).await else {
                    inner.cache.lock().none_answered(Instant::now());
                    return None;
                };
                let groups: Arc<[GroupRoute]> = groups.into();
                inner.cache.lock().put(topic, groups.clone(), Instant::now());
                Some(groups)
            }
        }
    }
}

impl ViewInner {
    fn spawn_refresh(self: &Arc<Self>, topic: &str) {
        if self.refreshes.fetch_add(1, Ordering::Relaxed) >= MAX_REFRESHES {
            self.refreshes.fetch_sub(1, Ordering::Relaxed);
            self.cache.lock().refresh_failed(topic);
            return;
        }
        let inner = self.clone();
        let topic = topic.to_string();
        tokio::spawn(async move {
            match fetch(&inner.nameservers, &topic).await {
                Some(groups) => inner.cache.lock().put(&topic, groups.into(), Instant::now()),
                None => {
                    let mut cache = inner.cache.lock();
                    cache.refresh_failed(&topic);
                    cache.none_answered(Instant::now());
                }
            }
            inner.refreshes.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Asks every nameserver at once; the first answer wins (`NOT_FOUND` is an answer: no group
/// serves the topic). `None` when none answers within [`QUERY_TIMEOUT`].
async fn fetch(nameservers: &Clients, topic: &str) -> Option<Vec<GroupRoute>> {
    let mut calls: FuturesUnordered<_> = nameservers
        .iter()
        .map(|(address, client)| async move {
            let request = QueryRouteRequest { topic: topic.to_string() };
            (address, tokio::time::timeout(QUERY_TIMEOUT, client.clone().query_route(request)).await)
        })
        .collect();
    while let Some((nameserver, outcome)) = calls.next().await {
        match outcome {
            Ok(Ok(response)) => return Some(response.into_inner().groups),
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => return Some(Vec::new()),
            Ok(Err(status)) => tracing::debug!(%nameserver, %topic, %status, "route query failed"),
            Err(_) => tracing::debug!(%nameserver, %topic, "route query timed out"),
        }
    }
    None
}

/// A group's topic configuration as a nameserver reports it (the route carries no permission:
/// read-write is assumed).
fn config_of(route: &GroupRoute) -> Option<TopicConfig> {
    if !(1..=MAX_QUEUES).contains(&route.queue_count) {
        return None;
    }
    let mut message_types: std::collections::BTreeSet<_> =
        route.message_types.iter().filter_map(|t| MessageType::parse(t)).collect();
    if message_types.is_empty() {
        message_types.insert(MessageType::Normal);
    }
    Some(TopicConfig { queue_count: route.queue_count, message_types, permission: Permission::ReadWrite })
}

/// The group as one RocketMQ broker whose endpoints are its live members, in the route's order
/// (leader first); `None` if no member has a usable endpoint.
fn broker_of(route: &GroupRoute) -> Option<pb::Broker> {
    let mut scheme = pb::AddressScheme::Unspecified;
    let mut addresses = Vec::new();
    for (s, a) in route.members.iter().filter_map(|m| address(&m.client_endpoint)) {
        if scheme == pb::AddressScheme::Unspecified {
            scheme = s;
        }
        addresses.push(a);
    }
    if addresses.is_empty() {
        return None;
    }
    Some(pb::Broker {
        name: route.group.clone(),
        id: 0,
        endpoints: Some(pb::Endpoints { scheme: scheme as i32, addresses }),
    })
}

impl Broker {
    /// The queues of the topic a request names, from the nameservers' view: every group serving
    /// it, its live members leader first. This group's queues follow its own applied topic
    /// configuration when it has one. `None` when the node's own view must answer: no route in
    /// the view (no nameserver, none answered, or the topic is unknown to them), or a topic this
    /// group has that the nameservers do not list for it yet (just created).
    pub(super) async fn queues_from_view(&self, resource: Option<&pb::Resource>) -> Option<Vec<pb::MessageQueue>> {
        let topic = route::topic_of(resource).ok()?;
        let groups = self.inner.view.lookup(topic.as_str()).await?;
        let local = self.inner.state.read(|a| a.machine.topic(&topic).cloned());
        let own = self.inner.group.as_str();
        if local.is_some() && !groups.iter().any(|g| g.group == own) {
            return None;
        }
        let mut queues = Vec::new();
        for group in groups.iter() {
            let config = if group.group == own { local.clone().or_else(|| config_of(group)) } else { config_of(group) };
            let (Some(config), Some(broker)) = (config, broker_of(group)) else { continue };
            if queues.len() + config.queue_count as usize > MAX_ROUTE_QUEUES {
                tracing::warn!(%topic, limit = MAX_ROUTE_QUEUES, "the route lists too many queues; groups left out");
                break;
            }
            queues.extend(route::message_queues(&topic, &config, &broker));
        }
        (!queues.is_empty()).then_some(queues)
    }

    /// A `QueryRoute` answered from the nameservers' view, if it can be (see
    /// [`Broker::queues_from_view`]). A call forwarded by a follower is not: the follower found
    /// no usable route there, so this (leading) node answers from its own view.
    pub(super) async fn query_route_from_view(
        &self,
        request: &Request<pb::QueryRouteRequest>,
    ) -> Option<pb::QueryRouteResponse> {
        if request.metadata().get(FORWARDED).is_some() {
            return None;
        }
        let message_queues = self.queues_from_view(request.get_ref().topic.as_ref()).await?;
        Some(pb::QueryRouteResponse { status: Some(super::status::ok()), message_queues })
    }

    /// A `QueryAssignment` answered from the nameservers' view, if it can be (as a `QueryRoute`).
    pub(super) async fn query_assignment_from_view(
        &self,
        request: &Request<pb::QueryAssignmentRequest>,
    ) -> Option<pb::QueryAssignmentResponse> {
        if request.metadata().get(FORWARDED).is_some() {
            return None;
        }
        let queues = self.queues_from_view(request.get_ref().topic.as_ref()).await?;
        Some(pb::QueryAssignmentResponse {
            status: Some(super::status::ok()),
            assignments: queues.into_iter().map(|q| pb::Assignment { message_queue: Some(q) }).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use raftmq_proto::namesrv::v1::MemberEndpoint;

    use super::*;

    fn route(group: &str, endpoints: &[&str]) -> GroupRoute {
        GroupRoute {
            group: group.into(),
            members: endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| MemberEndpoint { node_id: i as u64 + 1, client_endpoint: (*e).into(), leader: i == 0 })
                .collect(),
            queue_count: 4,
            message_types: vec!["FIFO".into(), "NORMAL".into()],
        }
    }

    fn groups(names: &[&str]) -> Arc<[GroupRoute]> {
        names.iter().map(|n| route(n, &["127.0.0.1:1"])).collect::<Vec<_>>().into()
    }

    #[test]
    fn entries_are_fresh_then_stale_once_refreshed_then_missing() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let mut cache = RouteCache::new(8, secs(1), secs(10));
        assert_eq!(cache.get("t", t0), Lookup::Missing);
        cache.put("t", groups(&["a"]), t0);
        assert_eq!(cache.get("t", t0 + Duration::from_millis(999)), Lookup::Fresh(groups(&["a"])));
        // Only the first stale reader starts a refresh.
        assert_eq!(cache.get("t", t0 + secs(2)), Lookup::Stale { groups: groups(&["a"]), refresh: true });
        assert_eq!(cache.get("t", t0 + secs(3)), Lookup::Stale { groups: groups(&["a"]), refresh: false });
        cache.refresh_failed("t");
        assert_eq!(cache.get("t", t0 + secs(4)), Lookup::Stale { groups: groups(&["a"]), refresh: true });
        cache.put("t", groups(&["b"]), t0 + secs(5));
        assert_eq!(cache.get("t", t0 + secs(5)), Lookup::Fresh(groups(&["b"])));
        assert_eq!(cache.get("t", t0 + secs(15)), Lookup::Missing);
    }

    #[test]
    fn after_no_answer_uncached_topics_wait_one_interval() {
        let t0 = Instant::now();
        let mut cache = RouteCache::new(8, Duration::from_secs(1), Duration::from_secs(10));
        assert!(!cache.unreachable(t0));
        cache.none_answered(t0);
        assert!(cache.unreachable(t0 + Duration::from_millis(999)));
        assert!(!cache.unreachable(t0 + Duration::from_secs(1)));
        cache.none_answered(t0);
        cache.put("t", groups(&["a"]), t0);
        assert!(!cache.unreachable(t0), "an answer clears it");
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_the_oldest() {
        let t0 = Instant::now();
        let mut cache = RouteCache::new(2, Duration::from_secs(60), Duration::from_secs(60));
        cache.put("old", groups(&["a"]), t0);
        cache.put("mid", groups(&["a"]), t0 + Duration::from_secs(1));
        cache.put("mid", groups(&["b"]), t0 + Duration::from_secs(2));
        assert_eq!(cache.entries.len(), 2, "replacing an entry evicts nothing");
        cache.put("new", groups(&["a"]), t0 + Duration::from_secs(3));
        assert_eq!(cache.entries.len(), 2);
        assert_eq!(cache.get("old", t0 + Duration::from_secs(3)), Lookup::Missing);
        assert!(matches!(cache.get("mid", t0 + Duration::from_secs(3)), Lookup::Fresh(_)));
        assert!(matches!(cache.get("new", t0 + Duration::from_secs(3)), Lookup::Fresh(_)));
    }

    #[test]
    fn a_group_route_becomes_a_broker_with_its_members_in_order() {
        let r = route("broker-b", &["10.0.0.2:8081", "not an endpoint", "10.0.0.1:8081"]);
        let broker = broker_of(&r).expect("usable endpoints");
        assert_eq!(broker.name, "broker-b");
        let endpoints = broker.endpoints.expect("endpoints");
        assert_eq!(endpoints.scheme, pb::AddressScheme::IPv4 as i32);
        let hosts: Vec<&str> = endpoints.addresses.iter().map(|a| a.host.as_str()).collect();
        assert_eq!(hosts, ["10.0.0.2", "10.0.0.1"]);
        assert_eq!(broker_of(&route("x", &["nope"])), None);

        let config = config_of(&r).expect("valid config");
        assert_eq!(config.queue_count, 4);
        assert_eq!(config.message_types, [MessageType::Normal, MessageType::Fifo].into_iter().collect());
        assert_eq!(config_of(&GroupRoute { queue_count: 0, ..r.clone() }), None);
        assert_eq!(config_of(&GroupRoute { queue_count: MAX_QUEUES + 1, ..r }), None);
    }

    #[tokio::test]
    async fn without_nameservers_nothing_is_found() -> Result<(), NamesrvConfigError> {
        let view = RouteView::new(&[], Duration::from_secs(1))?;
        assert_eq!(view.lookup("t").await, None);
        assert_eq!(RouteView::new(&[], Duration::ZERO).err(), Some(NamesrvConfigError::ZeroInterval));
        Ok(())
    }
}
