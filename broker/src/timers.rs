//! The leader's timer driver: makes due delay messages visible.
//!
//! On the leader, a loop asks the timer store (see [`crate::store::timer`]) for the messages
//! due now and proposes one `FireTimers` naming them (at most
//! [`MAX_FIRES_PER_COMMAND`]); apply gives them their queue offsets and every node's dispatch
//! writes their ConsumeQueue records and marks them fired. A plan is made only when this
//! node's store holds the marks of the last accepted fire (its dispatch reached it), and
//! names that fire as `prev_fire`: apply refuses it if another was accepted since, so a stale
//! plan (a deposed leader's) fires nothing twice. The loop sleeps until the next due time,
//! at most [`POLL`], so a message becomes visible within a few milliseconds of its time
//! while this node leads, and within [`POLL`] of the election when the leader changed while
//! it waited: the timers are in every node's store, and the state says which fired.

use std::collections::HashSet;
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use raftmq_machine::timer::{Fire, MAX_FIRES_PER_COMMAND};
use raftmq_machine::{Command, LogIndex, Millis, Slot};

use crate::raft::Raft;
use crate::service::proposer::now_ms;
use crate::store::timer::{Due, Timer};
use crate::store::{Storage, StoreError, Stores};

/// Longest the driver sleeps between looks at the timer store.
pub const POLL: Duration = Duration::from_millis(100);
/// Longest a fire may take to commit and reach this node's stores.
const FIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the driver until the task is aborted.
pub fn spawn(raft: Raft, storage: Storage) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut unreadable = HashSet::new();
        loop {
            let wait = round(&raft, &storage, &mut unreadable).await;
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    })
}

/// One look at the timers: fires what is due (on the leader) and says how long to wait.
async fn round(raft: &Raft, storage: &Storage, unreadable: &mut HashSet<(LogIndex, Slot)>) -> Duration {
    if raft.metrics().borrow_watched().state != ServerState::Leader {
        return POLL;
    }
    let now = now_ms();
    let stores = storage.stores.clone();
    let due = match blocking(move || stores.due_timers(now, MAX_FIRES_PER_COMMAND)).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the timer store; retrying");
            return POLL;
        }
    };
    if due.timers.is_empty() {
        return until(due.next, now);
    }
    let accepted = storage.state.read(|a| a.machine.timers().last_fire);
    if due.last_fire != accepted {
        // Dispatch has not marked the last accepted fire yet: a plan now could repeat it.
        wait_dispatched(&storage.stores, accepted, POLL).await;
        return Duration::ZERO;
    }
    let fires = read_heads(storage, &due, unreadable).await;
    if fires.is_empty() {
        return until(due.next, now).max(POLL);
    }
    let count = fires.len();
    let command = Command::FireTimers { now, prev_fire: due.last_fire, fires };
    match tokio::time::timeout(FIRE_TIMEOUT, raft.client_write(command)).await {
        Ok(Ok(r)) => {
            tracing::debug!(count, index = r.log_id.index(), "fired delay timers");
            // The next plan needs this fire's marks.
            wait_dispatched(&storage.stores, LogIndex(r.log_id.index()), FIRE_TIMEOUT).await;
            Duration::ZERO
        }
        Ok(Err(e)) => {
            tracing::info!(error = %e, "firing delay timers failed; retrying");
            POLL
        }
        Err(_) => {
            tracing::warn!(count, "firing delay timers did not commit in time; retrying");
            POLL
        }
    }
}

/// The due timers with their heads, read from the log; a message that cannot be read is
/// logged once and left waiting (retention keeps every waiting message's entry, so this is
/// damage or a bug).
async fn read_heads(storage: &Storage, due: &Due, unreadable: &mut HashSet<(LogIndex, Slot)>) -> Vec<Fire> {
    let log = storage.log.clone();
    let timers: Vec<Timer> = due.timers.clone();
    let read = blocking(move || {
        Ok::<_, StoreError>(timers.into_iter().map(|t| (t, log.message_at(t.log_index.0, t.slot))).collect::<Vec<_>>())
    })
    .await
    .unwrap_or_default();
    let mut fires = Vec::with_capacity(read.len());
    for (t, m) in read {
        match m {
            Ok(Some(m)) => fires.push(Fire { log_index: t.log_index, slot: t.slot, head: m.head() }),
            other => {
                if unreadable.insert((t.log_index, t.slot)) {
                    tracing::error!(log_index = t.log_index.0, slot = t.slot.0, result = ?other.map(|m| m.is_some()),
                        "a due delay message cannot be read from the CommitLog; it stays waiting");
                }
            }
        }
    }
    fires
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
