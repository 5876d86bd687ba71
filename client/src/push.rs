//! The push consumer: RocketMQ's `PushConsumer`. It keeps a Telemetry stream open so the
//! broker counts it among the group's live push consumers, heartbeats, asks which of the
//! topic's queues it reads (`QueryAssignment`), and runs one task per assigned queue that
//! receives messages of that queue with long polling and hands them, in order, to a
//! listener. A message the listener consumes is acked; one it fails comes back later after
//! the broker's consumption backoff (for a FIFO group it is retried in place, then sent to
//! the group's dead-letter queue). A topic's queues may be in several broker groups: a
//! queue is known by its group and id, its task receives from its group, and a message is
//! acked where it was received.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::conn::{ClientOptions, Conn, Retry};
use crate::consumer::{FilterExpression, duration, receive_call, resource, subscription};
use crate::route::{RouteCache, TopicRoute, broker_target, endpoint_strings, target};
use crate::{Error, ReceivedMessage};

/// How often a push consumer heartbeats.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Messages one receive asks for.
const BATCH_SIZE: u32 = 32;
/// How long one receive waits for messages.
const LONG_POLL: Duration = Duration::from_secs(20);
/// First pause after a failed receive or a closed Telemetry stream; it doubles up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause after failures.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// RocketMQ's consumption backoff, used until the broker sends its own.
const DEFAULT_BACKOFF_SECS: [u64; 16] =
    [10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200];

/// What a push consumer's listener made of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeResult {
    /// Consumed: the message is acked.
    Success,
    /// Not consumed: the message is delivered again after the consumption backoff the
    /// broker's settings give for its delivery attempt; for a FIFO group it is retried in
    /// place after that backoff, up to the group's max attempts, then dead-lettered.
    Failure,
}

/// Options of a [`PushConsumer`].
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Timeouts and retries of every call.
    pub client: ClientOptions,
    /// How often the consumer asks which queues it reads (default 5 s).
    pub assignment_interval: Duration,
    /// How long received messages stay invisible to the group while the listener has them
    /// (default 30 s).
    pub invisible_duration: Duration,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            client: ClientOptions::default(),
            assignment_interval: Duration::from_secs(5),
            invisible_duration: Duration::from_secs(30),
        }
    }
}

type Listener = Arc<dyn Fn(ReceivedMessage) -> BoxFuture<'static, ConsumeResult> + Send + Sync>;

/// The consumption backoff the broker's settings give.
#[derive(Debug, Clone)]
enum Backoff {
    /// One delay per delivery attempt; the last repeats.
    Customized(Vec<Duration>),
    /// `initial * multiplier^(attempt-1)`, at most `max`.
    Exponential { initial: Duration, max: Duration, multiplier: f32 },
}

impl Backoff {
    /// The delay after delivery attempt `attempt` (1 for the first) failed.
    fn delay(&self, attempt: u32) -> Duration {
        let index = attempt.saturating_sub(1);
        match self {
            Backoff::Customized(list) => {
                list.get(index as usize).or(list.last()).copied().unwrap_or(Duration::from_secs(10))
            }
            Backoff::Exponential { initial, max, multiplier } => {
                let factor = f64::from(multiplier.max(1.0)).powi(i32::try_from(index).unwrap_or(i32::MAX));
                let secs = (initial.as_secs_f64() * factor).min(max.as_secs_f64());
                Duration::try_from_secs_f64(secs).unwrap_or(*max)
            }
        }
    }
}

/// The consumption settings the broker answers the Telemetry stream with.
#[derive(Debug, Clone)]
struct ConsumeSettings {
    backoff: Backoff,
    max_attempts: u32,
    fifo: bool,
}

impl Default for ConsumeSettings {
    fn default() -> Self {
        Self {
            backoff: Backoff::Customized(DEFAULT_BACKOFF_SECS.iter().map(|s| Duration::from_secs(*s)).collect()),
            max_attempts: 16,
            fifo: false,
        }
    }
}

fn to_std(d: &prost_types::Duration) -> Duration {
    Duration::from_secs(u64::try_from(d.seconds).unwrap_or(0))
        + Duration::from_nanos(u64::try_from(d.nanos).unwrap_or(0))
}

impl ConsumeSettings {
    fn from_proto(s: &pb::Settings) -> Self {
        let mut out = ConsumeSettings::default();
        if let Some(policy) = &s.backoff_policy {
            if policy.max_attempts > 0 {
                out.max_attempts = u32::try_from(policy.max_attempts).unwrap_or(out.max_attempts);
            }
            match &policy.strategy {
                Some(pb::retry_policy::Strategy::CustomizedBackoff(c)) if !c.next.is_empty() => {
                    out.backoff = Backoff::Customized(c.next.iter().map(to_std).collect());
                }
                Some(pb::retry_policy::Strategy::ExponentialBackoff(e)) => {
                    let initial = e.initial.as_ref().map_or(Duration::from_secs(1), to_std);
                    let max = e.max.as_ref().map_or(Duration::from_secs(60), to_std);
                    out.backoff = Backoff::Exponential { initial, max, multiplier: e.multiplier };
                }
                _ => {}
            }
        }
        if let Some(pb::settings::PubSub::Subscription(sub)) = &s.pub_sub {
            out.fifo = sub.fifo.unwrap_or(false);
        }
        out
    }
}

/// A running per-queue task.
#[derive(Debug)]
struct QueueTask {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// What the consumer's tasks share.
struct Inner {
    conn: Conn,
    routes: RouteCache,
    group: String,
    topic: String,
    filter: FilterExpression,
    options: PushOptions,
    settings: Mutex<ConsumeSettings>,
    listener: Listener,
    /// The running queue tasks, by broker group and queue id.
    queues: Mutex<BTreeMap<(String, u32), QueueTask>>,
    shutdown: watch::Receiver<bool>,
}

/// A push consumer of one topic for one consumer group: it reads the queues the broker
/// assigns it and calls its listener for each message, in queue order.
pub struct PushConsumer {
    inner: Arc<Inner>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for PushConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConsumer")
            .field("group", &self.inner.group)
            .field("topic", &self.inner.topic)
            .field("filter", &self.inner.filter)
            .field("assigned", &self.assigned())
            .finish_non_exhaustive()
    }
}

/// Waits until `shutdown` says stop (or its sender is gone).
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Sleeps `d`; false when `stop` said stop first.
async fn pause(d: Duration, stop: &watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => !*stop.borrow(),
        () = stopped(stop.clone()) => false,
    }
}

impl PushConsumer {
    /// Starts consuming `topic` for `group` at the endpoints `host:port;host:port` with
    /// default options; `listener` is called for each message.
    pub async fn start<F, Fut>(
        endpoints: &str,
        group: &str,
        topic: &str,
        filter: impl Into<FilterExpression>,
        listener: F,
    ) -> Result<PushConsumer, Error>
    where
        F: Fn(ReceivedMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ConsumeResult> + Send + 'static,
    {
        Self::start_with(endpoints, group, topic, filter, listener, PushOptions::default()).await
    }

    /// Starts consuming with these options. Fails when the broker cannot be reached (within
    /// the retry deadline) to open the consumer's Telemetry stream.
    pub async fn start_with<F, Fut>(
        endpoints: &str,
        group: &str,
        topic: &str,
        filter: impl Into<FilterExpression>,
        listener: F,
        options: PushOptions,
    ) -> Result<PushConsumer, Error>
    where
        F: Fn(ReceivedMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ConsumeResult> + Send + 'static,
    {
        let filter = subscription(group, topic, filter.into())?;
        if options.assignment_interval.is_zero() {
            return Err(Error::InvalidArgument("the assignment interval is zero".into()));
        }
        let conn = Conn::new(endpoints, options.client.clone())?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let listener: Listener = Arc::new(move |m| Box::pin(listener(m)));
        let inner = Arc::new(Inner {
            conn,
            routes: RouteCache::default(),
            group: group.to_string(),
            topic: topic.to_string(),
            filter,
            options,
            settings: Mutex::new(ConsumeSettings::default()),
            listener,
            queues: Mutex::new(BTreeMap::new()),
            shutdown: shutdown_rx,
        });
        let telemetry = inner.open_telemetry_retrying().await?;
        let mut tasks = vec![tokio::spawn(inner.clone().telemetry(telemetry))];
        tasks.push(tokio::spawn(inner.clone().heartbeats()));
        tasks.push(tokio::spawn(inner.clone().assignments()));
        Ok(PushConsumer { inner, shutdown: shutdown_tx, tasks: Mutex::new(tasks) })
    }

    /// The queue ids currently assigned (for tests and monitoring), by broker group, then
    /// id; ids repeat when the topic's queues are in several broker groups (see
    /// [`Self::assigned_queues`]).
    pub fn assigned(&self) -> Vec<u32> {
        self.inner.queues.lock().unwrap_or_else(|e| e.into_inner()).keys().map(|(_, id)| *id).collect()
    }

    /// The queues currently assigned, as (broker group, queue id), in that order.
    pub fn assigned_queues(&self) -> Vec<(String, u32)> {
        self.inner.queues.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }

    /// Stops: every task ends (a queue's after the message it is consuming), then the
    /// broker is told the consumer terminates, so its queues go to the group's others.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            if let Err(e) = t.await {
                tracing::warn!(error = %e, "a push consumer task failed");
            }
        }
        if let Err(e) = self.inner.notify_termination().await {
            tracing::warn!(error = %e, group = %self.inner.group, "could not tell the broker the push consumer terminates");
        }
    }
}

impl Drop for PushConsumer {
    fn drop(&mut self) {
        // Dropped without `shutdown`: the tasks still end.
        self.shutdown.send_replace(true);
    }
}

impl Inner {
    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn consume_settings(&self) -> ConsumeSettings {
        self.settings.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs a unary call, retried at other endpoints on retryable failures: at broker group
    /// `broker`'s endpoints (the group holding a message), or the route's.
    async fn unary<T, F, Fut>(&self, op: &'static str, broker: Option<&str>, mut call: F) -> Result<T, Error>
    where
        F: FnMut(MessagingServiceClient<Channel>, String, Duration) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut retry = Retry::new(op, &self.conn.options, Duration::ZERO);
        loop {
            let attempt = async {
                let route = self.routes.route(&self.conn, &self.topic, retry.attempt(), retry.timeout(None)).await?;
                let endpoint = match broker {
                    Some(b) => broker_target(&route, b, self.conn.seeds(), retry.attempt()),
                    None => target(&route, self.conn.seeds(), retry.attempt()),
                };
                let client = self.conn.messaging(&endpoint)?;
                call(client, endpoint, retry.timeout(None)).await
            };
            match attempt.await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    self.routes.forget(&self.topic);
                    retry.failed(e).await?;
                }
            }
        }
    }

    fn settings_command(&self) -> pb::TelemetryCommand {
        let settings = pb::Settings {
            client_type: Some(pb::ClientType::PushConsumer as i32),
            request_timeout: Some(duration(self.conn.options.request_timeout)),
            pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
                group: resource(&self.group),
                subscriptions: vec![pb::SubscriptionEntry {
                    topic: resource(&self.topic),
                    expression: Some(self.filter.to_proto()),
                }],
                ..Default::default()
            })),
            ..Default::default()
        };
        pb::TelemetryCommand { status: None, command: Some(pb::telemetry_command::Command::Settings(settings)) }
    }

    /// Opens a Telemetry stream at `endpoint`, sends the settings and reads the broker's.
    /// The returned sender keeps the stream's request side open.
    async fn open_telemetry(
        &self,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<(futures::channel::mpsc::Sender<pb::TelemetryCommand>, tonic::Streaming<pb::TelemetryCommand>), Error>
    {
        const OP: &str = "telemetry";
        let (mut tx, rx) = futures::channel::mpsc::channel::<pb::TelemetryCommand>(4);
        tx.try_send(self.settings_command()).map_err(|e| Error::protocol(OP, endpoint, e.to_string()))?;
        let mut client = self.conn.messaging(endpoint)?;
        let mut request = self.conn.request(rx, timeout);
        // The stream lives as long as the consumer: no deadline on it.
        request.metadata_mut().remove("grpc-timeout");
        let open = async {
            let mut answers = client.telemetry(request).await?.into_inner();
            let first = answers.message().await?;
            Ok(tonic::Response::new((answers, first)))
        };
        let (answers, first) = self.conn.call(OP, endpoint, timeout, open).await?;
        match first.and_then(|c| c.command) {
            Some(pb::telemetry_command::Command::Settings(s)) => {
                *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = ConsumeSettings::from_proto(&s);
                Ok((tx, answers))
            }
            other => Err(Error::protocol(OP, endpoint, format!("the first answer is not settings: {other:?}"))),
        }
    }

    async fn open_telemetry_retrying(
        &self,
    ) -> Result<(futures::channel::mpsc::Sender<pb::TelemetryCommand>, tonic::Streaming<pb::TelemetryCommand>), Error>
    {
        let mut retry = Retry::new("telemetry", &self.conn.options, Duration::ZERO);
        loop {
            let attempt = async {
                let route = self.routes.route(&self.conn, &self.topic, retry.attempt(), retry.timeout(None)).await?;
                let endpoint = target(&route, self.conn.seeds(), retry.attempt());
                self.open_telemetry(&endpoint, retry.timeout(None)).await
            };
            match attempt.await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    self.routes.forget(&self.topic);
                    retry.failed(e).await?;
                }
            }
        }
    }

    /// Keeps the Telemetry stream open while the consumer runs, reopening it when it ends.
    async fn telemetry(
        self: Arc<Self>,
        open: (futures::channel::mpsc::Sender<pb::TelemetryCommand>, tonic::Streaming<pb::TelemetryCommand>),
    ) {
        let mut current = Some(open);
        let mut wait = FIRST_PAUSE;
        while !self.stopping() {
            let (tx, mut answers) = match current.take() {
                Some(open) => open,
                None => match self.open_telemetry_retrying().await {
                    Ok(open) => open,
                    Err(e) => {
                        tracing::debug!(error = %e, group = %self.group, "could not reopen the telemetry stream");
                        if !pause(wait, &self.shutdown).await {
                            break;
                        }
                        wait = (wait * 2).min(MAX_PAUSE);
                        continue;
                    }
                },
            };
            wait = FIRST_PAUSE;
            // Read (and ignore) what the broker sends until the stream ends or we stop.
            let ended = tokio::select! {
                () = stopped(self.shutdown.clone()) => false,
                () = async { while let Ok(Some(_)) = answers.message().await {} } => true,
            };
            drop(tx);
            if !ended {
                break;
            }
            tracing::debug!(group = %self.group, "the telemetry stream ended; reopening it");
            if !pause(wait, &self.shutdown).await {
                break;
            }
        }
    }

    async fn heartbeat(&self) -> Result<(), Error> {
        const OP: &str = "heartbeat";
        let body =
            pb::HeartbeatRequest { group: resource(&self.group), client_type: pb::ClientType::PushConsumer as i32 };
        self.unary(OP, None, |mut client, endpoint, timeout| {
            let req = self.conn.request(body.clone(), timeout);
            async move {
                let resp = self.conn.call(OP, &endpoint, timeout, client.heartbeat(req)).await?;
                Error::unless_ok(OP, &endpoint, resp.status.as_ref())
            }
        })
        .await
    }

    async fn heartbeats(self: Arc<Self>) {
        loop {
            if let Err(e) = self.heartbeat().await {
                tracing::debug!(error = %e, group = %self.group, "heartbeat failed");
            }
            if !pause(HEARTBEAT_INTERVAL, &self.shutdown).await {
                break;
            }
        }
    }

    async fn query_assignment(&self) -> Result<Vec<pb::MessageQueue>, Error> {
        const OP: &str = "query assignment";
        let body =
            pb::QueryAssignmentRequest { topic: resource(&self.topic), group: resource(&self.group), endpoints: None };
        self.unary(OP, None, |mut client, endpoint, timeout| {
            let req = self.conn.request(body.clone(), timeout);
            async move {
                let resp = self.conn.call(OP, &endpoint, timeout, client.query_assignment(req)).await?;
                Error::unless_ok(OP, &endpoint, resp.status.as_ref())?;
                Ok(resp.assignments.into_iter().filter_map(|a| a.message_queue).collect())
            }
        })
        .await
    }

    /// Every `assignment_interval`: asks which queues to read and starts and stops queue
    /// tasks to match. On shutdown stops them all and waits for them.
    async fn assignments(self: Arc<Self>) {
        loop {
            match self.query_assignment().await {
                Ok(queues) => self.reassign(queues),
                Err(e) => tracing::debug!(error = %e, group = %self.group, "query assignment failed"),
            }
            if !pause(self.options.assignment_interval, &self.shutdown).await {
                break;
            }
        }
        let tasks = std::mem::take(&mut *self.queues.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, task) in tasks {
            task.stop.send_replace(true);
            if let Err(e) = task.handle.await {
                tracing::warn!(error = %e, "a push consumer queue task failed");
            }
        }
    }

    fn reassign(self: &Arc<Self>, queues: Vec<pb::MessageQueue>) {
        let wanted: BTreeMap<(String, u32), pb::MessageQueue> = queues
            .into_iter()
            .filter(|q| q.topic.as_ref().is_none_or(|t| t.name == self.topic))
            .filter_map(|q| {
                let broker = q.broker.as_ref().map(|b| b.name.clone()).unwrap_or_default();
                u32::try_from(q.id).ok().map(|id| ((broker, id), q))
            })
            .collect();
        let mut running = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        // Queues no longer assigned: their tasks stop after the message they are on.
        running.retain(|id, task| {
            let keep = wanted.contains_key(id) && !task.handle.is_finished();
            if !keep {
                task.stop.send_replace(true);
            }
            keep
        });
        for (key, queue) in wanted {
            if running.contains_key(&key) || self.stopping() {
                continue;
            }
            let (stop, stop_rx) = watch::channel(false);
            let handle = tokio::spawn(self.clone().consume_queue(queue, stop_rx));
            tracing::debug!(group = %self.group, topic = %self.topic, broker = %key.0, queue = key.1, "reading an assigned queue");
            running.insert(key, QueueTask { stop, handle });
        }
    }

    /// Whether the queue task should stop: shutdown, or its queue was taken away.
    fn queue_stopped(&self, stop: &watch::Receiver<bool>) -> bool {
        *stop.borrow() || self.stopping()
    }

    /// A stop signal for a queue task that fires on either its own stop or shutdown.
    async fn queue_stop(&self, stop: &watch::Receiver<bool>) {
        tokio::select! {
            () = stopped(stop.clone()) => {}
            () = stopped(self.shutdown.clone()) => {}
        }
    }

    /// One queue's task: receives its messages and consumes them in order.
    async fn consume_queue(self: Arc<Self>, queue: pb::MessageQueue, stop: watch::Receiver<bool>) {
        let mut attempt = 0u32;
        let mut wait = FIRST_PAUSE;
        while !self.queue_stopped(&stop) {
            let received = tokio::select! {
                () = self.queue_stop(&stop) => break,
                r = self.receive(&queue, attempt) => r,
            };
            match received {
                Ok(messages) => {
                    attempt = 0;
                    wait = FIRST_PAUSE;
                    for m in messages {
                        if self.queue_stopped(&stop) {
                            // The rest come back once their invisibility ends.
                            break;
                        }
                        self.consume(m).await;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, queue = queue.id, group = %self.group, "receive failed");
                    self.routes.forget(&self.topic);
                    attempt = attempt.wrapping_add(1);
                    let go_on = tokio::select! {
                        () = self.queue_stop(&stop) => false,
                        () = tokio::time::sleep(wait) => true,
                    };
                    if !go_on {
                        break;
                    }
                    wait = (wait * 2).min(MAX_PAUSE);
                }
            }
        }
    }

    /// One `ReceiveMessage` of `queue`, at its broker group; no message is an empty answer.
    async fn receive(&self, queue: &pb::MessageQueue, attempt: u32) -> Result<Vec<ReceivedMessage>, Error> {
        let timeout = self.conn.options.request_timeout;
        let route = self.routes.route(&self.conn, &self.topic, attempt, timeout).await?;
        let endpoint = queue_endpoint(&route, queue, self.conn.seeds(), attempt);
        let body = pb::ReceiveMessageRequest {
            group: resource(&self.group),
            message_queue: Some(queue.clone()),
            filter_expression: Some(self.filter.to_proto()),
            batch_size: i32::try_from(BATCH_SIZE).unwrap_or(i32::MAX),
            invisible_duration: Some(duration(self.options.invisible_duration)),
            auto_renew: true,
            long_polling_timeout: Some(duration(LONG_POLL)),
            attempt_id: None,
        };
        // The broker answers by the end of the poll; leave it room past it.
        receive_call(&self.conn, &endpoint, body, LONG_POLL + timeout, BATCH_SIZE).await
    }

    /// Calls the listener; a panicking listener fails the message.
    async fn listen(&self, m: ReceivedMessage) -> ConsumeResult {
        match AssertUnwindSafe((self.listener)(m)).catch_unwind().await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(group = %self.group, "the push consumer's listener panicked; the message failed");
                ConsumeResult::Failure
            }
        }
    }

    /// Hands one message to the listener and settles it with the broker.
    async fn consume(&self, mut m: ReceivedMessage) {
        let settings = self.consume_settings();
        let mut result = self.listen(m.clone()).await;
        if settings.fifo {
            // FIFO: the group's next message waits, so retry here with the backoff.
            while result == ConsumeResult::Failure && m.delivery_attempt < settings.max_attempts {
                if !pause(settings.backoff.delay(m.delivery_attempt), &self.shutdown).await {
                    // Stopping: the message comes back once its invisibility ends.
                    return;
                }
                m.delivery_attempt += 1;
                result = self.listen(m.clone()).await;
            }
        }
        let settled = match (result, settings.fifo) {
            (ConsumeResult::Success, _) => self.ack(&m).await,
            (ConsumeResult::Failure, false) => {
                self.change_invisible_duration(&m, settings.backoff.delay(m.delivery_attempt)).await
            }
            (ConsumeResult::Failure, true) => self.forward_to_dead_letter(&m, settings.max_attempts).await,
        };
        if let Err(e) = settled {
            tracing::warn!(error = %e, message_id = %m.message_id, group = %self.group, ?result, "could not settle a message; it comes back later");
        }
    }

    async fn ack(&self, m: &ReceivedMessage) -> Result<(), Error> {
        const OP: &str = "ack";
        let body = pb::AckMessageRequest {
            group: resource(&self.group),
            topic: resource(&m.topic),
            entries: vec![pb::AckMessageEntry {
                message_id: m.message_id.clone(),
                receipt_handle: m.receipt_handle.clone(),
                lite_topic: None,
            }],
        };
        self.unary(OP, Some(&m.broker), |mut client, endpoint, timeout| {
            let req = self.conn.request(body.clone(), timeout);
            async move {
                let resp = self.conn.call(OP, &endpoint, timeout, client.ack_message(req)).await?;
                Error::unless_ok(OP, &endpoint, resp.status.as_ref())
            }
        })
        .await
    }

    async fn change_invisible_duration(&self, m: &ReceivedMessage, delay: Duration) -> Result<(), Error> {
        const OP: &str = "change invisible duration";
        let body = pb::ChangeInvisibleDurationRequest {
            group: resource(&self.group),
            topic: resource(&m.topic),
            receipt_handle: m.receipt_handle.clone(),
            invisible_duration: Some(duration(delay)),
            message_id: m.message_id.clone(),
            lite_topic: None,
            suspend: None,
        };
        self.unary(OP, Some(&m.broker), |mut client, endpoint, timeout| {
            let req = self.conn.request(body.clone(), timeout);
            async move {
                let resp = self.conn.call(OP, &endpoint, timeout, client.change_invisible_duration(req)).await?;
                Error::unless_ok(OP, &endpoint, resp.status.as_ref())
            }
        })
        .await
    }

    async fn forward_to_dead_letter(&self, m: &ReceivedMessage, max_attempts: u32) -> Result<(), Error> {
        const OP: &str = "forward to dead-letter queue";
        let body = pb::ForwardMessageToDeadLetterQueueRequest {
            group: resource(&self.group),
            topic: resource(&m.topic),
            receipt_handle: m.receipt_handle.clone(),
            message_id: m.message_id.clone(),
            delivery_attempt: i32::try_from(m.delivery_attempt).unwrap_or(i32::MAX),
            max_delivery_attempts: i32::try_from(max_attempts).unwrap_or(i32::MAX),
            lite_topic: None,
        };
        self.unary(OP, Some(&m.broker), |mut client, endpoint, timeout| {
            let req = self.conn.request(body.clone(), timeout);
            async move {
                let resp =
                    self.conn.call(OP, &endpoint, timeout, client.forward_message_to_dead_letter_queue(req)).await?;
                Error::unless_ok(OP, &endpoint, resp.status.as_ref())
            }
        })
        .await
    }

    async fn notify_termination(&self) -> Result<(), Error> {
        const OP: &str = "notify client termination";
        let body = pb::NotifyClientTerminationRequest { group: resource(&self.group) };
        self.unary(OP, None, |mut client, endpoint, timeout| {
            let req = self.conn.request(body.clone(), timeout);
            async move {
                let resp = self.conn.call(OP, &endpoint, timeout, client.notify_client_termination(req)).await?;
                Error::unless_ok(OP, &endpoint, resp.status.as_ref())
            }
        })
        .await
    }
}

/// Where attempt `attempt` to receive from an assigned `queue` goes: its broker group's
/// endpoints as the route lists them (leader first); for a group the route does not know,
/// those the assignment names; failing both, the route's ([`target`]).
fn queue_endpoint(route: &TopicRoute, queue: &pb::MessageQueue, seeds: &[String], attempt: u32) -> String {
    let broker = queue.broker.as_ref();
    let named = broker.map(|b| route.broker_endpoints(&b.name)).unwrap_or_default();
    if !named.is_empty() {
        return named[attempt as usize % named.len()].clone();
    }
    let assigned = endpoint_strings(broker.and_then(|b| b.endpoints.as_ref()));
    if !assigned.is_empty() {
        return assigned[attempt as usize % assigned.len()].clone();
    }
    target(route, seeds, attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assigned(broker: &str, id: i32, endpoints: &[(&str, i32)]) -> pb::MessageQueue {
        let endpoints = (!endpoints.is_empty()).then(|| pb::Endpoints {
            scheme: pb::AddressScheme::IPv4 as i32,
            addresses: endpoints.iter().map(|(h, p)| pb::Address { host: (*h).into(), port: *p }).collect(),
        });
        pb::MessageQueue {
            id,
            broker: Some(pb::Broker { name: broker.into(), id: 0, endpoints }),
            ..Default::default()
        }
    }

    #[test]
    fn an_assigned_queue_is_read_at_its_own_group() {
        let route = crate::route::tests::two_groups();
        let seeds = vec!["a:1".to_string()];
        let b0 = assigned("broker-b", 0, &[]);
        let picks: Vec<String> = (0..4).map(|i| queue_endpoint(&route, &b0, &seeds, i)).collect();
        assert_eq!(picks, ["b:2", "b:1", "b:3", "b:2"]);
        assert_eq!(queue_endpoint(&route, &assigned("broker-a", 1, &[]), &seeds, 0), "a:1");
        let c0 = assigned("broker-c", 0, &[("c", 1), ("c", 2)]);
        assert_eq!(queue_endpoint(&route, &c0, &seeds, 1), "c:2");
        assert_eq!(queue_endpoint(&route, &assigned("broker-c", 0, &[]), &seeds, 0), "a:1");
    }

    #[test]
    fn backoff_delays_follow_the_attempts_and_the_last_repeats() {
        let b = Backoff::Customized(vec![Duration::from_secs(10), Duration::from_secs(30)]);
        assert_eq!(b.delay(1), Duration::from_secs(10));
        assert_eq!(b.delay(2), Duration::from_secs(30));
        assert_eq!(b.delay(9), Duration::from_secs(30));
        let e = Backoff::Exponential { initial: Duration::from_secs(1), max: Duration::from_secs(5), multiplier: 2.0 };
        assert_eq!(e.delay(1), Duration::from_secs(1));
        assert_eq!(e.delay(3), Duration::from_secs(4));
        assert_eq!(e.delay(10), Duration::from_secs(5));
    }
}
