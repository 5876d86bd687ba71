//! The RocketMQ 5 client protocol (`apache.rocketmq.v2.MessagingService`) on every node.
//!
//! Any node answers any call: calls that need the leader (everything that proposes a Raft
//! command) are served by the leader; a follower forwards them over gRPC to the leader's
//! client endpoint, once (a forwarded call is never forwarded again). Failures are answered
//! inside the response's `status`, as the official clients expect.

mod acks;
mod assignment;
mod consume;
pub mod convert;
pub mod filter;
mod message_type;
pub mod namesrv_view;
mod pops;
pub mod proposer;
mod receive;
mod route;
mod send;
pub mod status;
mod telemetry;
pub mod transaction;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use raftmq_proto::rocketmq::v2::messaging_service_server::MessagingService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use self::namesrv_view::RouteView;
use self::proposer::{Ack, Proposer};
use self::status::Refusal;
use crate::disk::DiskGuard;
use crate::forward::{Forwarder, forward};
use crate::raft::Raft;
use crate::raft::ack::AckLogStore;
use crate::raft::state::StateStore;
use crate::sessions::{self, Sessions};
use crate::settings::{AckMode, NodeId, NodeInfo, ServiceSettings};
use crate::store::{Storage, Stores};
use crate::timers::Resolver;

/// Everything the service needs from its node.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    group: String,
    node_id: NodeId,
    raft: Raft,
    state: StateStore,
    store: AckLogStore,
    stores: Stores,
    pops: pops::PopLocks,
    proposer: Proposer,
    /// Gathers concurrent acks into one entry.
    acks: acks::AckCombiner,
    settings: ServiceSettings,
    forwarder: Forwarder,
    /// Routes as the nameservers see them.
    view: RouteView,
    /// This node's live clients.
    sessions: Sessions,
    /// Ends transactions (on the leader).
    resolver: Resolver,
    /// Push consumers per group, as last gathered for queue assignment.
    members: assignment::MemberCache,
    /// Refuses sends when the disk is nearly full.
    disk: DiskGuard,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("group", &self.inner.group).field("node", &self.inner.node_id).finish()
    }
}

/// Where a call is served.
enum Route {
    Local,
    Leader(NodeId, MessagingServiceClient<Channel>),
}

/// What the messaging service uses of its node.
#[derive(Debug)]
pub struct NodeParts {
    /// The openraft handle.
    pub raft: Raft,
    /// State, log and derived stores.
    pub storage: Storage,
    /// Routes as the nameservers see them.
    pub view: RouteView,
    /// Leader lookup and forwarding.
    pub forwarder: Forwarder,
    /// The node's live clients.
    pub sessions: Sessions,
    /// Ends transactions through the node's release driver.
    pub resolver: Resolver,
    /// Refuses sends when the disk is nearly full.
    pub disk: DiskGuard,
}

impl Broker {
    /// The service of the node `parts.forwarder` forwards for, in `group`, answering routes
    /// from `parts.view` when it can.
    pub fn new(group: &str, settings: ServiceSettings, parts: NodeParts) -> Self {
        let NodeParts { raft, storage, view, forwarder, sessions, resolver, disk } = parts;
        let Storage { state, log: store, stores } = storage;
        let ack = match settings.ack {
            AckMode::Quorum => Ack::Quorum,
            AckMode::Leader => Ack::Leader(store.waiters().clone()),
        };
        let defaults = proposer::BatchLimits::default();
        let max_bytes = defaults.max_bytes.min(settings.max_entry_bytes.saturating_sub(proposer::ENTRY_OVERHEAD_BYTES));
        let limits = proposer::BatchLimits { max_bytes, ..defaults };
        let proposer = Proposer::start(raft.clone(), limits, ack);
        let acks = acks::AckCombiner::start(raft.clone());
        Self {
            inner: Arc::new(Inner {
                group: group.to_string(),
                node_id: forwarder.node_id(),
                raft,
                state,
                store,
                stores,
                pops: pops::PopLocks::default(),
                proposer,
                acks,
                settings,
                forwarder,
                view,
                sessions,
                resolver,
                disk,
                members: assignment::MemberCache::default(),
            }),
        }
    }

    fn me(&self) -> Option<NodeInfo> {
        Some(self.inner.forwarder.me())
    }

    async fn route<T>(&self, request: &Request<T>) -> Result<Route, Refusal> {
        self.route_avoiding(request, None).await
    }

    /// [`Broker::route`], waiting for a leader other than `not` when it is set.
    async fn route_avoiding<T>(&self, request: &Request<T>, not: Option<NodeId>) -> Result<Route, Refusal> {
        match self.inner.forwarder.leader_endpoint(request, not).await.map_err(|e| Refusal::unavailable(e.0))? {
            None => Ok(Route::Local),
            Some((leader, addr)) => Ok(Route::Leader(leader, self.client(&addr)?)),
        }
    }

    fn client(&self, addr: &str) -> Result<MessagingServiceClient<Channel>, Refusal> {
        Ok(MessagingServiceClient::new(self.channel(addr)?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }

    /// A lazily connected channel to a member's client endpoint, shared by every call to it.
    pub(crate) fn channel(&self, addr: &str) -> Result<Channel, Refusal> {
        self.inner.forwarder.channel(addr).map_err(|e| Refusal::unavailable(e.0))
    }
}

/// The conversions of this service's requests into the values it acts on, with no node
/// behind them: for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::assignment::assign;
    pub use super::consume::{
        MAX_ACKS_PER_REQUEST, parse_ack, parse_change_invisible, parse_forward_to_dead_letter, parse_get_offset,
        parse_query_offset, parse_receipt, parse_update_offset,
    };
    pub use super::message_type::classify;
    pub use super::route::{group_of, topic_of, write_topic_of};
    pub use super::send::{MAX_MESSAGES_PER_SEND, broker_picks_queue, check_send, prepare_message};
    pub use super::transaction::parse_end_transaction;
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Whether a forwarded call failed at the connection (no answer from the leader's
/// service at all), as opposed to a status the leader returned.
fn unreachable(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// Forwards a unary call to the leader, or serves it here. A forwarded call is abandoned
/// when this node sees that leader lose the lead (it died or was cut off: an election
/// started), and forwarded once more to the next leader, so a client that reached a
/// live member rides through the election instead of waiting out its own timeout. (The
/// abandoned call may still have been stored by the old leader: sends are at least once.)
/// A leader that cannot be reached at all is treated the same way.
macro_rules! unary {
    ($self:ident, $request:ident, $method:ident, $local:expr, $fail:expr) => {{
        let mut abandoned: Option<NodeId> = None;
        loop {
            match $self.route_avoiding(&$request, abandoned).await {
                Ok(Route::Local) => break Ok(Response::new($local($self, $request.into_inner()).await)),
                Ok(Route::Leader(leader, mut client)) => {
                    let body = $request.get_ref().clone();
                    let forwarder = $self.inner.forwarder.clone();
                    tokio::select! {
                        result = client.$method(forward(&$request, body)) => match result {
                            Ok(resp) => break Ok(resp),
                            // The leader could not be reached at all (it died, its port is
                            // closed): wait for the next leader and forward once more, as if
                            // this node had seen it lose the lead.
                            Err(s) if abandoned.is_none() && unreachable(&s) => abandoned = Some(leader),
                            Err(s) => break Ok(Response::new($fail(Refusal::unavailable(format!(
                                "forwarding to the leader failed: {}",
                                s.message()
                            ))))),
                        },
                        () = forwarder.leader_lost(leader), if abandoned.is_none() => abandoned = Some(leader),
                    }
                }
                Err(refusal) => break Ok(Response::new($fail(refusal))),
            }
        }
    }};
}

#[tonic::async_trait]
impl MessagingService for Broker {
    type ReceiveMessageStream = BoxStream<pb::ReceiveMessageResponse>;
    type PullMessageStream = BoxStream<pb::PullMessageResponse>;
    type TelemetryStream = BoxStream<pb::TelemetryCommand>;

    async fn query_route(
        &self,
        request: Request<pb::QueryRouteRequest>,
    ) -> Result<Response<pb::QueryRouteResponse>, Status> {
        if let Some(response) = self.query_route_from_view(&request).await {
            return Ok(Response::new(response));
        }
        unary!(self, request, query_route, Broker::serve_query_route, |r: Refusal| pb::QueryRouteResponse {
            status: Some(r.status()),
            message_queues: vec![]
        })
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        if let Some(id) = sessions::client_id(request.metadata()) {
            self.inner.sessions.heartbeat(&id, request.remote_addr(), request.get_ref());
        }
        Ok(Response::new(pb::HeartbeatResponse { status: Some(status::ok()) }))
    }

    async fn send_message(
        &self,
        mut request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        send::broker_picks_queue(&mut request);
        unary!(self, request, send_message, Broker::serve_send, |r: Refusal| send::failed_send(&r))
    }

    async fn query_assignment(
        &self,
        request: Request<pb::QueryAssignmentRequest>,
    ) -> Result<Response<pb::QueryAssignmentResponse>, Status> {
        let meta = request.metadata().clone();
        let group = request.get_ref().group.clone();
        let whole = match self.query_assignment_from_view(&request).await {
            Some(response) => response,
            None => {
                let answer: Result<Response<pb::QueryAssignmentResponse>, Status> =
                    unary!(self, request, query_assignment, Broker::serve_query_assignment, |r: Refusal| {
                        pb::QueryAssignmentResponse { status: Some(r.status()), assignments: vec![] }
                    });
                answer?.into_inner()
            }
        };
        Ok(Response::new(self.balance(&meta, group.as_ref(), whole).await))
    }

    async fn receive_message(
        &self,
        request: Request<pb::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, Status> {
        match self.route(&request).await {
            Ok(Route::Local) => Ok(Response::new(self.serve_receive(request).await)),
            Ok(Route::Leader(_, mut client)) => {
                let body = request.get_ref().clone();
                match client.receive_message(forward(&request, body)).await {
                    Ok(resp) => Ok(Response::new(Box::pin(resp.into_inner()) as BoxStream<_>)),
                    Err(s) => Ok(Response::new(receive::failed(&Refusal::unavailable(format!(
                        "forwarding to the leader failed: {}",
                        s.message()
                    ))))),
                }
            }
            Err(refusal) => Ok(Response::new(receive::failed(&refusal))),
        }
    }

    async fn ack_message(
        &self,
        request: Request<pb::AckMessageRequest>,
    ) -> Result<Response<pb::AckMessageResponse>, Status> {
        unary!(self, request, ack_message, Broker::serve_ack, |r: Refusal| consume::failed_ack(&r))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<pb::ForwardMessageToDeadLetterQueueResponse>, Status> {
        unary!(
            self,
            request,
            forward_message_to_dead_letter_queue,
            Broker::serve_forward_to_dead_letter,
            |r: Refusal| consume::failed_forward(&r)
        )
    }

    async fn pull_message(
        &self,
        request: Request<pb::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, Status> {
        // Reads are served from this node's applied state: no Raft command is needed.
        Ok(Response::new(self.serve_pull(request).await))
    }

    async fn update_offset(
        &self,
        request: Request<pb::UpdateOffsetRequest>,
    ) -> Result<Response<pb::UpdateOffsetResponse>, Status> {
        unary!(self, request, update_offset, Broker::serve_update_offset, |r: Refusal| pb::UpdateOffsetResponse {
            status: Some(r.status())
        })
    }

    async fn get_offset(
        &self,
        request: Request<pb::GetOffsetRequest>,
    ) -> Result<Response<pb::GetOffsetResponse>, Status> {
        unary!(self, request, get_offset, Broker::serve_get_offset, |r: Refusal| pb::GetOffsetResponse {
            status: Some(r.status()),
            offset: 0
        })
    }

    async fn query_offset(
        &self,
        request: Request<pb::QueryOffsetRequest>,
    ) -> Result<Response<pb::QueryOffsetResponse>, Status> {
        unary!(self, request, query_offset, Broker::serve_query_offset, |r: Refusal| pb::QueryOffsetResponse {
            status: Some(r.status()),
            offset: 0
        })
    }

    async fn end_transaction(
        &self,
        request: Request<pb::EndTransactionRequest>,
    ) -> Result<Response<pb::EndTransactionResponse>, Status> {
        unary!(self, request, end_transaction, Broker::serve_end_transaction, |r: Refusal| {
            pb::EndTransactionResponse { status: Some(r.status()) }
        })
    }

    async fn telemetry(
        &self,
        request: Request<Streaming<pb::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, Status> {
        let client = sessions::client_id(request.metadata()).map(|id| (id, request.remote_addr()));
        Ok(Response::new(self.serve_telemetry(request.into_inner(), client)))
    }

    async fn notify_client_termination(
        &self,
        request: Request<pb::NotifyClientTerminationRequest>,
    ) -> Result<Response<pb::NotifyClientTerminationResponse>, Status> {
        if let Some(id) = sessions::client_id(request.metadata()) {
            self.inner.sessions.terminated(&id);
        }
        Ok(Response::new(pb::NotifyClientTerminationResponse { status: Some(status::ok()) }))
    }

    async fn change_invisible_duration(
        &self,
        request: Request<pb::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<pb::ChangeInvisibleDurationResponse>, Status> {
        unary!(self, request, change_invisible_duration, Broker::serve_change_invisible, |r: Refusal| {
            pb::ChangeInvisibleDurationResponse { status: Some(r.status()), receipt_handle: String::new() }
        })
    }

    async fn recall_message(
        &self,
        _request: Request<pb::RecallMessageRequest>,
    ) -> Result<Response<pb::RecallMessageResponse>, Status> {
        Ok(Response::new(pb::RecallMessageResponse {
            status: Some(not_implemented("message recall")),
            message_id: String::new(),
        }))
    }

    async fn sync_lite_subscription(
        &self,
        _request: Request<pb::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<pb::SyncLiteSubscriptionResponse>, Status> {
        Ok(Response::new(pb::SyncLiteSubscriptionResponse { status: Some(not_implemented("lite topics")) }))
    }
}

fn not_implemented(what: &str) -> pb::Status {
    status::status(pb::Code::NotImplemented, format!("{what} are not implemented by this broker yet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_unreachable_but_a_refusal_is_not() -> anyhow::Result<()> {
        // Bind and drop a listener: its port is then closed on this host.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?.connect_lazy();
        let mut client = MessagingServiceClient::new(channel);
        let status =
            client.send_message(pb::SendMessageRequest::default()).await.expect_err("nothing listens on the port");
        assert!(unreachable(&status), "a connect error is unreachable: {status:?}");
        assert!(!unreachable(&Status::unavailable("node 2 is not the leader")));
        Ok(())
    }
}
