//! SendMessage: validate each message, pick its queue, and commit them all through the
//! group-commit proposer; the answer has one entry per message, in order.

use std::sync::atomic::{AtomicU64, Ordering};

use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;

use super::Broker;
use super::convert;
use super::message_type::{check_topic_accepts, classify};
use super::route::write_topic_of;
use super::status::{self, Refusal};
use super::transaction;
use crate::settings::ServiceSettings;
use raftmq_machine::LogIndex;
use raftmq_machine::types::{MessageType, Millis, Permission, QueueId, StoredMessage, TopicConfig, TopicName};

/// Most messages in one SendMessage request.
pub const MAX_MESSAGES_PER_SEND: usize = 1024;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static ROUND_ROBIN: AtomicU64 = AtomicU64::new(0);

/// A fresh message id in RocketMQ 5's shape (34 hex digits starting with "01").
fn make_id(node: u64) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("01{:08X}{:08X}{:016X}", node as u32, secs as u32, NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

fn fnv(s: &str) -> u64 {
    raftmq_machine::types::tag_hash(s)
}

/// The official Python client picks a queue only to choose an endpoint and leaves the
/// message's `queue_id` unset, which protobuf cannot tell from queue 0 (RocketMQ's proxy
/// ignores it and picks one itself). Its messages without a message group get the broker's
/// round-robin queue instead of all landing in queue 0; other clients' queue ids hold.
pub fn broker_picks_queue(request: &mut tonic::Request<pb::SendMessageRequest>) {
    let python = request.metadata().get("x-mq-language").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"PYTHON"));
    if !python {
        return;
    }
    for m in &mut request.get_mut().messages {
        if let Some(sys) = m.system_properties.as_mut().filter(|s| s.queue_id == 0) {
            sys.queue_id = -1;
        }
    }
}

/// The answer when the whole request failed.
pub fn failed_send(r: &Refusal) -> pb::SendMessageResponse {
    pb::SendMessageResponse {
        status: Some(r.status()),
        entries: vec![pb::SendResultEntry { status: Some(r.status()), ..Default::default() }],
    }
}

/// A request whose messages name more than one topic: a batch goes to one topic, as in
/// RocketMQ.
fn mixed_topics(messages: &[pb::Message]) -> Option<Refusal> {
    let first = messages.first()?.topic.as_ref().map(|t| t.name.as_str());
    let other = messages.iter().find(|m| m.topic.as_ref().map(|t| t.name.as_str()) != first)?;
    Some(Refusal::new(
        Code::BadRequest,
        format!(
            "a batch goes to one topic; this one names {:?} and {:?}",
            first.unwrap_or_default(),
            other.topic.as_ref().map_or("", |t| t.name.as_str())
        ),
    ))
}

/// The answer to a batch of which message `index` (first) was refused: nothing is stored;
/// each refused message carries its own reason, the others say which one stopped them.
fn refused_batch(
    prepared: Vec<Result<StoredMessage, Refusal>>,
    index: usize,
    first: &Refusal,
    count: usize,
) -> pb::SendMessageResponse {
    let entries = prepared
        .into_iter()
        .map(|p| {
            let r = match p {
                Err(r) => r,
                Ok(_) => Refusal::new(
                    first.code,
                    format!("not stored: message {index} of the batch of {count} was refused: {}", first.message),
                ),
            };
            pb::SendResultEntry { status: Some(r.status()), ..Default::default() }
        })
        .collect();
    pb::SendMessageResponse { status: Some(first.status()), entries }
}

/// Refuses a SendMessage as a whole: no messages, too many, or more than one topic.
pub fn check_send(req: &pb::SendMessageRequest) -> Result<(), Refusal> {
    if req.messages.is_empty() {
        return Err(Refusal::new(Code::BadRequest, "no messages in the request"));
    }
    if req.messages.len() > MAX_MESSAGES_PER_SEND {
        return Err(Refusal::new(
            Code::BadRequest,
            format!("{} messages in one request, the limit is {MAX_MESSAGES_PER_SEND}", req.messages.len()),
        ));
    }
    mixed_topics(&req.messages).map_or(Ok(()), Err)
}

/// What a send's message to `topic` (configured as `config`) becomes in the log: its kind
/// and delivery time checked against the topic and `settings` at `now`, its queue picked and
/// its fields validated. `epoch` gives the topic's incarnation (`None`: just deleted),
/// `make_id` a message id for a message that has none.
pub fn prepare_message(
    msg: pb::Message,
    topic: &TopicName,
    config: &TopicConfig,
    settings: &ServiceSettings,
    now: Millis,
    epoch: impl FnOnce() -> Option<LogIndex>,
    make_id: impl FnOnce() -> String,
) -> Result<StoredMessage, Refusal> {
    let classified = classify(
        msg.system_properties.as_ref().unwrap_or(&pb::SystemProperties::default()),
        &msg.user_properties,
        now,
        settings.max_delay_ms,
    )?;
    check_topic_accepts(topic.as_str(), &config.message_types, classified.kind)?;
    let sys = msg.system_properties.as_ref();
    let asked = sys.map(|s| s.queue_id).filter(|q| *q >= 0 && (*q as u32) < config.queue_count);
    let queue = match (asked, sys.and_then(|s| s.message_group.as_deref())) {
        (_, Some(group)) => (fnv(group) % u64::from(config.queue_count)) as u32,
        (Some(q), None) => q as u32,
        (None, None) => (ROUND_ROBIN.fetch_add(1, Ordering::Relaxed) % u64::from(config.queue_count)) as u32,
    };
    if config.permission == Permission::Read {
        return Err(Refusal::new(Code::Forbidden, format!("topic {topic} is read-only")));
    }
    let epoch = epoch().ok_or_else(|| Refusal::new(Code::TopicNotFound, format!("topic {topic} was just deleted")))?;
    let mut stored = convert::incoming(msg, settings.max_body_bytes, QueueId(queue), make_id)?;
    stored.topic_epoch = epoch;
    stored.deliver_at = classified.deliver_at;
    stored.transactional = classified.kind == MessageType::Transaction;
    Ok(stored)
}

impl Broker {
    async fn prepare(&self, msg: pb::Message) -> Result<StoredMessage, Refusal> {
        let topic = write_topic_of(msg.topic.as_ref())?;
        let config = self.ensure_topic(&topic).await?;
        let now = super::proposer::now_ms();
        let node = self.inner.node_id.0;
        prepare_message(
            msg,
            &topic,
            &config,
            &self.inner.settings,
            now,
            || self.inner.state.read(|a| a.machine.topic_epoch(&topic)),
            || make_id(node),
        )
    }

    pub(super) async fn serve_send(&self, req: pb::SendMessageRequest) -> pb::SendMessageResponse {
        if let Err(r) = check_send(&req) {
            return failed_send(&r);
        }
        if let Err(why) = self.inner.disk.check() {
            return failed_send(&Refusal::unavailable(format!("node {}: {why}", self.inner.node_id)));
        }
        let count = req.messages.len();
        let mut prepared: Vec<Result<StoredMessage, Refusal>> = Vec::with_capacity(count);
        for msg in req.messages {
            prepared.push(self.prepare(msg).await);
        }
        // A batch is stored whole or not at all: one refused message refuses the request.
        if let Some((i, first)) =
            prepared.iter().enumerate().find_map(|(i, p)| p.as_ref().err().map(|r| (i, r.clone())))
        {
            return refused_batch(prepared, i, &first, count);
        }
        let valid: Vec<StoredMessage> = prepared.iter().filter_map(|p| p.as_ref().ok().cloned()).collect();
        let ids: Vec<(String, bool)> = valid.iter().map(|m| (m.message_id.clone(), m.transactional)).collect();
        let mut committed = if valid.is_empty() {
            Vec::new().into_iter()
        } else {
            match self.inner.proposer.send(valid).await {
                Ok(results) => results.into_iter(),
                Err(refusal) => return failed_send(&refusal),
            }
        };
        let mut ids = ids.into_iter();
        let entries: Vec<pb::SendResultEntry> = prepared
            .into_iter()
            .map(|p| match p {
                Err(r) => pb::SendResultEntry { status: Some(r.status()), ..Default::default() },
                Ok(_) => {
                    let (id, transactional) = ids.next().unwrap_or_default();
                    match committed.next() {
                        Some(Ok(sent)) => pb::SendResultEntry {
                            status: Some(status::ok()),
                            message_id: id,
                            // A half message's transaction: where it is in this group's log.
                            transaction_id: if transactional {
                                transaction::encode(&self.inner.group, sent.at)
                            } else {
                                String::new()
                            },
                            // -1: answered before apply assigned the offset (`ack = "leader"`).
                            offset: sent.offset.map_or(-1, |o| o.0 as i64),
                            recall_handle: String::new(),
                        },
                        Some(Err(e)) => pb::SendResultEntry {
                            status: Some(Refusal::from(e).status()),
                            message_id: id,
                            ..Default::default()
                        },
                        None => pb::SendResultEntry {
                            status: Some(
                                Refusal::unavailable("the state machine returned fewer results than messages").status(),
                            ),
                            message_id: id,
                            ..Default::default()
                        },
                    }
                }
            })
            .collect();
        pb::SendMessageResponse {
            status: Some(status::summary(entries.iter().filter_map(|e| e.status.as_ref()))),
            entries,
        }
    }
}
