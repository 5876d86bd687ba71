//! The raftmq broker node: the replicated state machine over the CommitLog, and (to come)
//! the Raft group wiring and the gRPC services.

pub mod admin;
pub mod config;
pub mod durable;
pub mod forward;
pub mod node;
pub mod raft;
pub mod registration;
pub mod retention;
pub mod service;
pub mod sessions;
pub mod settings;
pub mod store;
