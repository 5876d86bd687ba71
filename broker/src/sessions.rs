//! Live clients of this node: who is connected, of which kind, for which consumer group or
//! topics, learnt from their Telemetry settings and Heartbeats (RocketMQ clients name
//! themselves in the `x-mq-client-id` header of every call). A client silent for
//! [`SESSION_EXPIRY`] is forgotten, and so is one that says it is terminating. Each node
//! knows its own clients; the admin service gathers them from every member. A client's open
//! Telemetry stream can carry commands from the broker to it (transaction check-back).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use raftmq_proto::rocketmq::v2 as pb;
use tokio::sync::mpsc;

/// A client not heard from for this long is gone (RocketMQ clients heartbeat every 10 to
/// 30 s and keep a Telemetry stream open).
pub const SESSION_EXPIRY: Duration = Duration::from_secs(120);
/// Most clients one node keeps; a new one beyond is not recorded (and says so in the log).
pub const MAX_SESSIONS: usize = 100_000;
/// Longest client id, group, topic or agent string kept.
pub const MAX_FIELD_BYTES: usize = 256;
/// Most topics kept for one producer.
pub const MAX_TOPICS_PER_CLIENT: usize = 256;
/// The header RocketMQ clients name themselves in.
pub const CLIENT_ID_HEADER: &str = "x-mq-client-id";
/// A push consumer without an open Telemetry stream still takes part in queue assignment
/// while heard from this recently (the official clients heartbeat every 10 s), unless its
/// stream closed after it was last heard from (it died with its connection).
pub const ASSIGNMENT_QUIET: Duration = Duration::from_secs(15);
/// Most commands waiting to go out on one client's Telemetry stream; more are not sent.
const OUTBOX_CAPACITY: usize = 256;

/// Commands from the broker waiting to go out on a client's Telemetry stream.
pub type Outbox = mpsc::Receiver<pb::TelemetryCommand>;

/// The sending side of an open Telemetry stream.
#[derive(Debug)]
struct Stream {
    /// Tells this stream from a later one of the same client.
    id: u64,
    tx: mpsc::Sender<pb::TelemetryCommand>,
}

/// What a client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClientKind {
    /// Sends messages.
    Producer,
    /// Push consumer (the client library receives for the application).
    PushConsumer,
    /// Simple consumer (receive, ack).
    SimpleConsumer,
    /// Pull consumer.
    PullConsumer,
    /// Did not say yet.
    Unknown,
}

impl ClientKind {
    fn of(t: i32) -> ClientKind {
        match pb::ClientType::try_from(t) {
            Ok(pb::ClientType::Producer) => ClientKind::Producer,
            Ok(pb::ClientType::PushConsumer) => ClientKind::PushConsumer,
            Ok(pb::ClientType::SimpleConsumer) => ClientKind::SimpleConsumer,
            Ok(pb::ClientType::PullConsumer) => ClientKind::PullConsumer,
            _ => ClientKind::Unknown,
        }
    }

    /// RocketMQ's name of the kind.
    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Producer => "PRODUCER",
            ClientKind::PushConsumer => "PUSH_CONSUMER",
            ClientKind::SimpleConsumer => "SIMPLE_CONSUMER",
            ClientKind::PullConsumer => "PULL_CONSUMER",
            ClientKind::Unknown => "UNKNOWN",
        }
    }
}

/// One live client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The id the client gave.
    pub client_id: String,
    /// Its kind.
    pub kind: ClientKind,
    /// Its consumer group (consumers).
    pub group: Option<String>,
    /// The topics it publishes to or subscribes to.
    pub topics: BTreeSet<String>,
    /// Where it connects from.
    pub address: Option<SocketAddr>,
    /// Its language and version.
    pub agent: String,
    /// When it was last heard from.
    pub last_seen: Instant,
    /// Whether its Telemetry stream is open.
    pub telemetry: bool,
    /// When its Telemetry stream last closed.
    pub closed_at: Option<Instant>,
}

impl Session {
    /// Whether this is a push consumer that takes part in its group's queue assignment now:
    /// its Telemetry stream is open, or it was heard from within [`ASSIGNMENT_QUIET`] and
    /// after its stream last closed.
    pub fn assignable(&self) -> bool {
        self.kind == ClientKind::PushConsumer
            && (self.telemetry
                || (self.last_seen.elapsed() < ASSIGNMENT_QUIET && self.closed_at.is_none_or(|c| self.last_seen > c)))
    }
}

/// This node's live clients.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, Session>>>,
    streams: Arc<Mutex<HashMap<String, Stream>>>,
    next_stream: Arc<std::sync::atomic::AtomicU64>,
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_FIELD_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The client id of a call, if it names one.
pub fn client_id(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    metadata.get(CLIENT_ID_HEADER).and_then(|v| v.to_str().ok()).filter(|s| !s.is_empty()).map(clip)
}

impl Sessions {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `client_id` was heard from, creating its session if new; `update`
    /// changes it. Expired sessions are dropped on the way.
    fn touch(&self, client_id: &str, address: Option<SocketAddr>, update: impl FnOnce(&mut Session)) {
        let now = Instant::now();
        let mut map = self.inner.lock();
        if !map.contains_key(client_id) {
            map.retain(|_, s| now.duration_since(s.last_seen) < SESSION_EXPIRY);
            if map.len() >= MAX_SESSIONS {
                tracing::warn!(
                    client_id,
                    limit = MAX_SESSIONS,
                    "too many live clients on this node; not recording a new one"
                );
                return;
            }
        }
        let session = map.entry(client_id.to_string()).or_insert_with(|| Session {
            client_id: client_id.to_string(),
            kind: ClientKind::Unknown,
            group: None,
            topics: BTreeSet::new(),
            address,
            agent: String::new(),
            last_seen: now,
            telemetry: false,
            closed_at: None,
        });
        session.last_seen = now;
        if address.is_some() {
            session.address = address;
        }
        update(session);
    }

    /// A client's Telemetry settings: its kind, group, topics and agent; its stream is open.
    pub fn settings(&self, client_id: &str, address: Option<SocketAddr>, settings: &pb::Settings) {
        self.touch(client_id, address, |s| {
            s.telemetry = true;
            if let Some(t) = settings.client_type {
                s.kind = ClientKind::of(t);
            }
            if let Some(ua) = &settings.user_agent {
                let language = pb::Language::try_from(ua.language).map_or("UNKNOWN", |l| l.as_str_name());
                s.agent = clip(&format!("{language} {}", ua.version));
            }
            let topics: Vec<&pb::Resource> = match &settings.pub_sub {
                Some(pb::settings::PubSub::Publishing(p)) => p.topics.iter().collect(),
                Some(pb::settings::PubSub::Subscription(sub)) => {
                    if let Some(g) = &sub.group {
                        s.group = Some(clip(&g.name));
                    }
                    sub.subscriptions.iter().filter_map(|e| e.topic.as_ref()).collect()
                }
                None => Vec::new(),
            };
            s.topics = topics.into_iter().take(MAX_TOPICS_PER_CLIENT).map(|t| clip(&t.name)).collect();
        });
    }

    /// A client's Heartbeat: its group and kind.
    pub fn heartbeat(&self, client_id: &str, address: Option<SocketAddr>, req: &pb::HeartbeatRequest) {
        self.touch(client_id, address, |s| {
            if let Some(g) = req.group.as_ref().filter(|g| !g.name.is_empty()) {
                s.group = Some(clip(&g.name));
            }
            let kind = ClientKind::of(req.client_type);
            if kind != ClientKind::Unknown {
                s.kind = kind;
            }
        });
    }

    /// Any other call from a client: it is alive.
    pub fn seen(&self, client_id: &str, address: Option<SocketAddr>) {
        self.touch(client_id, address, |_| {});
    }

    /// The client's Telemetry stream ended.
    pub fn telemetry_closed(&self, client_id: &str) {
        if let Some(s) = self.inner.lock().get_mut(client_id) {
            s.telemetry = false;
            s.closed_at = Some(Instant::now());
        }
    }

    /// The client says it is terminating.
    pub fn terminated(&self, client_id: &str) {
        self.inner.lock().remove(client_id);
    }

    /// A client's Telemetry stream opened: commands for it go to the outbox returned, until
    /// [`Self::close_stream`] with the id returned (a later stream of the same client
    /// replaces this one).
    pub fn open_stream(&self, client_id: &str) -> (u64, Outbox) {
        let id = self.next_stream.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        self.streams.lock().insert(client_id.to_string(), Stream { id, tx });
        (id, rx)
    }

    /// A client's Telemetry stream `id` ended (a later stream of the same client stays
    /// open).
    pub fn close_stream(&self, client_id: &str, id: u64) {
        let mut streams = self.streams.lock();
        if streams.get(client_id).is_some_and(|s| s.id == id) {
            streams.remove(client_id);
            drop(streams);
            self.telemetry_closed(client_id);
        }
    }

    /// Sends `command` over the Telemetry stream of a live producer publishing to `topic`
    /// (the one heard from most recently whose stream takes it). Returns its client id, or
    /// `None` when no such producer is connected to this node.
    pub fn send_to_producer(&self, topic: &str, command: pb::TelemetryCommand) -> Option<String> {
        let now = Instant::now();
        let mut producers: Vec<(Instant, String)> = self
            .inner
            .lock()
            .values()
            .filter(|s| {
                s.kind == ClientKind::Producer
                    && s.telemetry
                    && s.topics.contains(topic)
                    && now.duration_since(s.last_seen) < SESSION_EXPIRY
            })
            .map(|s| (s.last_seen, s.client_id.clone()))
            .collect();
        producers.sort_by_key(|p| std::cmp::Reverse(p.0));
        let streams = self.streams.lock();
        producers
            .into_iter()
            .find(|(_, id)| streams.get(id).is_some_and(|s| s.tx.try_send(command.clone()).is_ok()))
            .map(|(_, id)| id)
    }

    /// The live clients of a consumer group, or publishing to or subscribed to a topic of
    /// that name (`None`: every client), by client id.
    pub fn list(&self, group: Option<&str>) -> Vec<Session> {
        let now = Instant::now();
        let mut map = self.inner.lock();
        map.retain(|_, s| now.duration_since(s.last_seen) < SESSION_EXPIRY);
        let mut out: Vec<Session> = map
            .values()
            .filter(|s| group.is_none_or(|g| s.group.as_deref() == Some(g) || s.topics.contains(g)))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(group: &str, topic: &str) -> pb::Settings {
        pb::Settings {
            client_type: Some(pb::ClientType::SimpleConsumer as i32),
            pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
                group: Some(pb::Resource { name: group.into(), ..Default::default() }),
                subscriptions: vec![pb::SubscriptionEntry {
                    topic: Some(pb::Resource { name: topic.into(), ..Default::default() }),
                    expression: None,
                }],
                ..Default::default()
            })),
            user_agent: Some(pb::Ua {
                language: pb::Language::Python as i32,
                version: "5.1.2".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn push(group: &str, topic: &str) -> pb::Settings {
        pb::Settings { client_type: Some(pb::ClientType::PushConsumer as i32), ..subscription(group, topic) }
    }

    #[test]
    fn clients_are_listed_by_group_or_topic_and_leave_when_they_say_so() {
        let sessions = Sessions::new();
        sessions.settings("c1", None, &subscription("billing", "orders"));
        let producer = pb::Settings {
            client_type: Some(pb::ClientType::Producer as i32),
            pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing {
                topics: vec![pb::Resource { name: "orders".into(), ..Default::default() }],
                ..Default::default()
            })),
            ..Default::default()
        };
        sessions.settings("p1", None, &producer);
        sessions.heartbeat(
            "c2",
            None,
            &pb::HeartbeatRequest {
                group: Some(pb::Resource { name: "billing".into(), ..Default::default() }),
                client_type: pb::ClientType::PushConsumer as i32,
            },
        );
        let billing = sessions.list(Some("billing"));
        assert_eq!(billing.iter().map(|s| s.client_id.as_str()).collect::<Vec<_>>(), ["c1", "c2"]);
        assert_eq!(billing[0].kind, ClientKind::SimpleConsumer);
        assert_eq!(billing[0].agent, "PYTHON 5.1.2");
        assert!(billing[0].telemetry && !billing[1].telemetry);
        assert_eq!(billing[1].kind, ClientKind::PushConsumer);
        let orders: Vec<_> = sessions.list(Some("orders")).into_iter().map(|s| s.client_id).collect();
        assert_eq!(orders, ["c1", "p1"]);
        // Push consumers take part in queue assignment while their stream is open or they
        // were heard from since it closed; other kinds never do.
        assert!(!billing[0].assignable(), "a simple consumer is not assigned queues");
        assert!(billing[1].assignable(), "a push consumer heard from just now is");
        let (older, _outbox) = sessions.open_stream("c2");
        sessions.settings("c2", None, &push("billing", "orders"));
        assert!(sessions.list(Some("billing"))[1].telemetry);
        let (newer, _outbox2) = sessions.open_stream("c2");
        sessions.close_stream("c2", older);
        assert!(sessions.list(Some("billing"))[1].telemetry, "closing a replaced stream leaves the newer one open");
        sessions.close_stream("c2", newer);
        let c2 = &sessions.list(Some("billing"))[1];
        assert!(!c2.telemetry && !c2.assignable(), "a push consumer whose stream closed since it was heard from left");
        sessions.telemetry_closed("c1");
        assert!(!sessions.list(Some("billing"))[0].telemetry);
        sessions.terminated("c1");
        assert_eq!(sessions.list(None).len(), 2);
    }
}
