//! The writer thread of a [`super::Log`]: the only code that changes the files. It takes
//! requests from the queue in order, gathers appends into batches, and decides when they are
//! fdatasynced: before their callbacks run ([`SyncPolicy::EveryBatch`]), or after, on an
//! interval, when idle and before every other kind of write ([`SyncPolicy::Interval`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::{OnDurable, Op, Shared};
use crate::core::SyncPolicy;
use crate::error::{LogError, Result};
use crate::record::Record;

/// Under [`SyncPolicy::Interval`], unsynced records are fdatasynced once no request has come
/// for this long (or for the interval, if shorter): a producer that keeps appending does not
/// wait behind a sync, and one that stops has its records durable right after.
const IDLE_SYNC_AFTER: Duration = Duration::from_millis(1);

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) rx: mpsc::Receiver<Op>,
    pub(super) committed_saved_at: Instant,
    /// Committed id received in queue order, not yet written.
    pub(super) pending_committed: Option<Option<Bytes>>,
    /// When the oldest write not yet fdatasynced was made (only under `Interval`).
    pub(super) unsynced_since: Option<Instant>,
    /// When the writer last finished a request.
    pub(super) last_busy: Instant,
}

impl Writer {
    pub(super) fn run(mut self) {
        let mut carried: Option<Op> = None;
        loop {
            let op = match carried.take() {
                Some(op) => op,
                None => match self.next_op() {
                    Some(op) => op,
                    None => break,
                },
            };
            match op {
                Op::Append { records, done } => carried = self.append_batch(records, done),
                Op::Shutdown { done } => {
                    let r = self.shut_down();
                    // Nothing touches the files after this reply.
                    drop(done.send(r));
                    return;
                }
                other => self.handle(other),
            }
            // Errors stop the log; the next op reports them.
            let _ = self.save_committed(false);
            if self.sync_deadline().is_some_and(|(interval, _)| interval <= Instant::now()) {
                self.sync_written();
            }
            self.note_synced();
            self.last_busy = Instant::now();
        }
        let _ = self.shut_down();
    }

    /// The next request, waiting for one. With unsynced records it waits at most until they
    /// are due (the senders unpark this thread), syncs them, and waits on.
    fn next_op(&mut self) -> Option<Op> {
        loop {
            match self.rx.try_recv() {
                Ok(op) => return Some(op),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if let Some((interval, idle)) = self.sync_deadline() {
                let due = interval.min(idle);
                let now = Instant::now();
                if now < due {
                    std::thread::park_timeout(due - now);
                } else {
                    self.sync_written();
                }
                continue;
            }
            // Idle with nothing unsynced: the committed id is saved once its interval has
            // passed since the last save, unless a request comes first. Saving it at once
            // would put a meta fsync in front of the next append whenever appends come one
            // at a time; a committed id a little behind only means re-applying a few
            // entries after a restart.
            if self.pending_committed.is_some() && self.stopped().is_none() {
                let due = self.committed_saved_at + self.shared.config.committed_interval;
                let now = Instant::now();
                if now < due {
                    std::thread::park_timeout(due - now);
                } else {
                    let _ = self.save_committed(true);
                    self.note_synced();
                }
                continue;
            }
            return self.rx.blocking_recv();
        }
    }

    /// When unsynced records fall due: by the interval, and by the idle rule.
    fn sync_deadline(&self) -> Option<(Instant, Instant)> {
        let (SyncPolicy::Interval(every), Some(since)) = (self.shared.config.sync, self.unsynced_since) else {
            return None;
        };
        if self.stopped().is_some() {
            return None;
        }
        Some((since + every, self.last_busy + every.min(IDLE_SYNC_AFTER)))
    }

    /// Syncs what is unsynced (if the log still runs) and reports the shutdown's result.
    fn shut_down(&mut self) -> Result<()> {
        self.sync_written();
        let r = self.save_committed(true);
        self.note_synced();
        let stopped = self.stopped();
        {
            let mut mem = self.shared.mem.write();
            mem.failed.get_or_insert_with(|| "the log was shut down".into());
        }
        // Requests queued behind the shutdown fail; later ones find the queue closed.
        self.rx.close();
        while let Ok(op) = self.rx.try_recv() {
            self.handle(op);
        }
        match stopped {
            Some(e) => Err(e),
            None => r,
        }
    }

    fn fail(&self, err: &LogError) -> String {
        let mut mem = self.shared.mem.write();
        let why = err.to_string();
        tracing::error!(error = %why, "raft log stopped after an IO error");
        mem.failed.get_or_insert(why).clone()
    }

    fn stopped(&self) -> Option<LogError> {
        self.shared.mem.read().failed.clone().map(LogError::Stopped)
    }

    /// Gathers queued appends (up to the batch limits), writes them, syncs once (under
    /// `EveryBatch`), and reports. Returns a non-append op that ended the batch.
    fn append_batch(&mut self, first: Vec<Record>, done: OnDurable) -> Option<Op> {
        let config = &self.shared.config;
        let mut bytes: usize = first.iter().map(|r| r.payload.len()).sum();
        let mut records = first;
        let mut callbacks = vec![done];
        let mut carried = None;
        while records.len() < config.max_batch_records && bytes < config.max_batch_bytes {
            match self.rx.try_recv() {
                Ok(Op::Append { records: more, done }) => {
                    bytes += more.iter().map(|r| r.payload.len()).sum::<usize>();
                    records.extend(more);
                    callbacks.push(done);
                }
                // Saved after this batch is written, so still after the appends queued
                // before it; it does not end the batch.
                Ok(Op::Committed { committed }) => self.pending_committed = Some(committed),
                Ok(other) => {
                    carried = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let result = self.write_batch(&records);
        let result = match result {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(&e)),
        };
        for cb in callbacks {
            cb(result.clone().map_err(LogError::Stopped));
        }
        carried
    }

    fn write_batch(&mut self, records: &[Record]) -> Result<()> {
        if let Some(e) = self.stopped() {
            return Err(e);
        }
        let last = records.last().map(|r| r.index);
        let file = {
            // Only the files are locked while the batch is written: appenders and tail
            // readers work on `mem` meanwhile.
            let mut core = self.shared.core.write();
            core.append(records)?;
            let file = core.active_file();
            drop(core);
            let mut mem = self.shared.mem.write();
            mem.written = last;
            mem.cache.evict(last);
            file
        };
        if let SyncPolicy::Interval(_) = self.shared.config.sync {
            self.unsynced_since.get_or_insert_with(Instant::now);
            return Ok(());
        }
        // fdatasync without holding the lock: readers go on meanwhile. Only this thread
        // changes the files, so the active segment cannot change under us.
        if let Some(file) = file {
            file.sync_data().map_err(|e| LogError::io("fdatasync", self.shared.core.read().dir(), e))?;
        }
        self.shared.core.write().mark_synced();
        self.shared.mem.write().durable = last;
        Ok(())
    }

    /// Under `Interval`: fdatasyncs the records written since the last sync. An error stops
    /// the log (records already reported may then be lost, as the policy allows).
    fn sync_written(&mut self) {
        if self.unsynced_since.is_none() || self.stopped().is_some() {
            return;
        }
        let (file, written) = (self.shared.core.read().active_file(), self.shared.mem.read().written);
        // As in `write_batch`: only the active segment can hold unsynced writes (sealing a
        // segment syncs it), and only this thread changes it.
        if let Some(file) = file
            && let Err(e) = file.sync_data()
        {
            self.fail(&LogError::io("fdatasync", self.shared.core.read().dir(), e));
            return;
        }
        self.shared.core.write().mark_synced();
        self.shared.mem.write().durable = written;
        self.unsynced_since = None;
    }

    /// After an operation that may have synced the files itself (every one but an append
    /// does): moves the durable mark if nothing written is left unsynced.
    fn note_synced(&mut self) {
        if self.unsynced_since.is_none() || self.shared.core.read().has_unsynced() {
            return;
        }
        let mut mem = self.shared.mem.write();
        mem.durable = mem.written;
        self.unsynced_since = None;
    }

    fn handle(&mut self, op: Op) {
        fn reply<T>(done: oneshot::Sender<Result<T>>, r: Result<T>) {
            drop(done.send(r));
        }
        if let Some(e) = self.stopped() {
            match op {
                Op::Append { done, .. } => done(Err(e)),
                Op::Truncate { done, .. }
                | Op::Purge { done, .. }
                | Op::Vote { done, .. }
                | Op::Flush { done }
                | Op::Shutdown { done } => reply(done, Err(e)),
                Op::Retain { done, .. } => reply(done, Err(e)),
                Op::Backfill { done, .. } => reply(done, Err(e)),
                Op::Committed { .. } => {}
            }
            return;
        }
        let mut core = self.shared.core.write();
        match op {
            Op::Append { .. } | Op::Shutdown { .. } => unreachable!("appends and shutdown are handled by the caller"),
            Op::Truncate { last_kept, done } => {
                let r = core.truncate_after(last_kept);
                if r.is_ok() {
                    let last = core.last_index().map(|i| (i, core.last_term()));
                    let mut mem = self.shared.mem.write();
                    mem.cache.truncate_after(last_kept);
                    mem.last = last;
                    mem.written = last.map(|l| l.0);
                    mem.durable = mem.written;
                }
                drop(core);
                reply(done, self.check(r));
            }
            Op::Purge { index, id, done } => {
                let r = core.purge(index, id);
                if r.is_ok() {
                    let mut mem = self.shared.mem.write();
                    mem.purged = Some(index);
                    if mem.last.is_none_or(|l| l.0 <= index) {
                        mem.cache.clear();
                    }
                }
                drop(core);
                self.note_synced();
                reply(done, self.check(r));
            }
            Op::Vote { vote, done } => {
                let r = core.save_vote(vote);
                drop(core);
                self.note_synced();
                reply(done, self.check(r));
            }
            Op::Committed { committed } => self.pending_committed = Some(committed),
            Op::Retain { policy, now, done } => {
                let r = core.retain(policy, now);
                drop(core);
                reply(done, self.check(r));
            }
            Op::Backfill { staged, done } => {
                let r = core.install_backfill(staged);
                if let Ok(done) = &r {
                    let purged = core.meta().purged.as_ref().map(|p| p.index);
                    let last = core.last_index().map(|i| (i, core.last_term()));
                    let mut mem = self.shared.mem.write();
                    if let (Some(p), false) = (purged, done.removed.is_empty()) {
                        mem.cache.drop_through(p);
                    }
                    // With no record past the purge point, the backfilled ones are the last.
                    if mem.last.is_none_or(|l| purged.is_some_and(|p| l.0 <= p)) {
                        mem.last = last;
                        mem.written = last.map(|l| l.0);
                        mem.durable = mem.written;
                    }
                }
                drop(core);
                self.note_synced();
                reply(done, self.check(r));
            }
            Op::Flush { done } => {
                let r = core.sync();
                drop(core);
                let r = self.check(r).and_then(|()| self.save_committed(true));
                self.note_synced();
                reply(done, r);
            }
        }
    }

    fn check<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r
            && !matches!(e, LogError::Invalid(_))
        {
            self.fail(e);
        }
        r
    }

    fn save_committed(&mut self, force: bool) -> Result<()> {
        if self.pending_committed.is_none() {
            return Ok(());
        }
        if !force && self.committed_saved_at.elapsed() < self.shared.config.committed_interval {
            return Ok(());
        }
        self.shared.mem.read().check_running()?;
        let mut core = self.shared.core.write();
        let committed = self.pending_committed.take().expect("checked above");
        let r = core.save_committed(committed);
        drop(core);
        self.committed_saved_at = Instant::now();
        self.check(r)
    }
}
