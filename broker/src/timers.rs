//! The leader's release driver: makes due delay messages visible, and ends transactions.
//!
//! On the leader, a loop asks the timer store (see [`crate::store::timer`]) for the messages
//! due now, takes the producers' commits and rollbacks waiting for it ([`Resolver`]), and
//! proposes one `FireTimers` naming them (due timers and committed half messages as fires,
//! rolled-back ones as drops, at most [`MAX_FIRES_PER_COMMAND`] of each); apply gives the
//! fired messages their queue offsets, and every node's dispatch writes their ConsumeQueue
//! records and marks the timers fired. A plan is made only when this node's store holds the
//! marks of the last accepted fire (its dispatch reached it), and names that fire as
//! `prev_fire`: apply refuses it if another was accepted since, so a stale plan (a deposed
//! leader's) fires nothing twice. Transactions are checked against the state's open
//! transactions when planned, and all their ends go through this one loop, so each ends
//! once. The loop sleeps until the next due time, at most [`POLL`], or until a resolution
//! arrives: a message becomes visible within a few milliseconds of its time while this node
//! leads, and within [`POLL`] of the election when the leader changed while it waited (the
//! timers are in every node's store, and the state says which fired).

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use raftmq_machine::timer::{Fire, MAX_FIRES_PER_COMMAND};
use raftmq_machine::transaction::{MAX_TRANSACTIONS_PER_COMMAND, TransactionKey};
use raftmq_machine::{Command, CommandError, LogIndex, Millis, Response, Slot};
use tokio::sync::{mpsc, oneshot};

use crate::raft::Raft;
use crate::service::proposer::now_ms;
use crate::store::timer::{Due, Timer};
use crate::store::{Storage, StoreError, Stores};

/// Longest the driver sleeps between looks at the timer store.
pub const POLL: Duration = Duration::from_millis(100);
/// Longest a fire may take to commit and reach this node's stores.
const FIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most resolutions waiting for the driver; more are refused as busy.
const MAX_WAITING_RESOLUTIONS: usize = 16 * 1024;

/// Why a transaction could not be ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// It is not open: committed or rolled back before, or never opened.
    #[error("{0}")]
    NotOpen(String),
    /// This node cannot end it now (not the leader, shutting down, busy); retry.
    #[error("{0}")]
    Unavailable(String),
}

/// A producer's end of a transaction, waiting for the driver.
#[derive(Debug)]
struct Resolution {
    key: TransactionKey,
    commit: bool,
    done: oneshot::Sender<Result<(), ResolveError>>,
}

/// Hands transaction ends to this node's driver (they take effect only on the leader).
#[derive(Debug, Clone)]
pub struct Resolver {
    tx: mpsc::Sender<Resolution>,
}

impl Resolver {
    /// Commits (`commit`) or rolls back the transaction of the half message at `key`;
    /// answers once that is applied and dispatched on this node, so a committed message can
    /// be received at once.
    pub async fn resolve(&self, key: TransactionKey, commit: bool) -> Result<(), ResolveError> {
        let (done, rx) = oneshot::channel();
        self.tx.try_send(Resolution { key, commit, done }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                ResolveError::Unavailable("too many transaction ends are waiting on this broker; retry".into())
            }
            mpsc::error::TrySendError::Closed(_) => ResolveError::Unavailable("the broker is shutting down".into()),
        })?;
        rx.await.map_err(|_| ResolveError::Unavailable("the broker is shutting down".into()))?
    }
}

/// The driver's inbox.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Resolution>,
}

/// A resolver and the inbox its driver reads.
pub fn channel() -> (Resolver, Inbox) {
    let (tx, rx) = mpsc::channel(MAX_WAITING_RESOLUTIONS);
    (Resolver { tx }, Inbox { rx })
}

/// Runs the driver until the task is aborted.
pub fn spawn(raft: Raft, storage: Storage, inbox: Inbox) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut driver = Driver { raft, storage, unreadable: HashSet::new(), waiting: Vec::new() };
        let mut rx = inbox.rx;
        let mut wait = Duration::ZERO;
        loop {
            if driver.waiting.is_empty() && !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    Some(r) = rx.recv() => driver.waiting.push(r),
                }
            }
            while driver.waiting.len() < MAX_TRANSACTIONS_PER_COMMAND * 2 {
                match rx.try_recv() {
                    Ok(r) => driver.waiting.push(r),
                    Err(_) => break,
                }
            }
            wait = driver.round().await;
        }
    })
}

struct Driver {
    raft: Raft,
    storage: Storage,
    /// Due timers whose message could not be read (logged once each).
    unreadable: HashSet<(LogIndex, Slot)>,
    /// Transaction ends not yet planned.
    waiting: Vec<Resolution>,
}

impl Driver {
    /// One look: fires what is due and ends what waits (on the leader); says how long to
    /// wait before the next look.
    async fn round(&mut self) -> Duration {
        if self.raft.metrics().borrow_watched().state != ServerState::Leader {
            for r in self.waiting.drain(..) {
                let _ = r.done.send(Err(ResolveError::Unavailable("this node is not the leader; retry".into())));
            }
            return POLL;
        }
        let now = now_ms();
        let stores = self.storage.stores.clone();
        let due = match blocking(move || stores.due_timers(now, MAX_FIRES_PER_COMMAND)).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the timer store; retrying");
                return POLL;
            }
        };
        if due.timers.is_empty() && self.waiting.is_empty() {
            return until(due.next, now);
        }
        let accepted = self.storage.state.read(|a| a.machine.timers().last_fire);
        if due.last_fire != accepted {
            // Dispatch has not marked the last accepted fire yet: a plan now could repeat it.
            wait_dispatched(&self.storage.stores, accepted, POLL).await;
            return Duration::ZERO;
        }
        let (planned, mut fires, drops) = self.plan_resolutions();
        let room = MAX_FIRES_PER_COMMAND - fires.len();
        fires.extend(self.read_heads(&due, room).await);
        if fires.is_empty() && drops.is_empty() {
            // Only unreadable timers (or ends that were refused): look again later.
            return if due.timers.is_empty() { until(due.next, now) } else { POLL };
        }
        let count = fires.len();
        let command = Command::FireTimers { now, prev_fire: due.last_fire, fires, drops };
        let outcome = match tokio::time::timeout(FIRE_TIMEOUT, self.raft.client_write(command)).await {
            Ok(Ok(r)) => match r.data {
                Response::Failed(CommandError::StalePlan(why)) => {
                    tracing::debug!(why, "a release plan was stale; planning again");
                    Err(None)
                }
                Response::Failed(e) => Err(Some(ResolveError::Unavailable(format!("ending transactions failed: {e}")))),
                _ => Ok(LogIndex(r.log_id.index())),
            },
            Ok(Err(e)) => Err(Some(ResolveError::Unavailable(format!("not committed: {e}")))),
            Err(_) => Err(Some(ResolveError::Unavailable("not committed in time; retry".into()))),
        };
        match outcome {
            Ok(index) => {
                tracing::debug!(count, index = index.0, "released due and committed messages");
                // The next plan needs this fire's marks; a commit is answered once receivable.
                wait_dispatched(&self.storage.stores, index, FIRE_TIMEOUT).await;
                for r in planned {
                    let _ = r.done.send(Ok(()));
                }
                Duration::ZERO
            }
            // Stale: the same ends go into the next plan.
            Err(None) => {
                self.waiting.extend(planned);
                Duration::ZERO
            }
            Err(Some(e)) => {
                tracing::info!(error = %e, "releasing messages failed; retrying");
                for r in planned {
                    let _ = r.done.send(Err(e.clone()));
                }
                POLL
            }
        }
    }

    /// Takes the waiting transaction ends that name an open transaction (at most one end
    /// each, as many as a command holds); answers the others. Returns the planned ones with
    /// the fires (commits) and drops (rollbacks) they make.
    fn plan_resolutions(&mut self) -> (Vec<Resolution>, Vec<Fire>, Vec<TransactionKey>) {
        let mut planned = Vec::new();
        let mut fires = Vec::new();
        let mut drops = Vec::new();
        let mut named = BTreeSet::new();
        let mut later = Vec::new();
        let waiting = std::mem::take(&mut self.waiting);
        self.storage.state.read(|a| {
            for r in waiting {
                let (index, slot) = r.key;
                let Some(open) = a.machine.transactions().get(&r.key) else {
                    let _ = r.done.send(Err(ResolveError::NotOpen(format!(
                        "the transaction of message {} in log entry {} is not open: it was committed or rolled back \
                         before, or never opened",
                        slot.0, index.0
                    ))));
                    continue;
                };
                if named.contains(&r.key) {
                    let _ = r.done.send(Err(ResolveError::NotOpen(format!(
                        "the transaction of message {} in log entry {} is being ended by another request",
                        slot.0, index.0
                    ))));
                    continue;
                }
                if fires.len() >= MAX_FIRES_PER_COMMAND || drops.len() >= MAX_TRANSACTIONS_PER_COMMAND {
                    later.push(r);
                    continue;
                }
                named.insert(r.key);
                if r.commit {
                    fires.push(Fire { log_index: index, slot, head: open.head.clone() });
                } else {
                    drops.push(r.key);
                }
                planned.push(r);
            }
        });
        self.waiting = later;
        (planned, fires, drops)
    }

    /// The first `room` due timers with their heads, read from the log; a message that
    /// cannot be read is logged once and left waiting (retention keeps every waiting
    /// message's entry, so this is damage or a bug).
    async fn read_heads(&mut self, due: &Due, room: usize) -> Vec<Fire> {
        let log = self.storage.log.clone();
        let timers: Vec<Timer> = due.timers.iter().take(room).copied().collect();
        let read = blocking(move || {
            Ok::<_, StoreError>(
                timers.into_iter().map(|t| (t, log.message_at(t.log_index.0, t.slot))).collect::<Vec<_>>(),
            )
        })
        .await
        .unwrap_or_default();
        let mut fires = Vec::with_capacity(read.len());
        for (t, m) in read {
            match m {
                Ok(Some(m)) => fires.push(Fire { log_index: t.log_index, slot: t.slot, head: m.head() }),
                other => {
                    if self.unreadable.insert((t.log_index, t.slot)) {
                        tracing::error!(log_index = t.log_index.0, slot = t.slot.0, result = ?other.map(|m| m.is_some()),
                            "a due delay message cannot be read from the CommitLog; it stays waiting");
                    }
                }
            }
        }
        fires
    }
}

/// How long to sleep until `next` (bounded by [`POLL`]).
fn until(next: Option<Millis>, now: Millis) -> Duration {
    let Some(next) = next else { return POLL };
    let ms = u64::try_from(next.0.saturating_sub(now.0)).unwrap_or(0);
    Duration::from_millis(ms.max(1)).min(POLL)
}

/// Waits (bounded) until this node's stores have dispatched `index`.
async fn wait_dispatched(stores: &Stores, index: LogIndex, timeout: Duration) {
    let mut watch = stores.watch_dispatched();
    let _ = tokio::time::timeout(timeout, watch.wait_for(|d| *d >= index)).await;
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
