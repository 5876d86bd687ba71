//! Registration with the nameservers: every node heartbeats its group, role, endpoints and topic
//! table to every configured nameserver, each on its own task so a slow or dead nameserver never
//! delays the others or the node.
//!
//! [`heartbeat`] and [`topic_table`] build the message from plain values; [`Registration`] runs
//! the loops (one per nameserver) until it is stopped or dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nameserver::validate::{MAX_TOPICS_PER_HEARTBEAT, check_endpoint};
use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::metrics::RaftMetrics;
use raftmq_proto::namesrv::v1::name_service_client::NameServiceClient;
use raftmq_proto::namesrv::v1::{BrokerHeartbeat, Role, TopicInfo};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::raft::state::StateStore;
use crate::raft::{NodeId, Raft, TypeConfig};
pub use crate::settings::{DEFAULT_CLUSTER, DEFAULT_INTERVAL};
use raftmq_machine::Machine;
use raftmq_machine::types::Permission;

/// Longest time one nameserver call may take (connecting included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Most nameservers a node may be configured with.
pub const MAX_NAMESERVERS: usize = 16;

/// Nameserver settings the node cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamesrvConfigError {
    /// A zero heartbeat interval.
    #[error("the nameserver heartbeat interval is zero; give a positive interval (default 1 s)")]
    ZeroInterval,
    /// More than [`MAX_NAMESERVERS`] addresses.
    #[error("{0} nameservers are configured, the limit is {MAX_NAMESERVERS}")]
    TooMany(usize),
    /// An address that is not `host:port`.
    #[error("nameserver address {address:?} is invalid: {reason}")]
    BadAddress {
        /// The address as configured.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Lazily connected clients of the configured nameservers (`host:port` each), in order.
pub fn nameserver_clients(
    nameservers: &[String],
) -> Result<Vec<(String, NameServiceClient<Channel>)>, NamesrvConfigError> {
    if nameservers.len() > MAX_NAMESERVERS {
        return Err(NamesrvConfigError::TooMany(nameservers.len()));
    }
    nameservers
        .iter()
        .map(|address| {
            let bad = |reason: String| NamesrvConfigError::BadAddress { address: address.clone(), reason };
            check_endpoint("nameserver", address).map_err(|e| bad(e.to_string()))?;
            let endpoint = Endpoint::from_shared(format!("http://{address}"))
                .map_err(|e| bad(e.to_string()))?
                .connect_timeout(CALL_TIMEOUT)
                .timeout(CALL_TIMEOUT)
                .tcp_nodelay(true);
            Ok((address.clone(), NameServiceClient::new(endpoint.connect_lazy())))
        })
        .collect()
}

/// Who a node is, as its heartbeats say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The cluster the group belongs to.
    pub cluster: String,
    /// The Raft group (the broker name in routes).
    pub group: String,
    /// The node's id in its group.
    pub node_id: NodeId,
    /// `host:port` clients connect to.
    pub client_endpoint: String,
    /// `host:port` of the node's Raft service.
    pub raft_endpoint: String,
}

/// The nameserver role of a Raft server state; `None` while the node shuts down.
pub fn role(state: ServerState) -> Option<Role> {
    match state {
        ServerState::Leader => Some(Role::Leader),
        ServerState::Follower => Some(Role::Follower),
        ServerState::Candidate => Some(Role::Candidate),
        ServerState::Learner => Some(Role::Learner),
        ServerState::Shutdown => None,
    }
}

/// RocketMQ's permission bits.
fn perm_bits(p: Permission) -> u32 {
    match p {
        Permission::ReadWrite => 6,
        Permission::Read => 4,
        Permission::Write => 2,
    }
}

/// The applied topic table, by name, cut to the first [`MAX_TOPICS_PER_HEARTBEAT`] topics (a
/// nameserver refuses longer lists); the second value is how many topics were left out.
pub fn topic_table(machine: &Machine) -> (Vec<TopicInfo>, usize) {
    let mut topics = Vec::new();
    let mut left_out = 0;
    for (name, config) in machine.topics() {
        if topics.len() == MAX_TOPICS_PER_HEARTBEAT {
            left_out += 1;
            continue;
        }
        topics.push(TopicInfo {
            name: name.as_str().to_string(),
            queue_count: config.queue_count,
            message_types: config.message_types.iter().map(|t| t.name().to_string()).collect(),
            perm: perm_bits(config.permission),
        });
    }
    (topics, left_out)
}

/// The heartbeat a node sends given its Raft metrics, topic table and clock (Unix ms); `None`
/// while the node shuts down.
pub fn heartbeat(
    me: &Identity,
    m: &RaftMetrics<TypeConfig>,
    topics: Vec<TopicInfo>,
    now_ms: i64,
) -> Option<BrokerHeartbeat> {
    let role = role(m.state)?;
    Some(BrokerHeartbeat {
        cluster: me.cluster.clone(),
        group: me.group.clone(),
        node_id: me.node_id.0,
        role: role as i32,
        term: m.current_term,
        leader_id: m.current_leader.map_or(0, |l| l.0),
        client_endpoint: me.client_endpoint.clone(),
        raft_endpoint: me.raft_endpoint.clone(),
        topics,
        commit_index: m.local_committed.as_ref().map(|id| id.index()),
        last_log_index: m.last_log_index,
        timestamp_ms: now_ms,
    })
}

/// The wall clock in Unix milliseconds (0 before 1970).
fn unix_now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// What changed in a nameserver's reachability after one heartbeat, for logging once per change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// No heartbeat answered yet.
    Unknown,
    /// The last heartbeat was accepted.
    Up,
    /// The last heartbeat failed.
    Down,
}

impl Health {
    /// Records one heartbeat's outcome; logs only when the state changes.
    fn record(&mut self, nameserver: &str, outcome: Result<(), String>) {
        let next = if outcome.is_ok() { Health::Up } else { Health::Down };
        match (*self, &outcome) {
            (Health::Unknown, Ok(())) => tracing::info!(%nameserver, "registered with the nameserver"),
            (Health::Down, Ok(())) => tracing::info!(%nameserver, "the nameserver accepts heartbeats again"),
            (Health::Up | Health::Unknown, Err(error)) => {
                tracing::warn!(%nameserver, %error, "heartbeat to the nameserver failed; retrying every interval")
            }
            (Health::Down, Err(error)) => tracing::debug!(%nameserver, %error, "heartbeat failed again"),
            (Health::Up, Ok(())) => {}
        }
        *self = next;
    }
}

/// What a heartbeat loop needs, shared by the loops of one node.
struct Source {
    me: Identity,
    raft: Raft,
    state: StateStore,
    interval: Duration,
    warned_topics: AtomicBool,
}

impl Source {
    fn heartbeat(&self) -> Option<BrokerHeartbeat> {
        let (topics, left_out) = self.state.read(|a| topic_table(&a.machine));
        if left_out > 0 && !self.warned_topics.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                left_out,
                limit = MAX_TOPICS_PER_HEARTBEAT,
                "the group has more topics than a heartbeat may list; the nameservers do not route the rest"
            );
        }
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        heartbeat(&self.me, &m, topics, unix_now_ms())
    }
}

/// The part of the Raft state whose change is sent at once instead of at the next tick.
fn role_key(m: &RaftMetrics<TypeConfig>) -> (ServerState, u64, Option<NodeId>) {
    (m.state, m.current_term, m.current_leader)
}

/// One nameserver's heartbeat loop: every interval, and at once when the node's role, term or
/// leader changes. Ends when Raft's metrics end (the node stopped) or when aborted.
async fn beat(nameserver: String, client: NameServiceClient<Channel>, source: Arc<Source>) {
    let mut ticker = tokio::time::interval(source.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metrics = source.raft.metrics();
    let mut sent = None;
    let mut health = Health::Unknown;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                if sent == Some(role_key(&metrics.borrow_watched())) {
                    continue;
                }
            }
        }
        let key = role_key(&metrics.borrow_watched());
        let Some(hb) = source.heartbeat() else { continue };
        sent = Some(key);
        let outcome = match tokio::time::timeout(CALL_TIMEOUT, client.clone().heartbeat(hb)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
            Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
        };
        health.record(&nameserver, outcome);
    }
}

/// The running heartbeat loops of one node, one per nameserver; stopped by [`Registration::stop`]
/// or when dropped.
#[derive(Debug)]
pub struct Registration {
    tasks: Vec<JoinHandle<()>>,
}

impl Registration {
    /// Starts heartbeating `me` every `interval` to each of `nameservers` (`host:port`). With no
    /// nameserver it does nothing.
    pub fn start(
        me: Identity,
        nameservers: &[String],
        interval: Duration,
        raft: Raft,
        state: StateStore,
    ) -> Result<Registration, NamesrvConfigError> {
        if interval.is_zero() {
            return Err(NamesrvConfigError::ZeroInterval);
        }
        let clients = nameserver_clients(nameservers)?;
        let source = Arc::new(Source { me, raft, state, interval, warned_topics: AtomicBool::new(false) });
        let tasks =
            clients.into_iter().map(|(address, client)| tokio::spawn(beat(address, client, source.clone()))).collect();
        Ok(Registration { tasks })
    }

    /// Stops every loop (a call in flight is abandoned) and waits for them to end.
    pub async fn stop(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftmq_machine::Command;
    use raftmq_machine::types::{TopicConfig, TopicName};

    #[test]
    fn roles_follow_the_raft_state() {
        assert_eq!(role(ServerState::Leader), Some(Role::Leader));
        assert_eq!(role(ServerState::Follower), Some(Role::Follower));
        assert_eq!(role(ServerState::Candidate), Some(Role::Candidate));
        assert_eq!(role(ServerState::Learner), Some(Role::Learner));
        assert_eq!(role(ServerState::Shutdown), None);
    }

    fn machine_with(topics: &[(&str, TopicConfig)]) -> Machine {
        let mut machine = Machine::new("g");
        for (i, (name, config)) in topics.iter().enumerate() {
            let topic = TopicName::new(name).expect("valid name");
            let command = Command::UpsertTopic { topic, config: config.clone() };
            assert_eq!(machine.apply(raftmq_machine::LogIndex(i as u64 + 1), &command), raftmq_machine::Response::Done);
        }
        machine
    }

    #[test]
    fn the_topic_table_lists_queues_types_and_permission() {
        let read_only = TopicConfig {
            queue_count: 2,
            message_types: [raftmq_machine::types::MessageType::Fifo].into_iter().collect(),
            permission: Permission::Read,
        };
        let machine = machine_with(&[("orders", TopicConfig::all_types(8)), ("audit", read_only)]);
        let (topics, left_out) = topic_table(&machine);
        assert_eq!(left_out, 0);
        assert_eq!(
            topics,
            vec![
                TopicInfo { name: "audit".into(), queue_count: 2, message_types: vec!["FIFO".into()], perm: 4 },
                TopicInfo {
                    name: "orders".into(),
                    queue_count: 8,
                    message_types: vec!["NORMAL".into(), "FIFO".into(), "DELAY".into(), "TRANSACTION".into()],
                    perm: 6,
                },
            ]
        );
    }

    #[test]
    fn the_topic_table_is_bounded() {
        let mut machine = Machine::new("g");
        let extra = 3;
        for i in 0..MAX_TOPICS_PER_HEARTBEAT + extra {
            let topic = TopicName::new(&format!("t{i:05}")).expect("valid name");
            let command = Command::UpsertTopic { topic, config: TopicConfig::all_types(1) };
            assert_eq!(machine.apply(raftmq_machine::LogIndex(i as u64 + 1), &command), raftmq_machine::Response::Done);
        }
        let (topics, left_out) = topic_table(&machine);
        assert_eq!(topics.len(), MAX_TOPICS_PER_HEARTBEAT);
        assert_eq!(left_out, extra);
    }

    #[test]
    fn nameserver_addresses_are_checked() {
        assert!(nameserver_clients(&[]).is_ok_and(|c| c.is_empty()));
        assert!(matches!(
            nameserver_clients(&["localhost".into()]),
            Err(NamesrvConfigError::BadAddress { address, .. }) if address == "localhost"
        ));
        let many: Vec<String> = (0..=MAX_NAMESERVERS).map(|i| format!("h{i}:9876")).collect();
        assert_eq!(nameserver_clients(&many).err(), Some(NamesrvConfigError::TooMany(MAX_NAMESERVERS + 1)));
    }

    #[test]
    fn health_changes_are_tracked() {
        let mut health = Health::Unknown;
        health.record("ns:1", Err("down".into()));
        assert_eq!(health, Health::Down);
        health.record("ns:1", Err("down".into()));
        assert_eq!(health, Health::Down);
        health.record("ns:1", Ok(()));
        assert_eq!(health, Health::Up);
    }
}
