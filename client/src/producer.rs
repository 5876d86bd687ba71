//! The producer: sends messages to a topic's queues (round robin, or by message group),
//! at the leader the route names; on a transport failure or a leader change it asks for the
//! route again and retries elsewhere with a short backoff, until its deadline. Transactions:
//! a half message is stored but invisible until [`Producer::commit`]; [`Producer::rollback`]
//! drops it.

use std::sync::Arc;
use std::time::Duration;

use raftmq_proto::rocketmq::v2 as pb;

use crate::conn::{ClientOptions, Conn, Retry};
use crate::message::{group_hash, next_message_id, outgoing};
use crate::route::{RouteCache, TopicRoute, target};
use crate::{Error, Message, SendReceipt};

/// Most messages in one [`Producer::send_batch`] (the broker's limit per request).
pub const MAX_BATCH: usize = 1024;

/// Sends messages. Cheap to share: wrap it in an `Arc` and send from many tasks.
#[derive(Debug)]
pub struct Producer {
    conn: Conn,
    routes: RouteCache,
}

impl Producer {
    /// A producer for the endpoints `host:port;host:port` with default options.
    pub fn new(endpoints: &str) -> Result<Self, Error> {
        Self::with_options(endpoints, ClientOptions::default())
    }

    /// A producer with these options.
    pub fn with_options(endpoints: &str, options: ClientOptions) -> Result<Self, Error> {
        Ok(Self { conn: Conn::new(endpoints, options)?, routes: RouteCache::default() })
    }

    /// Sends one message to `topic` and returns once the broker group committed it.
    pub async fn send(&self, topic: &str, message: Message) -> Result<SendReceipt, Error> {
        let mut receipts = self.send_batch(topic, vec![message]).await?;
        receipts.pop().ok_or_else(|| Error::protocol("send", "", "the broker answered no result"))
    }

    /// Sends one message without waiting (RocketMQ's `sendAsync`): the send starts at once
    /// on a task of its own and the returned future gives its receipt, or the error, once
    /// the broker group committed it or the send gave up. Dropping the future does not stop
    /// the send. (RocketMQ's oneway send has no place in its v2 protocol, where every send
    /// is answered: use this and drop the future.)
    pub fn send_async(
        self: &Arc<Self>,
        topic: &str,
        message: Message,
    ) -> impl Future<Output = Result<SendReceipt, Error>> + Send + 'static {
        let (this, topic) = (self.clone(), topic.to_string());
        let task = tokio::spawn(async move { this.send(&topic, message).await });
        async move {
            match task.await {
                Ok(result) => result,
                Err(e) => Err(Error::protocol("send", "", format!("the send's task ended without an answer: {e}"))),
            }
        }
    }

    /// Sends messages to `topic` in one request (one queue, unless they carry message
    /// groups); the receipts are in the order of `messages`.
    pub async fn send_batch(&self, topic: &str, messages: Vec<Message>) -> Result<Vec<SendReceipt>, Error> {
        self.send_messages(topic, messages, false).await
    }

    /// Sends a transactional half message to `topic`: stored at once, delivered only once
    /// committed ([`Self::commit`]); [`Self::rollback`] drops it. Left open, the broker
    /// checks it back with a producer of the topic that has a transaction checker, and rolls
    /// it back after its last check.
    pub async fn send_in_transaction(&self, topic: &str, message: Message) -> Result<Transaction, Error> {
        if message.delivery_time.is_some() || message.message_group.is_some() {
            return Err(Error::InvalidArgument(
                "a transactional message cannot also be a delay or FIFO message".into(),
            ));
        }
        let receipt = self
            .send_messages(topic, vec![message], true)
            .await?
            .pop()
            .ok_or_else(|| Error::protocol("send", "", "the broker answered no result"))?;
        let transaction_id = receipt
            .transaction_id
            .clone()
            .ok_or_else(|| Error::protocol("send", "", "the broker gave a half message no transaction id"))?;
        Ok(Transaction { topic: topic.to_string(), transaction_id, receipt })
    }

    /// Commits a transaction: its message becomes visible to consumers.
    pub async fn commit(&self, transaction: &Transaction) -> Result<(), Error> {
        self.end_transaction(transaction, pb::TransactionResolution::Commit).await
    }

    /// Rolls back a transaction: its message is never delivered.
    pub async fn rollback(&self, transaction: &Transaction) -> Result<(), Error> {
        self.end_transaction(transaction, pb::TransactionResolution::Rollback).await
    }

    async fn end_transaction(
        &self,
        transaction: &Transaction,
        resolution: pb::TransactionResolution,
    ) -> Result<(), Error> {
        const OP: &str = "end transaction";
        let mut retry = Retry::new(OP, &self.conn.options, Duration::ZERO);
        loop {
            let attempt = async {
                let timeout = retry.timeout(None);
                let route = self.routes.route(&self.conn, &transaction.topic, retry.attempt(), timeout).await?;
                let endpoint = target(&route, self.conn.seeds(), retry.attempt());
                let body = pb::EndTransactionRequest {
                    topic: Some(pb::Resource { resource_namespace: String::new(), name: transaction.topic.clone() }),
                    message_id: transaction.receipt.message_id.clone(),
                    transaction_id: transaction.transaction_id.clone(),
                    resolution: resolution as i32,
                    source: pb::TransactionSource::SourceClient as i32,
                    trace_context: String::new(),
                };
                let mut client = self.conn.messaging(&endpoint)?;
                let resp = self
                    .conn
                    .call(OP, &endpoint, timeout, client.end_transaction(self.conn.request(body, timeout)))
                    .await?;
                Error::unless_ok(OP, &endpoint, resp.status.as_ref())
            };
            match attempt.await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.routes.forget(&transaction.topic);
                    retry.failed(e).await?;
                }
            }
        }
    }

    async fn send_messages(
        &self,
        topic: &str,
        messages: Vec<Message>,
        transactional: bool,
    ) -> Result<Vec<SendReceipt>, Error> {
        if topic.trim().is_empty() {
            return Err(Error::InvalidArgument("the topic is empty".into()));
        }
        if messages.is_empty() || messages.len() > MAX_BATCH {
            return Err(Error::InvalidArgument(format!("a batch holds 1..={MAX_BATCH} messages")));
        }
        if let Some(i) = messages.iter().position(|m| m.body.is_empty()) {
            return Err(Error::InvalidArgument(format!("message {i} has an empty body")));
        }
        // Ids are made once: a retried message keeps its id.
        let ids: Vec<String> = messages.iter().map(|_| next_message_id()).collect();
        let pick = self.conn.pick();
        let mut retry = Retry::new("send", &self.conn.options, Duration::ZERO);
        loop {
            match self.try_send(topic, &messages, &ids, pick, &retry, transactional).await {
                Ok(receipts) => return Ok(receipts),
                Err(e) => {
                    self.routes.forget(topic);
                    retry.failed(e).await?;
                }
            }
        }
    }

    /// One attempt: route, then one SendMessage call.
    async fn try_send(
        &self,
        topic: &str,
        messages: &[Message],
        ids: &[String],
        pick: usize,
        retry: &Retry,
        transactional: bool,
    ) -> Result<Vec<SendReceipt>, Error> {
        const OP: &str = "send";
        let timeout = retry.timeout(None);
        let route = self.routes.route(&self.conn, topic, retry.attempt(), timeout).await?;
        let queue = pick_queue(&route, pick)?;
        let endpoint = target(&route, self.conn.seeds(), retry.attempt());
        let placed: Vec<u32> = messages
            .iter()
            .map(|m| match &m.message_group {
                Some(g) => (group_hash(g) % route.queues.len() as u64) as u32,
                None => queue,
            })
            .collect();
        let body = pb::SendMessageRequest {
            messages: messages
                .iter()
                .zip(ids)
                .zip(&placed)
                .map(|((m, id), q)| {
                    let mut m = outgoing(topic, m, *q, id.clone());
                    if transactional && let Some(sys) = m.system_properties.as_mut() {
                        sys.message_type = pb::MessageType::Transaction as i32;
                    }
                    m
                })
                .collect(),
        };
        let mut client = self.conn.messaging(&endpoint)?;
        let resp =
            self.conn.call(OP, &endpoint, timeout, client.send_message(self.conn.request(body, timeout))).await?;
        let ok = pb::Code::Ok as i32;
        let code = |s: Option<&pb::Status>| s.map(|s| s.code);
        let top = code(resp.status.as_ref());
        if top != Some(ok) {
            // Nothing stored (a batch is stored whole or not at all): the request's status
            // says why (and whether to retry).
            if !resp.entries.iter().any(|e| code(e.status.as_ref()) == Some(ok)) {
                return Err(Error::broker(OP, &endpoint, resp.status.as_ref()));
            }
            // Some were stored: name the first refused one; a retry would duplicate the rest.
            let i = resp.entries.iter().position(|e| code(e.status.as_ref()) != Some(ok)).unwrap_or_default();
            let e = Error::broker(OP, &endpoint, resp.entries.get(i).and_then(|e| e.status.as_ref()));
            return Err(Error::protocol(
                OP,
                &endpoint,
                format!("message {i} of {} was refused, others were stored: {e}", messages.len()),
            ));
        }
        if resp.entries.len() != messages.len() {
            return Err(Error::protocol(
                OP,
                &endpoint,
                format!("{} results for {} messages", resp.entries.len(), messages.len()),
            ));
        }
        resp.entries
            .into_iter()
            .zip(placed)
            .map(|(e, queue_id)| {
                // -1: acknowledged before the offset was assigned (ack = "leader").
                let offset = match e.offset {
                    -1 => None,
                    o => Some(u64::try_from(o).map_err(|_| Error::protocol(OP, &endpoint, format!("offset {o}")))?),
                };
                let transaction_id = Some(e.transaction_id).filter(|t| !t.is_empty());
                Ok(SendReceipt { message_id: e.message_id, queue_id, offset, transaction_id })
            })
            .collect()
    }
}

/// An open transaction: its half message is stored, invisible until committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The topic of its message.
    pub topic: String,
    /// Its id, as the broker gave it.
    pub transaction_id: String,
    /// The half message's receipt.
    pub receipt: SendReceipt,
}

fn pick_queue(route: &TopicRoute, pick: usize) -> Result<u32, Error> {
    let writable = route.writable_queues();
    if writable.is_empty() {
        return Err(Error::InvalidArgument(format!("topic {} has no writable queue", route.topic)));
    }
    Ok(writable[pick % writable.len()].id)
}
