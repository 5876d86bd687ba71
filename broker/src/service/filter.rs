//! A subscription's filter, as receive and pull apply it: a tag expression, judged from the
//! tag hash in the ConsumeQueue without reading the message, or a SQL92 condition over the
//! message's properties (RocketMQ's semantics, [`raftmq_machine::sql`]), judged from the
//! message read back from the log. Either is evaluated on the node planning the read, never
//! inside `apply`.

use raftmq_machine::plan::Fresh;
use raftmq_machine::sql::SqlFilter;
use raftmq_machine::types::{StoredMessage, TagFilter};
use raftmq_machine::{LogIndex, Slot};
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;

use super::status::Refusal;

/// The property a SQL92 condition reads a message's tag from (as RocketMQ's does).
pub const TAGS_PROPERTY: &str = "TAGS";
/// The property a SQL92 condition reads a message's keys from, space-separated.
pub const KEYS_PROPERTY: &str = "KEYS";

/// A subscription's filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// A tag expression (`*`, `TagA || TagB`).
    Tags(TagFilter),
    /// A SQL92 condition over the message's properties.
    Sql(SqlFilter),
}

impl Filter {
    /// The filter a request names (none: every message); a bad expression is refused with
    /// `ILLEGAL_FILTER_EXPRESSION` saying what is wrong and where.
    pub fn of(expr: Option<&pb::FilterExpression>) -> Result<Filter, Refusal> {
        let Some(expr) = expr else { return Ok(Filter::Tags(TagFilter::All)) };
        let bad = |e: String| Refusal::new(Code::IllegalFilterExpression, e);
        match pb::FilterType::try_from(expr.r#type) {
            Ok(pb::FilterType::Tag) | Ok(pb::FilterType::Unspecified) => {
                TagFilter::parse(&expr.expression).map(Filter::Tags).map_err(bad)
            }
            Ok(pb::FilterType::Sql) => SqlFilter::parse(&expr.expression)
                .map(Filter::Sql)
                .map_err(|e| bad(format!("SQL92 filter {:?}: {e}", expr.expression))),
            Err(_) => Err(bad(format!("unknown filter type {}", expr.r#type))),
        }
    }

    /// Whether the message a ConsumeQueue record describes passes. A SQL92 condition reads
    /// the message with `load` (`None`: no longer in the log, so it does not pass).
    pub fn accepts<E>(
        &self,
        fresh: &Fresh,
        load: impl FnOnce(LogIndex, Slot) -> Result<Option<StoredMessage>, E>,
    ) -> Result<bool, E> {
        match self {
            Filter::Tags(tags) => Ok(tags.matches(fresh.tag)),
            Filter::Sql(sql) => {
                let Some((index, slot)) = fresh.at else { return Ok(false) };
                Ok(load(index, slot)?.is_some_and(|m| sql_matches(sql, &m)))
            }
        }
    }
}

/// Whether `m` satisfies `sql`: its user properties, and its tag as `TAGS` and keys as
/// `KEYS` unless a user property of that name exists.
pub fn sql_matches(sql: &SqlFilter, m: &StoredMessage) -> bool {
    let keys = m.keys.join(" ");
    sql.matches(|name| {
        if let Some(v) = m.properties.get(name) {
            return Some(v.as_str());
        }
        match name {
            TAGS_PROPERTY => m.tag.as_deref(),
            KEYS_PROPERTY if !m.keys.is_empty() => Some(keys.as_str()),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use raftmq_machine::types::{TopicName, tag_hash};
    use raftmq_machine::{Millis, QueueId};

    use super::*;

    fn message(tag: Option<&str>, props: &[(&str, &str)]) -> StoredMessage {
        StoredMessage {
            topic: TopicName::new("t").expect("valid"),
            queue: QueueId(0),
            topic_epoch: LogIndex(1),
            deliver_at: None,
            transactional: false,
            message_id: "m".into(),
            tag: tag.map(str::to_string),
            keys: vec!["k1".into(), "k2".into()],
            message_group: None,
            properties: props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            born: Millis(0),
            born_host: String::new(),
            body: Bytes::from_static(b"x"),
            body_gzip: false,
        }
    }

    fn expr(kind: pb::FilterType, text: &str) -> pb::FilterExpression {
        pb::FilterExpression { r#type: kind as i32, expression: text.into() }
    }

    #[test]
    fn sql_reads_properties_tag_and_keys_from_the_message() {
        let f =
            Filter::of(Some(&expr(pb::FilterType::Sql, "a > 5 AND TAGS = 'paid' AND KEYS = 'k1 k2'"))).expect("valid");
        let fresh = Fresh { tag: None, group: None, at: Some((LogIndex(3), Slot(1))) };
        let hit = message(Some("paid"), &[("a", "6")]);
        let miss = message(Some("paid"), &[("a", "5")]);
        let at = |want: (LogIndex, Slot), m: StoredMessage| {
            move |i, s| -> Result<_, ()> {
                assert_eq!((i, s), want);
                Ok(Some(m))
            }
        };
        assert_eq!(f.accepts(&fresh, at((LogIndex(3), Slot(1)), hit)), Ok(true));
        assert_eq!(f.accepts(&fresh, at((LogIndex(3), Slot(1)), miss)), Ok(false));
        assert_eq!(f.accepts(&fresh, |_, _| Ok::<_, ()>(None)), Ok(false), "gone from the log");
        assert_eq!(f.accepts(&fresh, |_, _| Err("disk")), Err("disk"), "a read error is not a skip");
    }

    #[test]
    fn tags_never_read_the_message_and_bad_expressions_are_refused() {
        let f = Filter::of(Some(&expr(pb::FilterType::Tag, "a || b"))).expect("valid");
        let fresh = Fresh { tag: Some(tag_hash("b")), group: None, at: Some((LogIndex(1), Slot(0))) };
        assert_eq!(f.accepts(&fresh, |_, _| -> Result<_, ()> { panic!("a tag filter reads no message") }), Ok(true));
        assert_eq!(Filter::of(None), Ok(Filter::Tags(TagFilter::All)));
        let bad = Filter::of(Some(&expr(pb::FilterType::Sql, "a > "))).expect_err("incomplete");
        assert_eq!(bad.code, Code::IllegalFilterExpression);
        assert!(bad.message.contains("column"), "{}", bad.message);
        assert!(Filter::of(Some(&pb::FilterExpression { r#type: 99, expression: "x".into() })).is_err());
    }
}
