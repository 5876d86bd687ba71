//! Transaction check-back (RocketMQ's TransactionalMessageCheckService): on the leader, an
//! open transaction whose producer said nothing for the timeout (default 6 s after its half
//! message, then every 60 s) is checked back: a `RecoverOrphanedTransactionCommand` with the
//! half message goes over the Telemetry stream of a live producer of its topic connected to
//! this node, and the producer's checker answers with `EndTransaction` (source
//! `SERVER_CHECK`). Each round's checks are counted in the replicated state
//! (`CheckTransactions`), so a new leader goes on where the old one stopped; a check with no
//! producer connected counts too. After the last check (default 15) the transaction is
//! rolled back and logged.

use std::time::Duration;

use futures::future::join_all;
use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use raftmq_machine::transaction::{MAX_TRANSACTIONS_PER_COMMAND, OpenTransaction, TransactionKey};
use raftmq_machine::{Command, Millis};
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::telemetry_command::Command as Telemetry;

use crate::raft::Raft;
use crate::service::convert::{self, Delivery};
use crate::service::proposer::now_ms;
use crate::service::{status, transaction};
use crate::sessions::Sessions;
use crate::settings::TransactionSettings;
use crate::store::Storage;
use crate::timers::Resolver;

/// How often the leader looks for transactions to check.
const ROUND: Duration = Duration::from_millis(500);
/// Longest the count of a round's checks may take to commit.
const COUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the check-back needs of its node.
#[derive(Debug)]
pub struct CheckBack {
    /// The node's Raft handle.
    pub raft: Raft,
    /// Its storage (state and log).
    pub storage: Storage,
    /// Where rollbacks of expired transactions go.
    pub resolver: Resolver,
    /// Its live clients.
    pub sessions: Sessions,
    /// When to check.
    pub settings: TransactionSettings,
    /// The broker group (named in transaction ids).
    pub group: String,
    /// This node's client endpoint (the store host of the messages sent).
    pub store_host: String,
}

/// Runs the check-back until the task is aborted.
pub fn spawn(check: CheckBack) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(ROUND);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if check.raft.metrics().borrow_watched().state == ServerState::Leader {
                check.round(now_ms()).await;
            }
        }
    })
}

impl CheckBack {
    /// Checks back the transactions due at `now` and rolls back those out of checks.
    async fn round(&self, now: Millis) {
        let s = self.settings;
        let (due, expired) = self.storage.state.read(|a| {
            let mut due: Vec<(TransactionKey, OpenTransaction)> = Vec::new();
            let mut expired = Vec::new();
            for (key, open) in a.machine.transactions() {
                if open.check_due(s.timeout_ms, s.check_interval_ms) > now {
                    continue;
                }
                if open.checks >= s.max_checks {
                    if expired.len() < MAX_TRANSACTIONS_PER_COMMAND {
                        expired.push((*key, open.checks));
                    }
                } else if due.len() < MAX_TRANSACTIONS_PER_COMMAND {
                    due.push((*key, open.clone()));
                }
            }
            (due, expired)
        });
        self.roll_back(expired).await;
        if due.is_empty() {
            return;
        }
        let mut sent = 0usize;
        for (key, open) in &due {
            if self.check(*key, open).await {
                sent += 1;
            }
        }
        let keys: Vec<TransactionKey> = due.iter().map(|(k, _)| *k).collect();
        let count = keys.len();
        match tokio::time::timeout(COUNT_TIMEOUT, self.raft.client_write(Command::CheckTransactions { now, keys }))
            .await
        {
            Ok(Ok(_)) => tracing::info!(checked = count, sent, "checked back open transactions"),
            Ok(Err(e)) => tracing::info!(error = %e, "counting transaction check-backs failed; they are sent again"),
            Err(_) => tracing::warn!("counting transaction check-backs did not commit in time"),
        }
    }

    /// Sends one check-back; false when no producer of its topic is connected here or the
    /// message cannot be read.
    async fn check(&self, key: TransactionKey, open: &OpenTransaction) -> bool {
        let (index, slot) = key;
        let log = self.storage.log.clone();
        let read = tokio::task::spawn_blocking(move || log.message_at(index.0, slot)).await;
        let message = match read {
            Ok(Ok(Some(m))) => m,
            other => {
                tracing::error!(log_index = index.0, slot = slot.0, result = ?other.map(|r| r.map(|m| m.is_some())),
                    "the half message of an open transaction cannot be read from the CommitLog");
                return false;
            }
        };
        let delivery = Delivery {
            stored: open.born,
            store_host: self.store_host.clone(),
            offset: 0,
            receipt: None,
            attempt: 1,
            invisible_ms: None,
        };
        let command = pb::TelemetryCommand {
            status: Some(status::ok()),
            command: Some(Telemetry::RecoverOrphanedTransactionCommand(pb::RecoverOrphanedTransactionCommand {
                message: Some(convert::outgoing(&message, &delivery)),
                transaction_id: transaction::encode(&self.group, key),
            })),
        };
        match self.sessions.send_to_producer(message.topic.as_str(), command) {
            Some(client) => {
                tracing::debug!(client, log_index = index.0, slot = slot.0, "sent a transaction check-back");
                true
            }
            None => {
                tracing::info!(topic = %message.topic, message_id = message.message_id, checks = open.checks + 1,
                    "no producer of the topic is connected to the leader for a transaction check-back");
                false
            }
        }
    }

    /// Rolls back transactions that used all their checks.
    async fn roll_back(&self, expired: Vec<(TransactionKey, u32)>) {
        let ends = expired.into_iter().map(|(key, checks)| async move {
            match self.resolver.resolve(key, false).await {
                Ok(()) => tracing::warn!(
                    log_index = key.0.0,
                    slot = key.1.0,
                    checks,
                    "rolled back a transaction its producer never ended, after its last check-back"
                ),
                Err(e) => tracing::info!(error = %e, log_index = key.0.0, "rolling back an expired transaction failed"),
            }
        });
        join_all(ends).await;
    }
}
