//! CommitLog retention with RocketMQ's semantics: a message stored longer ago than the
//! reserved time (default 72 h, RocketMQ's `fileReservedTime`) goes with its segment,
//! consumed or not, and the queues' minimum offsets move past it.
//!
//! Age is read from the messages themselves (the store time every ConsumeQueue record
//! carries), not from file times, so every member deletes the same messages, and a segment
//! a node copied in yesterday (see [`crate::raft::backfill`]) is as old as its messages.
//!
//! A message a queue still holds at its minimum offset is never deleted (DESIGN: files go
//! once "no longer needed by any consume queue's minimum"), so the queues are trimmed
//! first: the leader, when messages a queue still holds are past the reserved time,
//! proposes [`Command::TrimQueues`] below the first message within it. Once applied (on
//! every member, through the log) the queues' minimum offsets, pop state and committed
//! offsets have moved past the expired messages. Every member then deletes, from its own
//! applied state, the segments entirely below both the first message within the reserved
//! time and every queue's first message; a follower deletes once the trim reached it. The
//! log never deletes anything above its purge point, nor its newest segment. An optional
//! byte limit deletes the oldest purged segments beyond it whatever their age (RocketMQ's
//! forced clean when the disk fills).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use raft_log::{Log, RemovedSegment, Retention};

use crate::raft::Raft;
use crate::raft::state::StateStore;
pub use crate::settings::RetentionConfig;
use raftmq_machine::types::{Millis, QueueId};
use raftmq_machine::{Command, LogIndex, Machine};

/// Longest a trim proposal may wait to commit before this round of retention goes on
/// without it.
const TRIM_TIMEOUT: Duration = Duration::from_secs(10);

/// The lowest log index any ConsumeQueue references with a message stored at or after
/// `since` (`None`: no such message).
pub fn first_index_since(machine: &Machine, since: Millis) -> Option<u64> {
    let mut lowest: Option<u64> = None;
    for (topic, config) in machine.topics() {
        for q in 0..config.queue_count {
            let Some(queue) = machine.queue(topic, QueueId(q)) else { continue };
            // Store times only grow along a queue, as do log indexes.
            if let Some(record) = queue.get(queue.offset_at_time(since)) {
                lowest = Some(lowest.map_or(record.log_index.0, |l| l.min(record.log_index.0)));
            }
        }
    }
    lowest
}

fn millis(t: SystemTime) -> Millis {
    let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// The first log index of a message within the reserved time at `now` (`u64::MAX` when
/// every message is past it, 0 when messages never expire).
pub fn expired_before(machine: &Machine, now: SystemTime, config: &RetentionConfig) -> u64 {
    match config.max_age {
        Some(age) => {
            let since = millis(now.checked_sub(age).unwrap_or(UNIX_EPOCH));
            first_index_since(machine, since).unwrap_or(u64::MAX)
        }
        None => 0,
    }
}

/// Where the queues should be trimmed at `now`: `Some(before_log_index)` when a queue
/// still holds, at its minimum offset, a message past the reserved time.
pub fn trim_point(machine: &Machine, now: SystemTime, config: &RetentionConfig) -> Option<u64> {
    let expired_before = expired_before(machine, now, config);
    first_index_referenced(machine).filter(|&first| first < expired_before).map(|_| expired_before)
}

/// The retention policy at `now`: segments entirely below the first message within the
/// reserved time are expired (all of them when no message is), and those below the first
/// message any queue still holds may go.
pub fn policy(machine: &Machine, now: SystemTime, config: &RetentionConfig) -> Retention {
    let expired_before = expired_before(machine, now, config);
    let keep_from = first_index_referenced(machine).unwrap_or(u64::MAX);
    Retention { max_age: None, max_bytes: config.max_bytes, expired_before, keep_from }
}

/// The lowest log index any ConsumeQueue still references at its minimum offset: those
/// messages may still be delivered, so the segment holding them stays (`None`: no queue
/// holds a message).
pub fn first_index_referenced(machine: &Machine) -> Option<u64> {
    machine
        .topics()
        .flat_map(|(topic, config)| {
            (0..config.queue_count)
                .filter_map(move |q| machine.queue(topic, QueueId(q)))
                .filter_map(|queue| queue.get(queue.min_offset()).map(|r| r.log_index.0))
        })
        .min()
}

/// On the leader, proposes trimming the queues past the reserved time at `now` and waits
/// (bounded) until it is applied here; returns the trim point proposed and applied.
/// Failures are logged: the next round tries again.
pub async fn trim_queues(raft: &Raft, state: &StateStore, config: &RetentionConfig, now: SystemTime) -> Option<u64> {
    if raft.metrics().borrow_watched().state != ServerState::Leader {
        return None;
    }
    let before_log_index = state.read(|a| trim_point(&a.machine, now, config))?;
    let write = raft.client_write(Command::TrimQueues { before_log_index: LogIndex(before_log_index) });
    match tokio::time::timeout(TRIM_TIMEOUT, write).await {
        Ok(Ok(r)) => {
            tracing::info!(before_log_index, index = r.log_id.index(), "trimmed queues past the reserved time");
            Some(before_log_index)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, before_log_index, "cannot trim the queues; retrying at the next interval");
            None
        }
        Err(_) => {
            tracing::warn!(
                before_log_index,
                "trimming the queues did not commit in time; retrying at the next interval"
            );
            None
        }
    }
}

/// Runs retention once at `now` (trimming the queues first on the leader); returns the
/// deleted segments.
pub async fn run_once(
    raft: &Raft,
    log: &Log,
    state: &StateStore,
    config: &RetentionConfig,
    now: SystemTime,
) -> raft_log::Result<Vec<RemovedSegment>> {
    trim_queues(raft, state, config, now).await;
    let policy = state.read(|a| policy(&a.machine, now, config));
    let removed = log.retain(policy, now).await?;
    if !removed.is_empty() {
        let bytes: u64 = removed.iter().map(|s| s.bytes).sum();
        let (first, next) = (removed[0].first, removed[removed.len() - 1].next);
        tracing::info!(segments = removed.len(), first, next, bytes, "retention deleted CommitLog segments");
    }
    Ok(removed)
}

/// Runs retention every `config.interval` until the task is aborted.
pub fn spawn(raft: Raft, log: Log, state: StateStore, config: RetentionConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(config.interval.max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            if let Err(e) = run_once(&raft, &log, &state, &config, SystemTime::now()).await {
                tracing::warn!(error = %e, "CommitLog retention failed; retrying at the next interval");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::*;
    use raftmq_machine::Command;
    use raftmq_machine::types::{StoredMessage, TopicConfig, TopicName};

    fn send(machine: &mut Machine, index: u64, at: i64, queue: u32) {
        let message = StoredMessage {
            topic: TopicName::new("t").expect("valid"),
            queue: QueueId(queue),
            message_id: format!("m{index}"),
            tag: None,
            keys: vec![],
            message_group: None,
            properties: BTreeMap::new(),
            born: Millis(at),
            deliver_at: None,
            born_host: "test".into(),
            body: Bytes::from_static(b"x"),
            body_gzip: false,
        };
        machine.apply(
            LogIndex(index),
            &Command::Send { now: Millis(at), auto_create_queues: None, messages: vec![message], proposal: None },
        );
    }

    #[test]
    fn expiry_follows_message_store_times_across_queues() {
        let mut m = Machine::new("g");
        let topic = TopicName::new("t").expect("valid");
        m.apply(LogIndex(1), &Command::UpsertTopic { topic, config: TopicConfig::all_types(2) });
        send(&mut m, 10, 1_000, 0);
        send(&mut m, 20, 5_000, 1);
        send(&mut m, 30, 9_000, 0);
        send(&mut m, 40, 9_500, 1);
        assert_eq!(first_index_since(&m, Millis(0)), Some(10));
        assert_eq!(first_index_since(&m, Millis(2_000)), Some(20));
        assert_eq!(first_index_since(&m, Millis(6_000)), Some(30));
        assert_eq!(first_index_since(&m, Millis(10_000)), None);

        let config = RetentionConfig { max_age: Some(Duration::from_secs(4)), ..RetentionConfig::default() };
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(policy(&m, at(7_000), &config).expired_before, 20, "the message at 1 s is past 4 s");
        assert_eq!(policy(&m, at(20_000), &config).expired_before, u64::MAX, "every message is past 4 s");
        let forever = RetentionConfig { max_age: None, max_bytes: Some(1 << 30), ..RetentionConfig::default() };
        let p = policy(&m, at(20_000), &forever);
        // The queues still start at their first messages: nothing from index 10 on may go.
        assert_eq!((p.expired_before, p.max_bytes, p.keep_from), (0, Some(1 << 30), 10));
        assert_eq!(policy(&m, at(20_000), &config).keep_from, 10);
        assert_eq!(first_index_referenced(&m), Some(10));
        assert_eq!(first_index_referenced(&Machine::new("empty")), None);
    }

    #[test]
    fn queues_are_trimmed_to_the_first_message_within_the_reserved_time() {
        let mut m = Machine::new("g");
        let topic = TopicName::new("t").expect("valid");
        m.apply(LogIndex(1), &Command::UpsertTopic { topic, config: TopicConfig::all_types(2) });
        send(&mut m, 10, 1_000, 0);
        send(&mut m, 20, 5_000, 1);
        send(&mut m, 30, 9_000, 0);
        let config = RetentionConfig { max_age: Some(Duration::from_secs(4)), ..RetentionConfig::default() };
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(trim_point(&m, at(3_000), &config), None, "nothing is past 4 s yet");
        assert_eq!(trim_point(&m, at(7_000), &config), Some(20));
        assert_eq!(trim_point(&m, at(7_000), &RetentionConfig { max_age: None, ..config.clone() }), None);

        m.apply(LogIndex(40), &Command::TrimQueues { before_log_index: LogIndex(20) });
        assert_eq!(trim_point(&m, at(7_000), &config), None, "already trimmed there");
        let p = policy(&m, at(7_000), &config);
        assert_eq!((p.expired_before, p.keep_from), (20, 20), "the segments below 20 may go now");
        assert_eq!(trim_point(&m, at(20_000), &config), Some(u64::MAX), "everything is past 4 s");
        m.apply(LogIndex(41), &Command::TrimQueues { before_log_index: LogIndex(u64::MAX) });
        assert_eq!(first_index_referenced(&m), None);
        assert_eq!(policy(&m, at(20_000), &config).keep_from, u64::MAX);
    }
}
