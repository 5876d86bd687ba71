//! `mqbroker`: one node of a raftmq broker group, or (`mqbroker dev`) a three-node group in
//! one process on 127.0.0.1 for a first try.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use broker::config::FileConfig;
use broker::node::{Node, NodeConfig};
use broker::raft::{NodeId, NodeInfo};
use broker::settings::ServiceSettings;
use clap::{Parser, Subcommand};
use raft_log::LogConfig;

#[derive(Parser, Debug)]
#[command(name = "mqbroker", version, about = "A raftmq broker node", args_conflicts_with_subcommands = true)]
struct Cli {
    /// Run one node of a group as `broker.toml` describes it (fields and defaults: README).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Commands>,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Run a three-node group in this process on 127.0.0.1 (client endpoints 8081-8083).
    Dev {
        /// Where the three nodes keep their data.
        #[arg(long, default_value = "data/dev")]
        data_dir: PathBuf,
        /// Client port of the first node; the others follow it.
        #[arg(long, default_value_t = 8081)]
        client_port: u16,
        /// Raft port of the first node; the others follow it.
        #[arg(long, default_value_t = 9081)]
        raft_port: u16,
        /// Port of the embedded nameserver the nodes register with.
        #[arg(long, default_value_t = nameserver::DEFAULT_PORT)]
        namesrv_port: u16,
    },
}

fn dev_configs(data_dir: &std::path::Path, client_port: u16, raft_port: u16, namesrv: &str) -> Vec<NodeConfig> {
    let peers: BTreeMap<NodeId, NodeInfo> = (0..3u16)
        .map(|i| {
            let info = NodeInfo {
                raft_addr: format!("127.0.0.1:{}", raft_port + i),
                client_addr: format!("127.0.0.1:{}", client_port + i),
            };
            (NodeId(u64::from(i) + 1), info)
        })
        .collect();
    peers
        .keys()
        .map(|&id| NodeConfig {
            group: "broker-a".into(),
            node_id: id,
            peers: peers.clone(),
            data_dir: data_dir.join(format!("node-{id}")),
            log: LogConfig { segment_size: 256 << 20, ..LogConfig::default() },
            heartbeat: Duration::from_millis(50),
            election_timeout: Duration::from_millis(200),
            snapshot_every: 2_000,
            keep_after_snapshot: 10_000,
            service: ServiceSettings { auto_create_queues: Some(8), ..ServiceSettings::default() },
            nameservers: vec![namesrv.to_string()],
            ..NodeConfig::default()
        })
        .collect()
}

#[allow(clippy::print_stdout)]
async fn dev(data_dir: PathBuf, client_port: u16, raft_port: u16, namesrv_port: u16) -> anyhow::Result<()> {
    let (listener, namesrv_addr) = nameserver::bind(&format!("127.0.0.1:{namesrv_port}"))
        .await
        .map_err(|e| anyhow::anyhow!("embedded nameserver: {e} (--namesrv-port)"))?;
    let (stop_namesrv, namesrv_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut namesrv = tokio::spawn(nameserver::serve(listener, nameserver::DEFAULT_EXPIRY, async {
        let _ = namesrv_stopped.await;
    }));
    let configs = dev_configs(&data_dir, client_port, raft_port, &namesrv_addr.to_string());
    let start = |cfg: NodeConfig| async move {
        let id = cfg.node_id;
        Node::start(cfg).await.map_err(|e| anyhow::anyhow!("node {id}: {e}"))
    };
    let mut nodes = Vec::new();
    if configs.iter().all(|c| c.data_dir.join("commitlog").exists()) {
        // A group started before: the nodes open their data side by side, as separate
        // machines would.
        nodes = futures::future::try_join_all(configs.into_iter().map(start)).await?;
    } else {
        // Node 1 initializes the group: start it last, so its first election finds the
        // others listening.
        for cfg in configs.into_iter().rev() {
            nodes.insert(0, start(cfg).await?);
        }
    }
    let endpoints: Vec<String> = nodes.iter().map(|n| n.client_addr.to_string()).collect();
    println!("raftmq dev: broker group \"broker-a\" with 3 nodes, data under {}", data_dir.display());
    println!("  nameserver: {namesrv_addr}");
    for (i, n) in nodes.iter().enumerate() {
        println!("  node {}: client endpoint {}  raft {}", i + 1, n.client_addr, n.raft_addr);
    }
    println!("\nEndpoints for RocketMQ 5 clients: {}", endpoints.join(";"));
    println!("Topics are created on first use (8 queues).\n");
    println!("Try it with the official Python client (pip install rocketmq-python-client==5.1.2):\n");
    println!("    from rocketmq import ClientConfiguration, Credentials, Message, Producer");
    println!("    p = Producer(ClientConfiguration(\"{}\", Credentials()), (\"demo\",)); p.startup()", endpoints[0]);
    println!("    m = Message(); m.topic = \"demo\"; m.body = b\"hello\"; print(p.send(m))\n");
    println!("Ctrl-C stops the group.");
    let namesrv_ended = tokio::select! {
        r = tokio::signal::ctrl_c() => {
            r?;
            false
        }
        r = &mut namesrv => {
            tracing::error!(result = ?r, "the embedded nameserver stopped; routes now come from the nodes' own view");
            tokio::signal::ctrl_c().await?;
            true
        }
    };
    for n in nodes {
        n.shutdown().await;
    }
    let _ = stop_namesrv.send(());
    if !namesrv_ended {
        // A client connection that never closes can hold a graceful stop forever: bound it.
        match tokio::time::timeout(Duration::from_secs(5), &mut namesrv).await {
            Ok(served) => served??,
            Err(_) => {
                tracing::warn!("the embedded nameserver did not stop within 5 s; stopping it");
                namesrv.abort();
            }
        }
    }
    Ok(())
}

/// Runs the node `path` describes until Ctrl-C or SIGTERM.
async fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let cfg = FileConfig::load(path)?.into_node_config(path)?;
    let (group, id) = (cfg.group.clone(), cfg.node_id);
    let node = Node::start(cfg).await.map_err(|e| anyhow::anyhow!("node {id} of {group}: {e}"))?;
    tracing::info!(%group, node = %id, client = %node.client_addr, raft = %node.raft_addr, "broker node started");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
        why = node.failed() => {
            tracing::error!(%group, node = %id, error = %why, "raft stopped on this node; exiting");
            node.shutdown().await;
            anyhow::bail!("node {id} of {group}: raft stopped: {why}");
        }
    }
    tracing::info!(%group, node = %id, "stopping: handing over the lead and draining the calls in flight");
    node.stop().await;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match (cli.command, cli.config) {
            (Some(Commands::Dev { data_dir, client_port, raft_port, namesrv_port }), _) => {
                dev(data_dir, client_port, raft_port, namesrv_port).await
            }
            (None, Some(path)) => run(&path).await,
            (None, None) => Err(anyhow::anyhow!("give --config broker.toml to run a node, or `dev` for a local group")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
