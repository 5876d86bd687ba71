//! `mqadmin`: the raftmq admin command line: topics, the group's status, leader transfer,
//! message queries, and a produce benchmark.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cli::bench::{ConsumeArgs, ProduceArgs};
use crate::cli::check::CheckArgs;
use crate::cli::message::QueryArgs;

#[derive(Parser, Debug)]
#[command(name = "mqadmin", version, about = "Administer a raftmq broker group")]
struct Cli {
    /// Broker client endpoints, `host:port;host:port` (any node of the group answers).
    #[arg(long, global = true, default_value = "127.0.0.1:8081")]
    endpoints: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, change, list, route and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// The group's members and their Raft state; leader transfer.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Find messages by id, key or queue offset.
    #[command(subcommand)]
    Message(MessageCommand),
    /// Consumer groups and the clients connected to the members.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Dead letters: messages a consumer group never acknowledged within its attempts.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Exits 0 when the process at the (first) endpoint serves: a broker node that knows its
    /// group's leader, or a nameserver (for container health checks).
    Health,
    /// Reads the records of `bench produce --record` and `bench consume --record` and
    /// prints every invariant with its count (nothing lost, nothing altered, offsets gapless,
    /// committed offsets never going back, ...), the unavailability of a fault, and whether
    /// the members hold the same log; fails if an invariant does not hold.
    Check(CheckArgs),
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of queues (default: the broker's).
        #[arg(long)]
        queues: Option<u32>,
        /// Accepted message types, comma-separated: NORMAL,FIFO,DELAY,TRANSACTION (default: all).
        #[arg(long, value_delimiter = ',')]
        types: Vec<String>,
        /// RocketMQ permission bits: 6 = read and write, 4 = read, 2 = write.
        #[arg(long)]
        perm: Option<u32>,
    },
    /// Change a topic (only what is given changes; queues can only grow).
    Update {
        /// Topic name.
        name: String,
        /// New number of queues.
        #[arg(long)]
        queues: Option<u32>,
        /// New message types, comma-separated.
        #[arg(long, value_delimiter = ',')]
        types: Vec<String>,
        /// New permission bits.
        #[arg(long)]
        perm: Option<u32>,
    },
    /// List the group's topics.
    List,
    /// Show where a topic's queues are.
    Route {
        /// Topic name.
        name: String,
    },
    /// Delete a topic with its queues and consumer state.
    Delete {
        /// Topic name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Every member's role, term, leader and log indexes.
    List,
    /// Move the group's leadership to another member.
    TransferLeader {
        /// Broker group.
        #[arg(long)]
        group: String,
        /// Node id of the new leader.
        #[arg(long)]
        to: u64,
    },
    /// Add a node under a new id: it joins as a learner, copies the log and every retained
    /// message, and becomes a voter once it holds them all.
    AddNode {
        /// Broker group.
        #[arg(long)]
        group: String,
        #[command(flatten)]
        node: cli::cluster::NewNodeArgs,
    },
    /// Remove a node from the group's voters; its id is retired and never used again.
    RemoveNode {
        /// Broker group.
        #[arg(long)]
        group: String,
        /// Node id to remove.
        #[arg(long)]
        node_id: u64,
    },
    /// Replace a node (e.g. one whose disk is lost or corrupt) with a new one under a new
    /// id, in one joint-consensus change once the new node has caught up.
    ReplaceNode {
        /// Broker group.
        #[arg(long)]
        group: String,
        /// Node id to replace (retired for good).
        #[arg(long)]
        old: u64,
        #[command(flatten)]
        node: cli::cluster::NewNodeArgs,
    },
}

#[derive(Subcommand, Debug)]
enum MessageCommand {
    /// Messages by --id, by --key (within --begin/--end), or at --topic/--queue/--offset,
    /// from the answering node's own stores; prints their properties and body preview.
    #[command(override_usage = "mqadmin message query --id ID [--topic TOPIC]\n       \
                                mqadmin message query --key KEY [--topic TOPIC] [--begin TIME] [--end TIME] [--max N]\n       \
                                mqadmin message query --topic TOPIC --queue QUEUE --offset OFFSET")]
    Query(QueryArgs),
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// Creates or changes a consumer group's configuration (RocketMQ's `updateSubGroup`).
    Update {
        /// Consumer group.
        group: String,
        /// Orderly consumption: on each queue, a message group's next message is delivered
        /// only after the one before it is acknowledged (`true` or `false`).
        #[arg(long, action = clap::ArgAction::Set, default_value_t = false)]
        fifo: bool,
        /// Deliveries of a message before it goes to the group's dead-letter queue
        /// (`%DLQ%<group>`).
        #[arg(long, default_value_t = 16)]
        max_attempts: u32,
    },
    /// The configured consumer groups.
    List,
    /// The live clients of a consumer group (or of a topic they publish or subscribe to) on
    /// every member: kind, topics, address, language and version, idle time.
    Clients {
        /// Consumer group or topic.
        group: String,
    },
    /// A consumer group's progress per queue: broker offset, consumer offset, in flight,
    /// ready and lag.
    Progress {
        /// Consumer group.
        group: String,
    },
    /// Moves a consumer group's position on every queue of a topic (回溯消费); its consumers
    /// then receive from there.
    ResetOffset {
        /// Consumer group.
        group: String,
        /// Topic.
        #[arg(long)]
        topic: String,
        /// `earliest`, `latest`, an RFC 3339 time or milliseconds since the epoch: the first
        /// message stored at or after it.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
enum DlqCommand {
    /// The messages in a consumer group's dead-letter topic (`%DLQ%<group>`), oldest first:
    /// offset, message id, keys, original topic, body preview.
    List {
        /// Consumer group.
        group: String,
        /// Most messages listed.
        #[arg(long, default_value_t = 32)]
        limit: usize,
    },
    /// Sends dead letters again to their original topic (every consumer group of that topic
    /// gets them, as new messages with their keys, tag, message group and properties, and
    /// ORIGIN_MESSAGE_ID naming the dead letter); the dead-letter topic keeps them.
    Resend {
        /// Consumer group.
        group: String,
        /// A message id to resend (repeat for more).
        #[arg(long = "id", required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead letter of the group.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Concurrent producers, each waiting for its acks; prints throughput and latency.
    Produce(ProduceArgs),
    /// A consumer group of simple consumers receiving and acking; prints throughput and
    /// end-to-end latency.
    Consume(ConsumeArgs),
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let endpoints = cli.endpoints.as_str();
    match cli.command {
        Command::Topic(TopicCommand::Create { name, queues, types, perm }) => {
            cli::topic::create(endpoints, name, queues, types, perm).await
        }
        Command::Topic(TopicCommand::Update { name, queues, types, perm }) => {
            cli::topic::update(endpoints, name, queues, types, perm).await
        }
        Command::Topic(TopicCommand::List) => cli::topic::list(endpoints).await,
        Command::Topic(TopicCommand::Route { name }) => cli::topic::route(endpoints, &name).await,
        Command::Topic(TopicCommand::Delete { name }) => cli::topic::delete(endpoints, &name).await,
        Command::Cluster(ClusterCommand::List) => cli::cluster::list(endpoints).await,
        Command::Cluster(ClusterCommand::TransferLeader { group, to }) => {
            cli::cluster::transfer_leader(endpoints, &group, to).await
        }
        Command::Cluster(ClusterCommand::AddNode { group, node }) => {
            cli::cluster::change(endpoints, &group, Some(node), 0).await
        }
        Command::Cluster(ClusterCommand::RemoveNode { group, node_id }) => {
            cli::cluster::change(endpoints, &group, None, node_id).await
        }
        Command::Cluster(ClusterCommand::ReplaceNode { group, old, node }) => {
            cli::cluster::change(endpoints, &group, Some(node), old).await
        }
        Command::Message(MessageCommand::Query(args)) => cli::message::query(endpoints, args).await,
        Command::Group(GroupCommand::Update { group, fifo, max_attempts }) => {
            cli::group::update(endpoints, &group, fifo, max_attempts).await
        }
        Command::Group(GroupCommand::List) => cli::group::list(endpoints).await,
        Command::Group(GroupCommand::Clients { group }) => cli::group::clients(endpoints, &group).await,
        Command::Group(GroupCommand::Progress { group }) => cli::group::progress(endpoints, &group).await,
        Command::Group(GroupCommand::ResetOffset { group, topic, to }) => {
            cli::group::reset_offset(endpoints, &group, &topic, &to).await
        }
        Command::Health => cli::health::health(endpoints).await,
        Command::Check(args) => cli::check::check(args).await,
        Command::Bench(BenchCommand::Produce(args)) => cli::bench::produce(endpoints, args).await,
        Command::Bench(BenchCommand::Consume(args)) => cli::bench::consume(endpoints, args).await,
        Command::Dlq(DlqCommand::List { group, limit }) => cli::group::dead_letters(endpoints, &group, limit).await,
        Command::Dlq(DlqCommand::Resend { group, ids, all: _ }) => {
            cli::group::resend_dead_letters(endpoints, &group, &ids).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let result = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("mqadmin: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}
