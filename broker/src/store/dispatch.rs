//! Dispatch: follows the applied log and writes every stored message into the ConsumeQueue
//! and the IndexFile, and every delay message into the timer store until it fires
//! (RocketMQ's ReputMessageService), behind apply and off its path.
//!
//! It needs no apply result: whether a `Send` stored a message, and at which offset, follows
//! from the entry and any later state ([`Machine::accepts`]); each queue's next offset is
//! counted here. It only dispatches entries already applied, so the state it asks is never
//! older than the entry. A `DeleteTopic` entry deletes the topic's ConsumeQueue.
//!
//! Progress is made durable by a checkpoint written after the stores are synced (at most
//! once a second, and a second after the last change when dispatch goes idle). On start,
//! before the node serves, the stores are cut back to the checkpoint and the entries the
//! node had applied are dispatched again; dispatch goes on from there. When the stores or the checkpoint are missing or damaged, or the log no
//! longer holds the next entry to dispatch (this node installed a snapshot), the stores are
//! rebuilt from the entries the log holds: a first pass counts each queue's stored messages
//! up to the applied index, which gives each queue's offset at the first entry (its maximum
//! minus the count), a second pass dispatches them.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use openraft::EntryPayload;
use raftmq_machine::timer;
use raftmq_machine::types::{StoredMessage, TopicName, tag_hash};
use raftmq_machine::{Command, LogIndex, Machine, MessageBatch, MessageHead, Millis, QueueId, QueueOffset, Slot};

use super::checkpoint::{Checkpoint, CheckpointError};
use super::consume_queue::{CqError, QueueRecord};
use super::index_file::{IndexError, IndexKey, MAX_KEY_LEN, NewEntry};
use super::timer::{Timer, TimerError};
use super::{StoreError, Stores};
use crate::raft::Entry;
use crate::raft::ack::AckLogStore;
use crate::raft::state::StateStore;
use crate::service::proposer::now_ms;

/// Most entries read and dispatched at once.
const BATCH_ENTRIES: u64 = 256;
/// How often the stores are synced and the checkpoint written while dispatch is busy.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How long to wait before retrying after the log refused a read (records being copied in)
/// or a store failed.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// Why a batch could not be dispatched.
#[derive(Debug, thiserror::Error)]
enum DispatchError {
    /// The log does not hold the next entry: the stores must be rebuilt.
    #[error("the CommitLog no longer holds entry {0}")]
    Gap(LogIndex),
    /// Records are being copied into the log (backfill); retry.
    #[error("log records are still being copied in: {0}")]
    Incomplete(io::Error),
    /// Reading the log failed.
    #[error("reading the CommitLog: {0}")]
    Log(io::Error),
    /// A store failed or disagrees with the log: rebuild.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<CqError> for DispatchError {
    fn from(e: CqError) -> Self {
        DispatchError::Store(e.into())
    }
}

impl From<TimerError> for DispatchError {
    fn from(e: TimerError) -> Self {
        DispatchError::Store(e.into())
    }
}

impl From<IndexError> for DispatchError {
    fn from(e: IndexError) -> Self {
        DispatchError::Store(e.into())
    }
}

/// The dispatch state: the stores and the progress not yet checkpointed.
struct Dispatch {
    stores: Stores,
    log: AckLogStore,
    state: StateStore,
    progress: Checkpoint,
    /// Whether `progress` moved since the last checkpoint.
    dirty: bool,
    /// ConsumeQueue records not yet written, per queue: the first offset and the records
    /// from it, written by [`Dispatch::write_records`] before progress is published.
    records: BTreeMap<(String, QueueId), (u64, Vec<QueueRecord>)>,
    /// IndexFile entries not yet written, in log order.
    keys: Vec<NewEntry>,
}

/// Dispatch as a node's start left it: the stores cut back to their checkpoint and caught up
/// with what the node had applied, or marked for a rebuild.
pub struct Recovered {
    d: Dispatch,
    rebuild: bool,
}

impl std::fmt::Debug for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovered")
            .field("dispatched", &self.d.progress.dispatched)
            .field("rebuild", &self.rebuild)
            .finish()
    }
}

/// Recovers the stores before the node serves them (blocking): cuts them back to their
/// checkpoint, then dispatches the entries the node had applied before it stopped (at most
/// what came after the last checkpoint), so that a restarted node answers from stores that
/// agree with each other and hold what it held before. When they must be rebuilt, nothing is
/// published until the rebuild is done.
pub fn recover(stores: Stores, log: AckLogStore, state: StateStore, reset: bool) -> Recovered {
    let started = Instant::now();
    let mut d = Dispatch {
        stores,
        log,
        state,
        progress: Checkpoint::default(),
        dirty: false,
        records: BTreeMap::new(),
        keys: Vec::new(),
    };
    if reset || !d.recover() {
        return Recovered { d, rebuild: true };
    }
    let applied = d.state.read(|a| LogIndex(a.last_applied.map_or(0, |l| l.index())));
    let from = d.progress.dispatched;
    while d.progress.dispatched < applied {
        let next = d.progress.dispatched.next();
        let to = LogIndex(applied.0.min(next.0 + BATCH_ENTRIES - 1));
        match d.dispatch(next, to) {
            Ok(()) => {}
            // Records still being copied in, or a read that failed: following retries.
            Err(DispatchError::Incomplete(_) | DispatchError::Log(_)) => break,
            Err(e) => {
                tracing::warn!(error = %e, "the derived stores disagree with the CommitLog; rebuilding them");
                return Recovered { d, rebuild: true };
            }
        }
    }
    tracing::info!(
        checkpoint = from.0,
        dispatched = d.progress.dispatched.0,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "derived stores caught up with the applied log"
    );
    d.publish();
    Recovered { d, rebuild: false }
}

/// Follows the applied log from where [`recover`] left the stores (rebuilding them first
/// when it said so) until the task is aborted.
pub fn spawn(recovered: Recovered) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Recovered { mut d, mut rebuild } = recovered;
        loop {
            if rebuild {
                let (back, result) = blocking(d, |d| d.rebuild()).await;
                d = back;
                match result {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::info!(error = %e, "rebuilding the derived stores waits for the log");
                        tokio::time::sleep(RETRY_AFTER).await;
                        continue;
                    }
                }
            }
            d.publish();
            rebuild = d.follow().await;
        }
    })
}

/// Runs `f` on a blocking thread with the dispatch state and hands it back. Once the
/// stores are closed (the node stopped and aborted this task) `f` no longer runs and
/// this never returns.
async fn blocking<T: Send + 'static>(
    d: Dispatch,
    f: impl FnOnce(&mut Dispatch) -> T + Send + 'static,
) -> (Dispatch, T) {
    let task = tokio::task::spawn_blocking(move || {
        let mut d = d;
        let stores = d.stores.clone();
        stores.while_open(|| f(&mut d)).map(|out| (d, out))
    });
    match task.await {
        Ok(Some(r)) => r,
        Ok(None) => std::future::pending().await,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

impl Dispatch {
    /// Follows the applied index until the stores need a rebuild (returns true) or the task
    /// is aborted.
    async fn follow(&mut self) -> bool {
        let signal = self.state.applied_signal().clone();
        let mut last_checkpoint = Instant::now();
        let mut me = self.take();
        loop {
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if me.stores.take_damaged() {
                *self = me;
                return true;
            }
            let applied = me.state.read(|a| LogIndex(a.last_applied.map_or(0, |l| l.index())));
            let next = me.progress.dispatched.next();
            if applied >= next {
                let to = LogIndex(applied.0.min(next.0 + BATCH_ENTRIES - 1));
                let (back, result) = blocking(me, move |d| d.dispatch(next, to)).await;
                me = back;
                match result {
                    Ok(()) => me.publish(),
                    Err(DispatchError::Incomplete(_)) => tokio::time::sleep(RETRY_AFTER).await,
                    Err(DispatchError::Log(e)) => {
                        tracing::warn!(error = %e, "dispatch could not read the CommitLog; retrying");
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the derived stores disagree with the CommitLog; rebuilding them");
                        *self = me;
                        return true;
                    }
                }
                if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                    me = checkpoint(me).await;
                    last_checkpoint = Instant::now();
                }
                continue;
            }
            // Caught up. A checkpoint syncs every store and writes a file: taken at every
            // catch-up it would cost several fsyncs per entry on every node when entries
            // come one at a time. It is taken once due, unless a new entry comes first; a
            // restart cuts back to it and dispatches the rest again before serving
            // ([`recover`]).
            let due = last_checkpoint + CHECKPOINT_EVERY;
            if me.dirty && Instant::now() >= due {
                me = checkpoint(me).await;
                last_checkpoint = Instant::now();
                continue;
            }
            let wait = if me.dirty { due.saturating_duration_since(Instant::now()) } else { CHECKPOINT_EVERY };
            let _ = tokio::time::timeout(wait, &mut notified).await;
        }
    }

    /// Moves the state out (to hand it to blocking threads), leaving an empty shell.
    fn take(&mut self) -> Dispatch {
        let shell = Dispatch {
            stores: self.stores.clone(),
            log: self.log.clone(),
            state: self.state.clone(),
            progress: Checkpoint::default(),
            dirty: false,
            records: BTreeMap::new(),
            keys: Vec::new(),
        };
        std::mem::replace(self, shell)
    }

    /// Tells readers how far the stores go, and wakes receives waiting for messages.
    fn publish(&self) {
        self.stores.set_dispatched(self.progress.dispatched);
        self.state.applied_signal().notify_waiters();
    }

    /// Cuts the stores back to the checkpoint. False when they must be rebuilt.
    fn recover(&mut self) -> bool {
        let dir = self.stores.dir().to_path_buf();
        let checkpoint = match Checkpoint::read(&dir) {
            Ok(cp) => cp,
            Err(CheckpointError::Missing(_)) if self.stores_empty() => {
                tracing::info!("new derived stores: building them from the CommitLog");
                return false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "no usable store checkpoint; rebuilding the derived stores from the CommitLog");
                return false;
            }
        };
        let cut = || -> Result<u64, StoreError> {
            let dropped = self.stores.consume_queues().truncate_after_log_index(checkpoint.dispatched)?;
            self.stores.index().truncate_after(checkpoint.dispatched)?;
            for ((topic, queue), &next) in &checkpoint.next {
                let end = self.stores.consume_queues().bounds(topic, *queue)?.map(|(_, end)| end.0);
                if end.is_some_and(|end| end != next) {
                    return Err(StoreError::ConsumeQueue(CqError::Invalid(format!(
                        "queue {topic}:{} ends at {end:?} but the checkpoint says {next}",
                        queue.0
                    ))));
                }
            }
            Ok(dropped)
        };
        match cut() {
            Ok(dropped) => {
                tracing::info!(
                    dispatched = checkpoint.dispatched.0,
                    dropped,
                    "derived stores recovered to their checkpoint"
                );
                self.stores.timers().set_last_fire(checkpoint.last_fire);
                self.progress = checkpoint;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the derived stores do not match their checkpoint; rebuilding them");
                false
            }
        }
    }

    fn stores_empty(&self) -> bool {
        self.stores.consume_queues().queues().is_ok_and(|q| q.is_empty())
            && self.stores.index().last_log_index().is_none()
    }

    /// Reads entries `from..=to`; a first entry other than `from` is a gap.
    fn entries(&self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, DispatchError> {
        let entries = self.log.retained_entries(from.0, to.0 + 1).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => DispatchError::Incomplete(e),
            _ => DispatchError::Log(e),
        })?;
        match entries.first() {
            Some(e) if e.log_id.index() == from.0 => Ok(entries),
            _ => Err(DispatchError::Gap(from)),
        }
    }

    /// Dispatches the applied entries `from..=to` (judged by the current state).
    fn dispatch(&mut self, from: LogIndex, to: LogIndex) -> Result<(), DispatchError> {
        let entries = self.entries(from, to)?;
        let state = self.state.clone();
        let applied = entries.iter().try_for_each(|entry| state.read(|a| self.apply_entry(&a.machine, entry, None)));
        self.finish_batch(applied)
    }

    /// Writes the batch's ConsumeQueue records and IndexFile entries (`applied` is how
    /// applying its entries went; after a failure they are dropped: the stores are rebuilt).
    fn finish_batch(&mut self, applied: Result<(), DispatchError>) -> Result<(), DispatchError> {
        match applied {
            Ok(()) => self.write_records(),
            Err(e) => {
                self.records.clear();
                self.keys.clear();
                Err(e)
            }
        }
    }

    /// Writes the ConsumeQueue records and IndexFile entries gathered so far: one write per
    /// queue and file, one header write for the index.
    fn write_records(&mut self) -> Result<(), DispatchError> {
        self.stores.index().add_all(&std::mem::take(&mut self.keys))?;
        let cq = self.stores.consume_queues();
        for ((topic, queue), (first, records)) in std::mem::take(&mut self.records) {
            cq.append_all(&topic, queue, QueueOffset(first), &records)?;
        }
        Ok(())
    }

    /// Writes one entry's messages, as judged by `machine` (a state at or after the entry).
    /// `min_offsets`, during a rebuild, are the queues' first offsets still held: records
    /// below them are counted but not written.
    fn apply_entry(
        &mut self,
        machine: &Machine,
        entry: &Entry,
        min_offsets: Option<&BTreeMap<(String, QueueId), u64>>,
    ) -> Result<(), DispatchError> {
        let index = LogIndex(entry.log_id.index());
        if index <= self.progress.dispatched {
            return Ok(());
        }
        if let EntryPayload::Normal(command) = &entry.payload {
            if let Some(now) = command_time(command) {
                self.progress.clock = self.progress.clock.max(now);
            }
            match command {
                Command::Send { now, messages, .. } => {
                    let mut scheduled = Vec::new();
                    for (slot, m) in stored(machine, index, messages) {
                        // A delay message gets its queue record when its timer fires, a half
                        // message when it is committed; both are found by id and key from
                        // the start.
                        match m.deliver_at {
                            _ if m.transactional => {}
                            Some(deliver_at) if timer::scheduled(m.deliver_at, *now) => {
                                scheduled.push(Timer { deliver_at, log_index: index, slot });
                            }
                            _ => self.queue_record(index, slot, &m, min_offsets)?,
                        }
                        self.index_keys(index, slot, &m)?;
                    }
                    if !scheduled.is_empty() {
                        self.stores.timers().add(&scheduled)?;
                    }
                }
                Command::FireTimers { prev_fire, fires, drops, .. } => {
                    let before = self.progress.last_fire;
                    let fired = machine.fired(&mut self.progress.last_fire, index, *prev_fire, fires, drops.len());
                    if self.progress.last_fire != before {
                        // Accepted: every timer it names is done, also those of topics
                        // deleted meanwhile, which got no offset.
                        let marks: Vec<Timer> = fires
                            .iter()
                            .filter(|f| !f.head.transactional)
                            .filter_map(|f| {
                                f.head.deliver_at.map(|deliver_at| Timer {
                                    deliver_at,
                                    log_index: f.log_index,
                                    slot: f.slot,
                                })
                            })
                            .collect();
                        self.stores.timers().fire(&marks, now_ms())?;
                        self.stores.timers().set_last_fire(self.progress.last_fire);
                    }
                    for f in fired {
                        self.record_stored_earlier(f.log_index, f.slot, &f.head.topic, f.head.queue, min_offsets)?;
                    }
                }
                Command::Pop { group, takes, .. } => {
                    // Dead letters go to the group's dead-letter queue, read back from the
                    // log for their tag and size.
                    if let Some(dlq) = machine.dead_letter_topic_at(group, index) {
                        for d in takes.iter().flat_map(|t| &t.dead) {
                            self.record_stored_earlier(d.log_index, d.slot, &dlq, QueueId(0), min_offsets)?;
                        }
                    }
                }
                Command::ForwardToDeadLetter { group, letter, .. } => {
                    if let Some(dlq) = machine.dead_letter_topic_at(group, index) {
                        self.record_stored_earlier(letter.log_index, letter.slot, &dlq, QueueId(0), min_offsets)?;
                    }
                }
                Command::DeleteTopic { topic } => {
                    self.write_records()?;
                    self.stores.consume_queues().remove_topic(topic.as_str())?;
                    self.progress.next.retain(|(t, _), _| t != topic.as_str());
                }
                _ => {}
            }
        }
        self.progress.dispatched = index;
        self.dirty = true;
        Ok(())
    }

    /// Appends the ConsumeQueue record, in `topic`'s `queue`, of a message an earlier entry
    /// wrote (a fired delay message, a committed half message, a dead letter), read from the
    /// log for its tag, group and size. One that cannot be read (a bug or damage: retention
    /// keeps every message still waiting) still takes its offset, as a bare record.
    fn record_stored_earlier(
        &mut self,
        log_index: LogIndex,
        slot: Slot,
        topic: &TopicName,
        queue: QueueId,
        min_offsets: Option<&BTreeMap<(String, QueueId), u64>>,
    ) -> Result<(), DispatchError> {
        let mut m = match self.log.message_at(log_index.0, slot) {
            Ok(Some(m)) => m,
            other => {
                tracing::error!(log_index = log_index.0, slot = slot.0, result = ?other.map(|m| m.is_some()),
                    "a message going to a queue cannot be read from the CommitLog; its queue offset is kept, it cannot be read");
                let head = MessageHead {
                    topic: topic.clone(),
                    queue,
                    topic_epoch: LogIndex(0),
                    deliver_at: None,
                    transactional: false,
                };
                StoredMessage::bare(head)
            }
        };
        m.topic = topic.clone();
        m.queue = queue;
        self.queue_record(log_index, slot, &m, min_offsets)
    }

    /// Gathers the ConsumeQueue record of a message stored at (`index`, `slot`) ([`Dispatch::write_records`] writes it).
    fn queue_record(
        &mut self,
        index: LogIndex,
        slot: Slot,
        m: &StoredMessage,
        min_offsets: Option<&BTreeMap<(String, QueueId), u64>>,
    ) -> Result<(), DispatchError> {
        let key = (m.topic.as_str().to_string(), m.queue);
        let cq = self.stores.consume_queues();
        let offset = match self.progress.next.get(&key) {
            Some(&n) => n,
            None => cq.bounds(&key.0, m.queue)?.map_or(0, |(_, end)| end.0),
        };
        self.progress.next.insert(key.clone(), offset + 1);
        if min_offsets.and_then(|mins| mins.get(&key)).is_some_and(|&min| offset < min) {
            return Ok(());
        }
        let store_time = self.progress.clock;
        let record = QueueRecord {
            log_index: index,
            slot,
            size_bytes: u32::try_from(m.body.len()).unwrap_or(u32::MAX),
            tag_hash: m.tag.as_deref().map(tag_hash),
            group_hash: m.message_group.as_deref().map(tag_hash),
            store_time,
        };
        // Offsets are counted here, one after another per queue, so a batch's records of a
        // queue are contiguous; anything else is a bug, and the stores are rebuilt.
        let (first, records) = self.records.entry(key).or_insert_with(|| (offset, Vec::new()));
        if *first + records.len() as u64 != offset {
            return Err(DispatchError::from(CqError::Invalid(format!(
                "queue {}:{} gets offset {offset} after records gathered from {first} to {}",
                m.topic.as_str(),
                m.queue.0,
                *first + records.len() as u64
            ))));
        }
        records.push(record);
        Ok(())
    }

    /// Gathers a message's id and keys for the IndexFile ([`Dispatch::write_records`] writes them).
    fn index_keys(&mut self, index: LogIndex, slot: Slot, m: &StoredMessage) -> Result<(), DispatchError> {
        let store_time = self.progress.clock;
        let keys = std::iter::once(IndexKey::Id(&m.message_id)).chain(m.keys.iter().map(|k| IndexKey::Key(k)));
        for k in keys {
            let text = match k {
                IndexKey::Id(t) | IndexKey::Key(t) => t,
            };
            if text.is_empty() || text.len() > MAX_KEY_LEN {
                continue;
            }
            self.keys.push(NewEntry::new(k, index, slot, store_time)?);
        }
        Ok(())
    }

    /// Syncs the stores and writes the checkpoint.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.stores.consume_queues().sync()?;
        self.stores.index().sync()?;
        self.stores.timers().sync()?;
        self.progress.write(self.stores.dir()).map_err(|source| {
            StoreError::ConsumeQueue(CqError::Io { op: "write checkpoint", path: self.stores.dir().into(), source })
        })?;
        self.dirty = false;
        Ok(())
    }

    /// Rebuilds both stores from the entries the log holds, up to the applied index.
    fn rebuild(&mut self) -> Result<(), DispatchError> {
        let machine = self.state.read(|a| a.machine.clone());
        let applied = machine.last_applied();
        let first = self.log_first();
        let started = Instant::now();
        // Which timer fires in the retained log were accepted follows from the last one: the
        // chain of `prev_fire` links back to the one before the first retained entry.
        let last_fire_before = self.last_fire_before(first, machine.timers().last_fire)?;
        // Pass 1: how many messages of each queue the log holds (stored, or fired).
        let mut counts: BTreeMap<(String, QueueId), u64> = BTreeMap::new();
        let mut last_fire = last_fire_before;
        self.each_entry(first, applied, |entry| {
            let index = LogIndex(entry.log_id.index());
            let mut count = |topic: &TopicName, queue: QueueId| {
                *counts.entry((topic.as_str().to_string(), queue)).or_default() += 1;
            };
            match &entry.payload {
                EntryPayload::Normal(Command::Send { now, messages, .. }) => {
                    for (_, m) in messages.heads() {
                        if let Ok(m) = m
                            && machine.accepts_head(&m, index).is_ok()
                            && !m.transactional
                            && !timer::scheduled(m.deliver_at, *now)
                        {
                            count(&m.topic, m.queue);
                        }
                    }
                }
                EntryPayload::Normal(Command::FireTimers { prev_fire, fires, drops, .. }) => {
                    for f in machine.fired(&mut last_fire, index, *prev_fire, fires, drops.len()) {
                        count(&f.head.topic, f.head.queue);
                    }
                }
                EntryPayload::Normal(Command::Pop { group, takes, .. }) => {
                    if let Some(dlq) = machine.dead_letter_topic_at(group, index) {
                        for _ in takes.iter().flat_map(|t| &t.dead) {
                            count(&dlq, QueueId(0));
                        }
                    }
                }
                EntryPayload::Normal(Command::ForwardToDeadLetter { group, .. }) => {
                    if let Some(dlq) = machine.dead_letter_topic_at(group, index) {
                        count(&dlq, QueueId(0));
                    }
                }
                _ => {}
            }
            Ok(())
        })?;
        let mut next = BTreeMap::new();
        let mut mins = BTreeMap::new();
        for (topic, config) in machine.topics() {
            for q in 0..config.queue_count {
                let Some(queue) = machine.queue(topic, QueueId(q)) else { continue };
                let key = (topic.as_str().to_string(), QueueId(q));
                let held = counts.get(&key).copied().unwrap_or(0);
                let start = queue.max_offset().checked_sub(held).ok_or_else(|| {
                    StoreError::ConsumeQueue(CqError::Invalid(format!(
                        "the log holds {held} messages of {}:{q}, more than its {} offsets",
                        topic.as_str(),
                        queue.max_offset()
                    )))
                })?;
                next.insert(key.clone(), start);
                mins.insert(key, queue.min_offset());
            }
        }
        // Pass 2: write them, from a clean slate.
        self.stores.clear()?;
        self.progress = Checkpoint {
            dispatched: LogIndex(first.0.saturating_sub(1)),
            clock: Millis(0),
            next,
            last_fire: last_fire_before,
        };
        self.stores.timers().set_last_fire(last_fire_before);
        let mut entries_done = 0u64;
        let mut from = first;
        while from <= applied {
            let to = LogIndex(applied.0.min(from.0 + BATCH_ENTRIES - 1));
            let entries = self.entries(from, to)?;
            let applied = entries.iter().try_for_each(|entry| self.apply_entry(&machine, entry, Some(&mins)));
            self.finish_batch(applied)?;
            entries_done += entries.len() as u64;
            from = to.next();
        }
        self.progress.dispatched = self.progress.dispatched.max(applied);
        self.checkpoint()?;
        tracing::info!(
            entries = entries_done,
            first = first.0,
            applied = applied.0,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "rebuilt the ConsumeQueue and IndexFile from the CommitLog"
        );
        Ok(())
    }

    /// The last accepted timer fire before `first`: walks the `prev_fire` links back from
    /// `last_fire`, the state's last accepted fire.
    fn last_fire_before(&self, first: LogIndex, last_fire: LogIndex) -> Result<LogIndex, DispatchError> {
        let mut at = last_fire;
        while at >= first && at.0 > 0 {
            let entry = self.entries(at, at)?.into_iter().next();
            match entry.map(|e| e.payload) {
                Some(EntryPayload::Normal(Command::FireTimers { prev_fire, .. })) if prev_fire < at => at = prev_fire,
                other => {
                    return Err(DispatchError::Store(StoreError::ConsumeQueue(CqError::Invalid(format!(
                        "the state's timer fire chain names log entry {}, which holds {}",
                        at.0,
                        other.map_or("nothing".to_string(), |p| match p {
                            EntryPayload::Normal(c) => c.to_string(),
                            _ => "no command".to_string(),
                        })
                    )))));
                }
            }
        }
        Ok(at)
    }

    /// The first index the log holds (1 when it is empty).
    fn log_first(&self) -> LogIndex {
        LogIndex(self.log.log_first().unwrap_or(1))
    }

    /// Calls `f` on every entry `first..=last` the log holds, in batches.
    fn each_entry(
        &self,
        first: LogIndex,
        last: LogIndex,
        mut f: impl FnMut(&Entry) -> Result<(), DispatchError>,
    ) -> Result<(), DispatchError> {
        let mut from = first;
        while from <= last {
            let to = LogIndex(last.0.min(from.0 + BATCH_ENTRIES - 1));
            for entry in self.entries(from, to)? {
                f(&entry)?;
            }
            from = to.next();
        }
        Ok(())
    }
}

async fn checkpoint(me: Dispatch) -> Dispatch {
    let (me, result) = blocking(me, |d| d.checkpoint()).await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "writing the store checkpoint failed; retrying later");
    }
    me
}

/// The messages of a `Send` entry that apply stored, with their slots, judged by `machine`
/// (a state at or after the entry). Apply judges each message by its head alone; a message
/// whose head decodes but whose rest does not (this broker never writes one) still takes its
/// offset, as a bare record that names no key, so every later offset stays apply's.
fn stored(machine: &Machine, index: LogIndex, batch: &MessageBatch) -> Vec<(Slot, StoredMessage)> {
    let mut out = Vec::with_capacity(batch.len());
    for (slot, m) in batch.iter() {
        match m {
            Ok(m) if machine.accepts(&m, index).is_ok() => out.push((slot, m)),
            Ok(_) => {}
            Err(e) => {
                let Some(Ok(head)) = batch.head(slot) else { continue };
                if machine.accepts_head(&head, index).is_ok() {
                    tracing::error!(log_index = index.0, slot = slot.0, error = %e,
                        "a stored message does not decode; its queue offset is kept, it cannot be read");
                    out.push((slot, StoredMessage::bare(head)));
                }
            }
        }
    }
    out
}

/// The proposer time a command carries, if any.
fn command_time(command: &Command) -> Option<Millis> {
    match command {
        Command::Send { now, .. } | Command::Pop { now, .. } | Command::ChangeInvisible { now, .. } => Some(*now),
        _ => None,
    }
}
