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
use crate::route::{RouteCache, RouteQueue, TopicRoute, broker_target, queue_target};
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
                // The group holding the half message ends it.
                let endpoint = broker_target(&route, &transaction.receipt.broker, self.conn.seeds(), retry.attempt());
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
        let placed = place(&route, messages, pick)?;
        // Every message goes to one group (`place` sees to it): call that group.
        let endpoint = queue_target(&route, placed[0], self.conn.seeds(), retry.attempt());
        let body = pb::SendMessageRequest {
            messages: messages
                .iter()
                .zip(ids)
                .zip(&placed)
                .map(|((m, id), q)| {
                    let mut m = outgoing(topic, m, q.id, id.clone());
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
            .map(|(e, queue)| {
                // -1: acknowledged before the offset was assigned (ack = "leader").
                let offset = match e.offset {
                    -1 => None,
                    o => Some(u64::try_from(o).map_err(|_| Error::protocol(OP, &endpoint, format!("offset {o}")))?),
                };
                let transaction_id = Some(e.transaction_id).filter(|t| !t.is_empty());
                Ok(SendReceipt {
                    message_id: e.message_id,
                    queue_id: queue.id,
                    broker: queue.broker.clone(),
                    offset,
                    transaction_id,
                })
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

/// The writable queue `pick` names, round robin over the writable queues of every broker
/// group of the route (or only of group `broker`).
fn pick_queue<'a>(route: &'a TopicRoute, pick: usize, broker: Option<&str>) -> Result<&'a RouteQueue, Error> {
    let writable: Vec<&RouteQueue> =
        route.writable_queues().into_iter().filter(|q| broker.is_none_or(|b| q.broker == b)).collect();
    if writable.is_empty() {
        return Err(Error::InvalidArgument(match broker {
            None => format!("topic {} has no writable queue", route.topic),
            Some(b) => format!("topic {} has no writable queue in broker group {b}", route.topic),
        }));
    }
    Ok(writable[pick % writable.len()])
}

/// The queue of each message of a batch. A message group always maps to one queue (of one
/// broker group): a hash over the route's queues. The others take the writable queue `pick`
/// names, in the broker group of the batch's message groups if it has any: one request goes
/// to one broker group, so a batch whose message groups map to different broker groups is
/// refused.
fn place<'a>(route: &'a TopicRoute, messages: &[Message], pick: usize) -> Result<Vec<&'a RouteQueue>, Error> {
    let fifo: Vec<Option<&RouteQueue>> = messages
        .iter()
        .map(|m| {
            m.message_group
                .as_ref()
                .and_then(|g| route.queues.get((group_hash(g) % route.queues.len() as u64) as usize))
        })
        .collect();
    let mut groups = messages.iter().zip(&fifo).filter_map(|(m, q)| Some((m.message_group.as_deref()?, (*q)?)));
    let first = groups.next();
    if let Some((g1, q1)) = first
        && let Some((g2, q2)) = groups.find(|(_, q)| q.broker != q1.broker)
    {
        return Err(Error::InvalidArgument(format!(
            "a batch goes to one broker group, but message group {g1:?} maps to broker group {} and {g2:?} to {} \
             (topic {}): send them in separate batches",
            q1.broker, q2.broker, route.topic
        )));
    }
    let others = if fifo.iter().all(Option::is_some) {
        None
    } else {
        Some(pick_queue(route, pick, first.map(|(_, q)| q.broker.as_str()))?)
    };
    fifo.into_iter()
        .map(|q| q.or(others).ok_or_else(|| Error::InvalidArgument(format!("topic {} has no queue", route.topic))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::two_groups;

    fn picked(route: &TopicRoute, messages: &[Message], pick: usize) -> Vec<(String, u32)> {
        place(route, messages, pick).expect("placed").iter().map(|q| (q.broker.clone(), q.id)).collect()
    }

    fn at(broker: &str, id: u32) -> (String, u32) {
        (broker.to_string(), id)
    }

    #[test]
    fn sends_go_round_robin_over_every_group_and_to_the_queue_group() {
        let route = two_groups();
        let one = [Message::new("x")];
        let picks: Vec<(String, u32)> = (0..5).flat_map(|p| picked(&route, &one, p)).collect();
        assert_eq!(
            picks,
            [at("broker-a", 0), at("broker-a", 1), at("broker-b", 0), at("broker-b", 1), at("broker-a", 0)]
        );
        // The call goes to the picked queue's group, leader first, then its other members.
        let seeds = vec!["b:1".to_string()];
        let q = place(&route, &one, 0).expect("placed")[0];
        let endpoints: Vec<String> = (0..4).map(|i| queue_target(&route, q, &seeds, i)).collect();
        assert_eq!(endpoints, ["a:1", "a:2", "a:3", "a:1"]);
        let q = place(&route, &one, 3).expect("placed")[0];
        assert_eq!(queue_target(&route, q, &seeds, 0), "b:2");
        // A batch without message groups goes to one queue.
        let batch = [Message::new("x"), Message::new("y")];
        assert_eq!(picked(&route, &batch, 2), [at("broker-b", 0), at("broker-b", 0)]);
    }

    #[test]
    fn only_writable_queues_are_picked() {
        let mut route = two_groups();
        route.queues[0].permission = pb::Permission::Read;
        route.queues[3].permission = pb::Permission::None;
        let picks: Vec<(String, u32)> = (0..3).flat_map(|p| picked(&route, &[Message::new("x")], p)).collect();
        assert_eq!(picks, [at("broker-a", 1), at("broker-b", 0), at("broker-a", 1)]);
        for q in &mut route.queues {
            q.permission = pb::Permission::Read;
        }
        assert!(matches!(place(&route, &[Message::new("x")], 0), Err(Error::InvalidArgument(_))));
    }

    /// A message group whose hash over the 4 queues of [`two_groups`] lands in `broker`.
    fn group_in(route: &TopicRoute, broker: &str, skip: usize) -> String {
        (0..)
            .map(|i| format!("g{i}"))
            .filter(|g| route.queues[(group_hash(g) % route.queues.len() as u64) as usize].broker == broker)
            .nth(skip)
            .expect("some group hashes there")
    }

    #[test]
    fn a_message_group_keeps_one_queue_of_one_group() {
        let route = two_groups();
        for g in ["orders", "a", "b", "customer-17"] {
            let m = [Message::new("x").with_message_group(g)];
            let want = &route.queues[(group_hash(g) % 4) as usize];
            for pick in 0..4 {
                assert_eq!(picked(&route, &m, pick), [at(&want.broker, want.id)], "group {g}");
            }
        }
        // Unordered messages in a batch with message groups join their broker group.
        let g = group_in(&route, "broker-b", 0);
        let batch = [Message::new("x"), Message::new("y").with_message_group(&g)];
        for pick in 0..4 {
            let placed = picked(&route, &batch, pick);
            assert!(placed.iter().all(|(b, _)| b == "broker-b"), "{placed:?}");
        }
        let h = group_in(&route, "broker-b", 1);
        let batch = [Message::new("x").with_message_group(&g), Message::new("y").with_message_group(&h)];
        assert_eq!(place(&route, &batch, 0).expect("one group").len(), 2);
    }

    #[test]
    fn a_batch_across_broker_groups_is_refused() {
        let route = two_groups();
        let (a, b) = (group_in(&route, "broker-a", 0), group_in(&route, "broker-b", 0));
        let batch = [Message::new("x").with_message_group(&a), Message::new("y").with_message_group(&b)];
        match place(&route, &batch, 0) {
            Err(Error::InvalidArgument(why)) => {
                assert!(why.contains("broker-a") && why.contains("broker-b") && why.contains(&a), "{why}");
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn one_group_places_as_before() {
        let mut route = two_groups();
        route.queues.retain(|q| q.broker == "broker-a");
        for pick in 0..4 {
            assert_eq!(picked(&route, &[Message::new("x")], pick), [at("broker-a", (pick % 2) as u32)]);
        }
        let m = [Message::new("x").with_message_group("orders")];
        assert_eq!(picked(&route, &m, 0), [at("broker-a", (group_hash("orders") % 2) as u32)]);
    }
}
