//! Telemetry: the client's settings are answered with status OK and this broker's real
//! limits; the stream stays open for as long as the client keeps it, and carries the
//! broker's own commands to the client (transaction check-back) from its outbox.

use std::net::SocketAddr;

use futures::{StreamExt, stream};
use raftmq_machine::types::{GroupConfig, GroupName};
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::settings::PubSub;
use raftmq_proto::rocketmq::v2::telemetry_command::Command as Telemetry;
use tonic::Streaming;

use super::convert::duration;
use super::filter::Filter;
use super::status;
use super::{BoxStream, Broker};
use crate::sessions::Sessions;

/// Backoff the clients are told to use between send retries.
const RETRY_INITIAL_MS: u64 = 10;
const RETRY_MAX_MS: u64 = 1_000;

/// The waits before a push consumer's message comes again after a failed consumption, by
/// attempt (RocketMQ's 10 s 30 s 1 m 2 m … 2 h; the last repeats).
const CONSUME_BACKOFF_SECS: [i64; 16] =
    [10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200];

/// Marks a client's Telemetry stream closed when dropped.
struct StreamOpen {
    sessions: Sessions,
    client_id: String,
    id: u64,
}

impl Drop for StreamOpen {
    fn drop(&mut self) {
        self.sessions.close_stream(&self.client_id, self.id);
    }
}

/// What goes out on a Telemetry stream, merged from the client's commands and the outbox.
enum Event {
    /// The answer to a client's command, if it needs one.
    Answer(Option<Result<pb::TelemetryCommand, tonic::Status>>),
    /// A command of the broker's.
    Push(pb::TelemetryCommand),
    /// The client closed its side: the stream ends.
    End,
}

/// Logs each subscription of a consumer's settings whose filter does not parse: the
/// client learns it from its first receive (`ILLEGAL_FILTER_EXPRESSION`, naming the
/// column), the operator from this line at subscribe time.
fn warn_bad_filters(client: &str, settings: &pb::Settings) {
    let Some(PubSub::Subscription(sub)) = &settings.pub_sub else { return };
    let group = sub.group.as_ref().map_or("", |g| g.name.as_str());
    for entry in &sub.subscriptions {
        if let Err(refusal) = Filter::of(entry.expression.as_ref()) {
            let topic = entry.topic.as_ref().map_or("", |t| t.name.as_str());
            tracing::warn!(client, group, topic, error = %refusal.message, "a consumer subscribed with a bad filter");
        }
    }
}

impl Broker {
    /// The consumer group `name`'s configuration (the defaults for a name not valid).
    fn group_config(&self, name: &str) -> GroupConfig {
        GroupName::new(name)
            .map_or_else(|_| GroupConfig::default(), |g| self.inner.state.read(|a| a.machine.group_config(&g)))
    }

    fn answer_settings(&self, client: pb::Settings) -> pb::Settings {
        let settings = &self.inner.settings;
        // Producers retry failed sends quickly; consumers wait RocketMQ's growing backoff
        // before a failed message comes again, up to the group's max attempts.
        let mut backoff_policy = pb::RetryPolicy {
            max_attempts: 3,
            strategy: Some(pb::retry_policy::Strategy::ExponentialBackoff(pb::ExponentialBackoff {
                initial: Some(duration(RETRY_INITIAL_MS)),
                max: Some(duration(RETRY_MAX_MS)),
                multiplier: 2.0,
            })),
        };
        let pub_sub = match client.pub_sub {
            Some(PubSub::Publishing(p)) => Some(PubSub::Publishing(pb::Publishing {
                topics: p.topics,
                max_body_size: i32::try_from(settings.max_body_bytes).unwrap_or(i32::MAX),
                validate_message_type: true,
            })),
            Some(PubSub::Subscription(s)) => {
                let config = s.group.as_ref().map(|g| self.group_config(&g.name)).unwrap_or_default();
                backoff_policy = pb::RetryPolicy {
                    max_attempts: i32::try_from(config.max_attempts).unwrap_or(i32::MAX),
                    strategy: Some(pb::retry_policy::Strategy::CustomizedBackoff(pb::CustomizedBackoff {
                        next: CONSUME_BACKOFF_SECS
                            .iter()
                            .map(|s| prost_types::Duration { seconds: *s, nanos: 0 })
                            .collect(),
                    })),
                };
                Some(PubSub::Subscription(pb::Subscription {
                    // A FIFO consumer group's push consumers consume each message group in order.
                    fifo: Some(config.fifo),
                    group: s.group,
                    subscriptions: s.subscriptions,
                    receive_batch_size: Some(settings.max_receive_batch as i32),
                    long_polling_timeout: Some(duration(settings.max_long_polling_ms.min(20_000))),
                    ..Default::default()
                }))
            }
            None => None,
        };
        pb::Settings {
            client_type: client.client_type,
            access_point: client.access_point,
            backoff_policy: Some(backoff_policy),
            request_timeout: client.request_timeout.or(Some(duration(3_000))),
            user_agent: client.user_agent,
            metric: client.metric,
            client_properties: Default::default(),
            pub_sub,
        }
    }

    /// Answers a client's Telemetry stream; `client` (its id and address) is recorded in the
    /// live clients while the stream is open.
    pub(super) fn serve_telemetry(
        &self,
        input: Streaming<pb::TelemetryCommand>,
        client: Option<(String, Option<SocketAddr>)>,
    ) -> BoxStream<pb::TelemetryCommand> {
        let this = self.clone();
        let (open, outbox) = match &client {
            Some((id, _)) => {
                let (stream_id, outbox) = self.inner.sessions.open_stream(id);
                let open = StreamOpen { sessions: self.inner.sessions.clone(), client_id: id.clone(), id: stream_id };
                (Some(open), Some(outbox))
            }
            None => (None, None),
        };
        let answers = input.then(move |item| {
            let this = this.clone();
            let client = client.clone();
            // Held by the stream: when the stream goes, the session's telemetry is closed.
            let _open = &open;
            async move {
                match item {
                    Ok(pb::TelemetryCommand { command: Some(Telemetry::Settings(s)), .. }) => {
                        if let Some((id, address)) = &client {
                            this.inner.sessions.settings(id, *address, &s);
                        }
                        warn_bad_filters(client.as_ref().map_or("", |(id, _)| id.as_str()), &s);
                        Some(Ok(pb::TelemetryCommand {
                            status: Some(status::ok()),
                            command: Some(Telemetry::Settings(this.answer_settings(s))),
                        }))
                    }
                    // Other client reports (stack traces, verification results) need no answer.
                    Ok(_) => None,
                    Err(e) => {
                        tracing::debug!(error = %e, "telemetry stream ended with an error");
                        None
                    }
                }
            }
        });
        let answers = answers.map(Event::Answer).chain(stream::once(async { Event::End }));
        let pushes = stream::unfold(outbox, |outbox| async move {
            let mut outbox = outbox?;
            let command = outbox.recv().await?;
            Some((Event::Push(command), Some(outbox)))
        });
        let output = stream::select(answers, pushes)
            .take_while(|e| std::future::ready(!matches!(e, Event::End)))
            .filter_map(|e| {
                std::future::ready(match e {
                    Event::Answer(answer) => answer,
                    Event::Push(command) => Some(Ok(command)),
                    Event::End => None,
                })
            });
        Box::pin(output)
    }
}
