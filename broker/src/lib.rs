//! The raftmq broker node: the Raft group over the CommitLog, the derived stores, the
//! background work of a node (dispatch, retention, delay timers, transaction check-back, the
//! disk guard) and
//! the gRPC services.

pub mod admin;
pub mod check_back;
pub mod config;
pub mod disk;
pub mod durable;
pub mod forward;
pub mod listener;
pub mod node;
pub mod raft;
pub mod registration;
pub mod retention;
pub mod service;
pub mod sessions;
pub mod settings;
pub mod store;
pub mod timers;
