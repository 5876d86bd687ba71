//! The nameserver over real gRPC on loopback: heartbeats, routes, expiry, cluster view, errors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use raftmq_proto::namesrv::v1::name_service_client::NameServiceClient;
use raftmq_proto::namesrv::v1::{
    BrokerHeartbeat, ClusterViewRequest, GroupRoute, QueryRouteRequest, QueryRouteResponse, Role, TopicInfo,
};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Status};

const EXPIRY: Duration = Duration::from_millis(300);
const BEAT_EVERY: Duration = Duration::from_millis(50);
const DEADLINE: Duration = Duration::from_secs(10);

struct Harness {
    client: NameServiceClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Harness {
    async fn start() -> anyhow::Result<Harness> {
        let (listener, addr) = nameserver::bind("127.0.0.1:0").await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(nameserver::serve(listener, EXPIRY, async {
            let _ = stopped.await;
        }));
        let client = NameServiceClient::connect(format!("http://{addr}")).await.context("connect")?;
        Ok(Harness { client, stop: Some(stop), server })
    }

    async fn route(&self, topic: &str) -> Result<QueryRouteResponse, Status> {
        self.client.clone().query_route(QueryRouteRequest { topic: topic.into() }).await.map(|r| r.into_inner())
    }

    async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(DEADLINE, self.server).await.context("the server did not stop")???;
        Ok(())
    }
}

fn heartbeat(group: &str, node_id: u64, leader: u64, topics: &[&str]) -> BrokerHeartbeat {
    let role = if node_id == leader { Role::Leader } else { Role::Follower };
    BrokerHeartbeat {
        cluster: "DefaultCluster".into(),
        group: group.into(),
        node_id,
        role: role as i32,
        term: 2,
        leader_id: leader,
        client_endpoint: format!("127.0.0.1:{}", 8080 + node_id),
        raft_endpoint: format!("127.0.0.1:{}", 9080 + node_id),
        topics: topics
            .iter()
            .map(|t| TopicInfo { name: (*t).into(), queue_count: 8, message_types: vec!["NORMAL".into()], perm: 6 })
            .collect(),
        commit_index: Some(5),
        last_log_index: Some(5),
        timestamp_ms: 1,
    }
}

/// `(group, [(node id, leader flag)])` of each route.
fn members(routes: &[GroupRoute]) -> Vec<(String, Vec<(u64, bool)>)> {
    routes.iter().map(|r| (r.group.clone(), r.members.iter().map(|m| (m.node_id, m.leader)).collect())).collect()
}

fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> anyhow::Result<String> {
    match result {
        Err(status) if status.code() == code => Ok(status.message().to_string()),
        other => anyhow::bail!("expected {code:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_follow_heartbeats_and_expiry() -> anyhow::Result<()> {
    let harness = Harness::start().await?;
    // broker-a: node 2 leads; broker-b: node 3 leads. Both serve "orders", only a serves "audit".
    let mut beats = Vec::new();
    for node in 1..=3 {
        beats.push(heartbeat("broker-a", node, 2, &["orders", "audit"]));
        beats.push(heartbeat("broker-b", node, 3, &["orders"]));
    }
    let mut client = harness.client.clone();
    for hb in &beats {
        client.heartbeat(hb.clone()).await.context("heartbeat")?;
    }
    // Keep every node in `alive` heartbeating, as brokers do.
    let alive = Arc::new(Mutex::new(beats));
    let beater = {
        let alive = Arc::clone(&alive);
        let mut client = harness.client.clone();
        tokio::spawn(async move {
            loop {
                let beats = alive.lock().expect("the test does not panic holding the lock").clone();
                for hb in beats {
                    if let Err(status) = client.heartbeat(hb).await {
                        panic!("a heartbeat was refused: {status}");
                    }
                }
                tokio::time::sleep(BEAT_EVERY).await;
            }
        })
    };

    let routes = harness.route("orders").await?.groups;
    assert_eq!(
        members(&routes),
        [
            ("broker-a".to_string(), vec![(2, true), (1, false), (3, false)]),
            ("broker-b".to_string(), vec![(3, true), (1, false), (2, false)]),
        ]
    );
    assert_eq!(routes[0].members[0].client_endpoint, "127.0.0.1:8082");
    assert_eq!((routes[0].queue_count, routes[0].message_types.clone()), (8, vec!["NORMAL".to_string()]));
    assert_eq!(
        members(&harness.route("audit").await?.groups),
        [("broker-a".to_string(), vec![(2, true), (1, false), (3, false)])]
    );

    let view = harness.client.clone().cluster_view(ClusterViewRequest {}).await?.into_inner();
    let nodes: Vec<(&str, u64)> = view.nodes.iter().map(|n| (n.group.as_str(), n.node_id)).collect();
    assert_eq!(
        nodes,
        [("broker-a", 1), ("broker-a", 2), ("broker-a", 3), ("broker-b", 1), ("broker-b", 2), ("broker-b", 3)]
    );
    assert!(view.now_ms > 1_600_000_000_000, "now_ms is the Unix time in ms, got {}", view.now_ms);

    // broker-a's node 3 stops heartbeating: it drops out of broker-a's route, nothing else does.
    alive.lock().expect("not poisoned").retain(|hb| !(hb.group == "broker-a" && hb.node_id == 3));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let routes = loop {
        let routes = harness.route("orders").await?.groups;
        if routes[0].members.len() < 3 {
            break routes;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "node 3 of broker-a never expired: {routes:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        members(&routes),
        [
            ("broker-a".to_string(), vec![(2, true), (1, false)]),
            ("broker-b".to_string(), vec![(3, true), (1, false), (2, false)]),
        ]
    );
    let view = harness.client.clone().cluster_view(ClusterViewRequest {}).await?.into_inner();
    assert_eq!(view.nodes.len(), 5);
    assert!(!view.nodes.iter().any(|n| n.group == "broker-a" && n.node_id == 3));

    beater.abort();
    let _ = beater.await;
    harness.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_status_codes() -> anyhow::Result<()> {
    let harness = Harness::start().await?;
    let mut client = harness.client.clone();

    let message = expect_code(harness.route("orders").await, Code::NotFound)?;
    assert_eq!(message, "no route for topic orders: no live broker group serves it");
    client.heartbeat(heartbeat("broker-a", 1, 1, &["orders"])).await?;
    let message = expect_code(harness.route("payments").await, Code::NotFound)?;
    assert_eq!(message, "no route for topic payments: no live broker group serves it");
    let message = expect_code(harness.route("bad topic").await, Code::InvalidArgument)?;
    assert!(message.contains("topic name \"bad topic\" is invalid"), "{message}");

    let mut bad = heartbeat("broker-a", 0, 1, &["orders"]);
    let message = expect_code(client.heartbeat(bad.clone()).await, Code::InvalidArgument)?;
    assert_eq!(message, "node id 0 is invalid: node ids start at 1");
    bad.node_id = 2;
    bad.group = String::new();
    let message = expect_code(client.heartbeat(bad.clone()).await, Code::InvalidArgument)?;
    assert!(message.starts_with("group name \"\" is invalid: the name is empty"), "{message}");
    bad.group = "broker-a".into();
    bad.client_endpoint = "no-port".into();
    let message = expect_code(client.heartbeat(bad.clone()).await, Code::InvalidArgument)?;
    assert_eq!(message, "client_endpoint \"no-port\" is invalid: it has no port; expected \"host:port\"");
    bad.client_endpoint = "127.0.0.1:8082".into();
    bad.topics[0].queue_count = 0;
    let message = expect_code(client.heartbeat(bad).await, Code::InvalidArgument)?;
    assert_eq!(message, "topic \"orders\" has 0 queues; a topic has 1 to 1024");

    // None of the refused heartbeats changed the registry.
    let view = client.cluster_view(ClusterViewRequest {}).await?.into_inner();
    assert_eq!(view.nodes.iter().map(|n| n.node_id).collect::<Vec<_>>(), [1]);
    harness.shutdown().await
}
