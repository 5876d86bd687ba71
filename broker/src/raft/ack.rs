//! `ack = "leader"`: tells a proposer when the leader's own write of its entry is durable.
//!
//! openraft reports a proposal only once it is committed or applied, but the leader's local
//! append passes through the log store. [`AckLogStore`] wraps the CommitLog's store: when an
//! append holds an entry whose [`ProposalId`] a proposer registered in [`FlushWaiters`], the
//! store waits for that append's flush and wakes the proposer with the entry's log id before
//! it tells openraft. Entries nobody waits for (all of them with `ack = "quorum"`, and every
//! entry a follower appends) go through untouched.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::alias::{LogIdOf, VoteOf};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, OptionalSend};
use parking_lot::Mutex;
use raft_log::RaftLogStore;
use tokio::sync::oneshot;

use super::{Entry, LogId, TypeConfig};
use raftmq_machine::types::StoredMessage;
use raftmq_machine::{Command, ProposalId, Slot};

/// Most proposals waiting for their flush at once (one per batch in flight).
pub const DEFAULT_WAITERS: usize = 256;

/// Why a proposer was not told its entry is durable on the leader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    /// Too many proposals already wait.
    #[error("{capacity} sends already wait for the leader's write; retry shortly")]
    Full {
        /// The bound.
        capacity: usize,
    },
    /// The flush did not complete in time.
    #[error("the leader did not make the entry durable within {0:?}")]
    Timeout(Duration),
    /// The write failed.
    #[error("the leader's write failed: {0}")]
    Failed(String),
}

/// Proposers waiting for the leader's flush of their entries. Bounded; a waiter leaves when
/// it is woken, times out or is dropped.
#[derive(Debug)]
pub struct FlushWaiters {
    waiting: Mutex<HashMap<ProposalId, oneshot::Sender<Result<LogId, FlushError>>>>,
    capacity: usize,
    next: AtomicU64,
}

impl FlushWaiters {
    /// A registry holding at most `capacity` waiters. Ids start at a random point, so they
    /// differ between processes as well as within one.
    pub fn new(capacity: usize) -> Arc<Self> {
        let start = RandomState::new().hash_one(std::time::SystemTime::now());
        Arc::new(Self { waiting: Mutex::new(HashMap::new()), capacity, next: AtomicU64::new(start) })
    }

    /// Registers a new proposal; its entry must carry [`FlushWait::id`].
    pub fn register(self: &Arc<Self>) -> Result<FlushWait, FlushError> {
        let mut waiting = self.waiting.lock();
        if waiting.len() >= self.capacity {
            return Err(FlushError::Full { capacity: self.capacity });
        }
        let id = ProposalId(self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        let previous = waiting.insert(id, tx);
        assert!(previous.is_none(), "proposal id {id:?} handed out twice");
        Ok(FlushWait { id, rx, owner: self.clone() })
    }

    /// Whether a proposer waits for `id`.
    pub fn is_waiting(&self, id: ProposalId) -> bool {
        self.waiting.lock().contains_key(&id)
    }

    /// How many proposers wait.
    pub fn len(&self) -> usize {
        self.waiting.lock().len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes the waiters of `entries` (proposal, log id) with the append's outcome.
    pub fn complete(&self, entries: &[(ProposalId, LogId)], outcome: Result<(), &io::Error>) {
        let mut waiting = self.waiting.lock();
        for (id, log_id) in entries {
            if let Some(tx) = waiting.remove(id) {
                let result = match outcome {
                    Ok(()) => Ok(*log_id),
                    Err(e) => Err(FlushError::Failed(e.to_string())),
                };
                let _ = tx.send(result);
            }
        }
    }
}

/// One registered proposal; dropping it unregisters it.
#[derive(Debug)]
pub struct FlushWait {
    id: ProposalId,
    rx: oneshot::Receiver<Result<LogId, FlushError>>,
    owner: Arc<FlushWaiters>,
}

impl FlushWait {
    /// The id to put in the proposal's entry.
    pub fn id(&self) -> ProposalId {
        self.id
    }

    /// Waits up to `timeout` for the leader's flush of the entry; returns its log id.
    pub async fn wait(&mut self, timeout: Duration) -> Result<LogId, FlushError> {
        match tokio::time::timeout(timeout, &mut self.rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(FlushError::Failed("the log store dropped the write".into())),
            Err(_) => Err(FlushError::Timeout(timeout)),
        }
    }
}

impl Drop for FlushWait {
    fn drop(&mut self) {
        self.owner.waiting.lock().remove(&self.id);
    }
}

/// The CommitLog's openraft store, telling [`FlushWaiters`] when their entries are durable.
#[derive(Debug, Clone)]
pub struct AckLogStore {
    inner: RaftLogStore<TypeConfig>,
    waiters: Arc<FlushWaiters>,
}

impl AckLogStore {
    /// Wraps `inner`; proposers register in `waiters`.
    pub fn new(inner: RaftLogStore<TypeConfig>, waiters: Arc<FlushWaiters>) -> Self {
        Self { inner, waiters }
    }

    /// The registry proposers wait in.
    pub fn waiters(&self) -> &Arc<FlushWaiters> {
        &self.waiters
    }

    /// Decoded entries `from..to` the log still holds (see [`RaftLogStore::retained_entries`]).
    pub fn retained_entries(&self, from: u64, to: u64) -> io::Result<Vec<Entry>> {
        self.inner.retained_entries(from, to)
    }

    /// The message in `slot` of the log entry at `index`, read without the entry's other
    /// messages ([`super::slot::read_message`]): `None` when the log no longer holds the
    /// entry or it holds no such message; a damaged message is an error.
    pub fn message_at(&self, index: u64, slot: Slot) -> io::Result<Option<StoredMessage>> {
        super::slot::read_message(self.inner.log(), &self.inner.readable_versions(), index, slot)
    }

    /// The first index the CommitLog holds (purged ones included while retained).
    pub fn log_first(&self) -> Option<u64> {
        self.inner.log().view().first
    }

    /// The entries of `entries` some proposer waits for, with their log ids.
    fn awaited(&self, entries: &[Entry]) -> Vec<(ProposalId, LogId)> {
        if self.waiters.is_empty() {
            return Vec::new();
        }
        entries
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Normal(Command::Send { proposal: Some(id), .. }) if self.waiters.is_waiting(*id) => {
                    Some((*id, e.log_id))
                }
                _ => None,
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for AckLogStore {
    type LogReader = RaftLogStore<TypeConfig>;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        self.inner.get_log_state().await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.inner.get_log_reader().await
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        self.inner.save_vote(vote).await
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<TypeConfig>>) -> Result<(), io::Error> {
        self.inner.save_committed(committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<TypeConfig>>, io::Error> {
        self.inner.read_committed().await
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let awaited = self.awaited(&entries);
        if awaited.is_empty() {
            return self.inner.append(entries, callback).await;
        }
        // Learn of the flush first, wake the proposers, then tell openraft. openraft takes
        // completions out of order (it keeps the newest), and a later append's flush implies
        // this one's: the log makes appends durable in order.
        let (tx, rx) = TypeConfig::oneshot();
        if let Err(e) = self.inner.append(entries, IOFlushed::signal(tx)).await {
            self.waiters.complete(&awaited, Err(&e));
            return Err(e);
        }
        let waiters = self.waiters.clone();
        tokio::spawn(async move {
            match rx.await {
                Ok(Ok(())) => {
                    waiters.complete(&awaited, Ok(()));
                    callback.io_completed(Ok(()));
                }
                Ok(Err(e)) => {
                    waiters.complete(&awaited, Err(&e));
                    callback.io_completed(Err(e));
                }
                Err(_) => {
                    // The log dropped the append (it is closing): openraft hears nothing, as
                    // it would without this wrapper.
                    let e = io::Error::other("the CommitLog dropped the append");
                    waiters.complete(&awaited, Err(&e));
                }
            }
        });
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<TypeConfig>>) -> Result<(), io::Error> {
        self.inner.truncate_after(last_log_id).await
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        self.inner.purge(log_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_id(index: u64) -> LogId {
        openraft::LogId::new(
            openraft::impls::leader_id_adv::LeaderId { term: 3, node_id: raftmq_machine::NodeId(1) },
            index,
        )
    }

    #[tokio::test]
    async fn a_flush_wakes_its_waiter_with_the_log_id() {
        let waiters = FlushWaiters::new(4);
        let mut a = waiters.register().expect("room");
        let mut b = waiters.register().expect("room");
        assert_ne!(a.id(), b.id());
        assert!(waiters.is_waiting(a.id()) && waiters.is_waiting(b.id()));
        waiters.complete(&[(a.id(), log_id(7))], Ok(()));
        assert_eq!(a.wait(Duration::from_secs(5)).await, Ok(log_id(7)));
        assert!(!waiters.is_waiting(a.id()));
        let e = io::Error::other("disk on fire");
        waiters.complete(&[(b.id(), log_id(8))], Err(&e));
        assert_eq!(b.wait(Duration::from_secs(5)).await, Err(FlushError::Failed("disk on fire".into())));
        assert!(waiters.is_empty());
    }

    #[tokio::test]
    async fn a_waiter_times_out_and_leaves_when_dropped() {
        let waiters = FlushWaiters::new(4);
        let mut a = waiters.register().expect("room");
        let id = a.id();
        assert_eq!(a.wait(Duration::from_millis(20)).await, Err(FlushError::Timeout(Duration::from_millis(20))));
        assert!(waiters.is_waiting(id), "a timed-out waiter stays until it is dropped");
        drop(a);
        assert!(!waiters.is_waiting(id));
        // A flush for an entry nobody waits for any more is ignored.
        waiters.complete(&[(id, log_id(1))], Ok(()));
        assert!(waiters.is_empty());
    }

    #[test]
    fn the_registry_is_bounded() {
        let waiters = FlushWaiters::new(2);
        let a = waiters.register().expect("room");
        let _b = waiters.register().expect("room");
        assert_eq!(waiters.register().err(), Some(FlushError::Full { capacity: 2 }));
        drop(a);
        assert!(waiters.register().is_ok(), "a dropped waiter frees its place");
        assert_eq!(waiters.len(), 1, "the temporary registration left on drop");
    }
}
