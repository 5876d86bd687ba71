//! Group commit of acks: concurrent AckMessage calls are gathered, per consumer group and
//! topic, into one `Command::Ack` entry (at most [`MAX_RECEIPTS_PER_ACK`] receipts), so a
//! consumer group acking message by message does not cost one quorum write per message.
//! Like sends ([`super::proposer`]), an entry is proposed at once when no other is in
//! flight; while entries are in flight, the acks arriving meanwhile wait and go together.

use std::collections::HashMap;
use std::sync::Arc;

use raftmq_machine::types::{GroupName, TopicName};
use raftmq_machine::{Command, CommandError, MAX_RECEIPTS_PER_ACK, Receipt, Response};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::status::Refusal;
use crate::raft::Raft;

/// Ack entries being committed at once.
const MAX_IN_FLIGHT: usize = 4;
/// Ack calls waiting to be gathered; more wait for room.
const QUEUE: usize = 4096;

/// The result of one ack call: one result per receipt, in order.
pub type AckOutcome = Result<Vec<Result<(), CommandError>>, Refusal>;

struct Job {
    group: GroupName,
    topic: TopicName,
    receipts: Vec<Receipt>,
    done: oneshot::Sender<AckOutcome>,
}

/// Handle to the gathering task.
#[derive(Debug, Clone)]
pub struct AckCombiner {
    tx: mpsc::Sender<Job>,
}

impl AckCombiner {
    /// Starts the gathering task proposing through `raft`.
    pub fn start(raft: Raft) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, rx));
        Self { tx }
    }

    /// Acks `receipts` (at most [`MAX_RECEIPTS_PER_ACK`]) of `group` on `topic` through
    /// Raft; resolves once their entry is committed and applied.
    pub async fn ack(&self, group: GroupName, topic: TopicName, receipts: Vec<Receipt>) -> AckOutcome {
        let (done, rx) = oneshot::channel();
        let job = Job { group, topic, receipts, done };
        self.tx.send(job).await.map_err(|_| Refusal::unavailable("the broker is shutting down"))?;
        rx.await.map_err(|_| Refusal::unavailable("the broker is shutting down"))?
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Job>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        // Everything queued meanwhile, per group and topic; a key whose entry is full ends
        // the round (its job starts the next one).
        let mut entries: HashMap<(GroupName, TopicName), Vec<Job>> = HashMap::new();
        let mut job = Some(first);
        while let Some(j) = job.take().or_else(|| rx.try_recv().ok()) {
            let key = (j.group.clone(), j.topic.clone());
            let jobs = entries.entry(key).or_default();
            let held: usize = jobs.iter().map(|j| j.receipts.len()).sum();
            if !jobs.is_empty() && held + j.receipts.len() > MAX_RECEIPTS_PER_ACK {
                next = Some(j);
                break;
            }
            jobs.push(j);
        }
        let permit = Arc::new(permit);
        for ((group, topic), jobs) in entries {
            let (raft, permit) = (raft.clone(), permit.clone());
            tokio::spawn(async move {
                commit(&raft, group, topic, jobs).await;
                drop(permit);
            });
        }
    }
}

/// Proposes the receipts of `jobs` as one entry and answers each job with its share.
async fn commit(raft: &Raft, group: GroupName, topic: TopicName, jobs: Vec<Job>) {
    let sizes: Vec<usize> = jobs.iter().map(|j| j.receipts.len()).collect();
    let mut dones = Vec::with_capacity(jobs.len());
    let mut receipts = Vec::with_capacity(sizes.iter().sum());
    for job in jobs {
        receipts.extend(job.receipts);
        dones.push(job.done);
    }
    let outcome = match crate::raft::client_write(raft, Command::Ack { group, topic, receipts }).await {
        Ok(resp) => match resp.data {
            Response::Acked(results) => Ok(results),
            Response::Failed(e) => Err(Refusal::from(e)),
            other => Err(Refusal::unavailable(format!("unexpected answer to an ack: {other:?}"))),
        },
        Err(e) => Err(Refusal::unavailable(format!("ack not committed: {e}"))),
    };
    match outcome {
        Ok(results) => {
            let mut results = results.into_iter();
            for (done, n) in dones.into_iter().zip(sizes) {
                let _ = done.send(Ok(results.by_ref().take(n).collect()));
            }
        }
        Err(refusal) => {
            for done in dones {
                let _ = done.send(Err(refusal.clone()));
            }
        }
    }
}
