//! The `NameService` gRPC service over a shared [`Registry`]; the one place that reads the clock.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use raftmq_proto::namesrv::v1::name_service_server::{NameService, NameServiceServer};
use raftmq_proto::namesrv::v1::{
    BrokerHeartbeat, ClusterViewRequest, ClusterViewResponse, HeartbeatAck, QueryRouteRequest, QueryRouteResponse,
};
use tonic::{Request, Response, Status};

use crate::registry::{Accepted, HeartbeatError, Registry};
use crate::validate::check_name;

/// The nameserver's gRPC service. Clones share one registry.
#[derive(Debug, Clone)]
pub struct NameServer {
    registry: Arc<Mutex<Registry>>,
}

impl NameServer {
    /// A service over an empty registry whose nodes expire after `expiry` of silence.
    pub fn new(expiry: Duration) -> Self {
        Self { registry: Arc::new(Mutex::new(Registry::new(expiry))) }
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> NameServiceServer<Self> {
        NameServiceServer::new(self)
    }

    /// Forgets expired nodes (logging each) and runs `read` on the registry, at the same `now`.
    fn read<T>(&self, read: impl FnOnce(&Registry, Instant) -> T) -> T {
        let now = Instant::now();
        let mut registry = self.registry.lock();
        for (group, node) in registry.expire(now) {
            tracing::info!(%group, %node, "broker node expired: no heartbeat within the expiry");
        }
        read(&registry, now)
    }
}

#[tonic::async_trait]
impl NameService for NameServer {
    async fn heartbeat(&self, request: Request<BrokerHeartbeat>) -> Result<Response<HeartbeatAck>, Status> {
        let peer = request.remote_addr();
        let hb = request.into_inner();
        let (group, node, role, term) = (hb.group.clone(), hb.node_id, hb.role().as_str_name(), hb.term);
        let result = self.registry.lock().heartbeat(hb, Instant::now());
        match result {
            Ok(Accepted::Registered) => tracing::info!(%group, node, role, term, "broker node registered"),
            Ok(Accepted::Updated) => tracing::trace!(%group, node, role, term, "heartbeat"),
            Ok(Accepted::Stale) => tracing::debug!(%group, node, term, "ignored a heartbeat older than the stored one"),
            Err(error) => {
                tracing::warn!(?peer, %error, "refused a heartbeat");
                return Err(match error {
                    HeartbeatError::Invalid(_) => Status::invalid_argument(error.to_string()),
                    HeartbeatError::TooManyGroups { .. } | HeartbeatError::TooManyNodes { .. } => {
                        Status::resource_exhausted(error.to_string())
                    }
                });
            }
        }
        Ok(Response::new(HeartbeatAck {}))
    }

    async fn query_route(&self, request: Request<QueryRouteRequest>) -> Result<Response<QueryRouteResponse>, Status> {
        let topic = request.into_inner().topic;
        if let Err(e) = check_name(&topic) {
            let shown: String = topic.chars().take(crate::validate::MAX_NAME_LEN).collect();
            return Err(Status::invalid_argument(format!("topic name {shown:?} is invalid: {e}")));
        }
        let groups = self.read(|registry, now| registry.route(&topic, now));
        if groups.is_empty() {
            return Err(Status::not_found(format!("no route for topic {topic}: no live broker group serves it")));
        }
        Ok(Response::new(QueryRouteResponse { groups }))
    }

    async fn cluster_view(
        &self,
        _request: Request<ClusterViewRequest>,
    ) -> Result<Response<ClusterViewResponse>, Status> {
        let nodes = self.read(|registry, now| registry.cluster_view(now));
        Ok(Response::new(ClusterViewResponse { nodes, now_ms: unix_now_ms() }))
    }
}

/// The wall clock in Unix milliseconds (0 if it is set before 1970).
fn unix_now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}
