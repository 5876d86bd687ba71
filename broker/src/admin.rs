//! `raftmq.admin.v1.AdminService` on every node's client endpoint, beside the RocketMQ
//! service: topic administration, this node's Raft and log status, the whole group's
//! status gathered from its members, leader transfer, and message queries (`query.rs`,
//! served from this node's own stores).
//!
//! Topic changes are Raft commands, proposed on the leader; a follower forwards the call
//! once to the leader's client endpoint (as the messaging service does) and answers after
//! its own state shows the change, so a list through the same node reads the write.
//! Failures are gRPC status codes with a message saying what to do.

mod members;
mod query;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use raft_log::Log;
use raftmq_proto::admin::v1 as pb;
use raftmq_proto::admin::v1::admin_service_client::AdminServiceClient;
use raftmq_proto::admin::v1::admin_service_server::AdminService;
use raftmq_proto::namesrv::v1::{Role, TopicInfo};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::check_back;
use crate::forward::{Forwarder, Unavailable, forward};
use crate::raft::state::StateStore;
use crate::raft::{NodeId, Raft};
use crate::sessions::Sessions;
use crate::store::Storage;
use raftmq_machine::types::{
    DEFAULT_MAX_ATTEMPTS, GroupConfig, GroupName, MAX_MAX_ATTEMPTS, MAX_QUEUES, MessageType, Permission, TopicConfig,
    TopicName,
};
use raftmq_machine::{Command, CommandError, LogIndex, Machine, QueueId, QueueOffset, Response as Applied, Slot};

/// Queues of a topic created without a queue count, unless the node's settings say otherwise.
pub const DEFAULT_QUEUES: u32 = 8;
/// How long ClusterStatus waits for each member's answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long TransferLeader waits for the leadership to move.
const TRANSFER_WAIT: Duration = Duration::from_secs(5);
/// A transfer target that acknowledged no heartbeat for this long is refused as down.
const TARGET_LIVE_WITHIN: Duration = Duration::from_secs(3);
/// How long a follower waits to apply a write it forwarded before answering anyway.
const FORWARDED_APPLY_WAIT: Duration = Duration::from_secs(2);
/// Most message types one request may name.
const MAX_MESSAGE_TYPES: usize = 8;
/// Most message queries one node runs at a time; more wait their turn.
const MAX_CONCURRENT_QUERIES: usize = 4;
/// Longest group or topic name a client listing takes (names are at most 127 characters).
const MAX_NAME_BYTES: usize = 256;

/// The admin service of one node.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

struct Inner {
    group: String,
    node_id: NodeId,
    raft: Raft,
    /// The applied state, the log as messages are read from it, the derived stores.
    storage: Storage,
    log: Log,
    forwarder: Forwarder,
    default_queues: u32,
    queries: tokio::sync::Semaphore,
    /// Serializes topic writes on this node, so "exists?" and the proposal that follows
    /// are not interleaved with another admin write.
    writes: tokio::sync::Mutex<()>,
    /// Serializes membership changes (apart from topic writes: a change may wait minutes
    /// for a new node to catch up).
    membership: tokio::sync::Mutex<()>,
    /// This node's live clients.
    sessions: Sessions,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").field("group", &self.inner.group).field("node", &self.inner.node_id).finish()
    }
}

/// Entries read per step of a digest.
const DIGEST_STEP: u64 = 1024;

/// CRC32C over each entry's index, term and encoded bytes in `[from, to)`, and the entry count.
fn log_digest(log: &Log, from: u64, to: u64) -> Result<(u32, u64), Status> {
    let (mut crc, mut entries, mut at) = (0u32, 0u64, from);
    while at < to {
        let end = to.min(at.saturating_add(DIGEST_STEP));
        let records =
            log.read(at, end).map_err(|e| Status::internal(format!("cannot read log entries [{at}, {end}): {e}")))?;
        for r in &records {
            crc = crc32c::crc32c_append(crc, &r.index.to_le_bytes());
            crc = crc32c::crc32c_append(crc, &r.term.to_le_bytes());
            crc = crc32c::crc32c_append(crc, &r.payload);
            entries += 1;
        }
        if records.len() as u64 != end - at {
            return Err(Status::internal(format!("log entries [{at}, {end}) read back {} records", records.len())));
        }
        at = end;
    }
    Ok((crc, entries))
}

fn unavailable(e: Unavailable) -> Status {
    Status::unavailable(e.0)
}

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

fn topic_name(name: &str) -> Result<TopicName, Status> {
    TopicName::new(name).map_err(|e| invalid(format!("topic {name:?}: {e}")))
}

/// A topic to read, query or delete: a user topic or a dead-letter topic.
fn any_topic_name(name: &str) -> Result<TopicName, Status> {
    TopicName::readable(name).map_err(|e| invalid(format!("topic {name:?}: {e}")))
}

fn queue_count(n: u32) -> Result<u32, Status> {
    if n == 0 || n > MAX_QUEUES {
        return Err(invalid(format!("queue count {n} is outside 1..={MAX_QUEUES}")));
    }
    Ok(n)
}

/// Parses message type names ("NORMAL", "FIFO", "DELAY", "TRANSACTION", any case).
fn message_types(names: &[String]) -> Result<BTreeSet<MessageType>, Status> {
    if names.len() > MAX_MESSAGE_TYPES {
        return Err(invalid(format!("{} message types given, the limit is {MAX_MESSAGE_TYPES}", names.len())));
    }
    names
        .iter()
        .map(|n| {
            MessageType::parse(n)
                .ok_or_else(|| invalid(format!("unknown message type {n:?}; use NORMAL, FIFO, DELAY or TRANSACTION")))
        })
        .collect()
}

/// Parses RocketMQ permission bits (4 = read, 2 = write; 1, "inherit", is ignored).
fn permission(perm: u32) -> Result<Permission, Status> {
    if perm & !7 != 0 {
        return Err(invalid(format!("permission {perm} has bits other than 4 (read) and 2 (write)")));
    }
    match (perm & 4 != 0, perm & 2 != 0) {
        (true, true) => Ok(Permission::ReadWrite),
        (true, false) => Ok(Permission::Read),
        (false, true) => Ok(Permission::Write),
        (false, false) => Err(invalid(format!("permission {perm} allows neither read (4) nor write (2)"))),
    }
}

fn group_name(name: &str) -> Result<GroupName, Status> {
    GroupName::new(name).map_err(|e| invalid(format!("consumer group {name:?}: {e}")))
}

fn progress_of(p: raftmq_machine::QueueProgress) -> pb::QueueProgress {
    pb::QueueProgress {
        topic: p.topic.to_string(),
        queue: p.queue.0,
        broker_offset: p.max_offset,
        consumer_offset: p.consumer_offset(),
        inflight: p.inflight as u64,
        ready: p.ready(),
        lag: p.lag(),
        min_offset: p.min_offset,
    }
}

/// Where a reset moves each queue of `topic`: its first offset, its end, or the first
/// message its ConsumeQueue says was stored at or after a time (store times only grow
/// within a queue, so a binary search finds it).
fn reset_targets(
    storage: &Storage,
    topic: &TopicName,
    to: pb::reset_offset_request::To,
) -> Result<Vec<(QueueId, QueueOffset)>, Status> {
    use pb::reset_offset_request::To;
    let queues: Vec<(QueueId, u64, u64)> = storage
        .state
        .read(|a| {
            let count = a.machine.topic(topic)?.queue_count;
            Some(
                (0..count)
                    .filter_map(|q| {
                        a.machine.queue(topic, QueueId(q)).map(|x| (QueueId(q), x.min_offset(), x.max_offset()))
                    })
                    .collect(),
            )
        })
        .ok_or_else(|| Status::not_found(format!("topic {topic} does not exist")))?;
    let mut out = Vec::with_capacity(queues.len());
    for (queue, min, max) in queues {
        let offset = match to {
            To::Earliest(_) => min,
            To::Latest(_) => max,
            To::TimestampMs(t) => {
                let (mut lo, mut hi) = (min, max);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    let stored = storage
                        .stores
                        .record(topic, queue, QueueOffset(mid))
                        .map_err(|e| {
                            Status::unavailable(format!("reading the ConsumeQueue of {topic}:{}: {e}; retry", queue.0))
                        })?
                        .map(|r| r.store_time.0);
                    // Not dispatched yet: stored after any time asked.
                    if stored.is_none_or(|s| s >= t) {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                lo
            }
        };
        out.push((queue, QueueOffset(offset)));
    }
    Ok(out)
}

/// The wire form of a topic's configuration.
pub fn topic_info(name: &TopicName, config: &TopicConfig) -> TopicInfo {
    TopicInfo {
        name: name.as_str().to_string(),
        queue_count: config.queue_count,
        message_types: config.message_types.iter().map(|t| t.name().to_string()).collect(),
        perm: match config.permission {
            Permission::ReadWrite => 6,
            Permission::Read => 4,
            Permission::Write => 2,
        },
    }
}

fn command_error(e: CommandError) -> Status {
    match e {
        CommandError::TopicNotFound(_) => Status::not_found(e.to_string()),
        CommandError::BadConfig(_) | CommandError::QueueNotFound { .. } | CommandError::InvalidReceipt(_) => {
            invalid(e.to_string())
        }
        CommandError::NotPermitted(_) => Status::failed_precondition(e.to_string()),
        CommandError::TopicChanged(_) => Status::unavailable(e.to_string()),
        CommandError::LimitReached(_) => Status::resource_exhausted(e.to_string()),
        CommandError::Damaged(_) => Status::data_loss(e.to_string()),
        CommandError::StalePlan(_) => Status::aborted(e.to_string()),
    }
}

/// A leader's answer passed on by a follower; transport failures say where they happened.
impl Admin {
    /// Waits until this leader's state machine has applied everything committed before now,
    /// so checks against the topic table do not read a new leader's stale state.
    async fn linearize(&self) -> Result<(), Status> {
        self.inner.raft.ensure_linearizable(openraft::ReadPolicy::ReadIndex).await.map(|_| ()).map_err(|e| {
            Status::unavailable(format!("cannot confirm the leadership of node {}: {e}; retry", self.inner.node_id))
        })
    }
}

fn forwarded_error(addr: &str, s: Status) -> Status {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            Status::unavailable(format!("forwarding to the leader at {addr} failed: {}; retry", s.message()))
        }
        _ => s,
    }
}

fn role(state: ServerState) -> Role {
    match state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Unspecified,
    }
}

impl Admin {
    /// The admin service of node `node_id` of `group`. `storage` is the node's state and
    /// stores (shared with the messaging service), `log` its CommitLog; `forwarder` finds
    /// the leader and holds the member channels; `default_queues` is the queue count of a
    /// topic created without one.
    pub fn new(
        group: &str,
        raft: Raft,
        storage: Storage,
        log: Log,
        forwarder: Forwarder,
        default_queues: u32,
        sessions: Sessions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                group: group.to_string(),
                node_id: forwarder.node_id(),
                sessions,
                raft,
                storage,
                log,
                forwarder,
                default_queues: default_queues.clamp(1, MAX_QUEUES),
                queries: tokio::sync::Semaphore::new(MAX_CONCURRENT_QUERIES),
                writes: tokio::sync::Mutex::new(()),
                membership: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// `None` when this node leads, else an admin client on the leader's client endpoint.
    async fn leader_client<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<(String, AdminServiceClient<Channel>)>, Status> {
        match self.inner.forwarder.leader_endpoint(request, None).await.map_err(unavailable)? {
            None => Ok(None),
            Some((_, addr)) => {
                let channel = self.inner.forwarder.channel(&addr).map_err(unavailable)?;
                Ok(Some((addr, AdminServiceClient::new(channel))))
            }
        }
    }

    fn state(&self) -> &StateStore {
        &self.inner.storage.state
    }

    fn topic(&self, topic: &TopicName) -> Option<TopicConfig> {
        self.state().read(|a| a.machine.topic(topic).cloned())
    }

    async fn propose(&self, command: Command) -> Result<(), Status> {
        let what = command.to_string();
        let resp = crate::raft::client_write(&self.inner.raft, command)
            .await
            .map_err(|e| Status::unavailable(format!("{what} was not committed: {e}; retry")))?;
        match resp.data {
            Applied::Done => Ok(()),
            Applied::Failed(e) => Err(command_error(e)),
            other => Err(Status::internal(format!("unexpected answer to {what}: {other:?}"))),
        }
    }

    /// After a forwarded write: waits (bounded) until this node's state satisfies `done`.
    async fn await_local(&self, done: impl Fn(&Machine) -> bool) {
        let deadline = Instant::now() + FORWARDED_APPLY_WAIT;
        let signal = self.state().applied_signal().clone();
        loop {
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state().read(|a| done(&a.machine)) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::debug!(node = self.inner.node_id.0, "forwarded topic change not applied here yet");
                return;
            }
        }
    }

    /// This node's own status.
    pub fn node_status(&self) -> pb::NodeStatus {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        let view = self.inner.log.view();
        let pending = self.state().backfill().and_then(|b| b.pending());
        let retired = self.state().read(|a| a.retired.iter().map(|id| id.0).collect());
        let me = m
            .membership_config
            .membership()
            .get_node(&self.inner.node_id)
            .cloned()
            .unwrap_or_else(|| self.inner.forwarder.configured().clone());
        pb::NodeStatus {
            group: self.inner.group.clone(),
            node_id: self.inner.node_id.0,
            role: role(m.state) as i32,
            term: m.current_term,
            leader_id: m.current_leader.map_or(0, |l| l.0),
            commit_index: m.local_committed.as_ref().map(|l| l.index()),
            last_log_index: view.last.map(|(index, _)| index).or(m.last_log_index),
            last_applied_index: m.last_applied.as_ref().map(|l| l.index()),
            purged_index: view.purged.map(|p| p.index).or(m.purged.as_ref().map(|l| l.index())),
            client_endpoint: me.client_addr,
            raft_endpoint: me.raft_addr,
            backfill_from: pending.map(|p| p.from),
            backfill_through: pending.map(|p| p.through),
            retired,
        }
    }

    /// The group's members with their client endpoints.
    fn members(&self) -> Vec<(NodeId, String)> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        m.membership_config.membership().nodes().map(|(id, info)| (*id, info.client_addr.clone())).collect()
    }

    /// This node's live clients of `group` (a consumer group or a topic; empty: all).
    fn local_clients(&self, group: &str) -> Vec<pb::ClientInfo> {
        let group = Some(group).filter(|g| !g.is_empty());
        self.inner
            .sessions
            .list(group)
            .into_iter()
            .map(|s| pb::ClientInfo {
                assignable: s.assignable(),
                client_id: s.client_id,
                kind: s.kind.name().to_string(),
                group: s.group.unwrap_or_default(),
                topics: s.topics.into_iter().collect(),
                address: s.address.map(|a| a.to_string()).unwrap_or_default(),
                agent: s.agent,
                node_id: self.inner.node_id.0,
                idle_ms: s.last_seen.elapsed().as_millis() as u64,
                telemetry: s.telemetry,
            })
            .collect()
    }

    /// Asks member `id` at `addr` one admin call (`call` on a client, with [`PEER_TIMEOUT`]);
    /// any failure becomes a [`pb::PeerError`] naming the member.
    async fn ask_peer<Req, Resp, Fut>(
        &self,
        id: NodeId,
        addr: &str,
        body: Req,
        call: impl FnOnce(AdminServiceClient<Channel>, Request<Req>) -> Fut,
    ) -> Result<Resp, pb::PeerError>
    where
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let fail = |message: String| pb::PeerError { node_id: id.0, message };
        let channel = self.inner.forwarder.channel(addr).map_err(|e| fail(e.0))?;
        let mut request = Request::new(body);
        request.set_timeout(PEER_TIMEOUT);
        match tokio::time::timeout(PEER_TIMEOUT, call(AdminServiceClient::new(channel), request)).await {
            Err(_) => Err(fail(format!("{addr}: deadline exceeded after {PEER_TIMEOUT:?}"))),
            Ok(Err(s)) => Err(fail(format!("{addr}: {}", s.message()))),
            Ok(Ok(resp)) => Ok(resp.into_inner()),
        }
    }

    async fn peer_clients(
        &self,
        id: NodeId,
        addr: String,
        group: String,
    ) -> Result<Vec<pb::ClientInfo>, pb::PeerError> {
        let body = pb::ListClientsRequest { group, local_only: true };
        let resp = self.ask_peer(id, &addr, body, |mut c, r| async move { c.list_clients(r).await }).await?;
        Ok(resp.clients)
    }

    async fn peer_status(&self, id: NodeId, addr: String) -> Result<pb::NodeStatus, pb::PeerError> {
        let resp = self
            .ask_peer(id, &addr, pb::NodeStatusRequest {}, |mut c, r| async move { c.node_status(r).await })
            .await?;
        resp.node
            .ok_or_else(|| pb::PeerError { node_id: id.0, message: format!("{addr}: the answer carried no status") })
    }

    /// Waits until `to` leads (as this node sees it), up to `TRANSFER_WAIT`.
    async fn await_leader(&self, to: NodeId) -> Result<(), Status> {
        let mut rx = self.inner.raft.metrics();
        let wait = async {
            loop {
                if rx.borrow_watched().current_leader == Some(to) {
                    return Ok(());
                }
                if rx.changed().await.is_err() {
                    return Err(Status::unavailable("this node is shutting down"));
                }
            }
        };
        match tokio::time::timeout(TRANSFER_WAIT, wait).await {
            Ok(r) => r,
            Err(_) => {
                let now = self.inner.raft.metrics().borrow_watched().current_leader;
                Err(Status::deadline_exceeded(format!(
                    "leadership did not move to node {to} within {TRANSFER_WAIT:?} (leader now: {}); check that \
                     node {to} is up and caught up, then retry",
                    now.map_or_else(|| "none".to_string(), |l| format!("node {l}"))
                )))
            }
        }
    }

    /// Refuses a request for another broker group (empty: this node's).
    fn check_group(&self, group: &str) -> Result<(), Status> {
        if group.is_empty() || group == self.inner.group {
            return Ok(());
        }
        Err(invalid(format!(
            "this node belongs to broker group {:?}, not {:?}; ask a node of that group",
            self.inner.group, group
        )))
    }

    /// On the leader: refuses a target that has not acknowledged it lately.
    fn check_target_live(&self, to: NodeId) -> Result<(), Status> {
        if crate::raft::heard_from_within(&self.inner.raft.metrics().borrow_watched(), to, TARGET_LIVE_WITHIN) {
            Ok(())
        } else {
            Err(Status::unavailable(format!(
                "node {to} has not answered the leader for {TARGET_LIVE_WITHIN:?}; it is down or unreachable, so \
                 leadership stays where it is"
            )))
        }
    }
}

/// What a create or update asks for, validated.
struct TopicChange {
    topic: TopicName,
    queue_count: Option<u32>,
    message_types: Option<BTreeSet<MessageType>>,
    permission: Option<Permission>,
}

impl TopicChange {
    fn parse(name: &str, queues: Option<u32>, types: &[String], perm: Option<u32>) -> Result<Self, Status> {
        Ok(Self {
            topic: topic_name(name)?,
            queue_count: queues.map(queue_count).transpose()?,
            message_types: if types.is_empty() { None } else { Some(message_types(types)?) },
            permission: perm.map(permission).transpose()?,
        })
    }

    fn apply_to(&self, mut config: TopicConfig) -> TopicConfig {
        if let Some(n) = self.queue_count {
            config.queue_count = n;
        }
        if let Some(t) = &self.message_types {
            config.message_types = t.clone();
        }
        if let Some(p) = self.permission {
            config.permission = p;
        }
        config
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let req = request.get_ref();
        let change = TopicChange::parse(
            &req.topic,
            (req.queue_count != 0).then_some(req.queue_count),
            &req.message_types,
            (req.perm != 0).then_some(req.perm),
        )?;
        if let Some((addr, mut leader)) = self.leader_client(&request).await? {
            let resp =
                leader.create_topic(forward(&request, req.clone())).await.map_err(|s| forwarded_error(&addr, s))?;
            self.await_local(|m| m.topic(&change.topic).is_some()).await;
            return Ok(resp);
        }
        let _serial = self.inner.writes.lock().await;
        self.linearize().await?;
        if self.topic(&change.topic).is_some() {
            return Err(Status::already_exists(format!(
                "topic {} already exists; use update to change it",
                change.topic
            )));
        }
        let config = change.apply_to(TopicConfig::all_types(self.inner.default_queues));
        self.propose(Command::UpsertTopic { topic: change.topic.clone(), config: config.clone() }).await?;
        tracing::info!(topic = %change.topic, queues = config.queue_count, "topic created");
        Ok(Response::new(pb::CreateTopicResponse { topic: Some(topic_info(&change.topic, &config)) }))
    }

    async fn update_topic(
        &self,
        request: Request<pb::UpdateTopicRequest>,
    ) -> Result<Response<pb::UpdateTopicResponse>, Status> {
        let req = request.get_ref();
        let change = TopicChange::parse(&req.topic, req.queue_count, &req.message_types, req.perm)?;
        if let Some((addr, mut leader)) = self.leader_client(&request).await? {
            let resp =
                leader.update_topic(forward(&request, req.clone())).await.map_err(|s| forwarded_error(&addr, s))?;
            let wanted = resp.get_ref().topic.clone();
            self.await_local(|m| m.topic(&change.topic).map(|c| topic_info(&change.topic, c)) == wanted).await;
            return Ok(resp);
        }
        let _serial = self.inner.writes.lock().await;
        self.linearize().await?;
        let current = self
            .topic(&change.topic)
            .ok_or_else(|| Status::not_found(format!("topic {} does not exist; create it first", change.topic)))?;
        if change.queue_count.is_some_and(|n| n < current.queue_count) {
            return Err(invalid(format!(
                "topic {} has {} queues; the queue count can only grow",
                change.topic, current.queue_count
            )));
        }
        let config = change.apply_to(current);
        self.propose(Command::UpsertTopic { topic: change.topic.clone(), config: config.clone() }).await?;
        tracing::info!(topic = %change.topic, queues = config.queue_count, "topic updated");
        Ok(Response::new(pb::UpdateTopicResponse { topic: Some(topic_info(&change.topic, &config)) }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let req = request.get_ref();
        let topic = any_topic_name(&req.topic)?;
        if let Some((addr, mut leader)) = self.leader_client(&request).await? {
            let resp =
                leader.delete_topic(forward(&request, req.clone())).await.map_err(|s| forwarded_error(&addr, s))?;
            self.await_local(|m| m.topic(&topic).is_none()).await;
            return Ok(resp);
        }
        let _serial = self.inner.writes.lock().await;
        self.linearize().await?;
        self.propose(Command::DeleteTopic { topic: topic.clone() }).await?;
        tracing::info!(%topic, "topic deleted");
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        _request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let topics = self.state().read(|a| a.machine.topics().map(|(n, c)| topic_info(n, c)).collect());
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn node_status(
        &self,
        _request: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusResponse>, Status> {
        Ok(Response::new(pb::NodeStatusResponse { node: Some(Admin::node_status(self)) }))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let req = request.get_ref();
        self.check_group(&req.group)?;
        let to = NodeId(req.to_node);
        let leader = self.inner.forwarder.leader().await.map_err(unavailable)?;
        if leader == to {
            return Ok(Response::new(pb::TransferLeaderResponse {}));
        }
        // The leader judges the target: a follower may not have applied the membership yet.
        if let Some((addr, mut client)) = self.leader_client(&request).await? {
            let resp =
                client.transfer_leader(forward(&request, req.clone())).await.map_err(|s| forwarded_error(&addr, s))?;
            self.await_leader(to).await?;
            return Ok(resp);
        }
        let voters: BTreeSet<NodeId> =
            self.inner.raft.metrics().borrow_watched().membership_config.membership().voter_ids().collect();
        if !voters.contains(&to) {
            return Err(invalid(format!(
                "node {to} is not a voter of group {}; its voters are {voters:?}",
                self.inner.group
            )));
        }
        self.check_target_live(to)?;
        tracing::info!(group = %self.inner.group, from = %self.inner.node_id, to = %to, "transferring leadership");
        self.inner
            .raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| Status::unavailable(format!("raft on node {} has stopped: {e}", self.inner.node_id)))?;
        self.await_leader(to).await?;
        Ok(Response::new(pb::TransferLeaderResponse {}))
    }

    async fn change_members(
        &self,
        request: Request<pb::ChangeMembersRequest>,
    ) -> Result<Response<pb::ChangeMembersResponse>, Status> {
        Admin::change_members(self, request).await
    }

    async fn cluster_status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let members = self.members();
        let mut nodes = vec![Admin::node_status(self)];
        let peers = members
            .into_iter()
            .filter(|(id, _)| *id != self.inner.node_id)
            .map(|(id, addr)| self.peer_status(id, addr));
        let mut unreachable = Vec::new();
        for answer in futures::future::join_all(peers).await {
            match answer {
                Ok(status) => nodes.push(status),
                Err(e) => unreachable.push(e),
            }
        }
        nodes.sort_by_key(|n| n.node_id);
        Ok(Response::new(pb::ClusterStatusResponse { nodes, unreachable }))
    }

    async fn upsert_group(
        &self,
        request: Request<pb::UpsertGroupRequest>,
    ) -> Result<Response<pb::UpsertGroupResponse>, Status> {
        let req = request.get_ref();
        let config = req.config.as_ref().ok_or_else(|| invalid("name the group and its configuration"))?;
        let group = group_name(&config.group)?;
        if let Some((addr, mut leader)) = self.leader_client(&request).await? {
            return leader.upsert_group(forward(&request, req.clone())).await.map_err(|s| forwarded_error(&addr, s));
        }
        let max_attempts = match config.max_attempts {
            0 => DEFAULT_MAX_ATTEMPTS,
            n if n > MAX_MAX_ATTEMPTS => {
                return Err(invalid(format!("max attempts {n} is more than {MAX_MAX_ATTEMPTS}")));
            }
            n => n,
        };
        let _serial = self.inner.writes.lock().await;
        let applied = GroupConfig { fifo: config.fifo, max_attempts };
        self.propose(Command::UpsertGroup { group: group.clone(), config: applied }).await?;
        tracing::info!(%group, fifo = config.fifo, max_attempts, "consumer group configured");
        Ok(Response::new(pb::UpsertGroupResponse {}))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        // Read on the leader once it has applied everything committed: a group configured
        // just before is listed.
        if let Some((addr, mut leader)) = self.leader_client(&request).await? {
            let body = *request.get_ref();
            return leader.list_groups(forward(&request, body)).await.map_err(|s| forwarded_error(&addr, s));
        }
        self.linearize().await?;
        let groups = self.state().read(|a| {
            a.machine
                .groups()
                .iter()
                .map(|(g, c)| pb::GroupConfig { group: g.to_string(), fifo: c.fifo, max_attempts: c.max_attempts })
                .collect()
        });
        Ok(Response::new(pb::ListGroupsResponse { groups }))
    }

    async fn check_back_transaction(
        &self,
        request: Request<pb::CheckBackTransactionRequest>,
    ) -> Result<Response<pb::CheckBackTransactionResponse>, Status> {
        let req = request.into_inner();
        let key = (LogIndex(req.log_index), Slot(req.slot));
        let born = self.inner.storage.state.read(|a| a.machine.transactions().get(&key).map(|o| o.born));
        let Some(born) = born else {
            return Err(Status::not_found(format!(
                "the transaction of message {} in log entry {} is not open on this member",
                req.slot, req.log_index
            )));
        };
        let store_host = self.inner.forwarder.me().client_addr;
        let sent =
            check_back::send_here(&self.inner.storage, &self.inner.sessions, &self.inner.group, &store_host, key, born)
                .await
                .map_err(Status::internal)?;
        Ok(Response::new(pb::CheckBackTransactionResponse { client_id: sent.unwrap_or_default() }))
    }

    async fn log_digest(
        &self,
        request: Request<pb::LogDigestRequest>,
    ) -> Result<Response<pb::LogDigestResponse>, Status> {
        let req = request.into_inner();
        if req.to < req.from {
            return Err(invalid(format!("the range [{}, {}) ends before it starts", req.from, req.to)));
        }
        let view = self.inner.log.view();
        let last = view.last.map(|(index, _)| index);
        let commit_index = self.inner.raft.metrics().borrow_watched().local_committed.as_ref().map(|l| l.index());
        let mut resp = pb::LogDigestResponse {
            node_id: self.inner.node_id.0,
            first: view.first,
            last,
            commit_index,
            digest: 0,
            entries: 0,
        };
        if req.from == req.to {
            return Ok(Response::new(resp));
        }
        let held = view.first.zip(last).is_some_and(|(first, last)| first <= req.from && req.to <= last + 1);
        if !held {
            return Err(Status::failed_precondition(format!(
                "node {} holds log entries {}, not all of [{}, {})",
                self.inner.node_id,
                view.first.zip(last).map_or_else(|| "none".to_string(), |(f, l)| format!("[{f}, {l}]")),
                req.from,
                req.to
            )));
        }
        let _turn = self
            .inner
            .queries
            .acquire()
            .await
            .map_err(|_| Status::unavailable(format!("node {} is shutting down", self.inner.node_id)))?;
        let log = self.inner.log.clone();
        let (digest, entries) = tokio::task::spawn_blocking(move || log_digest(&log, req.from, req.to))
            .await
            .map_err(|e| Status::internal(format!("the digest task failed: {e}")))??;
        resp.digest = digest;
        resp.entries = entries;
        Ok(Response::new(resp))
    }

    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let req = request.into_inner();
        if req.group.len() > MAX_NAME_BYTES {
            return Err(invalid(format!("a group or topic name has at most {MAX_NAME_BYTES} bytes")));
        }
        let mut clients = self.local_clients(&req.group);
        let mut unreachable = Vec::new();
        if !req.local_only {
            let members = self.members();
            if members.is_empty() {
                // Just started, before the leader's first entries: the answer would
                // silently leave out every other member's clients.
                return Err(Status::unavailable(format!(
                    "node {} has not learnt the group's membership yet; ask another member",
                    self.inner.node_id
                )));
            }
            let peers = members
                .into_iter()
                .filter(|(id, _)| *id != self.inner.node_id)
                .map(|(id, addr)| self.peer_clients(id, addr, req.group.clone()));
            for answer in futures::future::join_all(peers).await {
                match answer {
                    Ok(mut more) => clients.append(&mut more),
                    Err(e) => unreachable.push(e),
                }
            }
        }
        clients.sort_by(|a, b| (&a.client_id, a.node_id).cmp(&(&b.client_id, b.node_id)));
        Ok(Response::new(pb::ListClientsResponse { clients, unreachable }))
    }

    async fn group_progress(
        &self,
        request: Request<pb::GroupProgressRequest>,
    ) -> Result<Response<pb::GroupProgressResponse>, Status> {
        let group = group_name(&request.get_ref().group)?;
        let (progress, applied) =
            self.inner.storage.state.read(|a| (a.machine.group_progress(&group), a.machine.last_applied()));
        let queues = progress.into_iter().map(progress_of).collect();
        Ok(Response::new(pb::GroupProgressResponse {
            queues,
            node_id: self.inner.node_id.0,
            applied_index: applied.0,
            broker_group: self.inner.group.clone(),
        }))
    }

    async fn reset_offset(
        &self,
        request: Request<pb::ResetOffsetRequest>,
    ) -> Result<Response<pb::ResetOffsetResponse>, Status> {
        let req = request.get_ref();
        let group = group_name(&req.group)?;
        let topic = any_topic_name(&req.topic)?;
        let to = req.to.ok_or_else(|| invalid("say where to: a time, earliest or latest"))?;
        if let Some((addr, mut leader)) = self.leader_client(&request).await? {
            return leader.reset_offset(forward(&request, req.clone())).await.map_err(|s| forwarded_error(&addr, s));
        }
        let _serial = self.inner.writes.lock().await;
        self.linearize().await?;
        let storage = self.inner.storage.clone();
        let plan_topic = topic.clone();
        let offsets = tokio::task::spawn_blocking(move || reset_targets(&storage, &plan_topic, to))
            .await
            .map_err(|e| Status::internal(format!("planning the reset failed: {e}")))??;
        let queues = offsets.len();
        self.propose(Command::ResetOffset { group: group.clone(), topic: topic.clone(), offsets }).await?;
        tracing::info!(%group, %topic, queues, ?to, "consumer offsets reset");
        let progress = self.state().read(|a| a.machine.group_progress(&group));
        let queues = progress.into_iter().filter(|p| p.topic == topic).map(progress_of).collect();
        Ok(Response::new(pb::ResetOffsetResponse { queues }))
    }

    async fn query_message(
        &self,
        request: Request<pb::QueryMessageRequest>,
    ) -> Result<Response<pb::QueryMessageResponse>, Status> {
        let req = query::parse(request.get_ref())?;
        let _turn = self
            .inner
            .queries
            .acquire()
            .await
            .map_err(|_| Status::unavailable(format!("node {} is shutting down", self.inner.node_id)))?;
        let storage = self.inner.storage.clone();
        let messages = tokio::task::spawn_blocking(move || query::run(&storage, &req))
            .await
            .map_err(|e| Status::internal(format!("the query failed: {e}")))??;
        Ok(Response::new(pb::QueryMessageResponse { messages }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_follow_rocketmq_bits() {
        assert_eq!(permission(6).ok(), Some(Permission::ReadWrite));
        assert_eq!(permission(7).ok(), Some(Permission::ReadWrite));
        assert_eq!(permission(4).ok(), Some(Permission::Read));
        assert_eq!(permission(2).ok(), Some(Permission::Write));
        assert_eq!(permission(1).map_err(|s| s.code()).err(), Some(tonic::Code::InvalidArgument));
        assert_eq!(permission(8).map_err(|s| s.code()).err(), Some(tonic::Code::InvalidArgument));
    }

    #[test]
    fn message_types_and_queue_counts_are_checked() {
        let t = message_types(&["normal".into(), " FIFO ".into()]).expect("valid");
        assert_eq!(t, [MessageType::Normal, MessageType::Fifo].into_iter().collect());
        assert_eq!(message_types(&["BULK".into()]).map_err(|s| s.code()).err(), Some(tonic::Code::InvalidArgument));
        assert!(queue_count(0).is_err());
        assert!(queue_count(MAX_QUEUES + 1).is_err());
        assert_eq!(queue_count(MAX_QUEUES).ok(), Some(MAX_QUEUES));
    }

    #[test]
    fn topic_info_round_trips_the_config() {
        let name = TopicName::new("orders").expect("valid");
        let config = TopicConfig {
            queue_count: 3,
            message_types: [MessageType::Fifo].into_iter().collect(),
            permission: Permission::Read,
        };
        let info = topic_info(&name, &config);
        assert_eq!((info.name.as_str(), info.queue_count, info.perm), ("orders", 3, 4));
        assert_eq!(info.message_types, vec!["FIFO".to_string()]);
        let back = TopicChange::parse(&info.name, Some(info.queue_count), &info.message_types, Some(info.perm))
            .expect("valid")
            .apply_to(TopicConfig::all_types(1));
        assert_eq!(back, config);
    }
}
