//! The raftmq nameserver: a registry of broker nodes built from their heartbeats, serving routes
//! and the cluster view over gRPC (`raftmq.namesrv.v1.NameService`).
//!
//! - [`registry`]: the IO-free core; time is passed in.
//! - [`validate`]: the rules and limits a heartbeat must meet.
//! - [`service`]: the gRPC service, which reads the clock.
//! - [`serve`] / [`bind`]: run a nameserver on a listener, standalone (`mqnamesrv`) or embedded
//!   in another process (the broker's dev mode).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub mod registry;
pub mod service;
pub mod validate;

pub use registry::{Accepted, DEFAULT_EXPIRY, HeartbeatError, NodeId, Registry};
pub use service::NameServer;

/// RocketMQ's nameserver port.
pub const DEFAULT_PORT: u16 = 9876;
/// Most requests served at once on one connection.
pub const MAX_CONCURRENT_REQUESTS_PER_CONNECTION: usize = 256;
/// Longest time one request may take before it fails with `CANCELLED`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The listen address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {error}; give a free host:port")]
pub struct BindError {
    /// The address asked for.
    pub addr: String,
    /// The operating system's error.
    pub error: std::io::Error,
}

/// Binds a TCP listener on `addr` (`host:port`; port 0 picks a free one) and returns it with
/// its actual local address.
pub async fn bind(addr: &str) -> Result<(TcpListener, SocketAddr), BindError> {
    let error = |error| BindError { addr: addr.to_string(), error };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let local = listener.local_addr().map_err(error)?;
    Ok((listener, local))
}

/// Longest time requests in flight may take to finish once `shutdown` completed; then
/// the server stops anyway (a connection kept open by a client must not hold it forever).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Serves a nameserver whose nodes expire after `expiry` of silence on `listener` until
/// `shutdown` completes, then finishes the requests in flight (for at most
/// [`DRAIN_LIMIT`]) and returns.
///
/// # Panics
///
/// If `expiry` is zero.
pub async fn serve(
    listener: TcpListener,
    expiry: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (draining, drain_started) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = draining.send(());
    };
    let server = Server::builder()
        .concurrency_limit_per_connection(MAX_CONCURRENT_REQUESTS_PER_CONNECTION)
        .timeout(REQUEST_TIMEOUT)
        .add_service(NameServer::new(expiry).into_server())
        .serve_with_incoming_shutdown(incoming, shutdown);
    let drain_deadline = async move {
        if drain_started.await.is_err() {
            // The server ended without a shutdown: the other branch has its result.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    tokio::select! {
        result = server => result,
        () = drain_deadline => {
            tracing::warn!(limit = ?DRAIN_LIMIT, "connections still open after the drain limit; stopping anyway");
            Ok(())
        }
    }
}
