//! How far the derived stores are durable: the last log index dispatched into them, the
//! dispatch clock, each queue's next offset and the last accepted timer fire at that point. Written (temporary file,
//! fsync, rename) only after the ConsumeQueue and IndexFile were synced, so on restart every
//! record up to `dispatched` is on disk and later ones are cut and dispatched again.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use raftmq_machine::codec::{self, CodecError};
use raftmq_machine::{LogIndex, Millis, QueueId};
use serde::{Deserialize, Serialize};

use crate::durable::write_durably;

/// First bytes of the checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"RMQCKPT\0";
/// Format version of the checkpoint file.
pub const CHECKPOINT_VERSION: u32 = 2;
/// The checkpoint's file name in the store directory.
pub const FILE_NAME: &str = "checkpoint";

/// The durable progress of dispatch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every entry up to this index is in the stores durably.
    pub dispatched: LogIndex,
    /// The largest proposer time dispatched (store times never go backwards).
    pub clock: Millis,
    /// The offset the next stored message of each queue gets (queues of deleted topics are
    /// dropped).
    pub next: BTreeMap<(String, QueueId), u64>,
    /// The last accepted `FireTimers` dispatched (which fires were accepted follows from it).
    pub last_fire: LogIndex,
}

/// Why the checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file is missing.
    #[error("no checkpoint file in {0}")]
    Missing(String),
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// The file is damaged or of an unknown version.
    #[error(transparent)]
    Format(#[from] CodecError),
}

impl Checkpoint {
    /// Reads the checkpoint in `dir`.
    pub fn read(dir: &Path) -> Result<Checkpoint, CheckpointError> {
        let path = dir.join(FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CheckpointError::Missing(dir.display().to_string()));
            }
            Err(source) => return Err(CheckpointError::Io { path: path.display().to_string(), source }),
        };
        Ok(codec::decode_framed(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, &bytes, &path.display().to_string())?)
    }

    /// Writes the checkpoint in `dir` durably.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let bytes = codec::encode_framed(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, self)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        write_durably(&dir.join(FILE_NAME), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_golden_bytes() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        assert!(matches!(Checkpoint::read(dir.path()), Err(CheckpointError::Missing(_))));
        let cp = Checkpoint {
            dispatched: LogIndex(42),
            clock: Millis(1_700_000_000_000),
            next: BTreeMap::from([(("orders".to_string(), QueueId(3)), 17)]),
            last_fire: LogIndex(40),
        };
        cp.write(dir.path())?;
        assert_eq!(Checkpoint::read(dir.path())?, cp);
        // The format is pinned: a change here needs a new CHECKPOINT_VERSION.
        let golden = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/checkpoint-v2.bin");
        let bytes = std::fs::read(dir.path().join(FILE_NAME))?;
        if std::env::var_os("RAFTMQ_BLESS").is_some() {
            std::fs::write(&golden, &bytes)?;
        }
        assert_eq!(bytes, std::fs::read(&golden)?, "checkpoint bytes changed: bump CHECKPOINT_VERSION");
        let mut damaged = bytes.clone();
        *damaged.last_mut().expect("not empty") ^= 1;
        std::fs::write(dir.path().join(FILE_NAME), damaged)?;
        assert!(matches!(Checkpoint::read(dir.path()), Err(CheckpointError::Format(CodecError::Corrupt { .. }))));
        Ok(())
    }
}
