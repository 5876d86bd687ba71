//! Group commit: concurrent sends are gathered into one Raft entry (bounded by message
//! count, bytes and a short linger) so one fsync and one replication round cover them all.
//!
//! With `ack = "quorum"` each send is answered when its entry is committed and applied, with
//! the queue offsets apply assigned. With `ack = "leader"` it is answered as soon as the
//! leader's own write of the entry is durable ([`FlushWaiters`]), before any follower has it:
//! the offsets are not known yet (apply assigns them after commit), so they are `None`, and
//! a failover before commit can lose the entry. The entry is still followed to its end, and
//! the acknowledged entries not yet applied are bounded too.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::impls::ProgressResponder;
use openraft::raft::ClientWriteResult;
use openraft::type_config::alias::OneshotReceiverOf;
use raftmq_proto::rocketmq::v2::Code;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::status::Refusal;
use crate::raft::ack::FlushWaiters;
use crate::raft::{Raft, TypeConfig};
use raftmq_machine::types::{Millis, QueueId, QueueOffset, StoredMessage};
use raftmq_machine::{Command, CommandError, LogIndex, MessageBatch, Response, Slot};

/// Bounds of one batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most messages in one entry.
    pub max_messages: usize,
    /// Most message bytes (bodies and their metadata, [`stored_bytes`]) in one entry. One
    /// send larger than this is refused: an entry the CommitLog cannot hold would stop Raft.
    pub max_bytes: usize,
    /// How long the first send of a batch waits for company when other entries are in
    /// flight (with none, it is proposed at once).
    pub linger: Duration,
    /// Most entries being written at once whose sends are not answered yet.
    pub max_in_flight: usize,
    /// Sends waiting to be batched; more wait for room (back-pressure).
    pub queue: usize,
    /// `ack = "leader"`: most entries answered but not yet applied (no quorum: sends wait).
    pub max_unapplied: usize,
    /// `ack = "leader"`: how long a send waits for the leader's write before it fails.
    pub flush_timeout: Duration,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_messages: 1024,
            max_bytes: 8 << 20,
            linger: Duration::from_micros(200),
            max_in_flight: 4,
            queue: 4096,
            max_unapplied: 32,
            flush_timeout: Duration::from_secs(10),
        }
    }
}

/// When sends are answered.
#[derive(Debug, Clone)]
pub enum Ack {
    /// After commit and apply, with the queue offsets.
    Quorum,
    /// After the leader's durable write, told by these waiters; no offsets.
    Leader(Arc<FlushWaiters>),
}

/// One message the group accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Queue.
    pub queue: QueueId,
    /// Its offset in the queue; `None` when the send was answered before apply assigned it
    /// (`ack = "leader"`), for a delay message (it gets one when its timer fires) and for a
    /// transactional half message (when it is committed).
    pub offset: Option<QueueOffset>,
    /// Where it is in the log: its entry and slot (a half message's transaction).
    pub at: (LogIndex, Slot),
}

/// The outcome of one send request: one result per message, in order.
pub type SendOutcome = Result<Vec<Result<Accepted, CommandError>>, Refusal>;

/// Bytes an entry may need beyond its messages' [`stored_bytes`] (the command's own fields).
pub const ENTRY_OVERHEAD_BYTES: usize = 4 << 10;

/// An upper bound of what `m` takes in an encoded log entry: its body, every string it
/// carries, and a few bytes of length prefix each.
pub fn stored_bytes(m: &StoredMessage) -> usize {
    const PER_FIELD: usize = 10;
    let strings = m.topic.as_str().len()
        + m.message_id.len()
        + m.tag.as_ref().map_or(0, String::len)
        + m.keys.iter().map(|k| k.len() + PER_FIELD).sum::<usize>()
        + m.message_group.as_ref().map_or(0, String::len)
        + m.properties.iter().map(|(k, v)| k.len() + v.len() + 2 * PER_FIELD).sum::<usize>()
        + m.born_host.len();
    m.body.len() + strings + 16 * PER_FIELD
}

fn job_bytes(job: &Job) -> usize {
    job.messages.iter().map(stored_bytes).sum()
}

struct Job {
    messages: Vec<StoredMessage>,
    done: oneshot::Sender<SendOutcome>,
}

/// Handle to the batching task.
#[derive(Debug, Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Job>,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> Millis {
    Millis(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
}

impl Proposer {
    /// Starts the batching task for `raft`, answering sends as `ack` says.
    pub fn start(raft: Raft, limits: BatchLimits, ack: Ack) -> Self {
        let (tx, rx) = mpsc::channel(limits.queue);
        tokio::spawn(run(raft, rx, limits, ack));
        Self { tx }
    }

    /// Appends `messages` through Raft; resolves when they count as stored.
    pub async fn send(&self, messages: Vec<StoredMessage>) -> SendOutcome {
        let (done, rx) = oneshot::channel();
        self.tx.send(Job { messages, done }).await.map_err(|_| Refusal::unavailable("the broker is shutting down"))?;
        rx.await.map_err(|_| Refusal::unavailable("the broker is shutting down"))?
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Job>, limits: BatchLimits, ack: Ack) {
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    let unapplied = Arc::new(Semaphore::new(limits.max_unapplied));
    // A send that did not fit the previous entry starts the next one.
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut bytes = job_bytes(&first);
        if bytes > limits.max_bytes {
            let refusal = Refusal::new(
                Code::PayloadTooLarge,
                format!(
                    "the request's messages take {bytes} bytes, more than one log entry holds ({}); send fewer or smaller messages",
                    limits.max_bytes
                ),
            );
            let _ = first.done.send(Err(refusal));
            continue;
        }
        // Take the in-flight slot first: while every slot is busy the sends arriving
        // meanwhile queue up and all go into this entry. With nothing else in flight the
        // entry is proposed at once; otherwise it waits up to the linger for company.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let others_in_flight = in_flight.available_permits() + 1 < limits.max_in_flight;
        let mut jobs = vec![first];
        let mut count = jobs[0].messages.len();
        let deadline = tokio::time::Instant::now() + limits.linger;
        while count < limits.max_messages && bytes < limits.max_bytes {
            let next = match rx.try_recv() {
                Ok(job) => job,
                Err(_) if !others_in_flight => break,
                Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => job,
                    _ => break,
                },
            };
            let next_bytes = job_bytes(&next);
            if bytes + next_bytes > limits.max_bytes || count + next.messages.len() > limits.max_messages {
                carried = Some(next);
                break;
            }
            count += next.messages.len();
            bytes += next_bytes;
            jobs.push(next);
        }
        let raft = raft.clone();
        let batch = match Batch::new(jobs) {
            Ok(batch) => batch,
            Err((dones, refusal)) => {
                refuse(dones, &refusal);
                continue;
            }
        };
        match &ack {
            Ack::Quorum => {
                tokio::spawn(async move {
                    let _permit = permit;
                    batch.commit(raft).await;
                });
            }
            Ack::Leader(waiters) => {
                let Ok(unapplied) = unapplied.clone().acquire_owned().await else { return };
                let waiters = waiters.clone();
                let timeout = limits.flush_timeout;
                tokio::spawn(batch.ack_on_leader_write(raft, waiters, timeout, permit, unapplied));
            }
        }
    }
}

/// The sends of one entry.
struct Batch {
    command: Command,
    /// Messages per send, in order.
    sizes: Vec<usize>,
    dones: Vec<oneshot::Sender<SendOutcome>>,
    /// Each message's queue, in order.
    queues: Vec<QueueId>,
}

impl Batch {
    /// The entry of `jobs`; when their messages cannot be encoded, the senders to refuse.
    #[allow(clippy::type_complexity)]
    fn new(jobs: Vec<Job>) -> Result<Self, (Vec<oneshot::Sender<SendOutcome>>, Refusal)> {
        let sizes: Vec<usize> = jobs.iter().map(|j| j.messages.len()).collect();
        let mut dones = Vec::with_capacity(jobs.len());
        let mut messages = Vec::with_capacity(sizes.iter().sum());
        for job in jobs {
            messages.extend(job.messages);
            dones.push(job.done);
        }
        let queues = messages.iter().map(|m| m.queue).collect();
        let messages = match MessageBatch::encode(&messages) {
            Ok(batch) => batch,
            Err(e) => {
                return Err((dones, Refusal::new(Code::BadRequest, format!("the messages cannot be stored: {e}"))));
            }
        };
        let command = Command::Send { now: now_ms(), messages, proposal: None };
        Ok(Self { command, sizes, dones, queues })
    }

    /// `ack = "quorum"`: proposes, waits for commit and apply, answers with the offsets.
    /// A leader that loses contact with a quorum while the send waits (cut off from the
    /// others) answers at once that the outcome is unknown, so the client retries on the
    /// members that can elect a new leader instead of waiting out its own timeout.
    /// A leader elected a moment ago proposes again once its lease holds
    /// ([`crate::raft::client_write`]).
    async fn commit(self, raft: Raft) {
        let write = crate::raft::client_write(&raft, self.command);
        let result = tokio::select! {
            result = write => result,
            lost = quorum_lost(&raft) => {
                let refusal = Refusal::unavailable(format!(
                    "node {} has heard from no quorum of its group for {} ms while this send waited: it \
                     may or may not be stored; retry on another member",
                    raft.metrics().borrow_watched().id,
                    lost.as_millis()
                ));
                return refuse(self.dones, &refusal);
            }
        };
        match result {
            Ok(resp) => answer_applied(self.dones, &self.sizes, LogIndex(resp.log_id.index()), resp.data),
            // Not the leader any more, or the node is stopping: nothing was acknowledged.
            Err(e) => {
                let (state, vote, leader) = {
                    let m = raft.metrics().borrow_watched().clone();
                    (m.state, m.vote, m.current_leader)
                };
                tracing::info!(error = %e, ?state, %vote, ?leader, sends = self.dones.len(), "a batch of sends was not committed");
                refuse(self.dones, &Refusal::unavailable(format!("send not committed: {e}")))
            }
        }
    }

    /// `ack = "leader"`: proposes in this node's current term and answers once the entry is
    /// durable in this node's log while it still leads in that term (or once it is applied,
    /// if that comes first). `answering` is released with the answer; `unapplied` when the
    /// entry is applied or lost.
    async fn ack_on_leader_write(
        mut self,
        raft: Raft,
        waiters: Arc<FlushWaiters>,
        timeout: Duration,
        answering: OwnedSemaphorePermit,
        unapplied: OwnedSemaphorePermit,
    ) {
        let leader = match raft.as_leader() {
            Ok(l) => l.to_committed_leader_id(),
            Err(e) => return refuse(self.dones, &Refusal::unavailable(format!("send not written: {e}"))),
        };
        let mut flush = match waiters.register() {
            Ok(w) => w,
            Err(e) => return refuse(self.dones, &Refusal::unavailable(e.to_string())),
        };
        if let Command::Send { proposal, .. } = &mut self.command {
            *proposal = Some(flush.id());
        }
        let (responder, mut applied) = ProgressResponder::complete_only();
        // Appended only if this node still leads in the term read above.
        if let Err(e) = raft.write(self.command).with_leader(leader).responder(responder).await {
            return refuse(self.dones, &Refusal::unavailable(format!("send not written: {e}")));
        }
        let acknowledged = tokio::select! {
            result = &mut applied => {
                match result {
                    Ok(Ok(resp)) => answer_applied(self.dones, &self.sizes, LogIndex(resp.log_id.index()), resp.data),
                    Ok(Err(e)) => refuse(self.dones, &Refusal::unavailable(format!("send not written: {e}"))),
                    Err(_) => refuse(self.dones, &Refusal::unavailable("the broker is shutting down")),
                }
                return;
            }
            flushed = flush.wait(timeout) => match flushed {
                Ok(log_id) if log_id.leader_id == leader
                    && raft.as_leader().is_ok_and(|l| l.to_committed_leader_id() == leader) =>
                {
                    let index = LogIndex(log_id.index());
                    let accepted = self
                        .queues
                        .iter()
                        .enumerate()
                        .map(|(slot, &queue)| Ok(Accepted { queue, offset: None, at: (index, Slot(slot as u32)) }))
                        .collect();
                    split_answer(self.dones, &self.sizes, accepted);
                    true
                }
                Ok(log_id) => {
                    refuse(self.dones, &Refusal::unavailable(format!(
                        "leadership moved before entry {log_id} was durable on the leader; the send may or may \
                         not be stored, retry"
                    )));
                    false
                }
                Err(e) => {
                    refuse(self.dones, &Refusal::unavailable(format!("send not acknowledged: {e}")));
                    false
                }
            },
        };
        drop(flush);
        drop(answering);
        follow(applied, self.queues.len(), acknowledged).await;
        drop(unapplied);
    }
}

/// Resolves, with how long it has been, once this node leads but has had no
/// acknowledgement from a quorum for longer than its leader lease (openraft's lease is
/// the longest election timeout: past it, the others may elect a new leader). Never
/// resolves while acknowledgements keep coming, nor in a group whose only voter is this
/// node (it is its own quorum: nobody acknowledges it, and nobody else can be elected).
async fn quorum_lost(raft: &Raft) -> Duration {
    let lease = Duration::from_millis(raft.config().election_timeout_max);
    let mut metrics = raft.metrics();
    loop {
        let silent = {
            let m = metrics.borrow_watched();
            let alone = m.membership_config.membership().voter_ids().all(|v| v == m.id);
            match (m.state, m.last_quorum_acked.as_ref()) {
                (openraft::ServerState::Leader, Some(acked)) if !alone => Some(openraft::Instant::elapsed(&**acked)),
                _ => None,
            }
        };
        match silent {
            Some(silent) if silent > lease => return silent,
            // Look again when the lease would run out, or when the metrics change.
            Some(silent) => {
                let _ = tokio::time::timeout(lease - silent + Duration::from_millis(1), metrics.changed()).await;
            }
            None => {
                if metrics.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// Waits for an entry answered before commit to be applied, and says so if acknowledged
/// messages never are.
async fn follow(
    applied: OneshotReceiverOf<TypeConfig, ClientWriteResult<TypeConfig>>,
    messages: usize,
    acknowledged: bool,
) {
    match applied.await {
        Ok(Ok(resp)) if acknowledged => {
            if let Response::Sent(results) = &resp.data {
                let refused = results.iter().filter(|r| r.is_err()).count();
                if refused > 0 {
                    tracing::warn!(
                        log_id = %resp.log_id,
                        refused,
                        "acknowledged messages were refused when applied (topic or queue gone)"
                    );
                }
            }
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) if acknowledged => {
            tracing::warn!(error = %e, messages, "acknowledged messages were lost before commit")
        }
        Ok(Err(e)) => tracing::debug!(error = %e, messages, "refused messages were not committed"),
        Err(e) => tracing::info!(error = %e, messages, acknowledged, "stopped following messages sent before commit"),
    }
}

/// Answers each send with its share of the state machine's results.
fn answer_applied(dones: Vec<oneshot::Sender<SendOutcome>>, sizes: &[usize], index: LogIndex, data: Response) {
    match data {
        Response::Sent(results) => {
            let accepted = results
                .into_iter()
                .enumerate()
                .map(|(slot, r)| {
                    r.map(|sent| Accepted { queue: sent.queue, offset: sent.offset, at: (index, Slot(slot as u32)) })
                })
                .collect();
            split_answer(dones, sizes, accepted);
        }
        other => refuse(dones, &Refusal::unavailable(format!("unexpected state machine answer to a send: {other:?}"))),
    }
}

fn split_answer(
    dones: Vec<oneshot::Sender<SendOutcome>>,
    sizes: &[usize],
    results: Vec<Result<Accepted, CommandError>>,
) {
    let mut results = results.into_iter();
    for (done, &n) in dones.into_iter().zip(sizes) {
        let _ = done.send(Ok(results.by_ref().take(n).collect()));
    }
}

fn refuse(dones: Vec<oneshot::Sender<SendOutcome>>, refusal: &Refusal) {
    for done in dones {
        let _ = done.send(Err(refusal.clone()));
    }
}
