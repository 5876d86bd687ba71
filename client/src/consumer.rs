//! The simple consumer: receives (pops) messages for a consumer group with long polling,
//! acks them and changes how long they stay invisible. A topic's queues may be in several
//! broker groups: each receive asks one group, the next receive the next group; an ack or
//! an invisibility change goes to the group that delivered the message. Calls go to the
//! group's leader; on a transport failure or a leader change they are retried elsewhere.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::receive_message_response::Content;

use crate::conn::{ClientOptions, Conn, Retry};
use crate::message::incoming;
use crate::route::{RouteCache, RouteQueue, TopicRoute, broker_target, queue_target};
use crate::{Error, ReceivedMessage};

/// Most messages one receive asks for (the broker may cap it lower).
pub const MAX_RECEIVE: u32 = 1024;
/// Longest long-polling wait a receive may ask for.
pub const MAX_LONG_POLL: Duration = Duration::from_secs(60);

/// A consumer of one topic for one consumer group, taking the messages its filter passes.
#[derive(Debug)]
pub struct SimpleConsumer {
    conn: Conn,
    routes: RouteCache,
    group: String,
    topic: String,
    filter: FilterExpression,
    /// Turns of receives: the next receive asks the route's broker group this names.
    turn: AtomicUsize,
}

/// Which messages of its topic a consumer takes: a tag expression (`*`, `TagA || TagB`),
/// judged from the tag alone, or a SQL92 condition over the message's properties (its tag
/// as `TAGS`), e.g. `region = 'eu' AND amount > 100`, with RocketMQ's semantics. A plain
/// string is a tag expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterExpression {
    /// A tag expression.
    Tag(String),
    /// A SQL92 condition.
    Sql(String),
}

impl FilterExpression {
    /// A SQL92 condition.
    pub fn sql(condition: impl Into<String>) -> Self {
        FilterExpression::Sql(condition.into())
    }

    /// The expression as the protocol carries it.
    pub(crate) fn to_proto(&self) -> pb::FilterExpression {
        let (kind, text) = match self {
            FilterExpression::Tag(t) => (pb::FilterType::Tag, t),
            FilterExpression::Sql(s) => (pb::FilterType::Sql, s),
        };
        pb::FilterExpression { r#type: kind as i32, expression: text.clone() }
    }
}

impl From<&str> for FilterExpression {
    fn from(tags: &str) -> Self {
        FilterExpression::Tag(tags.to_string())
    }
}

impl From<String> for FilterExpression {
    fn from(tags: String) -> Self {
        FilterExpression::Tag(tags)
    }
}

/// Checks a consumer's group, topic and filter (an empty tag expression is `*`; a SQL92
/// condition that does not parse is refused here, saying where, before any call).
pub(crate) fn subscription(group: &str, topic: &str, filter: FilterExpression) -> Result<FilterExpression, Error> {
    for (what, v) in [("group", group), ("topic", topic)] {
        if v.trim().is_empty() {
            return Err(Error::InvalidArgument(format!("the {what} is empty")));
        }
    }
    match filter {
        FilterExpression::Tag(t) => {
            Ok(FilterExpression::Tag(if t.trim().is_empty() { "*" } else { t.trim() }.to_string()))
        }
        FilterExpression::Sql(s) => match raftmq_machine::sql::SqlFilter::parse(&s) {
            Ok(_) => Ok(FilterExpression::Sql(s)),
            Err(e) => Err(Error::InvalidArgument(format!("SQL92 filter {s:?}: {e}"))),
        },
    }
}

/// The items of a server stream answering a request for `max` messages (a status, maybe a
/// time, the messages): a broker sending many more is cut off.
pub(crate) async fn read_stream<T>(
    mut stream: tonic::Streaming<T>,
    max: u32,
) -> Result<tonic::Response<Vec<T>>, tonic::Status> {
    let mut items = Vec::new();
    while let Some(item) = stream.message().await? {
        if items.len() > max as usize + 2 {
            break;
        }
        items.push(item);
    }
    Ok(tonic::Response::new(items))
}

pub(crate) fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource { resource_namespace: String::new(), name: name.to_string() })
}

pub(crate) fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// One `ReceiveMessage` call to `endpoint` with deadline `timeout`, for at most `max`
/// messages: the messages (from the broker group `body`'s queue names), none when the
/// broker found none, or the broker's refusal.
pub(crate) async fn receive_call(
    conn: &Conn,
    endpoint: &str,
    body: pb::ReceiveMessageRequest,
    timeout: Duration,
    max: u32,
) -> Result<Vec<ReceivedMessage>, Error> {
    const OP: &str = "receive";
    let broker =
        body.message_queue.as_ref().and_then(|q| q.broker.as_ref()).map(|b| b.name.clone()).unwrap_or_default();
    let mut client = conn.messaging(endpoint)?;
    let read = async {
        let stream = client.receive_message(conn.request(body, timeout)).await?.into_inner();
        read_stream(stream, max).await
    };
    let items = conn.call(OP, endpoint, timeout, read).await?;
    let mut messages = Vec::new();
    let mut status = None;
    for item in items {
        match item.content {
            Some(Content::Status(s)) => status = Some(s),
            Some(Content::Message(m)) => messages.push(incoming(OP, endpoint, &broker, m)?),
            Some(Content::DeliveryTimestamp(_)) | None => {}
        }
    }
    match status.as_ref().map(|s| pb::Code::try_from(s.code)) {
        Some(Ok(pb::Code::Ok)) => {}
        Some(Ok(pb::Code::MessageNotFound)) if messages.is_empty() => return Ok(Vec::new()),
        _ => return Err(Error::broker(OP, endpoint, status.as_ref())),
    }
    if messages.len() > max as usize {
        return Err(Error::protocol(OP, endpoint, format!("{} messages for a receive of {max}", messages.len())));
    }
    Ok(messages)
}

impl SimpleConsumer {
    /// A consumer for the endpoints `host:port;host:port` with default options.
    pub fn new(endpoints: &str, group: &str, topic: &str, filter: impl Into<FilterExpression>) -> Result<Self, Error> {
        Self::with_options(endpoints, group, topic, filter, ClientOptions::default())
    }

    /// A consumer with these options.
    pub fn with_options(
        endpoints: &str,
        group: &str,
        topic: &str,
        filter: impl Into<FilterExpression>,
        options: ClientOptions,
    ) -> Result<Self, Error> {
        let filter = subscription(group, topic, filter.into())?;
        Ok(Self {
            conn: Conn::new(endpoints, options)?,
            routes: RouteCache::default(),
            group: group.to_string(),
            topic: topic.to_string(),
            filter,
            turn: AtomicUsize::new(0),
        })
    }

    /// Takes up to `max` messages, which stay invisible to the group for
    /// `invisible_duration` unless acked. Waits up to `long_poll_timeout` for messages to
    /// arrive; none by then is an empty answer, not an error. When the topic's queues are in
    /// several broker groups, one receive asks one of them and the next receive the next.
    pub async fn receive(
        &self,
        max: u32,
        invisible_duration: Duration,
        long_poll_timeout: Duration,
    ) -> Result<Vec<ReceivedMessage>, Error> {
        if max == 0 || max > MAX_RECEIVE {
            return Err(Error::InvalidArgument(format!("receive asks for 1..={MAX_RECEIVE} messages, not {max}")));
        }
        if long_poll_timeout > MAX_LONG_POLL {
            return Err(Error::InvalidArgument(format!("long polling is limited to {MAX_LONG_POLL:?}")));
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let mut retry = Retry::new("receive", &self.conn.options, long_poll_timeout);
        loop {
            match self.try_receive(max, invisible_duration, long_poll_timeout, turn, &retry).await {
                Ok(messages) => return Ok(messages),
                Err(e) => {
                    self.routes.forget(&self.topic);
                    retry.failed(e).await?;
                }
            }
        }
    }

    async fn try_receive(
        &self,
        max: u32,
        invisible: Duration,
        long_poll: Duration,
        turn: usize,
        retry: &Retry,
    ) -> Result<Vec<ReceivedMessage>, Error> {
        const OP: &str = "receive";
        let route = self.routes.route(&self.conn, &self.topic, retry.attempt(), retry.timeout(None)).await?;
        let queue = receive_queue(&route, turn)
            .ok_or_else(|| Error::protocol(OP, &self.conn.seed(retry.attempt()), "the route has no queue"))?;
        let endpoint = queue_target(&route, queue, self.conn.seeds(), retry.attempt());
        let body = pb::ReceiveMessageRequest {
            group: resource(&self.group),
            message_queue: Some(pb::MessageQueue {
                topic: resource(&self.topic),
                id: i32::try_from(queue.id).unwrap_or_default(),
                permission: queue.permission as i32,
                broker: Some(pb::Broker { name: queue.broker.clone(), id: 0, endpoints: None }),
                accept_message_types: queue.message_types.iter().map(|t| *t as i32).collect(),
            }),
            filter_expression: Some(self.filter.to_proto()),
            batch_size: i32::try_from(max).unwrap_or(i32::MAX),
            invisible_duration: Some(duration(invisible)),
            auto_renew: false,
            long_polling_timeout: Some(duration(long_poll)),
            attempt_id: None,
        };
        // The broker answers before the deadline it is given; leave it room past the poll.
        receive_call(&self.conn, &endpoint, body, long_poll + retry.timeout(None), max).await
    }

    /// Acknowledges a received message: the group will not see it again.
    pub async fn ack(&self, message: &ReceivedMessage) -> Result<(), Error> {
        const OP: &str = "ack";
        let mut retry = Retry::new(OP, &self.conn.options, Duration::ZERO);
        loop {
            let attempt = async {
                let route = self.routes.route(&self.conn, &self.topic, retry.attempt(), retry.timeout(None)).await?;
                let endpoint = broker_target(&route, &message.broker, self.conn.seeds(), retry.attempt());
                let body = pb::AckMessageRequest {
                    group: resource(&self.group),
                    topic: resource(&message.topic),
                    entries: vec![pb::AckMessageEntry {
                        message_id: message.message_id.clone(),
                        receipt_handle: message.receipt_handle.clone(),
                        lite_topic: None,
                    }],
                };
                let timeout = retry.timeout(None);
                let mut client = self.conn.messaging(&endpoint)?;
                let resp = self
                    .conn
                    .call(OP, &endpoint, timeout, client.ack_message(self.conn.request(body, timeout)))
                    .await?;
                Error::unless_ok(OP, &endpoint, resp.status.as_ref())
            };
            match attempt.await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.routes.forget(&self.topic);
                    retry.failed(e).await?;
                }
            }
        }
    }

    /// Makes a received message invisible for `invisible_duration` from now; its receipt
    /// handle changes (the old one no longer works), so `message` is updated.
    pub async fn change_invisible_duration(
        &self,
        message: &mut ReceivedMessage,
        invisible_duration: Duration,
    ) -> Result<(), Error> {
        const OP: &str = "change invisible duration";
        let mut retry = Retry::new(OP, &self.conn.options, Duration::ZERO);
        loop {
            let attempt = async {
                let route = self.routes.route(&self.conn, &self.topic, retry.attempt(), retry.timeout(None)).await?;
                let endpoint = broker_target(&route, &message.broker, self.conn.seeds(), retry.attempt());
                let body = pb::ChangeInvisibleDurationRequest {
                    group: resource(&self.group),
                    topic: resource(&message.topic),
                    receipt_handle: message.receipt_handle.clone(),
                    invisible_duration: Some(duration(invisible_duration)),
                    message_id: message.message_id.clone(),
                    lite_topic: None,
                    suspend: None,
                };
                let timeout = retry.timeout(None);
                let mut client = self.conn.messaging(&endpoint)?;
                let call = client.change_invisible_duration(self.conn.request(body, timeout));
                let resp = self.conn.call(OP, &endpoint, timeout, call).await?;
                match resp.status.as_ref().map(|s| s.code) {
                    Some(c) if c == pb::Code::Ok as i32 => Ok(resp.receipt_handle),
                    _ => Err(Error::broker(OP, &endpoint, resp.status.as_ref())),
                }
            };
            match attempt.await {
                Ok(handle) => {
                    message.receipt_handle = handle;
                    return Ok(());
                }
                Err(e) => {
                    self.routes.forget(&self.topic);
                    retry.failed(e).await?;
                }
            }
        }
    }
}

/// The queue receive turn `turn` names: the first queue (a readable one if any) of the
/// route's broker group `turn` names, the groups taken in turn.
fn receive_queue(route: &TopicRoute, turn: usize) -> Option<&RouteQueue> {
    let readable = route.readable_queues();
    let queues: Vec<&RouteQueue> = if readable.is_empty() { route.queues.iter().collect() } else { readable };
    let mut brokers: Vec<&str> = Vec::new();
    for q in &queues {
        if !brokers.contains(&q.broker.as_str()) {
            brokers.push(&q.broker);
        }
    }
    let broker = *brokers.get(turn % brokers.len().max(1))?;
    queues.into_iter().find(|q| q.broker == broker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::two_groups;

    #[test]
    fn receives_take_the_broker_groups_in_turn() {
        let route = two_groups();
        let seeds = vec!["b:1".to_string()];
        let asked: Vec<(String, u32, String)> = (0..4)
            .map(|turn| {
                let q = receive_queue(&route, turn).expect("a queue");
                (q.broker.clone(), q.id, queue_target(&route, q, &seeds, 0))
            })
            .collect();
        let want = |b: &str, e: &str| (b.to_string(), 0, e.to_string());
        assert_eq!(
            asked,
            [want("broker-a", "a:1"), want("broker-b", "b:2"), want("broker-a", "a:1"), want("broker-b", "b:2")]
        );
        // One group: always its first queue, as before.
        let mut one = route.clone();
        one.queues.retain(|q| q.broker == "broker-b");
        assert!((0..3).all(|t| receive_queue(&one, t) == one.queues.first()));
        assert!(receive_queue(&TopicRoute { topic: "t".into(), queues: vec![] }, 0).is_none());
    }
}
