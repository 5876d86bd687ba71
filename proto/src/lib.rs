//! Protocol definitions for raftmq, generated from the `.proto` files under `proto/proto/`.
//!
//! - [`rocketmq::v2`]: the RocketMQ 5 client protocol (`apache.rocketmq.v2`),
//!   wire-compatible with the official clients.
//! - [`raft::v1`]: Raft RPC between the nodes of one broker group (`raftmq.raft.v1`).
//! - [`namesrv::v1`]: broker heartbeats and routes (`raftmq.namesrv.v1`).
//! - [`admin::v1`]: topic and cluster administration (`raftmq.admin.v1`).
//!
//! Each module holds the messages, a `*_client` module (tonic client) and a `*_server`
//! module (tonic server trait and service). Module nesting follows the protobuf
//! packages minus their first component, which keeps the generated cross-package
//! paths (`super::super::namesrv::v1`) valid.

/// All of this crate's `.proto` files as one encoded `google.protobuf.FileDescriptorSet`
/// (imports included, comments stripped), for gRPC reflection and schema checks.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));

/// The RocketMQ 5 client protocol.
pub mod rocketmq {
    /// `apache.rocketmq.v2`: `MessagingService` and its messages.
    #[allow(missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]
    pub mod v2 {
        tonic::include_proto!("apache.rocketmq.v2");
    }
}

/// Raft RPC between the nodes of one broker group.
pub mod raft {
    /// `raftmq.raft.v1`: `RaftService` and its messages.
    #[allow(missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("raftmq.raft.v1");
    }
}

/// The nameserver protocol.
pub mod namesrv {
    /// `raftmq.namesrv.v1`: `NameService` and its messages.
    #[allow(missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("raftmq.namesrv.v1");
    }
}

/// The admin protocol used by `mqadmin`.
pub mod admin {
    /// `raftmq.admin.v1`: `AdminService` and its messages.
    #[allow(missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("raftmq.admin.v1");
    }
}
