//! What the examples share: where the group is, a fresh topic name per run, and receiving
//! with a deadline.

#![allow(dead_code, reason = "each example uses part of it")]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raftmq_client::{ReceivedMessage, SimpleConsumer};

/// The group's client endpoints: the first argument, else `mqbroker dev`'s.
pub fn endpoints() -> String {
    std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8081;127.0.0.1:8082;127.0.0.1:8083".to_string())
}

/// `prefix` with this run's time, so each run starts on an empty topic or group.
pub fn fresh(prefix: &str) -> String {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{prefix}-{ms}")
}

/// Receives (and acks) until `want` messages came or `deadline` passed; the messages with
/// the time each arrived.
pub async fn receive(
    consumer: &SimpleConsumer,
    want: usize,
    deadline: Duration,
) -> anyhow::Result<Vec<(ReceivedMessage, SystemTime)>> {
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < want && start.elapsed() < deadline {
        for m in consumer.receive(32, Duration::from_secs(30), Duration::from_secs(2)).await? {
            consumer.ack(&m).await?;
            got.push((m, SystemTime::now()));
        }
    }
    Ok(got)
}

/// The message's body as text.
pub fn body(m: &ReceivedMessage) -> String {
    String::from_utf8_lossy(&m.body).into_owned()
}
