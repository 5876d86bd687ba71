//! ReceiveMessage (pop with long polling) and PullMessage (offset-based reads).
//!
//! A receive proposes a `Pop` only when the applied state says something is visible, so an
//! idle consumer costs no Raft entries. It waits for new entries or for invisible messages
//! to reappear, and always answers before the client's deadline.

use std::time::Duration;

use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;
use raftmq_proto::rocketmq::v2::pull_message_response::Content as PullContent;
use raftmq_proto::rocketmq::v2::receive_message_response::Content;
use tokio::time::Instant;

use super::convert::{self, Delivery};
use super::filter::Filter;
use super::pops::{self, PopKey, Turn};
use super::proposer::now_ms;
use super::route::{group_of, topic_of};
use super::status::{self, Refusal};
use super::{BoxStream, Broker};
use crate::store::consume_queue::QueueRecord;
use raftmq_machine::plan::{Fresh, PopScope};
use raftmq_machine::types::{GroupName, Millis, QueueId, QueueOffset, StoredMessage, TopicName};
use raftmq_machine::{Command, Popped, Response, Slot};

/// Time kept between our answer and the client's deadline.
const DEADLINE_MARGIN: Duration = Duration::from_millis(1500);
/// Long-polling wait when the client gives none.
const DEFAULT_LONG_POLL: Duration = Duration::from_secs(20);

/// A stream carrying only a failure status.
pub fn failed(r: &Refusal) -> BoxStream<pb::ReceiveMessageResponse> {
    let item = pb::ReceiveMessageResponse { content: Some(Content::Status(r.status())) };
    Box::pin(futures::stream::iter([Ok(item)]))
}

fn pull_failed(r: &Refusal) -> BoxStream<pb::PullMessageResponse> {
    let item = pb::PullMessageResponse { content: Some(PullContent::Status(r.status())) };
    Box::pin(futures::stream::iter([Ok(item)]))
}

/// The `grpc-timeout` header as a duration: at most 8 digits and a unit (gRPC's
/// HTTP/2 protocol); anything else is ignored as if absent.
fn grpc_timeout<T>(request: &tonic::Request<T>) -> Option<Duration> {
    parse_grpc_timeout(request.metadata().get("grpc-timeout")?.to_str().ok()?)
}

fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let unit = v.chars().last()?;
    let num = &v[..v.len() - unit.len_utf8()];
    if num.is_empty() || num.len() > 8 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n.checked_mul(3600)?),
        'M' => Duration::from_secs(n.checked_mul(60)?),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[derive(Clone)]
struct Receive {
    group: GroupName,
    topic: TopicName,
    /// The one queue a push consumer asks for (the ones assigned to it); `None`: any.
    queue: Option<QueueId>,
    filter: Filter,
    max: u32,
    invisible_ms: u64,
    wait: Duration,
}

impl Receive {
    fn scope(&self) -> PopScope<'_> {
        PopScope { group: &self.group, topic: &self.topic, queue: self.queue }
    }
}

impl Broker {
    fn parse_receive(&self, req: &tonic::Request<pb::ReceiveMessageRequest>) -> Result<Receive, Refusal> {
        let body = req.get_ref();
        let group = group_of(body.group.as_ref())?;
        let topic = topic_of(body.message_queue.as_ref().and_then(|q| q.topic.as_ref()))?;
        let filter = Filter::of(body.filter_expression.as_ref())?;
        // Push consumers (they ask for auto renewal) read the queues assigned to them, one per
        // call; simple consumers name a random queue and get messages of any.
        let queue = body
            .message_queue
            .as_ref()
            .filter(|q| body.auto_renew && q.id >= 0)
            .filter(|q| q.broker.as_ref().is_none_or(|b| b.name.is_empty() || b.name == self.inner.group))
            .map(|q| QueueId(q.id as u32));
        if body.batch_size <= 0 {
            return Err(Refusal::new(Code::BadRequest, format!("batch size {} must be positive", body.batch_size)));
        }
        let settings = &self.inner.settings;
        let max = (body.batch_size as u32).min(settings.max_receive_batch);
        let invisible_ms = match &body.invisible_duration {
            None => settings.default_invisible_ms,
            Some(d) => {
                let ms = convert::duration_ms(d).map_err(|e| Refusal::new(Code::IllegalInvisibleTime, e))?;
                let (lo, hi) = settings.invisible_range_ms;
                if ms < lo || ms > hi {
                    return Err(Refusal::new(
                        Code::IllegalInvisibleTime,
                        format!("invisible time {ms} ms is outside {lo}..={hi} ms"),
                    ));
                }
                ms
            }
        };
        let long_poll = match &body.long_polling_timeout {
            None => DEFAULT_LONG_POLL,
            Some(d) => {
                Duration::from_millis(convert::duration_ms(d).map_err(|e| Refusal::new(Code::IllegalPollingTime, e))?)
            }
        };
        let long_poll = long_poll.min(Duration::from_millis(settings.max_long_polling_ms));
        // Answer before the client gives up: its deadline may equal the polling time.
        let wait = match grpc_timeout(req) {
            Some(deadline) => long_poll.min(deadline.saturating_sub(DEADLINE_MARGIN)),
            None => long_poll,
        };
        Ok(Receive { group, topic, queue, filter, max, invisible_ms, wait })
    }

    pub(super) async fn serve_receive(
        &self,
        request: tonic::Request<pb::ReceiveMessageRequest>,
    ) -> BoxStream<pb::ReceiveMessageResponse> {
        let r = match self.parse_receive(&request) {
            Ok(r) => r,
            Err(refusal) => return failed(&refusal),
        };
        tracing::debug!(
            client = crate::sessions::client_id(request.metadata()).unwrap_or_default(),
            group = %r.group,
            topic = %r.topic,
            queue = ?r.queue.map(|q| q.0),
            max = r.max,
            "receive"
        );
        match self.ensure_topic(&r.topic).await {
            Err(refusal) => return failed(&refusal),
            Ok(config) => {
                if let Some(q) = r.queue.filter(|q| q.0 >= config.queue_count) {
                    let message =
                        format!("topic {} has {} queues, there is no queue {}", r.topic, config.queue_count, q.0);
                    return failed(&Refusal::new(Code::BadRequest, message));
                }
            }
        }
        let popped = match self.pop_waiting(&r).await {
            Ok(p) => p,
            Err(refusal) => return failed(&refusal),
        };
        if popped.is_empty() {
            return failed(&Refusal::new(Code::MessageNotFound, "no new message"));
        }
        let messages = match self.load(&r.topic, &popped) {
            Ok(m) => m,
            Err(refusal) => return failed(&refusal),
        };
        let store_host = self.me().map(|m| m.client_addr).unwrap_or_default();
        let mut items = vec![
            Ok(pb::ReceiveMessageResponse { content: Some(Content::Status(status::ok())) }),
            Ok(pb::ReceiveMessageResponse { content: Some(Content::DeliveryTimestamp(convert::timestamp(now_ms()))) }),
        ];
        for (p, (m, stored)) in popped.iter().zip(messages) {
            let m = read_from(m, &r.topic, p.queue);
            let d = Delivery {
                stored,
                store_host: store_host.clone(),
                offset: p.offset.0,
                receipt: Some(p.receipt.to_string()),
                attempt: p.attempt,
                invisible_ms: Some(r.invisible_ms),
            };
            items.push(Ok(pb::ReceiveMessageResponse { content: Some(Content::Message(convert::outgoing(&m, &d))) }));
        }
        Box::pin(futures::stream::iter(items))
    }

    /// Pops through Raft when something is visible; otherwise waits for new entries (applied
    /// and dispatched into the ConsumeQueue) or for the next invisible message to reappear,
    /// until `r.wait` runs out. The pop is planned from this node's ConsumeQueue (tags) and
    /// applied through Raft, one plan at a time per group and topic.
    async fn pop_waiting(&self, r: &Receive) -> Result<Vec<Popped>, Refusal> {
        let deadline = Instant::now() + r.wait;
        let signal = self.inner.state.applied_signal().clone();
        loop {
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = now_ms();
            let (visible, next) = self.inner.state.read(|a| a.machine.pop_outlook(r.scope(), now));
            if visible {
                let popped = self.pop_once(r, now).await?;
                if !popped.is_empty() {
                    return Ok(popped);
                }
            }
            let mut until = deadline;
            if let Some(Millis(at)) = next {
                let ms = u64::try_from(at.saturating_sub(now.0)).unwrap_or(0);
                until = until.min(Instant::now() + Duration::from_millis(ms));
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Pops for `r` through Raft: served by a pop in flight of the same group, topic and
    /// filter, or, holding the group's pop lock, by one pop planned for every receive that
    /// waits ([`super::pops`]). Empty when nothing was taken.
    async fn pop_once(&self, r: &Receive, now: Millis) -> Result<Vec<Popped>, Refusal> {
        let key = PopKey {
            group: r.group.clone(),
            topic: r.topic.clone(),
            queue: r.queue,
            filter: r.filter.clone(),
            invisible_ms: r.invisible_ms,
        };
        let (guard, waiters, answer) = match self.inner.pops.turn(key, r.max).await {
            Turn::Served(outcome) => return outcome,
            Turn::Serve { guard, waiters, answer } => (guard, waiters, answer),
        };
        // In a task of its own, so that a receive abandoned by its client does not leave the
        // others it serves without an answer.
        let me = self.clone();
        let r = r.clone();
        let max = waiters.iter().map(|w| w.max).fold(0u32, u32::saturating_add);
        tokio::spawn(async move {
            let outcome = me.pop_planned(&r, now, max).await;
            pops::answer(waiters, outcome);
            drop(guard);
        });
        answer.await.unwrap_or(Ok(Vec::new()))
    }

    /// Plans one pop of at most `max` messages from the ConsumeQueue and applies it; empty
    /// when nothing was taken. The caller holds the group's pop lock.
    async fn pop_planned(&self, r: &Receive, now: Millis, max: u32) -> Result<Vec<Popped>, Refusal> {
        let stores = &self.inner.stores;
        let log = &self.inner.store;
        let takes = self.inner.state.read(|a| {
            let accept = |f: &Fresh| {
                r.filter.accepts(f, |index, slot| {
                    log.message_at(index.0, slot)
                        .map_err(|e| Refusal::unavailable(format!("reading log entry {} to filter it: {e}", index.0)))
                })
            };
            let read = |q, from, end| {
                stores
                    .tags(&r.topic, q, from, end)
                    .map_err(|e| Refusal::unavailable(format!("reading the ConsumeQueue: {e}")))
            };
            a.machine.plan_pop(now, r.scope(), max, accept, read)
        })?;
        if takes.is_empty() {
            return Ok(Vec::new());
        }
        let command =
            Command::Pop { now, group: r.group.clone(), topic: r.topic.clone(), invisible_ms: r.invisible_ms, takes };
        let resp = crate::raft::client_write(&self.inner.raft, command)
            .await
            .map_err(|e| Refusal::unavailable(format!("receive not committed: {e}")))?;
        match resp.data {
            Response::Popped(p) => Ok(p),
            Response::Failed(e) => Err(e.into()),
            other => Err(Refusal::unavailable(format!("unexpected answer to a pop: {other:?}"))),
        }
    }

    /// The ConsumeQueue record of `topic`'s `queue` at `offset` on this node.
    pub(super) fn cq_record(
        &self,
        topic: &TopicName,
        queue: QueueId,
        offset: QueueOffset,
    ) -> Result<QueueRecord, Refusal> {
        self.inner
            .stores
            .record(topic, queue, offset)
            .map_err(|e| Refusal::unavailable(format!("reading the ConsumeQueue: {e}")))?
            .ok_or_else(|| {
                Refusal::unavailable(format!(
                    "queue {} offset {} of {topic} is not in this node's ConsumeQueue",
                    queue.0, offset.0
                ))
            })
    }

    /// Reads the bodies of popped messages: their ConsumeQueue records, then the CommitLog.
    fn load(&self, topic: &TopicName, at: &[Popped]) -> Result<Vec<(StoredMessage, Millis)>, Refusal> {
        let mut locations = Vec::with_capacity(at.len());
        for p in at {
            let record = self.cq_record(topic, p.queue, p.offset)?;
            locations.push((record.log_index.0, record.slot.0, record.store_time));
        }
        self.load_at(&locations)
    }

    /// Reads messages by (log index, slot), each without the rest of its entry; the store
    /// time is the ConsumeQueue's.
    fn load_at(&self, locations: &[(u64, u32, Millis)]) -> Result<Vec<(StoredMessage, Millis)>, Refusal> {
        locations
            .iter()
            .map(|&(index, slot, stored)| {
                let m = self
                    .inner
                    .store
                    .message_at(index, Slot(slot))
                    .map_err(|e| Refusal::unavailable(format!("reading log entry {index}: {e}")))?
                    .ok_or_else(|| {
                        Refusal::new(
                            Code::MessageNotFound,
                            format!("log entry {index} is no longer retained or has no message {slot}"),
                        )
                    })?;
                Ok((m, stored))
            })
            .collect()
    }

    pub(super) async fn serve_pull(
        &self,
        request: tonic::Request<pb::PullMessageRequest>,
    ) -> BoxStream<pb::PullMessageResponse> {
        let result = async {
            let body = request.get_ref();
            group_of(body.group.as_ref())?;
            let mq = body.message_queue.as_ref();
            let topic = topic_of(mq.and_then(|q| q.topic.as_ref()))?;
            let queue = QueueId(
                u32::try_from(mq.map_or(-1, |q| q.id))
                    .map_err(|_| Refusal::new(Code::BadRequest, "queue id must not be negative"))?,
            );
            let filter = Filter::of(body.filter_expression.as_ref())?;
            if body.offset < 0 || body.batch_size <= 0 {
                return Err(Refusal::new(
                    Code::BadRequest,
                    "offset must not be negative and batch size must be positive",
                ));
            }
            let max = (body.batch_size as u32).min(self.inner.settings.max_receive_batch) as u64;
            let wait = body
                .long_polling_timeout
                .as_ref()
                .map(|d| convert::duration_ms(d).map(Duration::from_millis))
                .transpose()
                .map_err(|e| Refusal::new(Code::IllegalPollingTime, e))?
                .unwrap_or(Duration::ZERO)
                .min(Duration::from_millis(self.inner.settings.max_long_polling_ms));
            let wait = match grpc_timeout(&request) {
                Some(d) => wait.min(d.saturating_sub(DEADLINE_MARGIN)),
                None => wait,
            };
            let deadline = Instant::now() + wait;
            let signal = self.inner.state.applied_signal().clone();
            let offset = body.offset as u64;
            loop {
                let notified = signal.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let (min, max_offset) = self.inner.state.read(|a| {
                    let q = a.machine.queue(&topic, queue).ok_or_else(|| {
                        Refusal::new(Code::TopicNotFound, format!("topic {topic} has no queue {}", queue.0))
                    })?;
                    Ok::<_, Refusal>((q.min_offset(), q.max_offset()))
                })?;
                let start = offset.max(min);
                if start > max_offset {
                    return Err(Refusal::new(
                        Code::BadRequest,
                        format!("offset {offset} is past the end of the queue ({max_offset})"),
                    ));
                }
                // Read at most one scan's worth; what passes the filter is bounded by `max`.
                let end = max_offset.min(start + raftmq_machine::POP_SCAN_LIMIT);
                let records = self
                    .inner
                    .stores
                    .records(&topic, queue, start, end)
                    .map_err(|e| Refusal::unavailable(format!("reading the ConsumeQueue: {e}")))?;
                let mut found = Vec::new();
                let mut next_offset = start;
                for (off, rec) in records {
                    if off.0 != next_offset || found.len() as u64 >= max {
                        break;
                    }
                    let fresh = Fresh { tag: rec.tag_hash, group: rec.group_hash, at: Some((rec.log_index, rec.slot)) };
                    let pass = filter.accepts(&fresh, |index, slot| {
                        self.inner.store.message_at(index.0, slot).map_err(|e| {
                            Refusal::unavailable(format!("reading log entry {} to filter it: {e}", index.0))
                        })
                    })?;
                    if pass {
                        found.push((off.0, rec));
                    }
                    next_offset += 1;
                }
                if !found.is_empty() || Instant::now() >= deadline {
                    return Ok((found, next_offset, topic, queue));
                }
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
        }
        .await;
        let (found, next_offset, topic, queue) = match result {
            Ok(r) => r,
            Err(refusal) => return pull_failed(&refusal),
        };
        let mut items = Vec::new();
        if found.is_empty() {
            items.push(Ok(pb::PullMessageResponse {
                content: Some(PullContent::Status(status::status(Code::MessageNotFound, "no new message"))),
            }));
        } else {
            let locations: Vec<(u64, u32, Millis)> =
                found.iter().map(|(_, rec)| (rec.log_index.0, rec.slot.0, rec.store_time)).collect();
            let messages = match self.load_at(&locations) {
                Ok(m) => m,
                Err(refusal) => return pull_failed(&refusal),
            };
            items.push(Ok(pb::PullMessageResponse { content: Some(PullContent::Status(status::ok())) }));
            let store_host = self.me().map(|m| m.client_addr).unwrap_or_default();
            for ((offset, _), (m, stored)) in found.iter().zip(messages) {
                let m = read_from(m, &topic, queue);
                let d = Delivery {
                    stored,
                    store_host: store_host.clone(),
                    offset: *offset,
                    receipt: None,
                    attempt: 1,
                    invisible_ms: None,
                };
                items.push(Ok(pb::PullMessageResponse {
                    content: Some(PullContent::Message(convert::outgoing(&m, &d))),
                }));
            }
        }
        items.push(Ok(pb::PullMessageResponse { content: Some(PullContent::NextOffset(next_offset as i64)) }));
        Box::pin(futures::stream::iter(items))
    }
}

/// The message as read from `topic`'s `queue`: a dead letter is delivered as a message of
/// the dead-letter topic, its original topic in the `RETRY_TOPIC` property (RocketMQ's).
fn read_from(mut m: StoredMessage, topic: &TopicName, queue: QueueId) -> StoredMessage {
    if m.topic != *topic {
        m.properties.insert(ORIGIN_TOPIC_PROPERTY.to_string(), m.topic.as_str().to_string());
        m.topic = topic.clone();
        m.queue = queue;
    }
    m
}

/// The property naming a dead letter's original topic.
pub const ORIGIN_TOPIC_PROPERTY: &str = "RETRY_TOPIC";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_is_parsed_without_overflow() {
        assert_eq!(parse_grpc_timeout("20S"), Some(Duration::from_secs(20)));
        assert_eq!(parse_grpc_timeout("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_grpc_timeout("99999999H"), Some(Duration::from_secs(99_999_999 * 3600)));
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        // More than 8 digits, a number past u64, no digits, a sign, an unknown unit, bytes
        // that are not ASCII: all ignored rather than panicking.
        for bad in ["123456789S", "18446744073709551615H", "H", "", "-5S", "+5S", "5x", "5", "١٢S", "5 S", "5é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
