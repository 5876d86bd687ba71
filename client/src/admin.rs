//! The admin client: topics, node and cluster status, leader transfer and message queries
//! over `raftmq.admin.v1.AdminService`, and topic routes over the RocketMQ `QueryRoute`.
//! Calls go to the given endpoints in turn until one answers (any node serves them).

use std::future::Future;
use std::time::Duration;

use raftmq_proto::admin::v1 as pb;
use raftmq_proto::admin::v1::admin_service_client::AdminServiceClient;
use raftmq_proto::namesrv::v1::TopicInfo;
use tonic::transport::Channel;

use crate::Error;
use crate::conn::{ClientOptions, Conn, Retry};
use crate::route::{TopicRoute, query_route};

/// The status of every member of a group, as one node gathered it.
pub type ClusterStatus = pb::ClusterStatusResponse;
/// Live clients of the members, and the members that did not answer.
pub type ClientList = pb::ListClientsResponse;
/// A consumer group's progress per queue.
pub type GroupProgress = pb::GroupProgressResponse;

/// Where a consumer group's offset reset moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The first message stored at or after this time (milliseconds since the epoch).
    Time(i64),
    /// The first message each queue still holds.
    Earliest,
    /// After the last message.
    Latest,
}

/// A message found by [`Admin::query_messages`]: where it is, its properties and the first
/// bytes of its body.
pub type QueriedMessage = pb::QueriedMessage;

/// How long a leader transfer may take before the call gives up (the broker waits 5 s).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);

/// A topic to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name (`[%|a-zA-Z0-9_-]`, at most 127 characters).
    pub name: String,
    /// Number of queues; None = the broker's default.
    pub queue_count: Option<u32>,
    /// Accepted message types ("NORMAL", "FIFO", "DELAY", "TRANSACTION"); empty = all.
    pub message_types: Vec<String>,
    /// RocketMQ permission bits (4 = read, 2 = write); None = read and write.
    pub perm: Option<u32>,
}

impl TopicSpec {
    /// A topic with the broker's defaults.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), ..Self::default() }
    }

    /// Sets the queue count.
    pub fn with_queues(mut self, n: u32) -> Self {
        self.queue_count = Some(n);
        self
    }
}

/// A change to a topic: only the fields that are set change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicUpdate {
    /// Topic name.
    pub name: String,
    /// New queue count (queues can only grow).
    pub queue_count: Option<u32>,
    /// New message types; empty = unchanged.
    pub message_types: Vec<String>,
    /// New permission bits.
    pub perm: Option<u32>,
}

/// What [`Admin::query_messages`] looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageQuery {
    /// Messages with this message id (1 to 128 bytes), of `topic` if given.
    Id {
        /// The message id.
        message_id: String,
        /// Only messages of this topic.
        topic: Option<String>,
    },
    /// Messages carrying this key (1 to 128 bytes), newest first.
    Key {
        /// The key.
        key: String,
        /// Only messages of this topic.
        topic: Option<String>,
        /// Stored at or after this time, in milliseconds since the epoch (None: any time).
        begin_ms: Option<i64>,
        /// Stored at or before this time (None: any time).
        end_ms: Option<i64>,
    },
    /// The message at `offset` of queue `queue` of `topic`.
    QueueOffset {
        /// Topic.
        topic: String,
        /// Queue id.
        queue: u32,
        /// Queue offset.
        offset: u64,
    },
}

impl MessageQuery {
    fn into_request(self, max_results: Option<u32>) -> pb::QueryMessageRequest {
        use pb::query_message_request::Query;
        let query = match self {
            MessageQuery::Id { message_id, topic } => Query::ById(pb::MessageIdQuery { message_id, topic }),
            MessageQuery::Key { key, topic, begin_ms, end_ms } => {
                Query::ByKey(pb::MessageKeyQuery { key, topic, begin_ms, end_ms })
            }
            MessageQuery::QueueOffset { topic, queue, offset } => {
                Query::ByQueueOffset(pb::QueueOffsetQuery { topic, queue, offset })
            }
        };
        pb::QueryMessageRequest { query: Some(query), max_results: max_results.unwrap_or(0) }
    }
}

/// Administers a broker group.
#[derive(Debug)]
pub struct Admin {
    conn: Conn,
}

impl Admin {
    /// An admin client for the endpoints `host:port;host:port` with default options.
    pub fn new(endpoints: &str) -> Result<Self, Error> {
        Self::with_options(endpoints, ClientOptions::default())
    }

    /// An admin client with these options.
    pub fn with_options(endpoints: &str, options: ClientOptions) -> Result<Self, Error> {
        Ok(Self { conn: Conn::new(endpoints, options)? })
    }

    /// Calls `f` on the endpoints in turn until one answers or a final error comes back.
    async fn call<Req, Resp, F, Fut>(
        &self,
        operation: &'static str,
        timeout: Option<Duration>,
        body: Req,
        f: F,
    ) -> Result<Resp, Error>
    where
        Req: Clone,
        F: Fn(AdminServiceClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let extra = timeout.unwrap_or_default();
        let mut retry = Retry::new(operation, &self.conn.options, extra);
        loop {
            let endpoint = self.conn.seed(retry.attempt());
            let t = retry.timeout(timeout);
            let result = match self.conn.channel(&endpoint) {
                Ok(channel) => {
                    let request = self.conn.request(body.clone(), t);
                    self.conn.call(operation, &endpoint, t, f(AdminServiceClient::new(channel), request)).await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) => retry.failed(e).await?,
            }
        }
    }

    /// Creates a topic; ALREADY_EXISTS if it exists.
    pub async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, Error> {
        let body = pb::CreateTopicRequest {
            topic: spec.name,
            queue_count: spec.queue_count.unwrap_or(0),
            message_types: spec.message_types,
            perm: spec.perm.unwrap_or(0),
        };
        let resp = self.call("create topic", None, body, |mut c, r| async move { c.create_topic(r).await }).await?;
        resp.topic.ok_or_else(|| Error::protocol("create topic", "", "the answer carried no topic"))
    }

    /// Changes a topic; NOT_FOUND if it does not exist.
    pub async fn update_topic(&self, update: TopicUpdate) -> Result<TopicInfo, Error> {
        let body = pb::UpdateTopicRequest {
            topic: update.name,
            queue_count: update.queue_count,
            message_types: update.message_types,
            perm: update.perm,
        };
        let resp = self.call("update topic", None, body, |mut c, r| async move { c.update_topic(r).await }).await?;
        resp.topic.ok_or_else(|| Error::protocol("update topic", "", "the answer carried no topic"))
    }

    /// Deletes a topic with its queues and consumer state; NOT_FOUND if it does not exist.
    pub async fn delete_topic(&self, name: &str) -> Result<(), Error> {
        let body = pb::DeleteTopicRequest { topic: name.to_string() };
        self.call("delete topic", None, body, |mut c, r| async move { c.delete_topic(r).await }).await?;
        Ok(())
    }

    /// The topics of the group, as the answering node has applied them.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>, Error> {
        let resp =
            self.call("list topics", None, pb::ListTopicsRequest {}, |mut c, r| async move { c.list_topics(r).await });
        Ok(resp.await?.topics)
    }

    /// The Raft and log status of the first node that answers.
    pub async fn node_status(&self) -> Result<pb::NodeStatus, Error> {
        let resp = self
            .call("node status", None, pb::NodeStatusRequest {}, |mut c, r| async move { c.node_status(r).await })
            .await?;
        resp.node.ok_or_else(|| Error::protocol("node status", "", "the answer carried no status"))
    }

    /// Every member's status, gathered by the first node that answers; members that did
    /// not answer it are listed as unreachable.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, Error> {
        self.call(
            "cluster status",
            None,
            pb::ClusterStatusRequest {},
            |mut c, r| async move { c.cluster_status(r).await },
        )
        .await
    }

    /// The answering node's own log: the entries it holds, its commit index, and a CRC32C
    /// digest over `[from, to)` (with `from == to`, only the rest).
    pub async fn log_digest(&self, from: u64, to: u64) -> Result<pb::LogDigestResponse, Error> {
        let body = pb::LogDigestRequest { from, to };
        let timeout = Some(Duration::from_secs(120));
        self.call("log digest", timeout, body, |mut c, r| async move { c.log_digest(r).await }).await
    }

    /// Creates or changes a consumer group's configuration (through the leader):
    /// orderly consumption, and deliveries before a message is dead-lettered (0: 16).
    pub async fn upsert_group(&self, group: &str, fifo: bool, max_attempts: u32) -> Result<(), Error> {
        let config = pb::GroupConfig { group: group.to_string(), fifo, max_attempts };
        let body = pb::UpsertGroupRequest { config: Some(config) };
        self.call("configure group", None, body, |mut c, r| async move { c.upsert_group(r).await }).await?;
        Ok(())
    }

    /// The configured consumer groups.
    pub async fn list_groups(&self) -> Result<Vec<pb::GroupConfig>, Error> {
        let body = pb::ListGroupsRequest {};
        let resp = self.call("list groups", None, body, |mut c, r| async move { c.list_groups(r).await }).await?;
        Ok(resp.groups)
    }

    /// The live clients of every member for a consumer group, or publishing to or subscribed
    /// to a topic of that name (empty: every client), gathered by the first node that
    /// answers; members that did not answer it are listed as unreachable.
    pub async fn list_clients(&self, group: &str) -> Result<ClientList, Error> {
        let body = pb::ListClientsRequest { group: group.to_string(), local_only: false };
        self.call("list clients", None, body, |mut c, r| async move { c.list_clients(r).await }).await
    }

    /// A consumer group's progress on every queue it has consumed from, from the applied
    /// state of the node that answers.
    pub async fn group_progress(&self, group: &str) -> Result<GroupProgress, Error> {
        let body = pb::GroupProgressRequest { group: group.to_string() };
        self.call("group progress", None, body, |mut c, r| async move { c.group_progress(r).await }).await
    }

    /// Moves `group`'s position on every queue of `topic` (through the leader); returns the
    /// group's progress on the topic afterwards.
    pub async fn reset_offset(&self, group: &str, topic: &str, to: ResetTo) -> Result<Vec<pb::QueueProgress>, Error> {
        use pb::reset_offset_request::To;
        let to = match to {
            ResetTo::Time(ms) => To::TimestampMs(ms),
            ResetTo::Earliest => To::Earliest(true),
            ResetTo::Latest => To::Latest(true),
        };
        let body = pb::ResetOffsetRequest { group: group.to_string(), topic: topic.to_string(), to: Some(to) };
        let resp = self.call("reset offset", None, body, |mut c, r| async move { c.reset_offset(r).await }).await?;
        Ok(resp.queues)
    }

    /// Moves the leadership of `group` (empty: the answering node's group) to node `to`,
    /// returning once it moved.
    pub async fn transfer_leader(&self, group: &str, to: u64) -> Result<(), Error> {
        let body = pb::TransferLeaderRequest { group: group.to_string(), to_node: to };
        self.call(
            "transfer leader",
            Some(TRANSFER_TIMEOUT),
            body,
            |mut c, r| async move { c.transfer_leader(r).await },
        )
        .await?;
        Ok(())
    }

    /// Changes the voters of `group` (empty: the answering node's group): adds `add` (a
    /// node under an id never used, first as a learner that must catch up within
    /// `catch_up`), removes node `remove` (0: none), or both at once. Answers once the
    /// change is committed, with the voters and the retired ids.
    pub async fn change_members(
        &self,
        group: &str,
        add: Option<pb::NewMember>,
        remove: u64,
        catch_up: Duration,
    ) -> Result<pb::ChangeMembersResponse, Error> {
        let body = pb::ChangeMembersRequest {
            group: group.to_string(),
            add,
            remove,
            catch_up_timeout_ms: catch_up.as_millis() as u64,
        };
        // The change itself takes a few round trips after the catch-up.
        let timeout = Some(catch_up + Duration::from_secs(30));
        self.call("change members", timeout, body, |mut c, r| async move { c.change_members(r).await }).await
    }

    /// Messages matching `query` (at most `max_results`, default 32, bounded at 64), found
    /// in the derived stores of the first node that answers: every node holds them, and
    /// one that has not yet indexed a message just sent does not find it yet. Nothing
    /// found is an empty list; bad input is an INVALID_ARGUMENT error.
    pub async fn query_messages(
        &self,
        query: MessageQuery,
        max_results: Option<u32>,
    ) -> Result<Vec<QueriedMessage>, Error> {
        let body = query.into_request(max_results);
        let resp = self.call("query messages", None, body, |mut c, r| async move { c.query_message(r).await });
        Ok(resp.await?.messages)
    }

    /// The route of a topic (its queues and the endpoints serving them, leader first).
    pub async fn route(&self, topic: &str) -> Result<TopicRoute, Error> {
        let mut retry = Retry::new("query route", &self.conn.options, Duration::ZERO);
        loop {
            let endpoint = self.conn.seed(retry.attempt());
            match query_route(&self.conn, &endpoint, topic, retry.timeout(None)).await {
                Ok(route) => return Ok(route),
                Err(e) => retry.failed(e).await?,
            }
        }
    }
}
