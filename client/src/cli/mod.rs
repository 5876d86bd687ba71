//! The `mqadmin` commands and their output.

pub mod bench;
pub mod cluster;
pub mod group;
pub mod message;
pub mod table;
pub mod topic;
