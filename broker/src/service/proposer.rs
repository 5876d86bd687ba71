//! Group commit: concurrent sends are gathered into one Raft entry (bounded by message
//! count, bytes and a short linger) so one fsync and one replication round cover them all.
//! Each send is answered only when its entry is committed and applied.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::status::Refusal;
use crate::machine::types::{Millis, StoredMessage};
use crate::machine::{Command, CommandError, Response, Sent};
use crate::raft::Raft;

/// Bounds of one batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most messages in one entry.
    pub max_messages: usize,
    /// Most body bytes in one entry.
    pub max_bytes: usize,
    /// How long the first send of a batch waits for company.
    pub linger: Duration,
    /// Most entries being replicated at once.
    pub max_in_flight: usize,
    /// Sends waiting to be batched; more wait for room (back-pressure).
    pub queue: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_messages: 1024,
            max_bytes: 8 << 20,
            linger: Duration::from_micros(200),
            max_in_flight: 4,
            queue: 4096,
        }
    }
}

/// The outcome of one send request: one result per message, in order.
pub type SendOutcome = Result<Vec<Result<Sent, CommandError>>, Refusal>;

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
    /// Starts the batching task for `raft`.
    pub fn start(raft: Raft, limits: BatchLimits, auto_create_queues: Option<u32>) -> Self {
        let (tx, rx) = mpsc::channel(limits.queue);
        tokio::spawn(run(raft, rx, limits, auto_create_queues));
        Self { tx }
    }

    /// Appends `messages` through Raft; resolves when committed and applied.
    pub async fn send(&self, messages: Vec<StoredMessage>) -> SendOutcome {
        let (done, rx) = oneshot::channel();
        self.tx.send(Job { messages, done }).await.map_err(|_| Refusal::unavailable("the broker is shutting down"))?;
        rx.await.map_err(|_| Refusal::unavailable("the broker is shutting down"))?
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Job>, limits: BatchLimits, auto_create: Option<u32>) {
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let mut count = jobs[0].messages.len();
        let mut bytes: usize = jobs[0].messages.iter().map(|m| m.body.len()).sum();
        let deadline = tokio::time::Instant::now() + limits.linger;
        while count < limits.max_messages && bytes < limits.max_bytes {
            let next = match rx.try_recv() {
                Ok(job) => job,
                Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => job,
                    _ => break,
                },
            };
            count += next.messages.len();
            bytes += next.messages.iter().map(|m| m.body.len()).sum::<usize>();
            jobs.push(next);
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            commit(raft, jobs, auto_create).await;
        });
    }
}

async fn commit(raft: Raft, jobs: Vec<Job>, auto_create: Option<u32>) {
    let sizes: Vec<usize> = jobs.iter().map(|j| j.messages.len()).collect();
    let mut dones = Vec::with_capacity(jobs.len());
    let mut messages = Vec::with_capacity(sizes.iter().sum());
    for job in jobs {
        messages.extend(job.messages);
        dones.push(job.done);
    }
    let command = Command::Send { now: now_ms(), auto_create_queues: auto_create, messages };
    let result = raft.client_write(command).await;
    match result {
        Ok(resp) => match resp.data {
            Response::Sent(results) => {
                let mut results = results.into_iter();
                for (done, n) in dones.into_iter().zip(sizes) {
                    let _ = done.send(Ok(results.by_ref().take(n).collect()));
                }
            }
            other => {
                let refusal = Refusal::unavailable(format!("unexpected state machine answer to a send: {other:?}"));
                for done in dones {
                    let _ = done.send(Err(refusal.clone()));
                }
            }
        },
        Err(e) => {
            // Not the leader any more, or the node is stopping: nothing was acknowledged.
            let refusal = Refusal::unavailable(format!("send not committed: {e}"));
            for done in dones {
                let _ = done.send(Err(refusal.clone()));
            }
        }
    }
}
