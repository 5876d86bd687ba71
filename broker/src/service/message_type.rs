//! What kind of message a send is (NORMAL, FIFO, DELAY or TRANSACTION) and when it may be
//! delivered, from its system properties and RocketMQ 4's `DELAY` level property; and the
//! topic's check that it accepts that kind, as RocketMQ 5 does.

use std::collections::BTreeSet;
use std::collections::HashMap;

use raftmq_machine::types::{MessageType, Millis};
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;

use super::status::Refusal;

/// The user property RocketMQ 4 clients set to a delay level (1-18).
pub const DELAY_LEVEL_PROPERTY: &str = "DELAY";

/// RocketMQ's delay levels 1-18, in seconds: 1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m
/// 20m 30m 1h 2h.
pub const DELAY_LEVELS_S: [u64; 18] =
    [1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200];

/// A send's kind and delivery time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// The kind.
    pub kind: MessageType,
    /// When it may be delivered, for a delay message.
    pub deliver_at: Option<Millis>,
}

fn conflict(message: String) -> Refusal {
    Refusal::new(Code::MessagePropertyConflictWithType, message)
}

fn illegal_time(message: String) -> Refusal {
    Refusal::new(Code::IllegalDeliveryTime, message)
}

/// The delivery time a `DELAY` level asks for, counted from `now`; level 0 is none.
fn level_time(value: &str, now: Millis) -> Result<Option<Millis>, Refusal> {
    let level: usize = value
        .trim()
        .parse()
        .map_err(|_| illegal_time(format!("property {DELAY_LEVEL_PROPERTY}={value:?} is not a delay level (0-18)")))?;
    match level {
        0 => Ok(None),
        1..=18 => Ok(Some(now.plus_ms(DELAY_LEVELS_S[level - 1] * 1000))),
        _ => Err(illegal_time(format!(
            "delay level {level} does not exist; the levels are 1-18 (1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m \
             10m 20m 30m 1h 2h)"
        ))),
    }
}

/// A `seconds` field beyond this (the year 5138) holds milliseconds: the official Python
/// client documents `delivery_timestamp` in milliseconds but copies it into `seconds`.
const SECONDS_FIELD_HOLDS_MS: i64 = 100_000_000_000;

/// The delivery time of a send's timestamp.
fn delivery_ms(t: &prost_types::Timestamp) -> Millis {
    if t.seconds > SECONDS_FIELD_HOLDS_MS {
        return Millis(t.seconds);
    }
    Millis(t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos / 1_000_000)))
}

/// Classifies a send: the declared type (if any) must agree with what the message carries
/// (a message group makes it FIFO, a delivery time or delay level DELAY, and a message is
/// never two of these); a delivery time more than `max_delay_ms` after `now` is refused.
pub fn classify(
    sys: &pb::SystemProperties,
    properties: &HashMap<String, String>,
    now: Millis,
    max_delay_ms: u64,
) -> Result<Classified, Refusal> {
    let level = properties.get(DELAY_LEVEL_PROPERTY).map(|v| level_time(v, now)).transpose()?.flatten();
    let timestamp = sys.delivery_timestamp.as_ref().map(delivery_ms);
    if level.is_some() && timestamp.is_some() {
        return Err(conflict(format!(
            "the message has both a delivery timestamp and the {DELAY_LEVEL_PROPERTY} level property; give one"
        )));
    }
    let deliver_at = level.or(timestamp);
    let group = sys.message_group.as_deref().is_some_and(|g| !g.is_empty());
    if group && deliver_at.is_some() {
        return Err(conflict("a message with a message group (FIFO) cannot also have a delivery time (DELAY)".into()));
    }
    let implied = if group {
        Some(MessageType::Fifo)
    } else if deliver_at.is_some() {
        Some(MessageType::Delay)
    } else {
        None
    };
    let declared = match pb::MessageType::try_from(sys.message_type) {
        Ok(pb::MessageType::Unspecified) => None,
        Ok(pb::MessageType::Normal) => Some(MessageType::Normal),
        Ok(pb::MessageType::Fifo) => Some(MessageType::Fifo),
        Ok(pb::MessageType::Delay) => Some(MessageType::Delay),
        Ok(pb::MessageType::Transaction) => Some(MessageType::Transaction),
        Ok(t @ (pb::MessageType::Lite | pb::MessageType::Priority)) => {
            return Err(Refusal::new(
                Code::NotImplemented,
                format!("{} messages are not supported by this broker; the message was not stored", t.as_str_name()),
            ));
        }
        Err(_) => return Err(Refusal::new(Code::BadRequest, format!("unknown message type {}", sys.message_type))),
    };
    let kind = match (declared, implied) {
        (None, None) => MessageType::Normal,
        (None, Some(i)) => i,
        (Some(d), None) if d == MessageType::Normal || d == MessageType::Transaction => d,
        (Some(d), None) => {
            let needs = if d == MessageType::Fifo { "a message group" } else { "a delivery timestamp or delay level" };
            return Err(conflict(format!("a {} message needs {needs}", d.name())));
        }
        (Some(d), Some(i)) if d == i => d,
        (Some(d), Some(i)) => {
            return Err(conflict(format!(
                "the message is declared {} but carries what makes it {}",
                d.name(),
                i.name()
            )));
        }
    };
    if let Some(at) = deliver_at {
        let latest = now.plus_ms(max_delay_ms);
        if at > latest {
            return Err(illegal_time(format!(
                "the delivery time is {} s ahead, more than the {} s a delay may be (max_delay_ms)",
                (at.0 - now.0) / 1000,
                max_delay_ms / 1000
            )));
        }
    }
    Ok(Classified { kind, deliver_at })
}

/// Refuses a message of a type the topic does not accept, naming both.
pub fn check_topic_accepts(topic: &str, accepted: &BTreeSet<MessageType>, kind: MessageType) -> Result<(), Refusal> {
    if accepted.contains(&kind) {
        return Ok(());
    }
    let names: Vec<&str> = accepted.iter().map(|t| t.name()).collect();
    Err(conflict(format!(
        "topic {topic} accepts {} messages, this message is {}; send it to a topic of that type \
         (mqadmin topic update {topic} --types ...)",
        names.join(","),
        kind.name()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = Millis(1_700_000_000_000);
    const DAY_MS: u64 = 24 * 3600 * 1000;

    fn sys(kind: pb::MessageType, group: Option<&str>, at_s: Option<i64>) -> pb::SystemProperties {
        pb::SystemProperties {
            message_type: kind as i32,
            message_group: group.map(str::to_string),
            delivery_timestamp: at_s.map(|s| prost_types::Timestamp { seconds: s, nanos: 0 }),
            ..Default::default()
        }
    }

    fn kind_of(s: &pb::SystemProperties, props: &[(&str, &str)]) -> Result<Classified, Refusal> {
        let props = props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        classify(s, &props, NOW, DAY_MS)
    }

    #[test]
    fn types_follow_what_the_message_carries() {
        let at = NOW.0 / 1000 + 60;
        let ok = |s, p: &[(&str, &str)]| kind_of(&s, p).expect("accepted");
        assert_eq!(ok(sys(pb::MessageType::Unspecified, None, None), &[]).kind, MessageType::Normal);
        assert_eq!(ok(sys(pb::MessageType::Normal, None, None), &[]).kind, MessageType::Normal);
        assert_eq!(ok(sys(pb::MessageType::Unspecified, Some("g"), None), &[]).kind, MessageType::Fifo);
        assert_eq!(ok(sys(pb::MessageType::Fifo, Some("g"), None), &[]).kind, MessageType::Fifo);
        let delay = ok(sys(pb::MessageType::Delay, None, Some(at)), &[]);
        assert_eq!((delay.kind, delay.deliver_at), (MessageType::Delay, Some(Millis(at * 1000))));
        assert_eq!(ok(sys(pb::MessageType::Transaction, None, None), &[]).kind, MessageType::Transaction);
        // Milliseconds in the seconds field (the official Python client) are read as such.
        let ms = ok(sys(pb::MessageType::Delay, None, Some(at * 1000 + 250)), &[]);
        assert_eq!(ms.deliver_at, Some(Millis(at * 1000 + 250)));
        // RocketMQ 4's levels: 3 is 10 s, 18 is 2 h, 0 is no delay.
        let level = ok(sys(pb::MessageType::Unspecified, None, None), &[("DELAY", "3")]);
        assert_eq!((level.kind, level.deliver_at), (MessageType::Delay, Some(NOW.plus_ms(10_000))));
        assert_eq!(
            ok(sys(pb::MessageType::Unspecified, None, None), &[("DELAY", "18")]).deliver_at,
            Some(NOW.plus_ms(7_200_000))
        );
        assert_eq!(ok(sys(pb::MessageType::Unspecified, None, None), &[("DELAY", "0")]).kind, MessageType::Normal);
    }

    #[test]
    fn conflicts_and_bad_times_are_refused_with_what_to_change() {
        let at = NOW.0 / 1000 + 60;
        let refused = |s, p: &[(&str, &str)]| kind_of(&s, p).expect_err("refused");
        let r = refused(sys(pb::MessageType::Normal, Some("g"), None), &[]);
        assert_eq!(r.code, Code::MessagePropertyConflictWithType);
        assert!(r.message.contains("NORMAL") && r.message.contains("FIFO"), "{}", r.message);
        assert_eq!(refused(sys(pb::MessageType::Fifo, None, None), &[]).code, Code::MessagePropertyConflictWithType);
        assert_eq!(refused(sys(pb::MessageType::Delay, None, None), &[]).code, Code::MessagePropertyConflictWithType);
        assert_eq!(
            refused(sys(pb::MessageType::Transaction, None, Some(at)), &[]).code,
            Code::MessagePropertyConflictWithType
        );
        assert_eq!(
            refused(sys(pb::MessageType::Unspecified, Some("g"), Some(at)), &[]).code,
            Code::MessagePropertyConflictWithType
        );
        assert_eq!(
            refused(sys(pb::MessageType::Unspecified, None, Some(at)), &[("DELAY", "2")]).code,
            Code::MessagePropertyConflictWithType
        );
        for bad in ["19", "-1", "soon"] {
            assert_eq!(
                refused(sys(pb::MessageType::Unspecified, None, None), &[("DELAY", bad)]).code,
                Code::IllegalDeliveryTime
            );
        }
        let r = refused(sys(pb::MessageType::Delay, None, Some(NOW.0 / 1000 + 2 * 86_400)), &[]);
        assert_eq!(r.code, Code::IllegalDeliveryTime);
        assert!(r.message.contains("max_delay_ms"), "{}", r.message);
        let mut unknown = sys(pb::MessageType::Normal, None, None);
        unknown.message_type = 99;
        assert_eq!(refused(unknown, &[]).code, Code::BadRequest);
    }

    #[test]
    fn a_topic_refuses_other_types_naming_both() {
        let fifo: BTreeSet<_> = [MessageType::Fifo].into_iter().collect();
        assert!(check_topic_accepts("orders", &fifo, MessageType::Fifo).is_ok());
        let r = check_topic_accepts("orders", &fifo, MessageType::Normal).expect_err("refused");
        assert_eq!(r.code, Code::MessagePropertyConflictWithType);
        assert!(r.message.contains("accepts FIFO") && r.message.contains("is NORMAL"), "{}", r.message);
    }
}
