//! The openraft state machine over [`Machine`]: applies entries, answers proposers, and
//! snapshots the whole state to a file (written to a temporary name, fsynced, renamed).
//! Installing a snapshot first records the log range to copy in ([`Backfill`]).

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::alias::{SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::backfill::Backfill;
use super::{LogId, NodeId, TypeConfig};
use crate::durable::{sync_parent, write_durably_open};
use raftmq_machine::{LogIndex, Machine, Response, codec};

/// The applied state: the machine plus what openraft needs to know about it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Messaging state.
    pub machine: Machine,
    /// Last applied log id.
    pub last_applied: Option<LogId>,
    /// Last applied membership.
    pub membership: StoredMembershipOf<TypeConfig>,
    /// Every node id that was a member (voter or learner) and was removed: never to be
    /// used again, since its data and votes may still exist somewhere.
    pub retired: BTreeSet<NodeId>,
}

impl Applied {
    /// Applies a new membership, retiring the ids it drops.
    fn set_membership(&mut self, membership: StoredMembershipOf<TypeConfig>) {
        let now: BTreeSet<NodeId> = membership.membership().nodes().map(|(id, _)| *id).collect();
        let dropped: Vec<NodeId> =
            self.membership.membership().nodes().map(|(id, _)| *id).filter(|id| !now.contains(id)).collect();
        if !dropped.is_empty() {
            tracing::info!(retired = ?dropped, "node ids left the group; they are never used again");
        }
        self.retired.extend(dropped);
        self.membership = membership;
    }
}

/// The applied state as snapshot version 6 held it (no retired ids).
#[derive(Deserialize)]
struct AppliedV6 {
    machine: Machine,
    last_applied: Option<LogId>,
    membership: StoredMembershipOf<TypeConfig>,
}

#[derive(Deserialize)]
struct SnapshotFileV6 {
    meta: SnapshotMetaOf<TypeConfig>,
    applied: AppliedV6,
}

/// What a snapshot file holds (after the versioned header of [`codec::encode_snapshot`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// openraft's snapshot metadata.
    pub meta: SnapshotMetaOf<TypeConfig>,
    /// The applied state.
    pub applied: Applied,
}

/// The state machine; clones share the state (services read it).
#[derive(Debug, Clone)]
pub struct StateStore {
    applied: Arc<RwLock<Applied>>,
    snapshot_path: PathBuf,
    current: Arc<RwLock<Option<CurrentSnapshot>>>,
    /// Woken after every applied batch (long polling waits on it).
    applied_signal: Arc<tokio::sync::Notify>,
    /// Told about installed snapshots, whose log records this node must copy in.
    backfill: Option<Backfill>,
}

/// The newest snapshot: its meta and its encoded file.
type CurrentSnapshot = (SnapshotMetaOf<TypeConfig>, SnapshotBytes);

/// A snapshot's encoded bytes in a file: openraft's snapshot data here. Built snapshots
/// are read from their file and received ones are written to a spool file as they
/// arrive, so the network never holds a whole snapshot in memory. The handle reads the
/// same bytes even after a newer snapshot replaces the file.
#[derive(Debug, Clone)]
pub struct SnapshotBytes {
    file: Arc<File>,
    len: u64,
    /// A received snapshot's spool file: renamed into place once installed, removed if not.
    spool: Option<Arc<tempfile::TempPath>>,
}

impl SnapshotBytes {
    /// The first `len` bytes of `file`.
    fn new(file: File, len: u64) -> Self {
        Self { file: Arc::new(file), len, spool: None }
    }

    /// A received snapshot of `len` bytes, already fsynced, in the spool file `path`.
    pub fn received(file: File, len: u64, path: tempfile::TempPath) -> Self {
        Self { file: Arc::new(file), len, spool: Some(Arc::new(path)) }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds no bytes (never, for a real snapshot).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads up to `max` bytes at `offset` (blocking).
    pub fn read_at(&self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let n = self.len.saturating_sub(offset).min(max as u64) as usize;
        let mut buf = vec![0; n];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Reads it whole (blocking).
    fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "snapshot larger than memory can address"))?;
        self.read_at(0, len)
    }
}

fn encode(file: &SnapshotFile) -> io::Result<Vec<u8>> {
    codec::encode_snapshot(file).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Decodes a snapshot file of this format or of the oldest still read.
pub fn decode(bytes: &[u8], what: &str) -> io::Result<SnapshotFile> {
    let invalid = |e| io::Error::new(io::ErrorKind::InvalidData, e);
    match codec::decode_snapshot(bytes, what) {
        Err(codec::CodecError::UnsupportedVersion { found: codec::OLDEST_READ_SNAPSHOT_VERSION, .. }) => {
            let old: SnapshotFileV6 =
                codec::decode_framed(codec::SNAPSHOT_MAGIC, codec::OLDEST_READ_SNAPSHOT_VERSION, bytes, what)
                    .map_err(invalid)?;
            let AppliedV6 { machine, last_applied, membership } = old.applied;
            Ok(SnapshotFile {
                meta: old.meta,
                applied: Applied { machine, last_applied, membership, retired: BTreeSet::new() },
            })
        }
        other => other.map_err(invalid),
    }
}

impl StateStore {
    /// Opens the state, loading the last snapshot from `dir` if there is one.
    pub fn open(dir: &Path, broker_group: &str) -> io::Result<StateStore> {
        std::fs::create_dir_all(dir)?;
        let snapshot_path = dir.join("snapshot.bin");
        let (applied, current) = match File::open(&snapshot_path) {
            Ok(f) => {
                let bytes = SnapshotBytes::new(f, std::fs::metadata(&snapshot_path)?.len());
                let file: SnapshotFile = decode(&bytes.read_all()?, &format!("snapshot {}", snapshot_path.display()))?;
                (file.applied, Some((file.meta, bytes)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                (Applied { machine: Machine::new(broker_group), ..Default::default() }, None)
            }
            Err(e) => return Err(e),
        };
        Ok(StateStore {
            applied: Arc::new(RwLock::new(applied)),
            snapshot_path,
            current: Arc::new(RwLock::new(current)),
            applied_signal: Arc::new(tokio::sync::Notify::new()),
            backfill: None,
        })
    }

    /// Reports installed snapshots to `backfill` (call before handing the store to Raft).
    pub fn with_backfill(mut self, backfill: Backfill) -> Self {
        self.backfill = Some(backfill);
        self
    }

    /// The range this node still copies in, if it tracks one.
    pub fn backfill(&self) -> Option<&Backfill> {
        self.backfill.as_ref()
    }

    /// Notified after every applied batch of entries.
    pub fn applied_signal(&self) -> &Arc<tokio::sync::Notify> {
        &self.applied_signal
    }

    /// Read access to the applied state.
    pub fn read<T>(&self, f: impl FnOnce(&Applied) -> T) -> T {
        f(&self.applied.read())
    }
}

/// Makes `data` the snapshot file at `path`: a received spool file is renamed into place,
/// other bytes are written durably.
fn place(data: SnapshotBytes, path: &Path) -> io::Result<()> {
    match data.spool {
        Some(spool) => {
            let spool =
                Arc::try_unwrap(spool).map_err(|_| io::Error::other("a received snapshot is installed twice"))?;
            spool.persist(path).map_err(|e| e.error)?;
            sync_parent(path)
        }
        None => write_durably_open(path, &data.read_all()?).map(drop),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateStore {
    type SnapshotData = SnapshotBytes;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotBytes>, io::Error> {
        let (meta, bytes) = {
            let applied = self.applied.read();
            let meta = SnapshotMetaOf::<TypeConfig> {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
            };
            let file = SnapshotFile { meta: meta.clone(), applied: applied.clone() };
            (meta, encode(&file)?)
        };
        let path = self.snapshot_path.clone();
        let len = bytes.len() as u64;
        let file = tokio::task::spawn_blocking(move || write_durably_open(&path, &bytes))
            .await
            .map_err(|e| io::Error::other(format!("snapshot writer task: {e}")))??;
        let data = SnapshotBytes::new(file, len);
        *self.current.write() = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<TypeConfig, SnapshotBytes> { meta, snapshot: data })
    }
}

impl RaftStateMachine<TypeConfig> for StateStore {
    type SnapshotData = SnapshotBytes;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembershipOf<TypeConfig>), io::Error> {
        let a = self.applied.read();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let response = {
                let mut a = self.applied.write();
                a.last_applied = Some(entry.log_id);
                match &entry.payload {
                    EntryPayload::Blank => Response::Done,
                    EntryPayload::Normal(cmd) => a.machine.apply(LogIndex(entry.log_id.index()), cmd),
                    EntryPayload::Membership(m) => {
                        a.set_membership(StoredMembershipOf::<TypeConfig>::new(Some(entry.log_id), m.clone()));
                        Response::Done
                    }
                }
            };
            if let Some(r) = responder {
                r.send(response);
            }
        }
        self.applied_signal.notify_waiters();
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: SnapshotBytes,
    ) -> Result<(), io::Error> {
        let reader = snapshot.clone();
        let bytes = tokio::task::spawn_blocking(move || reader.read_all())
            .await
            .map_err(|e| io::Error::other(format!("snapshot reader task: {e}")))??;
        let file: SnapshotFile = decode(&bytes, "received snapshot")?;
        drop(bytes);
        if &file.meta != meta {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "snapshot data does not match its metadata"));
        }
        // The log range this node must copy in is durable before the state that points
        // into it is.
        if let (Some(backfill), Some(last)) = (self.backfill.clone(), meta.last_log_id) {
            let applied_before = self.applied.read().last_applied.map(|l| l.index());
            tokio::task::spawn_blocking(move || backfill.note_install(applied_before, last.index()))
                .await
                .map_err(|e| io::Error::other(format!("backfill bookkeeping task: {e}")))??;
        }
        // The received bytes were fsynced as they arrived: renaming the spool file into
        // place (and syncing the directory) makes them this node's snapshot.
        let path = self.snapshot_path.clone();
        let kept = SnapshotBytes { file: snapshot.file.clone(), len: snapshot.len, spool: None };
        tokio::task::spawn_blocking(move || place(snapshot, &path))
            .await
            .map_err(|e| io::Error::other(format!("snapshot writer task: {e}")))??;
        *self.applied.write() = file.applied;
        self.applied_signal.notify_waiters();
        *self.current.write() = Some((meta.clone(), kept));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<TypeConfig, SnapshotBytes>>, io::Error> {
        Ok(self
            .current
            .read()
            .as_ref()
            .map(|(meta, data)| SnapshotOf::<TypeConfig, SnapshotBytes> { meta: meta.clone(), snapshot: data.clone() }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::type_config::TypeConfigExt;

    use super::*;
    use crate::raft::Entry;
    use raftmq_machine::Command;
    use raftmq_machine::types::{TopicConfig, TopicName};

    fn upsert(index: u64, name: &str) -> Entry {
        let log_id = LogId::new(openraft::impls::leader_id_adv::LeaderId { term: 1, node_id: NodeId(1) }, index);
        let topic = TopicName::new(name).expect("valid");
        Entry::new(log_id, EntryPayload::Normal(Command::UpsertTopic { topic, config: TopicConfig::all_types(4) }))
    }

    #[test]
    fn ids_that_leave_the_membership_are_retired() -> Result<(), Box<dyn std::error::Error>> {
        use std::collections::BTreeMap;

        use openraft::Membership;
        let ids = |v: &[u64]| v.iter().map(|&i| NodeId(i)).collect::<BTreeSet<_>>();
        let nodes =
            |v: &[u64]| v.iter().map(|&i| (NodeId(i), crate::raft::NodeInfo::default())).collect::<BTreeMap<_, _>>();
        let mut a = Applied::default();
        let mut set =
            |configs: Vec<BTreeSet<NodeId>>, all: &[u64]| -> Result<BTreeSet<NodeId>, Box<dyn std::error::Error>> {
                a.set_membership(StoredMembershipOf::<TypeConfig>::new(None, Membership::new(configs, nodes(all))?));
                Ok(a.retired.clone())
            };
        assert_eq!(set(vec![ids(&[1, 2, 3])], &[1, 2, 3])?, ids(&[]));
        // Node 4 joins as a learner, then the joint config replaces 1 with 4.
        assert_eq!(set(vec![ids(&[1, 2, 3])], &[1, 2, 3, 4])?, ids(&[]));
        assert_eq!(set(vec![ids(&[1, 2, 3]), ids(&[2, 3, 4])], &[1, 2, 3, 4])?, ids(&[]));
        assert_eq!(set(vec![ids(&[2, 3, 4])], &[2, 3, 4])?, ids(&[1]));
        // A learner that is given up is retired too.
        assert_eq!(set(vec![ids(&[2, 3, 4])], &[2, 3, 4, 6])?, ids(&[1]));
        assert_eq!(set(vec![ids(&[2, 3, 4])], &[2, 3, 4])?, ids(&[1, 6]));
        Ok(())
    }

    #[test]
    fn snapshot_is_written_durably_and_loaded_on_open() -> Result<(), io::Error> {
        let dir = tempfile::tempdir()?;
        TypeConfig::run(async {
            let mut store = StateStore::open(dir.path(), "g1")?;
            let entries = futures::stream::iter(vec![Ok((upsert(1, "a"), None)), Ok((upsert(2, "b"), None))]);
            store.apply(entries).await?;
            let snap = store.build_snapshot().await?;
            assert_eq!(snap.meta.last_log_id.map(|l| l.index()), Some(2));
            let reopened = StateStore::open(dir.path(), "g1")?;
            assert_eq!(reopened.read(|a| a.clone()), store.read(|a| a.clone()));
            assert_eq!(reopened.read(|a| a.machine.topics().count()), 2);
            let mut reopened = reopened;
            let current = reopened.get_current_snapshot().await?.map(|s| s.meta);
            assert_eq!(current, Some(snap.meta));
            Ok(())
        })
    }
}
