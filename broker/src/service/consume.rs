//! AckMessage, ChangeInvisibleDuration and the offset calls of pull consumers.

use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;

use super::Broker;
use super::convert;
use super::route::{group_of, topic_of};
use super::status::{self, Refusal};
use raftmq_machine::types::{GroupName, QueueId, QueueOffset, TopicName};
use raftmq_machine::{Command, DeadLetter, Receipt, Response};

/// Most entries in one AckMessage request.
pub const MAX_ACKS_PER_REQUEST: usize = 1024;

/// The answer when the whole ack request failed.
pub fn failed_ack(r: &Refusal) -> pb::AckMessageResponse {
    pb::AckMessageResponse { status: Some(r.status()), entries: vec![] }
}

fn queue_of(mq: Option<&pb::MessageQueue>) -> Result<QueueId, Refusal> {
    let id = mq.map_or(-1, |q| q.id);
    u32::try_from(id).map(QueueId).map_err(|_| Refusal::new(Code::BadRequest, format!("queue id {id} is not valid")))
}

/// The receipt handle a client sent, refused unless it names `broker_group` (this node's).
pub fn parse_receipt(handle: &str, broker_group: &str) -> Result<Receipt, Refusal> {
    let r: Receipt = handle.parse().map_err(|e: String| Refusal::new(Code::InvalidReceiptHandle, e))?;
    if r.broker_group != broker_group {
        return Err(Refusal::new(
            Code::InvalidReceiptHandle,
            format!("receipt handle belongs to broker group {:?}, this is {:?}", r.broker_group, broker_group),
        ));
    }
    Ok(r)
}

/// The receipt of each entry of an AckMessage, or why it is refused.
pub type EntryReceipts = Vec<Result<Receipt, Refusal>>;

/// An AckMessage's group and topic (the whole request is refused when one is bad or the
/// entry count is out of bounds) and each entry's receipt, refused one by one.
pub fn parse_ack(
    req: &pb::AckMessageRequest,
    broker_group: &str,
) -> Result<(GroupName, TopicName, EntryReceipts), Refusal> {
    let group = group_of(req.group.as_ref())?;
    let topic = topic_of(req.topic.as_ref())?;
    if req.entries.is_empty() || req.entries.len() > MAX_ACKS_PER_REQUEST {
        return Err(Refusal::new(Code::BadRequest, format!("ack needs 1..={MAX_ACKS_PER_REQUEST} entries")));
    }
    let receipts = req.entries.iter().map(|e| parse_receipt(&e.receipt_handle, broker_group)).collect();
    Ok((group, topic, receipts))
}

/// A ChangeInvisibleDuration's group, topic, receipt and new invisible time (milliseconds,
/// within `invisible_range_ms`).
pub fn parse_change_invisible(
    req: &pb::ChangeInvisibleDurationRequest,
    broker_group: &str,
    invisible_range_ms: (u64, u64),
) -> Result<(GroupName, TopicName, Receipt, u64), Refusal> {
    let group = group_of(req.group.as_ref())?;
    let topic = topic_of(req.topic.as_ref())?;
    let receipt = parse_receipt(&req.receipt_handle, broker_group)?;
    let d = req
        .invisible_duration
        .as_ref()
        .ok_or_else(|| Refusal::new(Code::IllegalInvisibleTime, "invisible duration is missing"))?;
    let ms = convert::duration_ms(d).map_err(|e| Refusal::new(Code::IllegalInvisibleTime, e))?;
    let (lo, hi) = invisible_range_ms;
    if ms < lo || ms > hi {
        return Err(Refusal::new(
            Code::IllegalInvisibleTime,
            format!("invisible time {ms} ms is outside {lo}..={hi} ms"),
        ));
    }
    Ok((group, topic, receipt, ms))
}

/// An UpdateOffset's group, topic, queue and offset.
pub fn parse_update_offset(
    req: &pb::UpdateOffsetRequest,
) -> Result<(GroupName, TopicName, QueueId, QueueOffset), Refusal> {
    let group = group_of(req.group.as_ref())?;
    let mq = req.message_queue.as_ref();
    let topic = topic_of(mq.and_then(|q| q.topic.as_ref()))?;
    let queue = queue_of(mq)?;
    let offset =
        u64::try_from(req.offset).map_err(|_| Refusal::new(Code::BadRequest, "offset must not be negative"))?;
    Ok((group, topic, queue, QueueOffset(offset)))
}

/// A GetOffset's group, topic and queue.
pub fn parse_get_offset(req: &pb::GetOffsetRequest) -> Result<(GroupName, TopicName, QueueId), Refusal> {
    let group = group_of(req.group.as_ref())?;
    let mq = req.message_queue.as_ref();
    let topic = topic_of(mq.and_then(|q| q.topic.as_ref()))?;
    Ok((group, topic, queue_of(mq)?))
}

/// A QueryOffset's topic, queue and policy (a `TIMESTAMP` policy's timestamp is checked
/// once the queue is known to exist).
pub fn parse_query_offset(
    req: &pb::QueryOffsetRequest,
) -> Result<(TopicName, QueueId, pb::QueryOffsetPolicy), Refusal> {
    let mq = req.message_queue.as_ref();
    let topic = topic_of(mq.and_then(|q| q.topic.as_ref()))?;
    let queue = queue_of(mq)?;
    let policy = pb::QueryOffsetPolicy::try_from(req.query_offset_policy)
        .map_err(|_| Refusal::new(Code::BadRequest, format!("unknown offset policy {}", req.query_offset_policy)))?;
    Ok((topic, queue, policy))
}

/// A ForwardMessageToDeadLetterQueue's group (one whose dead-letter topic name is valid),
/// topic and receipt.
pub fn parse_forward_to_dead_letter(
    req: &pb::ForwardMessageToDeadLetterQueueRequest,
    broker_group: &str,
) -> Result<(GroupName, TopicName, Receipt), Refusal> {
    let group = group_of(req.group.as_ref())?;
    let topic = topic_of(req.topic.as_ref())?;
    let receipt = parse_receipt(&req.receipt_handle, broker_group)?;
    if group.dead_letter_topic().is_none() {
        return Err(Refusal::new(
            Code::IllegalConsumerGroup,
            format!("group {group} is too long a name for a dead-letter topic"),
        ));
    }
    Ok((group, topic, receipt))
}

impl Broker {
    async fn propose(&self, command: Command) -> Result<Response, Refusal> {
        let resp = crate::raft::client_write(&self.inner.raft, command)
            .await
            .map_err(|e| Refusal::unavailable(format!("not committed: {e}")))?;
        match resp.data {
            Response::Failed(e) => Err(e.into()),
            other => Ok(other),
        }
    }

    pub(super) async fn serve_ack(&self, req: pb::AckMessageRequest) -> pb::AckMessageResponse {
        let (group, topic, receipts) = match parse_ack(&req, &self.inner.group) {
            Ok(p) => p,
            Err(r) => return failed_ack(&r),
        };
        let valid: Vec<Receipt> = receipts.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
        let mut results = if valid.is_empty() {
            Vec::new().into_iter()
        } else {
            match self.inner.acks.ack(group, topic, valid).await {
                Ok(results) => results.into_iter(),
                Err(r) => return failed_ack(&r),
            }
        };
        let entries: Vec<pb::AckMessageResultEntry> = req
            .entries
            .into_iter()
            .zip(receipts)
            .map(|(entry, parsed)| {
                let status = match parsed {
                    Err(r) => r.status(),
                    Ok(_) => match results.next() {
                        Some(Ok(())) => status::ok(),
                        Some(Err(e)) => Refusal::from(e).status(),
                        None => Refusal::unavailable("fewer ack results than receipts").status(),
                    },
                };
                pb::AckMessageResultEntry {
                    message_id: entry.message_id,
                    receipt_handle: entry.receipt_handle,
                    status: Some(status),
                }
            })
            .collect();
        pb::AckMessageResponse {
            status: Some(status::summary(entries.iter().filter_map(|e| e.status.as_ref()))),
            entries,
        }
    }

    pub(super) async fn serve_change_invisible(
        &self,
        req: pb::ChangeInvisibleDurationRequest,
    ) -> pb::ChangeInvisibleDurationResponse {
        let result = async {
            let (group, topic, receipt, ms) =
                parse_change_invisible(&req, &self.inner.group, self.inner.settings.invisible_range_ms)?;
            let now = super::proposer::now_ms();
            match self.propose(Command::ChangeInvisible { now, group, topic, receipt, invisible_ms: ms }).await? {
                Response::Changed(r) => Ok(r.to_string()),
                other => Err(Refusal::unavailable(format!("unexpected answer: {other:?}"))),
            }
        }
        .await;
        match result {
            Ok(receipt_handle) => pb::ChangeInvisibleDurationResponse { status: Some(status::ok()), receipt_handle },
            Err(r) => pb::ChangeInvisibleDurationResponse { status: Some(r.status()), receipt_handle: String::new() },
        }
    }

    pub(super) async fn serve_update_offset(&self, req: pb::UpdateOffsetRequest) -> pb::UpdateOffsetResponse {
        let result = async {
            let (group, topic, queue, offset) = parse_update_offset(&req)?;
            self.propose(Command::CommitOffset { group, topic, queue, offset }).await
        }
        .await;
        pb::UpdateOffsetResponse { status: Some(result.map_or_else(|r| r.status(), |_| status::ok())) }
    }

    pub(super) async fn serve_get_offset(&self, req: pb::GetOffsetRequest) -> pb::GetOffsetResponse {
        let result = (|| {
            let (group, topic, queue) = parse_get_offset(&req)?;
            self.inner.state.read(|a| a.machine.committed_offset(&group, &topic, queue)).ok_or_else(|| {
                Refusal::new(
                    Code::NotFound,
                    format!("group {group} has committed no offset for {topic} queue {}", queue.0),
                )
            })
        })();
        match result {
            Ok(o) => pb::GetOffsetResponse { status: Some(status::ok()), offset: o.0 as i64 },
            Err(r) => pb::GetOffsetResponse { status: Some(r.status()), offset: 0 },
        }
    }

    pub(super) async fn serve_query_offset(&self, req: pb::QueryOffsetRequest) -> pb::QueryOffsetResponse {
        let result = (|| -> Result<u64, Refusal> {
            let (topic, queue, policy) = parse_query_offset(&req)?;
            let (min, max) = self.inner.state.read(|a| {
                let q = a.machine.queue(&topic, queue).ok_or_else(|| {
                    Refusal::new(Code::TopicNotFound, format!("topic {topic} has no queue {}", queue.0))
                })?;
                Ok::<_, Refusal>((q.min_offset(), q.max_offset()))
            })?;
            Ok(match policy {
                pb::QueryOffsetPolicy::Beginning => min,
                pb::QueryOffsetPolicy::End => max,
                pb::QueryOffsetPolicy::Timestamp => {
                    let ts = req
                        .timestamp
                        .as_ref()
                        .ok_or_else(|| Refusal::new(Code::BadRequest, "timestamp policy needs a timestamp"))?;
                    let at = self
                        .inner
                        .stores
                        .offset_at_time(&topic, queue, convert::millis_of(ts))
                        .map_err(|e| Refusal::unavailable(format!("reading the ConsumeQueue: {e}")))?;
                    at.0.clamp(min, max)
                }
            })
        })();
        match result {
            Ok(o) => pb::QueryOffsetResponse { status: Some(status::ok()), offset: o as i64 },
            Err(r) => pb::QueryOffsetResponse { status: Some(r.status()), offset: 0 },
        }
    }
}

/// The answer when forwarding to the dead-letter queue failed.
pub fn failed_forward(r: &Refusal) -> pb::ForwardMessageToDeadLetterQueueResponse {
    pb::ForwardMessageToDeadLetterQueueResponse { status: Some(r.status()) }
}

impl Broker {
    /// A consumer gives up on a message it holds (the FIFO push consumer does after its
    /// local retries): it goes to the group's `%DLQ%<group>` topic at once. The receipt must
    /// be the message's newest; one acknowledged, delivered again or forwarded already is
    /// refused, so a retried request dead-letters nothing twice.
    pub(super) async fn serve_forward_to_dead_letter(
        &self,
        req: pb::ForwardMessageToDeadLetterQueueRequest,
    ) -> pb::ForwardMessageToDeadLetterQueueResponse {
        let result = async {
            let (group, topic, receipt) = parse_forward_to_dead_letter(&req, &self.inner.group)?;
            let held = self.inner.state.read(|a| {
                a.machine
                    .pop_state(&group, &topic, receipt.queue)
                    .and_then(|s| s.inflight(receipt.offset.0))
                    .is_some_and(|i| i.pop_id == receipt.pop_id)
            });
            if !held {
                return Err(Refusal::new(
                    Code::InvalidReceiptHandle,
                    format!(
                        "queue {} offset {} of {topic} is not held by this receipt in group {group}: acknowledged, \
                         delivered again or dead-lettered already",
                        receipt.queue.0, receipt.offset.0
                    ),
                ));
            }
            let record = self.cq_record(&topic, receipt.queue, receipt.offset)?;
            let letter = DeadLetter {
                offset: receipt.offset,
                pop_id: receipt.pop_id,
                log_index: record.log_index,
                slot: record.slot,
            };
            self.propose(Command::ForwardToDeadLetter { group, topic, queue: receipt.queue, letter }).await?;
            tracing::info!(message_id = %req.message_id, attempt = req.delivery_attempt, "a consumer forwarded a message to its dead-letter queue");
            Ok(())
        }
        .await;
        match result {
            Ok(()) => pb::ForwardMessageToDeadLetterQueueResponse { status: Some(status::ok()) },
            Err(r) => failed_forward(&r),
        }
    }
}
