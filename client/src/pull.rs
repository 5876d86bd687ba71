//! The pull consumer: reads a topic's queues from offsets it keeps itself. This is
//! RocketMQ's broadcasting consumption: every member of a consumer group gets every
//! message, since each keeps its own position and the broker keeps none for it (RocketMQ
//! keeps a broadcasting consumer's offsets on the client too).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::select_all;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::pull_message_response::Content;

use crate::conn::{ClientOptions, Conn, Retry};
use crate::consumer::{FilterExpression, MAX_LONG_POLL, MAX_RECEIVE, duration, read_stream, resource, subscription};
use crate::message::pulled;
use crate::route::{RouteCache, RouteQueue, TopicRoute};
use crate::{Error, ReceivedMessage};

/// Where a queue this consumer has no offset for starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// Its first message still held (RocketMQ's `CONSUME_FROM_FIRST_OFFSET`).
    Earliest,
    /// Its end: only messages sent from now on (`CONSUME_FROM_LAST_OFFSET`).
    Latest,
}

/// A pull consumer of one topic, taking the messages its filter passes; its offsets live
/// in this value only.
#[derive(Debug)]
pub struct PullConsumer {
    conn: Conn,
    routes: RouteCache,
    group: String,
    topic: String,
    filter: FilterExpression,
    start: StartFrom,
    /// The next offset to read, per queue id.
    offsets: Mutex<BTreeMap<u32, u64>>,
}

impl PullConsumer {
    /// A pull consumer for the endpoints `host:port;host:port` with default options.
    pub fn new(
        endpoints: &str,
        group: &str,
        topic: &str,
        filter: impl Into<FilterExpression>,
        start: StartFrom,
    ) -> Result<Self, Error> {
        Self::with_options(endpoints, group, topic, filter, start, ClientOptions::default())
    }

    /// A pull consumer with these options.
    pub fn with_options(
        endpoints: &str,
        group: &str,
        topic: &str,
        filter: impl Into<FilterExpression>,
        start: StartFrom,
        options: ClientOptions,
    ) -> Result<Self, Error> {
        let filter = subscription(group, topic, filter.into())?;
        Ok(Self {
            conn: Conn::new(endpoints, options)?,
            routes: RouteCache::default(),
            group: group.to_string(),
            topic: topic.to_string(),
            filter,
            start,
            offsets: Mutex::new(BTreeMap::new()),
        })
    }

    /// The next offset this consumer reads from each queue it has read.
    pub fn offsets(&self) -> BTreeMap<u32, u64> {
        self.offsets.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `queue` read from `offset` next.
    pub fn seek(&self, queue: u32, offset: u64) {
        self.offsets.lock().unwrap_or_else(|e| e.into_inner()).insert(queue, offset);
    }

    /// Reads up to `max` messages per queue from every queue of the topic at its offset,
    /// and moves the offsets past them. When none has a message, waits up to `long_poll`
    /// for the first queue that gets one.
    pub async fn pull(&self, max: u32, long_poll: Duration) -> Result<Vec<ReceivedMessage>, Error> {
        if max == 0 || max > MAX_RECEIVE {
            return Err(Error::InvalidArgument(format!("a pull asks for 1..={MAX_RECEIVE} messages, not {max}")));
        }
        if long_poll > MAX_LONG_POLL {
            return Err(Error::InvalidArgument(format!("long polling is limited to {MAX_LONG_POLL:?}")));
        }
        let mut retry = Retry::new("pull", &self.conn.options, long_poll);
        loop {
            match self.try_pull(max, long_poll, &retry).await {
                Ok(messages) => return Ok(messages),
                Err(e) => {
                    self.routes.forget(&self.topic);
                    retry.failed(e).await?;
                }
            }
        }
    }

    async fn try_pull(&self, max: u32, long_poll: Duration, retry: &Retry) -> Result<Vec<ReceivedMessage>, Error> {
        let route = self.routes.route(&self.conn, &self.topic, retry.attempt(), retry.timeout(None)).await?;
        let mut out = Vec::new();
        for queue in route.readable_queues() {
            let offset = self.offset_of(&route, queue, retry).await?;
            let (messages, next) = self.pull_queue(queue, offset, max, Duration::ZERO, retry).await?;
            self.seek(queue.id, next);
            out.extend(messages);
        }
        if !out.is_empty() || long_poll.is_zero() {
            return Ok(out);
        }
        // Nothing anywhere: wait on every queue at once and take the first that answers
        // with messages (the others are dropped unread, their offsets unmoved).
        let mut waits = Vec::new();
        for queue in route.readable_queues() {
            let offset = self.offset_of(&route, queue, retry).await?;
            waits
                .push(Box::pin(async move { (queue.id, self.pull_queue(queue, offset, max, long_poll, retry).await) }));
        }
        while !waits.is_empty() {
            let ((queue, result), _, rest) = select_all(waits).await;
            let (messages, next) = result?;
            self.seek(queue, next);
            if !messages.is_empty() {
                return Ok(messages);
            }
            waits = rest;
        }
        Ok(Vec::new())
    }

    /// The offset to read `queue` from: the one kept, or where [`StartFrom`] says.
    async fn offset_of(&self, route: &TopicRoute, queue: &RouteQueue, retry: &Retry) -> Result<u64, Error> {
        if let Some(&o) = self.offsets.lock().unwrap_or_else(|e| e.into_inner()).get(&queue.id) {
            return Ok(o);
        }
        const OP: &str = "query offset";
        let policy = match self.start {
            StartFrom::Earliest => pb::QueryOffsetPolicy::Beginning,
            StartFrom::Latest => pb::QueryOffsetPolicy::End,
        };
        let endpoint = queue_endpoint(route, queue, retry);
        let body = pb::QueryOffsetRequest {
            message_queue: Some(self.message_queue(queue)),
            query_offset_policy: policy as i32,
            timestamp: None,
        };
        let timeout = retry.timeout(None);
        let mut client = self.conn.messaging(&endpoint)?;
        let resp =
            self.conn.call(OP, &endpoint, timeout, client.query_offset(self.conn.request(body, timeout))).await?;
        Error::unless_ok(OP, &endpoint, resp.status.as_ref())?;
        let offset = u64::try_from(resp.offset)
            .map_err(|_| Error::protocol(OP, &endpoint, format!("offset {}", resp.offset)))?;
        self.seek(queue.id, offset);
        Ok(offset)
    }

    fn message_queue(&self, queue: &RouteQueue) -> pb::MessageQueue {
        pb::MessageQueue {
            topic: resource(&self.topic),
            id: i32::try_from(queue.id).unwrap_or_default(),
            permission: queue.permission as i32,
            broker: Some(pb::Broker { name: queue.broker.clone(), id: 0, endpoints: None }),
            accept_message_types: queue.message_types.iter().map(|t| *t as i32).collect(),
        }
    }

    /// One `PullMessage` of `queue` from `offset`: the messages and the next offset.
    async fn pull_queue(
        &self,
        queue: &RouteQueue,
        offset: u64,
        max: u32,
        wait: Duration,
        retry: &Retry,
    ) -> Result<(Vec<ReceivedMessage>, u64), Error> {
        const OP: &str = "pull";
        let route = self.routes.route(&self.conn, &self.topic, retry.attempt(), retry.timeout(None)).await?;
        let endpoint = queue_endpoint(&route, queue, retry);
        let body = pb::PullMessageRequest {
            group: resource(&self.group),
            message_queue: Some(self.message_queue(queue)),
            offset: i64::try_from(offset).unwrap_or(i64::MAX),
            batch_size: i32::try_from(max).unwrap_or(i32::MAX),
            filter_expression: Some(self.filter.to_proto()),
            long_polling_timeout: Some(duration(wait)),
        };
        let timeout = wait + retry.timeout(None);
        let mut client = self.conn.messaging(&endpoint)?;
        let read = async {
            let stream = client.pull_message(self.conn.request(body, timeout)).await?.into_inner();
            read_stream(stream, max).await
        };
        let items = self.conn.call(OP, &endpoint, timeout, read).await?;
        let (mut messages, mut status, mut next) = (Vec::new(), None, None);
        for item in items {
            match item.content {
                Some(Content::Status(s)) => status = Some(s),
                Some(Content::Message(m)) => messages.push(pulled(OP, &endpoint, &queue.broker, m)?),
                Some(Content::NextOffset(n)) => next = Some(n),
                None => {}
            }
        }
        match status.as_ref().map(|s| pb::Code::try_from(s.code)) {
            Some(Ok(pb::Code::Ok)) => {}
            Some(Ok(pb::Code::MessageNotFound)) if messages.is_empty() => {}
            _ => return Err(Error::broker(OP, &endpoint, status.as_ref())),
        }
        let next = match next.map(u64::try_from) {
            Some(Ok(n)) if n >= offset => n,
            Some(_) => return Err(Error::protocol(OP, &endpoint, format!("next offset {next:?} before {offset}"))),
            // No next offset: past the messages read.
            None => messages.iter().map(|m| m.offset + 1).max().unwrap_or(offset),
        };
        Ok((messages, next))
    }
}

/// An endpoint of the broker group serving `queue` (its leader first, another on retries),
/// or of the route when the queue names none.
fn queue_endpoint(route: &TopicRoute, queue: &RouteQueue, retry: &Retry) -> String {
    match queue.endpoints.len() {
        0 => crate::route::target(route, &[], retry.attempt()),
        n => queue.endpoints[retry.attempt() as usize % n].clone(),
    }
}
