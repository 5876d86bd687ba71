//! The raftmq CommitLog: a Raft log storage engine whose log is the broker's message store.
//!
//! Records (a checksummed header plus an opaque payload) live in preallocated segment
//! files named by their first Raft index, each with a fixed-width index file mapping an
//! index to its byte position. One writer thread owns the files and makes each batch of
//! appends durable with a single `fdatasync` before reporting it, or, under
//! [`SyncPolicy::Interval`], reports it once written and fsyncs on an interval. On open, a
//! torn tail is cut back to the last valid record; damage anywhere else is an error naming
//! the file and offset. [`RaftLogStore`] adapts the log to openraft's `RaftLogStorage`.
//!
//! The crate knows nothing of gRPC or of messages: payloads are bytes.

mod adapter;
mod cache;
mod core;
mod error;
pub mod fs;
mod log;
mod meta;
pub mod record;
mod segment;
#[cfg(feature = "sim")]
pub mod sim;

pub use crate::adapter::{RaftLogStore, decode_entry, describe_versions, encode_entry};
pub use crate::core::{
    Backfilled, LogConfig, LogCore, MAX_SYNC_INTERVAL, OpenReport, RemovedSegment, Retention, SyncPolicy,
};
pub use crate::error::{LogError, Result};
pub use crate::log::{Log, LogView, OnDurable};
pub use crate::meta::{MAX_META_FIELD, MetaState, Purged};
pub use crate::record::{PayloadPart, Record};
pub use crate::segment::FORMAT_VERSION;
