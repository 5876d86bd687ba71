//! openraft's own storage test suite against `RaftLogStore` on real files, plus checks that
//! what the adapter stores survives a reopen.

use std::collections::BTreeMap;
use std::io::{self, Cursor};
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{
    EntryResponder, IOFlushed, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, OptionalSend, StorageError};
use raft_log::{Log, LogConfig, RaftLogStore, SyncPolicy};
use tempfile::TempDir;
use tokio::sync::Mutex;

openraft::declare_raft_types!(pub Types: D = String, R = String);

/// A plain in-memory state machine: the suite needs one beside the log store.
#[derive(Debug, Default)]
struct Machine {
    last_applied: Option<LogIdOf<Types>>,
    membership: StoredMembershipOf<Types>,
    data: BTreeMap<u64, String>,
    snapshot: Option<(SnapshotMetaOf<Types>, Vec<u8>)>,
}

#[derive(Debug, Clone, Default)]
struct SharedMachine(Arc<Mutex<Machine>>);

impl RaftSnapshotBuilder<Types> for SharedMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<Types, Cursor<Vec<u8>>>, io::Error> {
        let mut m = self.0.lock().await;
        let data = bincode::serde::encode_to_vec(&m.data, bincode::config::standard()).map_err(io::Error::other)?;
        let meta = SnapshotMetaOf::<Types> { last_log_id: m.last_applied, last_membership: m.membership.clone() };
        m.snapshot = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<Types, Cursor<Vec<u8>>> { meta, snapshot: Cursor::new(data) })
    }
}

impl RaftStateMachine<Types> for SharedMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogIdOf<Types>>, StoredMembershipOf<Types>), io::Error> {
        let m = self.0.lock().await;
        Ok((m.last_applied, m.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<Types>, io::Error>> + Unpin + OptionalSend,
    {
        let mut m = self.0.lock().await;
        while let Some((entry, responder)) = entries.try_next().await? {
            m.last_applied = Some(entry.log_id);
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(s) => {
                    m.data.insert(entry.index(), s.clone());
                }
                EntryPayload::Membership(mem) => {
                    m.membership = StoredMembershipOf::<Types>::new(Some(entry.log_id), mem.clone());
                }
            }
            if let Some(r) = responder {
                r.send(String::new());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<Types>,
        snapshot: Cursor<Vec<u8>>,
    ) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        let (data, _) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).map_err(io::Error::other)?;
        let mut m = self.0.lock().await;
        m.data = data;
        m.last_applied = meta.last_log_id;
        m.membership = meta.last_membership.clone();
        m.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<Types, Cursor<Vec<u8>>>>, io::Error> {
        let m = self.0.lock().await;
        Ok(m.snapshot.as_ref().map(|(meta, data)| SnapshotOf::<Types, Cursor<Vec<u8>>> {
            meta: meta.clone(),
            snapshot: Cursor::new(data.clone()),
        }))
    }
}

fn small_config() -> LogConfig {
    // Small segments so the suite's logs cross segment boundaries.
    LogConfig { segment_size: 64 << 10, max_payload: 32 << 10, ..LogConfig::default() }
}

/// Builds stores whose log syncs under this policy.
struct Builder(SyncPolicy);

impl StoreBuilder<Types, RaftLogStore<Types>, SharedMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, RaftLogStore<Types>, SharedMachine), StorageError<Types>> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::read(openraft::errors::ErrorSource::from_error(&e)))?;
        let (log, _) = Log::open(dir.path(), LogConfig { sync: self.0, ..small_config() })
            .map_err(|e| StorageError::read(openraft::errors::ErrorSource::from_error(&e)))?;
        Ok((dir, RaftLogStore::new(log), SharedMachine::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_passes() -> anyhow::Result<()> {
    Suite::test_all(Builder(SyncPolicy::EveryBatch)).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_passes_with_interval_sync() -> anyhow::Result<()> {
    let policy = SyncPolicy::Interval(std::time::Duration::from_millis(50));
    Suite::test_all(Builder(policy)).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

fn entry(term: u64, index: u64, body: &str) -> <Types as openraft::RaftTypeConfig>::Entry {
    let log_id = LogIdOf::<Types>::new(openraft::impls::leader_id_adv::LeaderId { term, node_id: 1 }, index);
    <Types as openraft::RaftTypeConfig>::Entry::new(log_id, EntryPayload::Normal(body.to_string()))
}

async fn append_flushed(
    store: &mut RaftLogStore<Types>,
    entries: Vec<<Types as openraft::RaftTypeConfig>::Entry>,
) -> anyhow::Result<()> {
    let (tx, rx) = Types::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await?;
    rx.await??;
    Ok(())
}

#[tokio::test]
async fn vote_entries_purge_and_committed_survive_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let vote = openraft::impls::Vote::new(3, 2);
    let committed = LogIdOf::<Types>::new(openraft::impls::leader_id_adv::LeaderId { term: 2, node_id: 1 }, 150);
    {
        let (log, _) = Log::open(dir.path(), small_config())?;
        let mut store = RaftLogStore::<Types>::new(log.clone());
        let entries: Vec<_> =
            (1..=300).map(|i| entry(1 + i / 100, i, &format!("message {i} {}", "x".repeat(500)))).collect();
        append_flushed(&mut store, entries).await?;
        store.save_vote(&vote).await?;
        store.save_committed(Some(committed)).await?;
        let purged = store.try_get_log_entries(100..101).await?[0].log_id;
        store.purge(purged).await?;
        log.flush().await?;
    }
    let (log, report) = Log::open(dir.path(), small_config())?;
    assert_eq!(report.torn_tail, None);
    let mut store = RaftLogStore::<Types>::new(log.clone());
    assert_eq!(store.read_vote().await?, Some(vote));
    let state = store.get_log_state().await?;
    assert_eq!(state.last_purged_log_id.map(|l| l.index()), Some(100));
    assert_eq!(state.last_log_id.map(|l| l.index()), Some(300));
    let got = store.try_get_log_entries(0..=300).await?;
    assert_eq!(got.len(), 200, "entries 101..=300 are visible through the adapter");
    assert_eq!(got[0].index(), 101);
    assert!(matches!(&got[199].payload, EntryPayload::Normal(s) if s.starts_with("message 300 ")));
    // Purged entries stay readable through the raw log until retention deletes them.
    assert_eq!(log.read(1, 101)?.len(), 100);
    Ok(())
}

#[tokio::test]
async fn committed_id_is_durable_after_flush() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let committed = LogIdOf::<Types>::new(openraft::impls::leader_id_adv::LeaderId { term: 1, node_id: 1 }, 5);
    {
        let (log, _) = Log::open(dir.path(), small_config())?;
        let mut store = RaftLogStore::<Types>::new(log.clone());
        append_flushed(&mut store, (1..=5).map(|i| entry(1, i, "c")).collect()).await?;
        store.save_committed(Some(committed)).await?;
        log.flush().await?;
    }
    let (log, _) = Log::open(dir.path(), small_config())?;
    let mut store = RaftLogStore::<Types>::new(log);
    assert_eq!(store.read_committed().await?, Some(committed));
    Ok(())
}
