//! Connections to broker endpoints: the endpoint list, one lazily connected channel per
//! endpoint, the request headers, and the retry loop every operation shares.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::Error;

/// Most endpoints in a list, and most channels one client keeps open.
pub const MAX_ENDPOINTS: usize = 64;
/// Most calls one operation makes before giving up, whatever its deadline.
const MAX_ATTEMPTS: u32 = 64;
/// Largest message the client encodes or decodes.
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// How often an open connection is pinged (HTTP/2 PING, also while idle), and how long a
/// ping may go unanswered before the connection is given up: a member that died without
/// closing its connections (a crashed machine, a killed container) fails the calls in flight
/// on it within both, instead of at their timeout.
const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(300);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(500);
/// How often an isolated endpoint is probed (a heartbeat call on a connection of its own,
/// answered within [`PROBE_TIMEOUT`]); live calls never probe, so none waits on a dead member.
const PROBE_EVERY: Duration = Duration::from_millis(500);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long an endpoint that never answers a probe stays isolated; then calls try it again.
const PROBE_FOR: Duration = Duration::from_secs(600);
/// Most isolated endpoints remembered.
const MAX_ISOLATED: usize = 1024;

/// Endpoints that failed at the connection level lately (a refused or timed-out connect, a
/// broken connection, no answer in time), each until a probe finds it answering again;
/// shared by every client of the process: what one producer learns of a dead member, the
/// others need not learn by waiting on it.
static ISOLATED: LazyLock<Mutex<HashMap<String, Instant>>> = LazyLock::new(|| Mutex::new(HashMap::new()));
/// Whether [`ISOLATED`] may hold anything (spares successful calls the lock).
static ANY_ISOLATED: AtomicBool = AtomicBool::new(false);

fn isolated_map() -> std::sync::MutexGuard<'static, HashMap<String, Instant>> {
    ISOLATED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Passes `endpoint` over until a probe finds it answering (or [`PROBE_FOR`] passes).
pub(crate) fn isolate(endpoint: &str) {
    let fresh = {
        let mut map = isolated_map();
        if map.len() >= MAX_ISOLATED {
            map.clear();
        }
        let now = Instant::now();
        let fresh = map.get(endpoint).is_none_or(|until| *until <= now);
        if fresh {
            map.insert(endpoint.to_string(), now + PROBE_FOR);
        }
        ANY_ISOLATED.store(true, Ordering::Relaxed);
        fresh
    };
    if fresh && let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(probe(endpoint.to_string()));
    }
}

/// Asks `endpoint` for a heartbeat every [`PROBE_EVERY`] while it is isolated; restores it
/// at the first answer.
async fn probe(endpoint: String) {
    let Ok(endpoint_config) = Endpoint::from_shared(format!("http://{endpoint}")) else { return };
    let endpoint_config = endpoint_config.connect_timeout(PROBE_TIMEOUT).timeout(PROBE_TIMEOUT);
    while is_isolated(&endpoint) {
        tokio::time::sleep(PROBE_EVERY).await;
        let answered = async {
            let channel = endpoint_config.connect().await.ok()?;
            let mut client = MessagingServiceClient::new(channel);
            client.heartbeat(raftmq_proto::rocketmq::v2::HeartbeatRequest::default()).await.ok()
        };
        if tokio::time::timeout(PROBE_TIMEOUT * 2, answered).await.ok().flatten().is_some() {
            restore(&endpoint);
            return;
        }
    }
}

/// `endpoint` answered: use it again.
pub(crate) fn restore(endpoint: &str) {
    if ANY_ISOLATED.load(Ordering::Relaxed) {
        let mut map = isolated_map();
        map.remove(endpoint);
        if map.is_empty() {
            ANY_ISOLATED.store(false, Ordering::Relaxed);
        }
    }
}

/// Whether `endpoint` is being passed over.
pub(crate) fn is_isolated(endpoint: &str) -> bool {
    ANY_ISOLATED.load(Ordering::Relaxed) && isolated_map().get(endpoint).is_some_and(|until| *until > Instant::now())
}

/// The candidate for attempt `attempt`: in rotation over the candidates not isolated, or
/// over all of them when every one is.
pub(crate) fn rotate(candidates: &[String], attempt: u32) -> String {
    // No allocation: this runs for every call.
    let live = || candidates.iter().filter(|c| !is_isolated(c));
    match live().count() {
        0 => candidates.get(attempt as usize % candidates.len().max(1)).cloned().unwrap_or_default(),
        n => live().nth(attempt as usize % n).cloned().unwrap_or_default(),
    }
}

/// Whether a failed call says the connection to the endpoint failed, rather than the
/// endpoint refusing the request: a status made here from a transport error carries that
/// error as its source (one received from a server never does).
fn connection_failed(status: &tonic::Status) -> bool {
    let m = status.message();
    std::error::Error::source(status).is_some()
        || (matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal)
            && ["transport error", "http2 error", "tcp connect", "keep-alive", "broken pipe", "h2 protocol error"]
                .iter()
                .any(|needle| m.contains(needle)))
}

/// Timeouts and retry settings shared by producers, consumers and the admin client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long one call may take before it is abandoned and retried (default 3 s).
    pub request_timeout: Duration,
    /// How long an operation keeps retrying across endpoints (default 5 s).
    pub retry_deadline: Duration,
    /// First pause between retries; it doubles up to `max_backoff` (default 50 ms).
    pub initial_backoff: Duration,
    /// Longest pause between retries (default 1 s).
    pub max_backoff: Duration,
    /// How long a TCP connect may take (default 1 s).
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(3),
            retry_deadline: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// Parses an endpoint list in the RocketMQ clients' form, `host:port;host:port` (commas
/// are accepted too). Duplicates are dropped; order is kept.
pub fn parse_endpoints(list: &str) -> Result<Vec<String>, Error> {
    let fail = |reason: String| Error::Endpoints { list: list.to_string(), reason };
    let mut out: Vec<String> = Vec::new();
    for part in list.split([';', ',']).map(str::trim).filter(|p| !p.is_empty()) {
        let part = part.strip_prefix("http://").unwrap_or(part);
        let (host, port) = part.rsplit_once(':').ok_or_else(|| fail(format!("{part:?} has no port")))?;
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(fail(format!("{part:?} has no valid host")));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(fail(format!("{part:?} has no valid port"))),
        }
        if !out.iter().any(|e| e == part) {
            out.push(part.to_string());
        }
        if out.len() > MAX_ENDPOINTS {
            return Err(fail(format!("more than {MAX_ENDPOINTS} endpoints")));
        }
    }
    if out.is_empty() {
        return Err(fail("no endpoint given".into()));
    }
    Ok(out)
}

/// A random 64-bit value, different in every process and every call.
pub(crate) fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

/// The endpoints a client was given and the channels it opened.
#[derive(Debug)]
pub(crate) struct Conn {
    seeds: Vec<String>,
    first_seed: usize,
    channels: Mutex<HashMap<String, Channel>>,
    pub(crate) options: ClientOptions,
    client_id: String,
    next_request: AtomicU64,
    next_pick: AtomicUsize,
}

impl Conn {
    pub(crate) fn new(endpoints: &str, options: ClientOptions) -> Result<Self, Error> {
        let seeds = parse_endpoints(endpoints)?;
        let salt = random_u64();
        Ok(Self {
            first_seed: (salt % seeds.len() as u64) as usize,
            seeds,
            channels: Mutex::new(HashMap::new()),
            options,
            client_id: format!("raftmq-rust@{}@{salt:016x}", std::process::id()),
            next_request: AtomicU64::new(0),
            next_pick: AtomicUsize::new(0),
        })
    }

    /// The endpoints given at construction.
    pub(crate) fn seeds(&self) -> &[String] {
        &self.seeds
    }

    /// The seed to try at `attempt` (each client starts at a random one, then rotates,
    /// passing over isolated ones while another is left).
    pub(crate) fn seed(&self, attempt: u32) -> String {
        let n = self.seeds.len();
        let order: Vec<String> = (0..n).map(|i| self.seeds[(self.first_seed + i) % n].clone()).collect();
        rotate(&order, attempt)
    }

    /// A counter for spreading work (queue picks), starting at a random point.
    pub(crate) fn pick(&self) -> usize {
        self.next_pick.fetch_add(1, Ordering::Relaxed).wrapping_add(self.first_seed)
    }

    /// The shared channel to `endpoint`, connected on first use.
    pub(crate) fn channel(&self, endpoint: &str) -> Result<Channel, Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(endpoint) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|e| Error::Endpoints { list: endpoint.to_string(), reason: e.to_string() })?
            .connect_timeout(self.options.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        if channels.len() >= MAX_ENDPOINTS {
            // Routes named more endpoints than a client keeps: start over.
            channels.clear();
        }
        channels.insert(endpoint.to_string(), channel.clone());
        Ok(channel)
    }

    /// A RocketMQ messaging client on `endpoint`.
    pub(crate) fn messaging(&self, endpoint: &str) -> Result<MessagingServiceClient<Channel>, Error> {
        Ok(MessagingServiceClient::new(self.channel(endpoint)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A request carrying the client headers of the RocketMQ protocol and a deadline.
    pub(crate) fn request<T>(&self, body: T, timeout: Duration) -> tonic::Request<T> {
        let mut req = tonic::Request::new(body);
        req.set_timeout(timeout);
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let meta = req.metadata_mut();
        if let Ok(v) = MetadataValue::try_from(self.client_id.as_str()) {
            meta.insert("x-mq-client-id", v);
        }
        if let Ok(v) = MetadataValue::try_from(format!("{id}")) {
            meta.insert("x-mq-request-id", v);
        }
        meta.insert("x-mq-language", MetadataValue::from_static("RUST"));
        meta.insert("x-mq-protocol", MetadataValue::from_static("v2"));
        meta.insert("x-mq-client-version", MetadataValue::from_static(env!("CARGO_PKG_VERSION")));
        req
    }

    /// Runs one call, bounded by `timeout`, naming `endpoint` in its errors.
    pub(crate) async fn call<T>(
        &self,
        operation: &'static str,
        endpoint: &str,
        timeout: Duration,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(timeout, call).await {
            Err(_) => {
                isolate(endpoint);
                Err(Error::Timeout { operation, endpoint: endpoint.to_string(), timeout })
            }
            Ok(Err(status)) => {
                if connection_failed(&status) {
                    isolate(endpoint);
                }
                Err(Error::rpc(operation, endpoint, &status))
            }
            Ok(Ok(resp)) => {
                restore(endpoint);
                Ok(resp.into_inner())
            }
        }
    }
}

/// The retry state of one operation: attempts, backoff and deadline.
#[derive(Debug)]
pub(crate) struct Retry {
    operation: &'static str,
    deadline: Instant,
    attempt: u32,
    backoff: Duration,
    max_backoff: Duration,
    request_timeout: Duration,
}

impl Retry {
    /// Retries `operation` for `extra` longer than the options' retry deadline.
    pub(crate) fn new(operation: &'static str, options: &ClientOptions, extra: Duration) -> Self {
        Self {
            operation,
            deadline: Instant::now() + options.retry_deadline + extra,
            attempt: 0,
            backoff: options.initial_backoff,
            max_backoff: options.max_backoff,
            request_timeout: options.request_timeout,
        }
    }

    /// How many attempts failed so far.
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The timeout of the next call: `base` (the request timeout when None), cut to what
    /// is left before the deadline but never under 100 ms.
    pub(crate) fn timeout(&self, base: Option<Duration>) -> Duration {
        let left = self.deadline.saturating_duration_since(Instant::now());
        base.unwrap_or(self.request_timeout).min(left).max(Duration::from_millis(100))
    }

    /// After a failed attempt: waits the backoff and returns Ok when another attempt is
    /// worth it, or the error to report.
    pub(crate) async fn failed(&mut self, error: Error) -> Result<(), Error> {
        self.attempt += 1;
        if !error.is_retryable() {
            return Err(error);
        }
        if Instant::now() + self.backoff >= self.deadline || self.attempt >= MAX_ATTEMPTS {
            return Err(Error::GaveUp { operation: self.operation, attempts: self.attempt, last: Box::new(error) });
        }
        tracing::debug!(operation = self.operation, attempt = self.attempt, error = %error, "retrying");
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(self.max_backoff);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_lists_in_the_rocketmq_form() {
        assert_eq!(
            parse_endpoints("127.0.0.1:8081; 127.0.0.1:8082;127.0.0.1:8081").ok(),
            Some(vec!["127.0.0.1:8081".to_string(), "127.0.0.1:8082".to_string()])
        );
        assert_eq!(parse_endpoints("broker-1:8081,http://[::1]:9").map(|v| v.len()).ok(), Some(2));
        for bad in ["", ";", "host", "host:0", "host:99999", ":80", "a b:1"] {
            assert!(matches!(parse_endpoints(bad), Err(Error::Endpoints { .. })), "{bad:?} was accepted");
        }
    }

    #[test]
    fn isolated_endpoints_are_passed_over_while_another_is_left() {
        // Addresses no other test uses: the registry is shared by the process.
        let all: Vec<String> = ["isolate-a:1", "isolate-b:1", "isolate-c:1"].iter().map(|s| s.to_string()).collect();
        assert_eq!((0..3).map(|i| rotate(&all, i)).collect::<Vec<_>>(), all);
        isolate("isolate-a:1");
        assert!(is_isolated("isolate-a:1"));
        assert_eq!(
            (0..4).map(|i| rotate(&all, i)).collect::<Vec<_>>(),
            ["isolate-b:1", "isolate-c:1", "isolate-b:1", "isolate-c:1"]
        );
        isolate("isolate-b:1");
        isolate("isolate-c:1");
        assert_eq!(rotate(&all, 1), "isolate-b:1", "all isolated: plain rotation");
        for e in &all {
            restore(e);
        }
        assert!(!is_isolated("isolate-a:1"));
        assert_eq!(rotate(&all, 0), "isolate-a:1");
        let refused = tonic::Status::unavailable("tcp connect error: Connection refused (os error 111)");
        assert!(connection_failed(&refused));
        assert!(!connection_failed(&tonic::Status::unavailable("no leader elected in the broker group")));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_deadline_and_on_final_errors() {
        let options = ClientOptions {
            retry_deadline: Duration::from_millis(300),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            ..ClientOptions::default()
        };
        let mut retry = Retry::new("send", &options, Duration::ZERO);
        let unavailable = || Error::rpc("send", "h:1", &tonic::Status::unavailable("down"));
        let started = Instant::now();
        let mut attempts = 0;
        let last = loop {
            attempts += 1;
            if let Err(e) = retry.failed(unavailable()).await {
                break e;
            }
        };
        assert!(matches!(last, Error::GaveUp { .. }), "{last}");
        assert!(attempts > 3, "only {attempts} attempts");
        // The clock is paused: time moves only by the backoff sleeps, so this is exact.
        assert!(started.elapsed() <= Duration::from_millis(300), "overran the deadline: {:?}", started.elapsed());
        let mut retry = Retry::new("send", &options, Duration::ZERO);
        let refused = Error::rpc("send", "h:1", &tonic::Status::invalid_argument("bad"));
        assert!(matches!(retry.failed(refused).await, Err(Error::Rpc { code: tonic::Code::InvalidArgument, .. })));
    }
}
