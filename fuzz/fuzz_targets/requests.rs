//! The RocketMQ v2 requests of `MessagingService`, decoded from the fuzz input with prost and
//! turned into what the broker acts on by the same functions its service calls
//! (`broker::service::fuzzing`, `Filter::of`, `Sessions`), with no node behind them.
//!
//! Checked: nothing panics; what a conversion accepts keeps the limits it checks (names,
//! counts, ranges, this broker group's receipts and transaction ids); a message accepted for
//! sending goes into a log batch and back unchanged, and is delivered (`convert::outgoing`)
//! as a message that converts back to itself; a `QueryAssignment` share gives every queue
//! to exactly one consumer.
//!
//! `ReceiveMessage` and `PullMessage` go through the pieces their service uses (group,
//! topic, filter, durations): their own parsing is a method of the running service.
//!
//! Input: a request kind byte, a flags byte (which broker group this node is, the Python
//! client's header, the topic's configuration), then the protobuf bytes of the request.

#![no_main]

use std::collections::BTreeSet;

use arbitrary::Unstructured;
use broker::service::convert::{self, Delivery};
use broker::service::filter::Filter;
use broker::service::fuzzing::*;
use broker::service::transaction;
use broker::sessions::{MAX_FIELD_BYTES, MAX_TOPICS_PER_CLIENT, Sessions};
use broker::settings::ServiceSettings;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use raftmq_fuzz::assert_valid_name;
use raftmq_machine::types::{MessageType, Permission, StoredMessage, TopicConfig, TopicName};
use raftmq_machine::{LogIndex, MessageBatch, Millis, Slot};
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;

/// The broker group of the receipts and transaction ids in the seeds.
const GROUP: &str = "broker-a";
/// The proposer's clock in the checks.
const NOW: Millis = Millis(1_700_000_000_000);
/// The topic incarnation messages are checked against.
const EPOCH: LogIndex = LogIndex(7);
/// Most messages of one SendMessage converted (each is converted alone).
const MAX_MESSAGES_CHECKED: usize = 16;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let (Ok(kind), Ok(flags)) = (u.arbitrary::<u8>(), u.arbitrary::<u8>()) else { return };
    let body = u.take_rest();
    let group = if flags & 1 == 0 { GROUP } else { "broker-b" };
    match kind % 15 {
        0 => with(body, query_route),
        1 => with(body, heartbeat),
        2 => with(body, |r| send(r, flags)),
        3 => with(body, query_assignment),
        4 => with(body, receive),
        5 => with(body, |r| ack(r, group)),
        6 => with(body, |r| forward_to_dead_letter(r, group)),
        7 => with(body, pull),
        8 => with(body, update_offset),
        9 => with(body, get_offset),
        10 => with(body, query_offset),
        11 => with(body, |r| end_transaction(r, group)),
        12 => with(body, telemetry),
        13 => with(body, notify_client_termination),
        _ => with(body, |r| change_invisible(r, group)),
    }
});

/// Runs `check` on the request the bytes decode to, if they do.
fn with<T: Message + Default>(bytes: &[u8], check: impl FnOnce(T)) {
    if let Ok(request) = T::decode(bytes) {
        check(request);
    }
}

fn name_of(resource: Option<&pb::Resource>) -> &str {
    resource.map_or("", |r| r.name.as_str())
}

fn check_filter(expr: Option<&pb::FilterExpression>) {
    if let Err(refusal) = Filter::of(expr) {
        assert_eq!(refusal.code, Code::IllegalFilterExpression, "{}", refusal.message);
    }
}

fn check_duration(d: Option<&prost_types::Duration>) {
    let Some(d) = d else { return };
    if let Ok(ms) = convert::duration_ms(d) {
        assert!(d.seconds >= 0 && d.nanos >= 0);
        assert_eq!(convert::duration_ms(&convert::duration(ms)), Ok(ms), "{d:?} is {ms} ms");
    }
}

fn query_route(req: pb::QueryRouteRequest) {
    if let Ok(topic) = topic_of(req.topic.as_ref()) {
        assert_eq!(topic.as_str(), name_of(req.topic.as_ref()));
        assert_valid_name(topic.as_str());
    }
}

fn heartbeat(req: pb::HeartbeatRequest) {
    let sessions = Sessions::new();
    sessions.heartbeat("client", None, &req);
    let listed = sessions.list(None);
    assert_eq!(listed.len(), 1);
    let named = req.group.as_ref().map(|g| g.name.as_str()).filter(|g| !g.is_empty());
    match (named, &listed[0].group) {
        (Some(g), Some(kept)) => assert!(kept.len() <= MAX_FIELD_BYTES && g.starts_with(kept.as_str())),
        (None, None) => {}
        (named, kept) => panic!("heartbeat of group {named:?} kept {kept:?}"),
    }
}

/// The topic configuration the flags give: queues, accepted types, permission.
fn topic_config(flags: u8) -> TopicConfig {
    let message_types: BTreeSet<MessageType> =
        MessageType::ALL.into_iter().enumerate().filter(|(i, _)| flags & (4 << i) == 0).map(|(_, t)| t).collect();
    let permission = if flags & 0x40 == 0 { Permission::ReadWrite } else { Permission::Read };
    TopicConfig { queue_count: 1 + u32::from(flags >> 7) * 7, message_types, permission }
}

fn send(req: pb::SendMessageRequest, flags: u8) {
    let whole = check_send(&req);
    if req.messages.is_empty() || req.messages.len() > MAX_MESSAGES_PER_SEND {
        assert!(whole.is_err(), "a send of {} messages is accepted", req.messages.len());
    }
    let python = flags & 2 != 0;
    let mut request = tonic::Request::new(req.clone());
    if python {
        request.metadata_mut().insert("x-mq-language", tonic::metadata::MetadataValue::from_static("PYTHON"));
    }
    broker_picks_queue(&mut request);
    let picked = request.into_inner();
    for (before, after) in req.messages.iter().zip(&picked.messages) {
        let queue = |m: &pb::Message| m.system_properties.as_ref().map(|s| s.queue_id);
        let want = queue(before).map(|q| if python && q == 0 { -1 } else { q });
        assert_eq!(queue(after), want);
    }
    let config = topic_config(flags);
    let settings = ServiceSettings::default();
    for msg in picked.messages.into_iter().take(MAX_MESSAGES_CHECKED) {
        let Ok(topic) = write_topic_of(msg.topic.as_ref()) else { continue };
        let prepared =
            prepare_message(msg.clone(), &topic, &config, &settings, NOW, || Some(EPOCH), || "made-by-broker".into());
        if let Ok(stored) = prepared {
            check_stored(&msg, &stored, &topic, &config, &settings);
        }
    }
}

/// A message accepted for sending: within the limits, in a queue of its topic, of a type the
/// topic takes; into a log batch and back, and out to a consumer and back, unchanged.
fn check_stored(
    msg: &pb::Message,
    stored: &StoredMessage,
    topic: &TopicName,
    config: &TopicConfig,
    settings: &ServiceSettings,
) {
    assert_eq!(&stored.topic, topic);
    assert_valid_name(topic.as_str());
    assert!(stored.queue.0 < config.queue_count, "queue {} of {}", stored.queue.0, config.queue_count);
    assert_eq!(stored.topic_epoch, EPOCH);
    assert_ne!(config.permission, Permission::Read, "a read-only topic took a message");
    assert!(!stored.body.is_empty() && stored.body.len() <= settings.max_body_bytes);
    assert_eq!(stored.body, msg.body);
    assert!(stored.tag.as_ref().is_none_or(|t| !t.contains('|') && t.len() <= convert::MAX_SHORT_FIELD));
    assert!(stored.keys.len() <= convert::MAX_KEYS && stored.properties.len() <= convert::MAX_PROPERTIES);
    assert!(!stored.message_id.is_empty() && stored.message_id.len() <= convert::MAX_SHORT_FIELD);
    if let Some(at) = stored.deliver_at {
        assert!(at <= NOW.plus_ms(settings.max_delay_ms), "delivery at {at:?} is past the longest delay");
    }
    let kind = if stored.transactional {
        MessageType::Transaction
    } else if stored.message_group.is_some() {
        MessageType::Fifo
    } else if stored.deliver_at.is_some() {
        MessageType::Delay
    } else {
        MessageType::Normal
    };
    assert!(config.message_types.contains(&kind), "topic takes {:?}, got a {kind:?} message", config.message_types);

    let batch = MessageBatch::encode(std::slice::from_ref(stored)).expect("one message encodes");
    let back = batch.get(Slot(0)).expect("slot 0").expect("an encoded message decodes");
    assert_eq!(&back, stored, "a message changed in the log batch");

    let delivery = Delivery {
        stored: NOW,
        store_host: "10.0.0.1:8081".into(),
        offset: 3,
        receipt: None,
        attempt: 1,
        invisible_ms: None,
    };
    let out = convert::outgoing(stored, &delivery);
    let mut again = convert::incoming(out, settings.max_body_bytes, stored.queue, || "unused".into())
        .expect("a delivered message is a valid message");
    again.topic_epoch = stored.topic_epoch;
    again.transactional = stored.transactional;
    assert_eq!(&again, stored, "a message changed on its way out and back");
}

fn query_assignment(req: pb::QueryAssignmentRequest) {
    let _ = group_of(req.group.as_ref());
    let Ok(topic) = topic_of(req.topic.as_ref()) else { return };
    // The request's endpoint hosts stand for the group's push consumers, its group name for
    // the caller; the queues are those of two broker groups.
    let members: Vec<String> =
        req.endpoints.iter().flat_map(|e| &e.addresses).map(|a| a.host.clone()).take(32).collect();
    let me = name_of(req.group.as_ref()).to_string();
    let counts = [1 + members.len() % 5, (me.len() % 3) * 4];
    let queues: Vec<pb::MessageQueue> = [GROUP, "broker-b"]
        .iter()
        .zip(counts)
        .flat_map(|(broker, n)| {
            let topic = topic.as_str();
            (0..n as i32).map(move |id| pb::MessageQueue {
                topic: Some(pb::Resource { resource_namespace: String::new(), name: topic.to_string() }),
                id,
                broker: Some(pb::Broker { name: broker.to_string(), ..Default::default() }),
                ..Default::default()
            })
        })
        .collect();
    // Every consumer asks with the same list (the caller is counted in by `assign` itself).
    let listed: Vec<String> = members.iter().cloned().chain([me.clone()]).collect();
    let everyone: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
    let mut taken = Vec::new();
    let mut shares = Vec::new();
    for member in &everyone {
        let share = assign(queues.clone(), &listed, member);
        shares.push(share.len());
        taken.extend(share.into_iter().map(|q| (q.broker.map(|b| b.name), q.id)));
    }
    taken.sort();
    let mut all: Vec<_> = queues.into_iter().map(|q| (q.broker.map(|b| b.name), q.id)).collect();
    all.sort();
    assert_eq!(taken, all, "the shares of {everyone:?} do not cover every queue exactly once");
    let (min, max) = (shares.iter().min(), shares.iter().max());
    assert!(max.zip(min).is_none_or(|(max, min)| max - min <= 1), "uneven shares {shares:?}");
}

fn receive(req: pb::ReceiveMessageRequest) {
    let _ = group_of(req.group.as_ref());
    let _ = topic_of(req.message_queue.as_ref().and_then(|q| q.topic.as_ref()));
    check_filter(req.filter_expression.as_ref());
    check_duration(req.invisible_duration.as_ref());
    check_duration(req.long_polling_timeout.as_ref());
}

fn pull(req: pb::PullMessageRequest) {
    let _ = group_of(req.group.as_ref());
    let _ = topic_of(req.message_queue.as_ref().and_then(|q| q.topic.as_ref()));
    check_filter(req.filter_expression.as_ref());
    check_duration(req.long_polling_timeout.as_ref());
}

fn ack(req: pb::AckMessageRequest, group: &str) {
    let Ok((g, t, receipts)) = parse_ack(&req, group) else { return };
    assert_valid_name(g.as_str());
    assert_valid_name(t.as_str());
    assert!((1..=MAX_ACKS_PER_REQUEST).contains(&req.entries.len()));
    assert_eq!(receipts.len(), req.entries.len());
    for (entry, receipt) in req.entries.iter().zip(receipts) {
        match receipt {
            Ok(r) => {
                assert_eq!(r.broker_group, group);
                assert_eq!(r.to_string().parse().as_ref(), Ok(&r));
            }
            Err(refusal) => assert_eq!(refusal.code, Code::InvalidReceiptHandle, "{:?}", entry.receipt_handle),
        }
    }
}

fn forward_to_dead_letter(req: pb::ForwardMessageToDeadLetterQueueRequest, group: &str) {
    let Ok((g, _, receipt)) = parse_forward_to_dead_letter(&req, group) else { return };
    let dlq = g.dead_letter_topic().expect("an accepted group has a dead-letter topic");
    assert!(TopicName::readable(dlq.as_str()).is_ok(), "dead-letter topic {dlq} cannot be read");
    assert_eq!(receipt.broker_group, group);
}

fn update_offset(req: pb::UpdateOffsetRequest) {
    let Ok((_, _, queue, offset)) = parse_update_offset(&req) else { return };
    assert_eq!(i64::from(queue.0), i64::from(req.message_queue.as_ref().map_or(-1, |q| q.id)));
    assert_eq!(i128::from(offset.0), i128::from(req.offset));
}

fn get_offset(req: pb::GetOffsetRequest) {
    let Ok((_, _, queue)) = parse_get_offset(&req) else { return };
    assert_eq!(i64::from(queue.0), i64::from(req.message_queue.as_ref().map_or(-1, |q| q.id)));
}

fn query_offset(req: pb::QueryOffsetRequest) {
    let Ok((_, queue, policy)) = parse_query_offset(&req) else { return };
    assert_eq!(policy as i32, req.query_offset_policy);
    assert_eq!(i64::from(queue.0), i64::from(req.message_queue.as_ref().map_or(-1, |q| q.id)));
    if let Some(ts) = &req.timestamp {
        let ms = convert::millis_of(ts);
        assert_eq!(convert::millis_of(&convert::timestamp(ms)), ms, "{ts:?} is {ms:?}");
    }
}

fn end_transaction(req: pb::EndTransactionRequest, group: &str) {
    let Ok((topic, key, commit)) = parse_end_transaction(&req, group) else { return };
    assert_valid_name(topic.as_str());
    assert_eq!(commit, req.resolution == pb::TransactionResolution::Commit as i32);
    let id = transaction::encode(group, key);
    assert_eq!(transaction::parse(&id).ok(), Some((group.to_string(), key)), "{id}");
}

fn telemetry(cmd: pb::TelemetryCommand) {
    let Some(pb::telemetry_command::Command::Settings(settings)) = &cmd.command else { return };
    let sessions = Sessions::new();
    sessions.settings("client", None, settings);
    let listed = sessions.list(None);
    assert_eq!(listed.len(), 1);
    let s = &listed[0];
    assert!(s.telemetry && s.agent.len() <= MAX_FIELD_BYTES);
    assert!(s.group.as_ref().is_none_or(|g| g.len() <= MAX_FIELD_BYTES));
    assert!(s.topics.len() <= MAX_TOPICS_PER_CLIENT && s.topics.iter().all(|t| t.len() <= MAX_FIELD_BYTES));
    if let Some(pb::settings::PubSub::Subscription(sub)) = &settings.pub_sub {
        for entry in &sub.subscriptions {
            check_filter(entry.expression.as_ref());
        }
    }
}

fn notify_client_termination(req: pb::NotifyClientTerminationRequest) {
    let sessions = Sessions::new();
    sessions.heartbeat("client", None, &pb::HeartbeatRequest { group: req.group, client_type: 0 });
    sessions.terminated("client");
    assert!(sessions.list(None).is_empty());
}

fn change_invisible(req: pb::ChangeInvisibleDurationRequest, group: &str) {
    let range = ServiceSettings::default().invisible_range_ms;
    let Ok((_, _, receipt, ms)) = parse_change_invisible(&req, group, range) else { return };
    assert!((range.0..=range.1).contains(&ms));
    assert_eq!(receipt.broker_group, group);
    assert_eq!(req.receipt_handle.parse().as_ref(), Ok(&receipt));
}
