//! Errors of the CommitLog, each naming what failed and where.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the log. Every variant that concerns a file names it.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An operating-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done, e.g. "fdatasync".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error the OS returned.
        #[source]
        source: io::Error,
    },

    /// A record or file did not pass its checks at a place where it must be valid.
    #[error(
        "corrupt log data in {path} at byte offset {offset}: {reason}; the file was not modified \
         (restore this node's data from a backup, or retire this node and add a new member with a new \
         node id in its place; never restart it on an emptied directory under the same id: it would \
         forget its votes)"
    )]
    Corrupt {
        /// The file holding the bad bytes.
        path: PathBuf,
        /// Byte offset of the bad record or header within that file.
        offset: u64,
        /// What check failed.
        reason: String,
    },

    /// The directory was written by a format this build does not read.
    #[error(
        "{path} has log format version {found}, this build reads version {supported}; \
         run a raftmq build that supports version {found}"
    )]
    UnsupportedVersion {
        /// The file carrying the version.
        path: PathBuf,
        /// The version found on disk.
        found: u32,
        /// The version this build writes and reads.
        supported: u32,
    },

    /// A caller broke the log's contract (a gap, an index out of range, a record too large).
    #[error("invalid log operation: {0}")]
    Invalid(String),

    /// The records asked for are being copied to this node from another replica (after it
    /// caught up through a snapshot); reading them is refused until they are in place.
    #[error(
        "log records {from}..{to} are still being copied to this node from another group member; \
         retry shortly"
    )]
    Incomplete {
        /// First index not yet in place.
        from: u64,
        /// One past the last index not yet in place.
        to: u64,
    },

    /// An earlier write or fsync failed; the log refuses further work until reopened.
    #[error("the log stopped after an earlier IO error ({0}); reopen it to recover")]
    Stopped(String),
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io { op, path: path.into(), source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Self::Corrupt { path: path.into(), offset, reason: reason.into() }
    }
}

impl From<LogError> for io::Error {
    fn from(err: LogError) -> Self {
        let kind = match &err {
            LogError::Io { source, .. } => source.kind(),
            LogError::Corrupt { .. } | LogError::UnsupportedVersion { .. } => io::ErrorKind::InvalidData,
            LogError::Invalid(_) => io::ErrorKind::InvalidInput,
            LogError::Incomplete { .. } => io::ErrorKind::WouldBlock,
            LogError::Stopped(_) => io::ErrorKind::BrokenPipe,
        };
        io::Error::new(kind, err)
    }
}

/// Result with [`LogError`].
pub type Result<T, E = LogError> = std::result::Result<T, E>;
