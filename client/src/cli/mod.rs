//! The `mqadmin` commands and their output.

pub mod bench;
pub mod check;
pub mod cluster;
pub mod group;
pub mod health;
pub mod message;
pub mod record;
pub mod table;
pub mod topic;
