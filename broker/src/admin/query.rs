//! QueryMessage: messages by id, key or queue offset, found in this node's own derived
//! stores (IndexFile, ConsumeQueue) and read from its own CommitLog. Never forwarded: every
//! member writes the stores from the same log, so any member answers.
//!
//! An index hit is only a candidate (keys are hashed): each message is read and kept only
//! if its id or one of its keys really equals the query. Entries the log no longer holds
//! are skipped; nothing found is an empty list.

use std::io::Read as _;

use raftmq_machine::types::{StoredMessage, TopicName};
use raftmq_machine::{LogIndex, Millis, QueueId, QueueOffset, Slot};
use raftmq_proto::admin::v1 as pb;
use raftmq_proto::admin::v1::query_message_request::Query as By;
use tonic::Status;

use super::{any_topic_name, invalid};
use crate::store::Storage;
use crate::store::StoreError;
use crate::store::index_file::{IndexKey, MAX_KEY_LEN};

/// Messages answered when the request names no maximum.
pub const DEFAULT_RESULTS: usize = 32;
/// Most messages one query answers (also the most hits one index lookup returns).
pub const MAX_RESULTS: usize = 64;
/// Most body bytes a queried message carries.
pub const PREVIEW_BYTES: usize = 256;

/// What a query looks for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Query {
    /// Messages with this id.
    Id { id: String, topic: Option<TopicName> },
    /// Messages with this key, stored in `begin..=end`.
    Key { key: String, topic: Option<TopicName>, begin: Millis, end: Millis },
    /// The message at a queue offset.
    Offset { topic: TopicName, queue: QueueId, offset: QueueOffset },
}

/// A validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Request {
    pub(super) query: Query,
    /// At most this many messages, 1..=[`MAX_RESULTS`].
    pub(super) max: usize,
}

fn index_text(what: &str, text: &str) -> Result<String, Status> {
    if text.is_empty() || text.len() > MAX_KEY_LEN {
        return Err(invalid(format!("the {what} is {} bytes; give 1 to {MAX_KEY_LEN} bytes", text.len())));
    }
    Ok(text.to_string())
}

fn optional_topic(topic: Option<&String>) -> Result<Option<TopicName>, Status> {
    topic.map(|t| any_topic_name(t)).transpose()
}

/// Checks a request: INVALID_ARGUMENT names what is wrong.
pub(super) fn parse(req: &pb::QueryMessageRequest) -> Result<Request, Status> {
    let max = match req.max_results {
        0 => DEFAULT_RESULTS,
        n => usize::try_from(n).unwrap_or(MAX_RESULTS).min(MAX_RESULTS),
    };
    let query = match &req.query {
        None => return Err(invalid("name what to look for: a message id, a key, or a topic, queue and offset")),
        Some(By::ById(q)) => {
            Query::Id { id: index_text("message id", &q.message_id)?, topic: optional_topic(q.topic.as_ref())? }
        }
        Some(By::ByKey(q)) => {
            let (begin, end) = (q.begin_ms.unwrap_or(0), q.end_ms.unwrap_or(i64::MAX));
            if begin > end {
                return Err(invalid(format!("the time range begins ({begin} ms) after it ends ({end} ms)")));
            }
            Query::Key {
                key: index_text("key", &q.key)?,
                topic: optional_topic(q.topic.as_ref())?,
                begin: Millis(begin),
                end: Millis(end),
            }
        }
        Some(By::ByQueueOffset(q)) => {
            Query::Offset { topic: any_topic_name(&q.topic)?, queue: QueueId(q.queue), offset: QueueOffset(q.offset) }
        }
    };
    Ok(Request { query, max })
}

fn store_error(e: StoreError) -> Status {
    Status::unavailable(e.to_string())
}

/// Runs a query on this node's stores and log (blocking file reads).
pub(super) fn run(storage: &Storage, req: &Request) -> Result<Vec<pb::QueriedMessage>, Status> {
    match &req.query {
        Query::Offset { topic, queue, offset } => by_offset(storage, topic, *queue, *offset),
        Query::Id { id, topic } => {
            by_index(storage, IndexKey::Id(id), topic.as_ref(), (Millis(0), Millis(i64::MAX)), req.max)
        }
        Query::Key { key, topic, begin, end } => {
            by_index(storage, IndexKey::Key(key), topic.as_ref(), (*begin, *end), req.max)
        }
    }
}

/// The message in `slot` of log entry `index`, read without the rest of the entry; `None`
/// when the log no longer holds it.
fn message_at(storage: &Storage, index: LogIndex, slot: Slot) -> Result<Option<StoredMessage>, Status> {
    storage
        .log
        .message_at(index.0, slot)
        .map_err(|e| Status::unavailable(format!("reading message {} of log entry {index}: {e}; retry", slot.0)))
}

fn matches(m: &StoredMessage, key: IndexKey<'_>, topic: Option<&TopicName>) -> bool {
    let found = match key {
        IndexKey::Id(id) => m.message_id == id,
        IndexKey::Key(k) => m.keys.iter().any(|x| x == k),
    };
    found && topic.is_none_or(|t| *t == m.topic)
}

fn by_index(
    storage: &Storage,
    key: IndexKey<'_>,
    topic: Option<&TopicName>,
    (begin, end): (Millis, Millis),
    max: usize,
) -> Result<Vec<pb::QueriedMessage>, Status> {
    let hits = storage.stores.lookup(key, begin, end).map_err(store_error)?;
    let mut out: Vec<pb::QueriedMessage> = Vec::new();
    for hit in hits {
        if out.len() >= max {
            break;
        }
        if out.iter().any(|q| (q.log_index, q.slot) == (hit.log_index.0, hit.slot.0)) {
            continue;
        }
        let Some(m) = message_at(storage, hit.log_index, hit.slot)?.filter(|m| matches(m, key, topic)) else {
            continue;
        };
        // Only messages of a topic incarnation that still exists: the IndexFile may keep
        // entries of a deleted topic, and every node answers alike whatever it still holds.
        if storage.state.read(|a| a.machine.accepts(&m, hit.log_index).is_err()) {
            continue;
        }
        let offset = offset_of(storage, &m, hit.log_index, hit.slot)?;
        out.push(queried(&m, (hit.log_index, hit.slot), hit.store_time, offset));
    }
    Ok(out)
}

/// The queue offset of a message, when the topic incarnation it was stored in still exists
/// (only then does the ConsumeQueue hold it, and only existing queues are opened).
fn offset_of(storage: &Storage, m: &StoredMessage, index: LogIndex, slot: Slot) -> Result<Option<u64>, Status> {
    let current = storage.state.read(|a| {
        a.machine.topic_epoch(&m.topic) == Some(m.topic_epoch)
            && a.machine.topic(&m.topic).is_some_and(|c| m.queue.0 < c.queue_count)
    });
    if !current {
        return Ok(None);
    }
    let offset = storage.stores.offset_of(&m.topic, m.queue, index, slot).map_err(store_error)?;
    Ok(offset.map(|o| o.0))
}

fn by_offset(
    storage: &Storage,
    topic: &TopicName,
    queue: QueueId,
    offset: QueueOffset,
) -> Result<Vec<pb::QueriedMessage>, Status> {
    // Only queues that exist are opened: a query must not make the store track new ones.
    if !storage.state.read(|a| a.machine.topic(topic).is_some_and(|c| queue.0 < c.queue_count)) {
        return Ok(Vec::new());
    }
    let Some(record) = storage.stores.record(topic, queue, offset).map_err(store_error)? else {
        return Ok(Vec::new());
    };
    match message_at(storage, record.log_index, record.slot)? {
        Some(m) if m.topic == *topic && m.queue == queue => {
            Ok(vec![queried(&m, (record.log_index, record.slot), record.store_time, Some(offset.0))])
        }
        _ => {
            tracing::warn!(%topic, queue = queue.0, offset = offset.0, log_index = record.log_index.0,
                slot = record.slot.0, "the ConsumeQueue record names no message of its queue");
            Ok(Vec::new())
        }
    }
}

/// The wire form of a found message.
fn queried(
    m: &StoredMessage,
    (index, slot): (LogIndex, Slot),
    stored: Millis,
    offset: Option<u64>,
) -> pb::QueriedMessage {
    pb::QueriedMessage {
        topic: m.topic.as_str().to_string(),
        queue: m.queue.0,
        queue_offset: offset,
        message_id: m.message_id.clone(),
        tag: m.tag.clone(),
        keys: m.keys.clone(),
        properties: m.properties.clone(),
        born_time_ms: m.born.0,
        store_time_ms: stored.0,
        born_host: m.born_host.clone(),
        body_size_bytes: m.body.len() as u64,
        body_gzip: m.body_gzip,
        body_preview: preview(&m.body, m.body_gzip).into(),
        log_index: index.0,
        slot: slot.0,
    }
}

/// The first [`PREVIEW_BYTES`] of a body, inflated when it is gzip'd (empty when it does not
/// inflate).
fn preview(body: &[u8], gzip: bool) -> Vec<u8> {
    if !gzip {
        return body[..body.len().min(PREVIEW_BYTES)].to_vec();
    }
    let mut out = Vec::with_capacity(PREVIEW_BYTES);
    match flate2::read::GzDecoder::new(body).take(PREVIEW_BYTES as u64).read_to_end(&mut out) {
        Ok(_) => out,
        Err(e) => {
            tracing::debug!(error = %e, "a gzip body does not inflate");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn code(r: Result<Request, Status>) -> Option<tonic::Code> {
        r.err().map(|s| s.code())
    }

    fn by_id(id: &str, topic: Option<&str>) -> pb::QueryMessageRequest {
        let q = pb::MessageIdQuery { message_id: id.into(), topic: topic.map(Into::into) };
        pb::QueryMessageRequest { query: Some(By::ById(q)), max_results: 0 }
    }

    fn by_key(key: &str, begin_ms: Option<i64>, end_ms: Option<i64>) -> pb::QueryMessageRequest {
        let q = pb::MessageKeyQuery { key: key.into(), topic: None, begin_ms, end_ms };
        pb::QueryMessageRequest { query: Some(By::ByKey(q)), max_results: 100 }
    }

    #[test]
    fn requests_are_checked_and_defaults_filled_in() {
        let orders = TopicName::new("orders").expect("valid");
        let r = parse(&by_id("abc", Some("orders"))).expect("valid");
        assert_eq!(r, Request { query: Query::Id { id: "abc".into(), topic: Some(orders.clone()) }, max: 32 });
        let r = parse(&by_key("k", None, Some(5))).expect("valid");
        let want = Query::Key { key: "k".into(), topic: None, begin: Millis(0), end: Millis(5) };
        assert_eq!(r, Request { query: want, max: MAX_RESULTS }, "the maximum is capped at 64");
        let q = pb::QueueOffsetQuery { topic: "orders".into(), queue: 2, offset: 7 };
        let r = parse(&pb::QueryMessageRequest { query: Some(By::ByQueueOffset(q)), max_results: 3 }).expect("valid");
        let want = Query::Offset { topic: orders, queue: QueueId(2), offset: QueueOffset(7) };
        assert_eq!(r, Request { query: want, max: 3 });

        let invalid = Some(tonic::Code::InvalidArgument);
        assert_eq!(code(parse(&pb::QueryMessageRequest::default())), invalid, "nothing to look for");
        assert_eq!(code(parse(&by_id("", None))), invalid);
        assert_eq!(code(parse(&by_id(&"i".repeat(129), None))), invalid);
        assert_eq!(code(parse(&by_id(&"i".repeat(128), None))), None);
        assert_eq!(code(parse(&by_key("k", Some(6), Some(5)))), invalid, "the range ends before it begins");
        let e = parse(&by_id("abc", Some("a b"))).expect_err("bad topic");
        assert!(e.message().contains("\"a b\""), "the message names the topic: {}", e.message());
    }

    #[test]
    fn previews_are_cut_and_gzip_bodies_inflated() {
        let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(preview(&body, false), body[..256]);
        assert_eq!(preview(b"short", false), b"short");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&body).expect("in memory");
        let packed = gz.finish().expect("in memory");
        assert_eq!(preview(&packed, true), body[..256]);
        assert_eq!(preview(b"not gzip", true), b"", "a body that does not inflate has no preview");
    }
}
