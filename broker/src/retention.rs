//! CommitLog retention with RocketMQ's semantics: a message stored longer ago than the
//! reserved time (default 72 h, RocketMQ's `fileReservedTime`) goes with its segment,
//! consumed or not, and the queues' minimum offsets move past it.
//!
//! Age is read from the messages themselves (the store time every ConsumeQueue record
//! carries), not from file times, so every member deletes the same messages, and a segment
//! a node copied in yesterday (see [`crate::raft::backfill`]) is as old as its messages.
//! Everything here reads this node's ConsumeQueue, and never deletes a log entry dispatch
//! has not reached.
//!
//! A message a queue still holds at its minimum offset is never deleted (DESIGN: files go
//! once "no longer needed by any consume queue's minimum"), so the queues are trimmed
//! first: the leader, when messages a queue still holds are past the reserved time,
//! proposes [`Command::TrimQueues`] with each such queue's first offset within it. Once applied (on
//! every member, through the log) the queues' minimum offsets, pop state and committed
//! offsets have moved past the expired messages. Every member then deletes, from its own
//! applied state, the segments entirely below both the first message within the reserved
//! time, every queue's first message, every delay message still waiting for its time and
//! every half message of an open transaction (their age counts from their delivery); a
//! follower deletes once the trim reached it. The log never deletes anything above its purge point, nor its newest segment. An optional
//! byte limit deletes the oldest purged segments beyond it whatever their age (RocketMQ's
//! forced clean when the disk fills).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use raft_log::{Log, RemovedSegment, Retention};

use crate::raft::Raft;
use crate::raft::state::StateStore;
pub use crate::settings::RetentionConfig;
use crate::store::{StoreError, Stores};
use raftmq_machine::types::{Millis, QueueId, TopicName};
use raftmq_machine::{Command, LogIndex, MAX_TRIM_QUEUES, Machine, QueueOffset};

/// Longest a trim proposal may wait to commit before this round of retention goes on
/// without it.
const TRIM_TIMEOUT: Duration = Duration::from_secs(10);

fn millis(t: SystemTime) -> Millis {
    let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// The store time before which messages are expired at `now` (`None`: they never expire).
fn cutoff(now: SystemTime, config: &RetentionConfig) -> Option<Millis> {
    config.max_age.map(|age| millis(now.checked_sub(age).unwrap_or(UNIX_EPOCH)))
}

/// Every queue with messages: (topic, queue, min offset, max offset).
fn queues(machine: &Machine) -> Vec<(TopicName, QueueId, u64, u64)> {
    let mut out = Vec::new();
    for (topic, config) in machine.topics() {
        for q in 0..config.queue_count {
            if let Some(queue) = machine.queue(topic, QueueId(q)) {
                out.push((topic.clone(), QueueId(q), queue.min_offset(), queue.max_offset()));
            }
        }
    }
    out
}

/// The new minimum offsets at `now`: each queue that still holds, at its minimum, a message
/// past the reserved time moves to its first message within it (as far as this node's
/// ConsumeQueue knows). At most [`MAX_TRIM_QUEUES`].
pub fn trim_mins(
    machine: &Machine,
    stores: &Stores,
    now: SystemTime,
    config: &RetentionConfig,
) -> Result<Vec<(TopicName, QueueId, QueueOffset)>, StoreError> {
    let Some(cutoff) = cutoff(now, config) else { return Ok(Vec::new()) };
    let mut mins = Vec::new();
    for (topic, queue, min, max) in queues(machine) {
        if min >= max || mins.len() >= MAX_TRIM_QUEUES {
            continue;
        }
        let at = stores.offset_at_time(&topic, queue, cutoff)?.0.min(max);
        if at > min {
            mins.push((topic, queue, QueueOffset(at)));
        }
    }
    Ok(mins)
}

/// The retention policy at `now`: segments entirely below the first message within the
/// reserved time are expired (all dispatched ones when no message is), and those below the
/// first message any queue still holds may go; nothing dispatch has not reached goes.
pub fn policy(
    machine: &Machine,
    stores: &Stores,
    now: SystemTime,
    config: &RetentionConfig,
) -> Result<Retention, StoreError> {
    let undispatched = stores.dispatched().0 + 1;
    let cutoff = cutoff(now, config);
    let mut keep_from = undispatched;
    let mut expired_before = if cutoff.is_some() { undispatched } else { 0 };
    // A delay message waiting for its time, and a half message waiting for its
    // transaction's end, stay whatever their age.
    if let Some(waiting) = stores.timers().keeps_from() {
        keep_from = keep_from.min(waiting.0);
    }
    if let Some(((open, _), _)) = machine.transactions().first_key_value() {
        keep_from = keep_from.min(open.0);
    }
    for (topic, queue, min, max) in queues(machine) {
        if min >= max {
            continue;
        }
        // A queue's first message stays; one not dispatched yet keeps everything after it.
        let first = stores.record(&topic, queue, QueueOffset(min))?.map_or(undispatched, |r| r.log_index.0);
        keep_from = keep_from.min(first);
        if let Some(cutoff) = cutoff {
            let at = stores.offset_at_time(&topic, queue, cutoff)?;
            if let Some(r) = stores.record(&topic, queue, at)? {
                expired_before = expired_before.min(r.log_index.0);
            }
        }
    }
    Ok(Retention { max_age: None, max_bytes: config.max_bytes, expired_before, keep_from })
}

/// On the leader, proposes trimming the queues past the reserved time at `now` and waits
/// (bounded) until it is applied here; returns how many queues were trimmed. Failures are
/// logged: the next round tries again.
pub async fn trim_queues(
    raft: &Raft,
    state: &StateStore,
    stores: &Stores,
    config: &RetentionConfig,
    now: SystemTime,
) -> usize {
    if raft.metrics().borrow_watched().state != ServerState::Leader {
        return 0;
    }
    let mins = match state.read(|a| trim_mins(&a.machine, stores, now, config)) {
        Ok(m) if !m.is_empty() => m,
        Ok(_) => return 0,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the ConsumeQueue to trim the queues; retrying at the next interval");
            return 0;
        }
    };
    let count = mins.len();
    match tokio::time::timeout(TRIM_TIMEOUT, raft.client_write(Command::TrimQueues { mins })).await {
        Ok(Ok(r)) => {
            tracing::info!(queues = count, index = r.log_id.index(), "trimmed queues past the reserved time");
            count
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot trim the queues; retrying at the next interval");
            0
        }
        Err(_) => {
            tracing::warn!("trimming the queues did not commit in time; retrying at the next interval");
            0
        }
    }
}

/// Runs retention once at `now` (trimming the queues first on the leader): deletes the
/// expired CommitLog segments, then the ConsumeQueue files below each queue's minimum and
/// the IndexFiles below the first entry the log still holds. Returns the deleted segments.
pub async fn run_once(
    raft: &Raft,
    log: &Log,
    state: &StateStore,
    stores: &Stores,
    config: &RetentionConfig,
    now: SystemTime,
) -> raft_log::Result<Vec<RemovedSegment>> {
    trim_queues(raft, state, stores, config, now).await;
    let policy = match state.read(|a| policy(&a.machine, stores, now, config)) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the ConsumeQueue for retention; retrying at the next interval");
            return Ok(Vec::new());
        }
    };
    let removed = log.retain(policy, now).await?;
    if !removed.is_empty() {
        let bytes: u64 = removed.iter().map(|s| s.bytes).sum();
        let (first, next) = (removed[0].first, removed[removed.len() - 1].next);
        tracing::info!(segments = removed.len(), first, next, bytes, "retention deleted CommitLog segments");
    }
    if let Err(e) = delete_derived(state, stores, log) {
        tracing::warn!(error = %e, "deleting old ConsumeQueue and IndexFile files failed; retrying at the next interval");
    }
    Ok(removed)
}

/// Deletes ConsumeQueue files below each queue's minimum and IndexFiles of entries the log
/// no longer holds.
fn delete_derived(state: &StateStore, stores: &Stores, log: &Log) -> Result<(), StoreError> {
    let mins = state.read(|a| queues(&a.machine));
    for (topic, queue, min, _) in mins {
        stores.consume_queues().delete_below(topic.as_str(), queue, QueueOffset(min))?;
    }
    if let Some(first) = log.view().first {
        stores.index().delete_before(LogIndex(first))?;
    }
    Ok(())
}

/// Runs retention every `config.interval` until the task is aborted.
pub fn spawn(
    raft: Raft,
    log: Log,
    state: StateStore,
    stores: Stores,
    config: RetentionConfig,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(config.interval.max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            if let Err(e) = run_once(&raft, &log, &state, &stores, &config, SystemTime::now()).await {
                tracing::warn!(error = %e, "CommitLog retention failed; retrying at the next interval");
            }
        }
    })
}
