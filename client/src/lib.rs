//! A Rust client for raftmq over the RocketMQ 5 gRPC protocol, and an admin client.
//!
//! - [`Producer`]: sends messages (round robin over a topic's queues, or by message group)
//!   to the leader its route names.
//! - [`SimpleConsumer`]: receives with long polling, acks, changes invisibility.
//! - [`PushConsumer`]: reads the queues the broker assigns it and calls a listener per message.
//! - [`Admin`]: topics, node and cluster status, leader transfer, routes, message queries.
//!
//! Every client takes the endpoint list the RocketMQ clients take (`host:port;host:port`):
//! any node of a group answers any call (followers forward to the leader). On a transport
//! failure or a leader change a call is retried at the next endpoint with a short backoff,
//! until a deadline ([`ClientOptions::retry_deadline`], 5 s by default). A retried send may
//! store a message twice (it keeps its message id); delivery is at least once.
//!
//! ```no_run
//! # async fn demo() -> Result<(), raftmq_client::Error> {
//! use std::time::Duration;
//! use raftmq_client::{Message, Producer, SimpleConsumer};
//!
//! let producer = Producer::new("127.0.0.1:8081;127.0.0.1:8082;127.0.0.1:8083")?;
//! let receipt = producer.send("orders", Message::new("hello").with_tag("created")).await?;
//! println!("stored at queue {} offset {:?}", receipt.queue_id, receipt.offset);
//!
//! let consumer = SimpleConsumer::new("127.0.0.1:8081", "billing", "orders", "created")?;
//! for m in consumer.receive(16, Duration::from_secs(30), Duration::from_secs(5)).await? {
//!     consumer.ack(&m).await?;
//! }
//! # Ok(()) }
//! ```

mod admin;
mod conn;
mod consumer;
mod error;
mod message;
mod producer;
mod pull;
mod push;
mod route;

pub use self::admin::{
    Admin, ClientList, ClusterStatus, GroupProgress, MessageQuery, QueriedMessage, ResetTo, TopicSpec, TopicUpdate,
};
pub use self::conn::{ClientOptions, MAX_ENDPOINTS, parse_endpoints};
pub use self::consumer::{FilterExpression, MAX_LONG_POLL, MAX_RECEIVE, SimpleConsumer};
pub use self::error::Error;
pub use self::message::{Message, ReceivedMessage, SendReceipt};
pub use self::producer::{MAX_BATCH, Producer, Transaction};
pub use self::pull::{PullConsumer, StartFrom};
pub use self::push::{ConsumeResult, PushConsumer, PushOptions};
pub use self::route::{RouteQueue, TopicRoute};
/// The generated protocol types the admin client returns (`TopicInfo`, `NodeStatus`, ...).
pub use raftmq_proto as proto;
/// Node status as the admin service reports it.
pub use raftmq_proto::admin::v1::{ClientInfo, NodeStatus, PeerError};
/// A topic's configuration as the admin service reports it.
pub use raftmq_proto::namesrv::v1::{Role, TopicInfo};
