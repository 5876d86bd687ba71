//! Transaction check-back (RocketMQ's TransactionalMessageCheckService): on the leader, an
//! open transaction whose producer said nothing for the timeout (default 6 s after its half
//! message, then every 60 s) is checked back: a `RecoverOrphanedTransactionCommand` with the
//! half message goes over the Telemetry stream of a live producer of its topic connected to
//! the leader, or else to another member (asked with the admin `CheckBackTransaction`), and
//! the producer's checker answers with `EndTransaction` (source
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
use raftmq_proto::admin::v1 as admin_pb;
use raftmq_proto::admin::v1::admin_service_client::AdminServiceClient;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::telemetry_command::Command as Telemetry;

use crate::forward::Forwarder;
use crate::raft::{NodeId, Raft};
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
/// Longest a member may take to pass on a check-back.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// Reaches the other members.
    pub forwarder: Forwarder,
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

    /// Sends one check-back, to a producer connected here or else to one connected to
    /// another member; false when none is connected or the message cannot be read.
    async fn check(&self, key: TransactionKey, open: &OpenTransaction) -> bool {
        let (index, slot) = key;
        match send_here(&self.storage, &self.sessions, &self.group, &self.store_host, key, open.born).await {
            Ok(Some(client)) => {
                tracing::debug!(client, log_index = index.0, slot = slot.0, "sent a transaction check-back");
                return true;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(log_index = index.0, slot = slot.0, error = %e, "cannot check back an open transaction");
                return false;
            }
        }
        let membership = self.raft.metrics().borrow_watched().membership_config.clone();
        let peers: Vec<(NodeId, String)> = membership
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.forwarder.node_id())
            .map(|(id, info)| (*id, info.client_addr.clone()))
            .collect();
        for (id, addr) in peers {
            match self.ask_peer(&addr, key).await {
                Ok(client) if !client.is_empty() => {
                    tracing::debug!(
                        client,
                        node = id.0,
                        log_index = index.0,
                        "sent a transaction check-back through a peer"
                    );
                    return true;
                }
                Ok(_) => {}
                Err(e) => tracing::info!(node = id.0, error = %e, "a member did not take a transaction check-back"),
            }
        }
        tracing::info!(
            log_index = index.0,
            slot = slot.0,
            checks = open.checks + 1,
            "no producer of the topic is connected to any member for a transaction check-back"
        );
        false
    }

    /// Asks the member at `addr` to send the check-back to a producer connected to it.
    async fn ask_peer(&self, addr: &str, key: TransactionKey) -> Result<String, String> {
        let channel = self.forwarder.channel(addr).map_err(|e| e.0)?;
        let body = admin_pb::CheckBackTransactionRequest { log_index: key.0.0, slot: key.1.0 };
        let mut request = tonic::Request::new(body);
        request.set_timeout(PEER_TIMEOUT);
        let mut client = AdminServiceClient::new(channel);
        match tokio::time::timeout(PEER_TIMEOUT, client.check_back_transaction(request)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner().client_id),
            Ok(Err(status)) => Err(format!("{addr}: {}", status.message())),
            Err(_) => Err(format!("{addr}: no answer within {PEER_TIMEOUT:?}")),
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

/// Sends the check-back of the half message at `key` (sent at `born`) to a live producer of
/// its topic connected to this node: its client id, or `None` when there is none.
pub async fn send_here(
    storage: &Storage,
    sessions: &Sessions,
    group: &str,
    store_host: &str,
    key: TransactionKey,
    born: Millis,
) -> Result<Option<String>, String> {
    let (index, slot) = key;
    let log = storage.log.clone();
    let message = match tokio::task::spawn_blocking(move || log.message_at(index.0, slot)).await {
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) => return Err(format!("log entry {} holds no message {}", index.0, slot.0)),
        Ok(Err(e)) => return Err(format!("reading message {} of log entry {}: {e}", slot.0, index.0)),
        Err(e) => return Err(format!("the read task failed: {e}")),
    };
    let delivery = Delivery {
        stored: born,
        store_host: store_host.to_string(),
        offset: 0,
        receipt: None,
        attempt: 1,
        invisible_ms: None,
    };
    let command = pb::TelemetryCommand {
        status: Some(status::ok()),
        command: Some(Telemetry::RecoverOrphanedTransactionCommand(pb::RecoverOrphanedTransactionCommand {
            message: Some(convert::outgoing(&message, &delivery)),
            transaction_id: transaction::encode(group, key),
        })),
    };
    Ok(sessions.send_to_producer(message.topic.as_str(), command))
}
