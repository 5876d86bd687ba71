//! One broker node: its CommitLog, state machine, openraft instance and gRPC server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use raft_log::{Log, RaftLogStore};
use raftmq_machine::codec::{ENTRY_VERSION, OLDEST_READ_ENTRY_VERSION};
use raftmq_proto::admin::v1::admin_service_server::AdminServiceServer;
use raftmq_proto::raft::v1::raft_service_server::RaftServiceServer;
use raftmq_proto::rocketmq::v2::messaging_service_server::MessagingServiceServer;
use tokio::sync::oneshot;
use tonic::service::Routes;

use crate::admin::{Admin, DEFAULT_QUEUES};
use crate::check_back::{self, CheckBack};
use crate::disk::DiskGuard;
use crate::forward::Forwarder;
use crate::listener;
use crate::raft::ack::{AckLogStore, DEFAULT_WAITERS, FlushWaiters};
use crate::raft::backfill::Backfill;
use crate::raft::codec::{MAX_ENTRY_BYTES, MAX_RAFT_MESSAGE};
use crate::raft::network::Network;
use crate::raft::service::RaftRpc;
use crate::raft::state::StateStore;
use crate::raft::{NodeId, Raft, TypeConfig};
use crate::registration::{Identity, Registration};
use crate::retention;
use crate::service::namesrv_view::RouteView;
use crate::service::{Broker, NodeParts};
use crate::sessions::Sessions;
pub use crate::settings::NodeConfig;
use crate::settings::ServiceSettings;
use crate::store::{Storage, Stores, dispatch};
use crate::timers;

/// How long a stopping node lets the calls in flight finish.
const DRAIN_WAIT: Duration = Duration::from_secs(2);
/// How long a stopping leader waits for a follower to take the lead.
const HANDOVER_WAIT: Duration = Duration::from_secs(3);

/// A running node.
#[derive(Debug)]
pub struct Node {
    /// The openraft handle.
    pub raft: Raft,
    /// The state machine (read by services).
    pub state: StateStore,
    /// The derived stores (ConsumeQueue, IndexFile).
    pub stores: Stores,
    /// The CommitLog.
    pub log: Log,
    /// The address the Raft server listens on.
    pub raft_addr: SocketAddr,
    /// The address the client (RocketMQ v2) server listens on.
    pub client_addr: SocketAddr,
    /// The log range this node still copies in from another member.
    pub backfill: Backfill,
    /// Background work (backfill, retention), aborted on shutdown.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stops: Vec<oneshot::Sender<()>>,
    servers: Vec<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    registration: Option<Registration>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The CommitLog could not be opened.
    #[error("cannot open the CommitLog: {0}")]
    Log(#[from] raft_log::LogError),
    /// The state could not be loaded.
    #[error("cannot load the state machine: {0}")]
    State(std::io::Error),
    /// The derived stores could not be opened.
    #[error("cannot open the derived stores: {0}")]
    Store(String),
    /// openraft refused to start.
    #[error("raft: {0}")]
    Raft(String),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

fn raft_config(cfg: &NodeConfig) -> Result<openraft::Config, StartError> {
    // Every message on the Raft port has a size limit, and one entry must fit it.
    if cfg.log.max_payload as usize > MAX_ENTRY_BYTES {
        return Err(StartError::Config(format!(
            "the CommitLog's max_payload {} is over the largest entry Raft carries ({MAX_ENTRY_BYTES} bytes)",
            cfg.log.max_payload
        )));
    }
    let min = cfg.election_timeout.as_millis() as u64;
    let config = openraft::Config {
        cluster_name: cfg.group.clone(),
        heartbeat_interval: cfg.heartbeat.as_millis() as u64,
        election_timeout_min: min,
        election_timeout_max: min + min / 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
        max_in_snapshot_log_to_keep: cfg.keep_after_snapshot,
        // Without Pre-Vote a follower with a shorter log bumps the term, loses, and splits
        // the next round: failover then takes a second election timeout.
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    config.validate().map_err(|e| StartError::Config(e.to_string()))
}

impl Node {
    /// Opens the node's storage, starts Raft and its RPC server. The node with the lowest id
    /// of a group whose log is empty initializes the group with all peers.
    pub async fn start(cfg: NodeConfig) -> Result<Node, StartError> {
        let me = cfg.me().map_err(StartError::Config)?.clone();
        let view =
            RouteView::new(&cfg.nameservers, cfg.namesrv_heartbeat).map_err(|e| StartError::Config(e.to_string()))?;
        let started = std::time::Instant::now();
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
            StartError::State(std::io::Error::new(
                e.kind(),
                format!("cannot create the data directory {}: {e}", cfg.data_dir.display()),
            ))
        })?;
        // Opening verifies the newest segments: file IO off the async workers, so that nodes
        // started together (`mqbroker dev`) open side by side.
        let (dir, log_config) = (cfg.data_dir.join("commitlog"), cfg.log.clone());
        let fs = cfg.log_fs.clone().unwrap_or_else(|| Arc::new(raft_log::fs::RealFs));
        let (log, report) = tokio::task::spawn_blocking(move || Log::open_with(fs, &dir, log_config))
            .await
            .map_err(|e| StartError::Config(format!("the CommitLog opening task failed: {e}")))??;
        let log_opened = started.elapsed();
        if let Some((file, offset)) = &report.torn_tail {
            tracing::warn!(file = %file.display(), offset, "recovered the CommitLog from a torn tail");
        }
        let disk = DiskGuard::new(&cfg.data_dir, cfg.retention.disk_refuse).map_err(|e| {
            StartError::State(std::io::Error::new(
                e.kind(),
                format!("cannot read the disk usage of {}: {e}", cfg.data_dir.display()),
            ))
        })?;
        let backfill = Backfill::open(&cfg.data_dir.join("state"), log.clone()).map_err(StartError::State)?;
        let state = StateStore::open(&cfg.data_dir.join("state"), &cfg.group)
            .map_err(StartError::State)?
            .with_backfill(backfill.clone());
        let config = Arc::new(raft_config(&cfg)?);
        // The store tells `ack = "leader"` proposers when the leader's write is durable.
        let store = AckLogStore::new(
            RaftLogStore::<TypeConfig>::with_entry_versions(log.clone(), OLDEST_READ_ENTRY_VERSION..=ENTRY_VERSION),
            FlushWaiters::new(DEFAULT_WAITERS),
        );
        let raft = Raft::new(cfg.node_id, config, Network::new(&cfg.group), store.clone(), state.clone())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let raft_started = started.elapsed();
        // Opening reads the timer store's files, and recovery cuts the stores back to their
        // checkpoint and dispatches what was applied since: off the async workers too, and
        // done before anything serves from the stores.
        let (store_dir, store_config) = (cfg.data_dir.join("store"), cfg.store.clone());
        let (log_store, applied_state) = (store.clone(), state.clone());
        let (stores, recovered) = tokio::task::spawn_blocking(move || {
            Stores::open(&store_dir, store_config).map(|(stores, reset)| {
                let recovered = dispatch::recover(stores.clone(), log_store, applied_state, reset);
                (stores, recovered)
            })
        })
        .await
        .map_err(|e| StartError::Store(format!("the store opening task failed: {e}")))?
        .map_err(|e| StartError::Store(e.to_string()))?;
        let stores_recovered = started.elapsed();
        let dispatch = dispatch::spawn(recovered);

        let rpc = RaftRpc::new(&cfg.group, cfg.node_id, raft.clone(), log.clone(), cfg.data_dir.join("state"));
        let (raft_addr, raft_stop, raft_server) = serve(
            cfg.listen_raft.as_deref().unwrap_or(&me.raft_addr),
            Routes::new(
                RaftServiceServer::new(rpc)
                    .max_decoding_message_size(MAX_RAFT_MESSAGE)
                    .max_encoding_message_size(MAX_RAFT_MESSAGE),
            ),
            RAFT_PORT,
        )
        .await?;
        let forwarder = Forwarder::new(cfg.node_id, me.clone(), raft.clone());
        let storage = Storage { state: state.clone(), log: store, stores: stores.clone() };
        let default_queues = cfg.service.auto_create_queues.unwrap_or(DEFAULT_QUEUES);
        let sessions = Sessions::new();
        let admin = Admin::new(
            &cfg.group,
            raft.clone(),
            storage.clone(),
            log.clone(),
            forwarder.clone(),
            default_queues,
            sessions.clone(),
        );
        let (resolver, inbox) = timers::channel();
        let timer_driver = timers::spawn(raft.clone(), storage.clone(), inbox);
        let check_back = check_back::spawn(CheckBack {
            raft: raft.clone(),
            storage: storage.clone(),
            resolver: resolver.clone(),
            sessions: sessions.clone(),
            settings: cfg.service.transactions,
            group: cfg.group.clone(),
            store_host: me.client_addr.clone(),
            forwarder: forwarder.clone(),
        });
        let parts = NodeParts { raft: raft.clone(), storage, view, forwarder, sessions, resolver, disk: disk.clone() };
        let broker = Broker::new(&cfg.group, service_settings(&cfg), parts);
        let max_message = cfg.service.max_body_bytes * 2 + (1 << 20);
        // The admin service shares the client endpoint with the RocketMQ service.
        let client_service = Routes::new(
            MessagingServiceServer::new(broker)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(64 << 20),
        )
        .add_service(AdminServiceServer::new(admin));
        let client_port = PortLimits {
            name: "client",
            connections: cfg.service.max_connections,
            requests_per_connection: cfg.service.max_requests_per_connection,
        };
        let (client_addr, client_stop, client_server) =
            serve(cfg.listen_client.as_deref().unwrap_or(&me.client_addr), client_service, client_port).await?;

        tracing::info!(
            node = cfg.node_id.0,
            log_open_ms = log_opened.as_millis() as u64,
            raft_start_ms = (raft_started - log_opened).as_millis() as u64,
            stores_ms = (stores_recovered - raft_started).as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "node opened its CommitLog, state and stores"
        );
        let lowest = cfg.peers.keys().next().copied();
        if lowest == Some(cfg.node_id) && !raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))? {
            match raft.initialize(cfg.peers.clone()).await {
                Ok(()) => tracing::info!(group = %cfg.group, node = cfg.node_id.0, "initialized the group"),
                Err(e) => tracing::info!(error = %e, "group already initialized"),
            }
        }
        let identity = Identity {
            cluster: cfg.cluster.clone(),
            group: cfg.group.clone(),
            node_id: cfg.node_id,
            client_endpoint: me.client_addr.clone(),
            raft_endpoint: me.raft_addr.clone(),
        };
        let registration =
            Registration::start(identity, &cfg.nameservers, cfg.namesrv_heartbeat, raft.clone(), state.clone())
                .map_err(|e| StartError::Config(e.to_string()))?;
        let tasks = vec![
            dispatch,
            timer_driver,
            check_back,
            backfill.spawn(raft.clone(), cfg.group.clone(), cfg.node_id),
            retention::spawn(raft.clone(), log.clone(), state.clone(), stores.clone(), cfg.retention.clone()),
            disk.spawn(),
        ];
        Ok(Node {
            raft,
            state,
            stores,
            log,
            raft_addr,
            client_addr,
            backfill,
            tasks,
            // The client server last: `stop` drains it before Raft stops.
            stops: vec![raft_stop, client_stop],
            servers: vec![raft_server, client_server],
            registration: Some(registration),
        })
    }

    /// Resolves, with the reason, once Raft on this node has stopped by itself (a failed
    /// write to the CommitLog, a full disk): the node can then neither vote nor store, and
    /// the process should exit rather than keep answering as a member.
    pub async fn failed(&self) -> String {
        let mut rx = self.raft.metrics();
        loop {
            if let Err(fatal) = &rx.borrow_watched().running_state {
                return fatal.to_string();
            }
            if rx.changed().await.is_err() {
                return "raft stopped".to_string();
            }
        }
    }

    /// Stops the node the way an operator's stop (SIGTERM) should, so that clients see no
    /// failed call: a leader hands the lead to its most caught-up live follower first, then
    /// the client server stops taking connections (HTTP/2 GOAWAY) and lets the calls in
    /// flight finish (forwarded to the new leader) for up to [`DRAIN_WAIT`], and only then
    /// do Raft and the CommitLog stop.
    pub async fn stop(mut self) {
        if let Some(registration) = self.registration.take() {
            registration.stop().await;
        }
        self.hand_over_leadership().await;
        if let (Some(stop), Some(server)) = (self.stops.pop(), self.servers.pop()) {
            let _ = stop.send(());
            let abort = server.abort_handle();
            if tokio::time::timeout(DRAIN_WAIT, server).await.is_err() {
                tracing::info!(wait = ?DRAIN_WAIT, "calls still open after the drain; closing them");
                abort.abort();
            }
        }
        self.shutdown().await;
    }

    /// On the leader: moves the lead to the live follower that holds the most of the log,
    /// and waits (up to [`HANDOVER_WAIT`]) until it leads. Best effort: a follower that cannot
    /// take over in time leaves an election to the others after this node stops.
    async fn hand_over_leadership(&self) {
        let me = self.raft.metrics().borrow_watched().id;
        let target = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            if m.current_leader != Some(me) {
                return;
            }
            let live = |id: &NodeId| crate::raft::heard_from_within(&m, *id, Duration::from_secs(1));
            let matched = |id: &NodeId| m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten());
            m.membership_config.membership().voter_ids().filter(|id| *id != me && live(id)).max_by_key(matched)
        };
        let Some(to) = target else {
            tracing::info!("no live follower to hand the lead to; the others will elect a leader");
            return;
        };
        tracing::info!(from = %me, to = %to, "handing over the lead before stopping");
        if let Err(e) = self.raft.trigger().transfer_leader(to).await {
            tracing::warn!(error = %e, "cannot hand over the lead");
            return;
        }
        let mut rx = self.raft.metrics();
        let moved = async {
            while rx.borrow_watched().current_leader == Some(me) {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(HANDOVER_WAIT, moved).await.is_err() {
            tracing::warn!(to = %to, wait = ?HANDOVER_WAIT, "the lead did not move; stopping anyway");
        }
    }

    /// Stops Raft and the server at once (as a crash would, minus the lost page cache).
    pub async fn shutdown(mut self) {
        // Stop reporting first: the nameservers drop the node after their expiry.
        if let Some(registration) = self.registration.take() {
            registration.stop().await;
        }
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        // An aborted dispatch task may have left a write running on a blocking thread.
        let stores = self.stores.clone();
        let _ = tokio::task::spawn_blocking(move || stores.close()).await;
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for server in self.servers.drain(..) {
            server.abort();
            let _ = server.await;
        }
        // With flush = "async" this syncs what the interval had not yet covered.
        if let Err(e) = self.log.shutdown().await {
            tracing::warn!(error = %e, "CommitLog shutdown");
        }
    }
}

/// The client service's settings, bounded by what the CommitLog can hold in one entry.
fn service_settings(cfg: &NodeConfig) -> ServiceSettings {
    let max_entry_bytes = cfg.service.max_entry_bytes.min(cfg.log.max_payload as usize);
    ServiceSettings { max_entry_bytes, ..cfg.service.clone() }
}

type Served = (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), tonic::transport::Error>>);

/// Limits of one listening port.
#[derive(Debug, Clone, Copy)]
struct PortLimits {
    /// Names the port in warnings.
    name: &'static str,
    /// Most connections open at once; more are closed as they arrive.
    connections: usize,
    /// Most requests served at once on one connection (HTTP/2 streams; more wait).
    requests_per_connection: usize,
}

/// The Raft port's limits: its clients are the group's members (a few connections each).
const RAFT_PORT: PortLimits = PortLimits { name: "raft", connections: 256, requests_per_connection: 64 };

/// How often a connection with no traffic is pinged, and how long the answer may take:
/// a peer that vanished without closing gives its slot back.
const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(20));

/// Binds `addr` and serves `routes` (one or more gRPC services) on it, within `limits`,
/// until the returned sender fires.
async fn serve(addr: &str, routes: Routes, limits: PortLimits) -> Result<Served, StartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr: addr.to_string(), source })?;
    let local = listener.local_addr().map_err(|source| StartError::Bind { addr: addr.to_string(), source })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let requests = limits.requests_per_connection;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .concurrency_limit_per_connection(requests)
            .max_concurrent_streams(u32::try_from(requests).ok())
            .http2_keepalive_interval(Some(KEEPALIVE.0))
            .http2_keepalive_timeout(Some(KEEPALIVE.1))
            .add_routes(routes)
            .serve_with_incoming_shutdown(listener::limited(listener, limits.connections, limits.name), async {
                let _ = stopped.await;
            }),
    );
    Ok((local, stop, server))
}
