//! `mqbroker`: one node of a raftmq broker group, or (`mqbroker dev`) a three-node group in
//! one process on 127.0.0.1 for a first try.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use broker::node::{Node, NodeConfig};
use broker::raft::NodeInfo;
use broker::service::ServiceSettings;
use clap::{Parser, Subcommand};
use raft_log::LogConfig;

#[derive(Parser, Debug)]
#[command(name = "mqbroker", version, about = "A raftmq broker node")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
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
    },
}

fn dev_configs(data_dir: &std::path::Path, client_port: u16, raft_port: u16) -> Vec<NodeConfig> {
    let peers: BTreeMap<u64, NodeInfo> = (0..3u16)
        .map(|i| {
            let info = NodeInfo {
                raft_addr: format!("127.0.0.1:{}", raft_port + i),
                client_addr: format!("127.0.0.1:{}", client_port + i),
            };
            (u64::from(i) + 1, info)
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
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(500),
            snapshot_every: 100_000,
            keep_after_snapshot: 10_000,
            service: ServiceSettings { auto_create_queues: Some(8), ..ServiceSettings::default() },
        })
        .collect()
}

#[allow(clippy::print_stdout)]
async fn dev(data_dir: PathBuf, client_port: u16, raft_port: u16) -> anyhow::Result<()> {
    let mut nodes = Vec::new();
    for cfg in dev_configs(&data_dir, client_port, raft_port) {
        let id = cfg.node_id;
        let node = Node::start(cfg).await.map_err(|e| anyhow::anyhow!("node {id}: {e}"))?;
        nodes.push(node);
    }
    let endpoints: Vec<String> = nodes.iter().map(|n| n.client_addr.to_string()).collect();
    println!("raftmq dev: broker group \"broker-a\" with 3 nodes, data under {}", data_dir.display());
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
    tokio::signal::ctrl_c().await?;
    for n in nodes {
        n.shutdown().await;
    }
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
        match cli.command {
            Commands::Dev { data_dir, client_port, raft_port } => dev(data_dir, client_port, raft_port).await,
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
