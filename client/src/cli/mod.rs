//! The `mqadmin` commands and their output.

pub mod bench;
pub mod cluster;
pub mod message;
pub mod table;
pub mod topic;
