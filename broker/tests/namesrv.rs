//! Broker nodes and nameservers over real gRPC on loopback: nodes register with every
//! nameserver, the client protocol's QueryRoute follows the nameservers' view (leader first,
//! silent nodes dropped, other groups included), a hung nameserver delays nobody, and with
//! every nameserver down the nodes still answer routes from their own Raft view.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use broker::node::{Node, NodeConfig};
use broker::settings::ServiceSettings;
use raft_log::LogConfig;
use raftmq_proto::namesrv::v1::name_service_client::NameServiceClient;
use raftmq_proto::namesrv::v1::{
    BrokerHeartbeat, ClusterViewRequest, ClusterViewResponse, QueryRouteRequest, Role, TopicInfo,
};
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;

/// Nameserver expiry in these tests (5 s in production).
const EXPIRY: Duration = Duration::from_millis(1500);
/// Node heartbeat interval in these tests (1 s in production).
const BEAT_EVERY: Duration = Duration::from_millis(200);
const DEADLINE: Duration = Duration::from_secs(15);
const QUEUES: u32 = 4;

mod common;

/// An in-process nameserver on its own runtime, so stopping it ends every connection at once,
/// as a crash would.
struct NameSrv {
    addr: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl NameSrv {
    async fn start() -> anyhow::Result<NameSrv> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?.to_string();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            nameserver::serve(listener, EXPIRY, std::future::pending()).await?;
            anyhow::Ok(())
        });
        Ok(NameSrv { addr, runtime: Some(runtime) })
    }

    async fn client(&self) -> anyhow::Result<NameServiceClient<tonic::transport::Channel>> {
        NameServiceClient::connect(format!("http://{}", self.addr)).await.context("connect to the nameserver")
    }

    async fn view(&self) -> anyhow::Result<ClusterViewResponse> {
        Ok(self.client().await?.cluster_view(ClusterViewRequest {}).await?.into_inner())
    }

    /// `(group, [(node id, client endpoint)])` of the nameserver's route for `topic`, leader first.
    async fn route(&self, topic: &str) -> anyhow::Result<Vec<(String, Vec<(u64, String)>)>> {
        let routes = self.client().await?.query_route(QueryRouteRequest { topic: topic.into() }).await?.into_inner();
        Ok(routes
            .groups
            .into_iter()
            .map(|g| (g.group, g.members.into_iter().map(|m| (m.node_id, m.client_endpoint)).collect()))
            .collect())
    }

    /// Stops the nameserver and closes its connections.
    fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for NameSrv {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn configs(dir: &std::path::Path, nameservers: &[String]) -> anyhow::Result<Vec<NodeConfig>> {
    common::three_nodes(dir, "broker-a", |c| NodeConfig {
        log: LogConfig { segment_size: 4 << 20, max_payload: 1 << 20, ..LogConfig::default() },
        service: ServiceSettings { auto_create_queues: Some(QUEUES), ..ServiceSettings::default() },
        cluster: "TestCluster".into(),
        nameservers: nameservers.to_vec(),
        namesrv_heartbeat: BEAT_EVERY,
        ..c
    })
}

async fn start_nodes(dir: &std::path::Path, nameservers: &[String]) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for cfg in configs(dir, nameservers)? {
        nodes.push(Node::start(cfg).await?);
    }
    Ok(nodes)
}

/// Polls `probe` every 50 ms until it yields a value; fails after `deadline` with the last
/// reason it gave.
async fn eventually<T>(
    what: &str,
    deadline: Duration,
    mut probe: impl AsyncFnMut() -> anyhow::Result<Result<T, String>>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        let last = match probe().await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(reason)) => reason,
            Err(e) => format!("{e:#}"),
        };
        anyhow::ensure!(start.elapsed() < deadline, "{what}: not within {deadline:?}; last: {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the nameserver lists the three nodes with one leader they all name, each
/// reporting its log and commit progress; returns the leader.
async fn registered_leader(ns: &NameSrv) -> anyhow::Result<u64> {
    eventually("3 nodes registered with one leader", DEADLINE, async || {
        let nodes = ns.view().await?.nodes;
        let leaders: Vec<u64> = nodes.iter().filter(|n| n.role() == Role::Leader).map(|n| n.node_id).collect();
        let ids: Vec<u64> = nodes.iter().map(|n| n.node_id).collect();
        Ok(match leaders[..] {
            [leader]
                if ids == [1, 2, 3]
                    && nodes
                        .iter()
                        .all(|n| n.leader_id == leader && n.last_log_index.is_some() && n.commit_index.is_some()) =>
            {
                Ok(leader)
            }
            _ => Err(format!("nodes {ids:?}, leaders {leaders:?}")),
        })
    })
    .await
}

async fn query_route(node: &Node, topic: &str) -> anyhow::Result<pb::QueryRouteResponse> {
    let mut client = MessagingServiceClient::connect(format!("http://{}", node.client_addr)).await?;
    let request = pb::QueryRouteRequest {
        topic: Some(pb::Resource { resource_namespace: String::new(), name: topic.into() }),
        endpoints: None,
    };
    Ok(client.query_route(request).await?.into_inner())
}

/// `group -> (queue count, endpoints in order)` of a v2 route; fails unless its status is OK.
fn groups_of(resp: &pb::QueryRouteResponse) -> anyhow::Result<BTreeMap<String, (usize, Vec<String>)>> {
    let code = resp.status.as_ref().map(|s| s.code);
    anyhow::ensure!(code == Some(pb::Code::Ok as i32), "QueryRoute answered {:?}", resp.status);
    let mut groups: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    for q in &resp.message_queues {
        let broker = q.broker.as_ref().context("a queue without a broker")?;
        let endpoints = broker.endpoints.as_ref().map(|e| e.addresses.as_slice()).unwrap_or_default();
        let endpoints = endpoints.iter().map(|a| format!("{}:{}", a.host, a.port)).collect();
        let entry = groups.entry(broker.name.clone()).or_insert((0, endpoints));
        entry.0 += 1;
    }
    Ok(groups)
}

fn client_endpoint(nodes: &[Node], id: u64) -> String {
    nodes[(id - 1) as usize].client_addr.to_string()
}

/// Heartbeats a fake single-node group "broker-b" serving `topic` with 2 queues, until aborted.
async fn fake_group(ns: String, topic: &'static str) -> anyhow::Result<()> {
    let mut client = NameServiceClient::connect(format!("http://{ns}")).await?;
    let mut beat = 0;
    loop {
        beat += 1;
        let hb = BrokerHeartbeat {
            cluster: "TestCluster".into(),
            group: "broker-b".into(),
            node_id: 1,
            role: Role::Leader as i32,
            term: 1,
            leader_id: 1,
            client_endpoint: "10.9.9.9:8081".into(),
            raft_endpoint: "10.9.9.9:9081".into(),
            topics: vec![TopicInfo {
                name: topic.into(),
                queue_count: 2,
                message_types: vec!["NORMAL".into()],
                perm: 6,
            }],
            commit_index: Some(beat),
            last_log_index: Some(beat),
            timestamp_ms: beat as i64,
        };
        client.heartbeat(hb).await?;
        tokio::time::sleep(BEAT_EVERY).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_and_routes_follow_the_nameserver_view() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ns = NameSrv::start().await?;
    let mut nodes = start_nodes(dir.path(), std::slice::from_ref(&ns.addr)).await?;
    let leader = registered_leader(&ns).await?;

    // The heartbeats carry the cluster, the endpoints and the Raft progress.
    let view = ns.view().await?;
    for (hb, node) in view.nodes.iter().zip(&nodes) {
        assert_eq!(hb.cluster, "TestCluster");
        assert_eq!(hb.group, "broker-a");
        assert_eq!(hb.client_endpoint, node.client_addr.to_string());
        assert_eq!(hb.raft_endpoint, node.raft_addr.to_string());
        assert!(hb.term >= 1, "term {}", hb.term);
        assert!(hb.commit_index <= hb.last_log_index, "{hb:?}");
    }

    // A topic created on first use shows up in every node's topic table.
    let created = query_route(&nodes[0], "orders").await?;
    assert_eq!(groups_of(&created)?.get("broker-a").map(|g| g.0), Some(QUEUES as usize));
    eventually("the topic in every node's heartbeat", DEADLINE, async || {
        let view = ns.view().await?;
        let with: Vec<u64> = view
            .nodes
            .iter()
            .filter(|n| {
                n.topics
                    .iter()
                    .any(|t| t.name == "orders" && t.queue_count == QUEUES && t.perm == 6 && t.message_types.len() == 4)
            })
            .map(|n| n.node_id)
            .collect();
        Ok(if with == [1, 2, 3] { Ok(()) } else { Err(format!("nodes listing it: {with:?}")) })
    })
    .await?;

    // Another group serving the topic is only known through the nameserver: a follower's route
    // lists it, and lists this group's members leader first.
    let fake = tokio::spawn(fake_group(ns.addr.clone(), "orders"));
    let follower = (1..=3).find(|id| *id != leader).context("a follower")?;
    let all: BTreeSet<String> = nodes.iter().map(|n| n.client_addr.to_string()).collect();
    let leader_endpoint = client_endpoint(&nodes, leader);
    eventually("the follower's route from the nameserver view", DEADLINE, async || {
        let groups = groups_of(&query_route(&nodes[(follower - 1) as usize], "orders").await?)?;
        let a = groups.get("broker-a");
        let ok = groups.get("broker-b") == Some(&(2, vec!["10.9.9.9:8081".to_string()]))
            && a.is_some_and(|(count, endpoints)| {
                *count == QUEUES as usize
                    && endpoints.first() == Some(&leader_endpoint)
                    && endpoints.iter().cloned().collect::<BTreeSet<_>>() == all
            });
        Ok(if ok { Ok(()) } else { Err(format!("groups {groups:?}")) })
    })
    .await?;
    fake.abort();

    // A stopped node leaves the nameserver's routes and the brokers' routes.
    let gone = (1..=3).find(|id| *id != leader && *id != follower).context("the other follower")?;
    let gone_endpoint = client_endpoint(&nodes, gone);
    let stopped = nodes.remove((gone - 1) as usize);
    let stopped_at = Instant::now();
    stopped.shutdown().await;
    let expected: BTreeSet<String> = all.iter().filter(|e| **e != gone_endpoint).cloned().collect();
    eventually("the stopped node out of the nameserver's route", EXPIRY + Duration::from_secs(5), async || {
        let route = ns.route("orders").await?;
        let a: Vec<u64> = route.iter().filter(|g| g.0 == "broker-a").flat_map(|g| g.1.iter().map(|m| m.0)).collect();
        Ok(if a.len() == 2 && !a.contains(&gone) { Ok(()) } else { Err(format!("broker-a members {a:?}")) })
    })
    .await?;
    for node in &nodes {
        eventually("the stopped node out of the broker's route", Duration::from_secs(5), async || {
            let groups = groups_of(&query_route(node, "orders").await?)?;
            let endpoints = groups.get("broker-a").map(|g| g.1.clone()).unwrap_or_default();
            let ok = endpoints.first() == Some(&leader_endpoint)
                && endpoints.iter().cloned().collect::<BTreeSet<_>>() == expected;
            Ok(if ok { Ok(()) } else { Err(format!("broker-a endpoints {endpoints:?}")) })
        })
        .await?;
    }
    let took = stopped_at.elapsed();
    assert!(took < Duration::from_secs(5) + Duration::from_secs(3), "the routes dropped the node after {took:?}");

    for node in nodes {
        node.shutdown().await;
    }
    ns.kill();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nameserver_hears_every_node_and_routes_survive_them_all_going_down() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (first, second) = (NameSrv::start().await?, NameSrv::start().await?);
    // A "nameserver" that accepts connections and never answers, listed first.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hung_addr = hung.local_addr()?.to_string();
    let nameservers = [hung_addr, first.addr.clone(), second.addr.clone()];
    let nodes = start_nodes(dir.path(), &nameservers).await?;
    let leader = registered_leader(&first).await?;
    assert_eq!(registered_leader(&second).await?, leader);

    // The hung nameserver delays neither the others nor the node: over 2 s, each node's
    // heartbeats (every 200 ms) keep arriving at the second nameserver.
    let mut beats: BTreeMap<u64, BTreeSet<i64>> = BTreeMap::new();
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(2) {
        for hb in second.view().await?.nodes {
            beats.entry(hb.node_id).or_default().insert(hb.timestamp_ms);
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let counts: Vec<(u64, usize)> = beats.iter().map(|(id, t)| (*id, t.len())).collect();
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.iter().all(|(_, n)| *n >= 4), "heartbeats seen per node in 2 s: {counts:?}");

    // Routes come from the nameservers while they are up...
    let follower = (1..=3).find(|id| *id != leader).context("a follower")?;
    let follower_node = &nodes[(follower - 1) as usize];
    let leader_endpoint = client_endpoint(&nodes, leader);
    query_route(follower_node, "orders").await?;
    eventually("the topic routed by the nameservers", DEADLINE, async || {
        let route = second.route("orders").await?;
        Ok(if route.len() == 1 { Ok(()) } else { Err(format!("{route:?}")) })
    })
    .await?;

    // ...and from the node's own Raft view once every nameserver is down: for a known topic and
    // for one created now.
    first.kill();
    second.kill();
    for topic in ["orders", "fresh"] {
        let groups = groups_of(&query_route(follower_node, topic).await?)?;
        let (count, endpoints) = groups.get("broker-a").with_context(|| format!("{topic}: {groups:?}"))?;
        assert_eq!(*count, QUEUES as usize, "{topic}");
        assert_eq!(endpoints.first(), Some(&leader_endpoint), "{topic}: the leader goes first");
        assert_eq!(groups.len(), 1, "{topic}: {groups:?}");
    }

    for node in nodes {
        node.shutdown().await;
    }
    drop(hung);
    Ok(())
}
