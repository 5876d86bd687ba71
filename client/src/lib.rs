//! Rust client for raftmq over the RocketMQ 5 gRPC protocol (not built yet).
