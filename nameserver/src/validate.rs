//! Checks a broker heartbeat against the protocol's rules and limits before the registry stores it.

use raftmq_proto::namesrv::v1::{BrokerHeartbeat, Role, TopicInfo};

/// Longest cluster, group or topic name (RocketMQ's limit).
pub const MAX_NAME_LEN: usize = 127;
/// Most topics one heartbeat may list.
pub const MAX_TOPICS_PER_HEARTBEAT: usize = 4096;
/// Most queues a topic may have.
pub const MAX_QUEUES: u32 = 1024;
/// Longest `host:port` endpoint.
pub const MAX_ENDPOINT_LEN: usize = 255;
/// The message types a topic may accept.
pub const MESSAGE_TYPES: [&str; 4] = ["NORMAL", "FIFO", "DELAY", "TRANSACTION"];

/// Why a cluster, group or topic name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty.
    #[error("the name is empty")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`] bytes.
    #[error("the name is {0} characters long, the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    /// A character outside `[%|a-zA-Z0-9_-]`.
    #[error("the name contains {0:?}; allowed are letters, digits, '%', '|', '_' and '-'")]
    BadChar(char),
}

/// Why a heartbeat was refused; it changes nothing in the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHeartbeat {
    /// The cluster name is set but invalid.
    #[error("cluster name {name:?} is invalid: {source}")]
    BadCluster {
        /// The name sent.
        name: String,
        /// What is wrong with it.
        source: NameError,
    },
    /// The group name is missing or invalid.
    #[error("group name {name:?} is invalid: {source}; configure the broker's group as 1 to 127 of [%|a-zA-Z0-9_-]")]
    BadGroup {
        /// The name sent.
        name: String,
        /// What is wrong with it.
        source: NameError,
    },
    /// Node id 0.
    #[error("node id 0 is invalid: node ids start at 1")]
    ZeroNodeId,
    /// A role number the protocol does not define.
    #[error("role {0} is unknown; expected LEADER, FOLLOWER, CANDIDATE or LEARNER")]
    UnknownRole(i32),
    /// An endpoint that is not `host:port`.
    #[error("{field} {value:?} is invalid: {reason}; expected \"host:port\"")]
    BadEndpoint {
        /// `client_endpoint` or `raft_endpoint`.
        field: &'static str,
        /// The endpoint sent (cut to [`MAX_ENDPOINT_LEN`] characters).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More than [`MAX_TOPICS_PER_HEARTBEAT`] topics.
    #[error("the heartbeat lists {count} topics, the limit is {MAX_TOPICS_PER_HEARTBEAT}")]
    TooManyTopics {
        /// Topics sent.
        count: usize,
    },
    /// An invalid topic name.
    #[error("topic name {name:?} is invalid: {source}")]
    BadTopic {
        /// The name sent.
        name: String,
        /// What is wrong with it.
        source: NameError,
    },
    /// The same topic twice in one heartbeat.
    #[error("topic {0:?} is listed twice; a heartbeat lists each topic once")]
    DuplicateTopic(String),
    /// A queue count outside `1..=MAX_QUEUES`.
    #[error("topic {topic:?} has {count} queues; a topic has 1 to {MAX_QUEUES}")]
    BadQueueCount {
        /// The topic.
        topic: String,
        /// The queue count sent.
        count: u32,
    },
    /// A message type that is not one of [`MESSAGE_TYPES`].
    #[error("topic {topic:?} lists message type {value:?}; expected NORMAL, FIFO, DELAY or TRANSACTION")]
    BadMessageType {
        /// The topic.
        topic: String,
        /// The type sent (cut to [`MAX_NAME_LEN`] characters).
        value: String,
    },
    /// More message types than there are.
    #[error("topic {topic:?} lists {count} message types, there are only {}", MESSAGE_TYPES.len())]
    TooManyMessageTypes {
        /// The topic.
        topic: String,
        /// Types sent.
        count: usize,
    },
}

/// Checks a cluster, group or topic name: 1 to [`MAX_NAME_LEN`] of `[%|a-zA-Z0-9_-]`.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '_' | '-'))) {
        return Err(NameError::BadChar(c));
    }
    // Only ASCII is left, so bytes are characters.
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    Ok(())
}

/// Checks a `host:port` endpoint; IPv6 hosts go in brackets (`[::1]:8081`).
pub fn check_endpoint(field: &'static str, value: &str) -> Result<(), InvalidHeartbeat> {
    let bad = |reason| InvalidHeartbeat::BadEndpoint { field, value: cut(value, MAX_ENDPOINT_LEN), reason };
    if value.is_empty() {
        return Err(bad("it is empty"));
    }
    if value.len() > MAX_ENDPOINT_LEN {
        return Err(bad("it is longer than 255 characters"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains whitespace or control characters"));
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(bad("it has no port"));
    };
    if host.is_empty() {
        return Err(bad("it has no host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("an IPv6 host must be in brackets"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad("the port is not a number from 1 to 65535")),
    }
}

/// Checks a heartbeat and returns it with its topics sorted by name.
pub(crate) fn heartbeat(mut hb: BrokerHeartbeat) -> Result<BrokerHeartbeat, InvalidHeartbeat> {
    if !hb.cluster.is_empty() {
        check_name(&hb.cluster)
            .map_err(|source| InvalidHeartbeat::BadCluster { name: cut(&hb.cluster, MAX_NAME_LEN), source })?;
    }
    check_name(&hb.group)
        .map_err(|source| InvalidHeartbeat::BadGroup { name: cut(&hb.group, MAX_NAME_LEN), source })?;
    if hb.node_id == 0 {
        return Err(InvalidHeartbeat::ZeroNodeId);
    }
    if Role::try_from(hb.role).is_err() {
        return Err(InvalidHeartbeat::UnknownRole(hb.role));
    }
    check_endpoint("client_endpoint", &hb.client_endpoint)?;
    if !hb.raft_endpoint.is_empty() {
        check_endpoint("raft_endpoint", &hb.raft_endpoint)?;
    }
    if hb.topics.len() > MAX_TOPICS_PER_HEARTBEAT {
        return Err(InvalidHeartbeat::TooManyTopics { count: hb.topics.len() });
    }
    for topic in &hb.topics {
        check_topic(topic)?;
    }
    hb.topics.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    if let Some(pair) = hb.topics.windows(2).find(|pair| pair[0].name == pair[1].name) {
        return Err(InvalidHeartbeat::DuplicateTopic(pair[0].name.clone()));
    }
    Ok(hb)
}

fn check_topic(topic: &TopicInfo) -> Result<(), InvalidHeartbeat> {
    check_name(&topic.name)
        .map_err(|source| InvalidHeartbeat::BadTopic { name: cut(&topic.name, MAX_NAME_LEN), source })?;
    if !(1..=MAX_QUEUES).contains(&topic.queue_count) {
        return Err(InvalidHeartbeat::BadQueueCount { topic: topic.name.clone(), count: topic.queue_count });
    }
    if topic.message_types.len() > MESSAGE_TYPES.len() {
        return Err(InvalidHeartbeat::TooManyMessageTypes {
            topic: topic.name.clone(),
            count: topic.message_types.len(),
        });
    }
    if let Some(value) = topic.message_types.iter().find(|t| !MESSAGE_TYPES.contains(&t.as_str())) {
        return Err(InvalidHeartbeat::BadMessageType { topic: topic.name.clone(), value: cut(value, MAX_NAME_LEN) });
    }
    Ok(())
}

/// The first `max` characters of `s`, so an error never echoes a huge input.
fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> BrokerHeartbeat {
        BrokerHeartbeat {
            cluster: "DefaultCluster".into(),
            group: "broker-a".into(),
            node_id: 1,
            role: Role::Follower as i32,
            term: 1,
            leader_id: 0,
            client_endpoint: "10.0.0.1:8081".into(),
            raft_endpoint: "10.0.0.1:9081".into(),
            topics: vec![
                TopicInfo { name: "b".into(), queue_count: 8, message_types: vec!["NORMAL".into()], perm: 6 },
                TopicInfo { name: "%RETRY%g".into(), queue_count: 1, message_types: vec![], perm: 6 },
            ],
            commit_index: None,
            last_log_index: None,
            timestamp_ms: 1,
        }
    }

    fn refused(change: impl FnOnce(&mut BrokerHeartbeat)) -> InvalidHeartbeat {
        let mut hb = valid();
        change(&mut hb);
        heartbeat(hb).expect_err("the heartbeat must be refused")
    }

    #[test]
    fn a_valid_heartbeat_passes_with_topics_sorted() {
        let hb = heartbeat(valid()).expect("valid");
        let names: Vec<&str> = hb.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["%RETRY%g", "b"]);
    }

    #[test]
    fn names_follow_the_rocketmq_syntax() {
        assert_eq!(check_name("a|b%c_d-9"), Ok(()));
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(check_name(&"x".repeat(127)), Ok(()));
        assert_eq!(check_name(&"x".repeat(128)), Err(NameError::TooLong(128)));
        assert_eq!(check_name("a.b"), Err(NameError::BadChar('.')));
        assert_eq!(check_name("a b"), Err(NameError::BadChar(' ')));
    }

    #[test]
    fn endpoints_are_host_and_port() {
        assert!(check_endpoint("client_endpoint", "localhost:8081").is_ok());
        assert!(check_endpoint("client_endpoint", "[::1]:8081").is_ok());
        for bad in ["", "host", ":8081", "host:", "host:0", "host:65536", "host:http", "::1:8081", "a b:1"] {
            assert!(
                matches!(check_endpoint("client_endpoint", bad), Err(InvalidHeartbeat::BadEndpoint { .. })),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn bad_fields_are_refused_with_their_reason() {
        assert_eq!(
            refused(|hb| hb.group.clear()),
            InvalidHeartbeat::BadGroup { name: String::new(), source: NameError::Empty }
        );
        assert_eq!(
            refused(|hb| hb.group = "a/b".into()),
            InvalidHeartbeat::BadGroup { name: "a/b".into(), source: NameError::BadChar('/') }
        );
        assert!(matches!(refused(|hb| hb.cluster = "x y".into()), InvalidHeartbeat::BadCluster { .. }));
        assert_eq!(refused(|hb| hb.node_id = 0), InvalidHeartbeat::ZeroNodeId);
        assert_eq!(refused(|hb| hb.role = 9), InvalidHeartbeat::UnknownRole(9));
        assert_eq!(
            refused(|hb| hb.client_endpoint.clear()),
            InvalidHeartbeat::BadEndpoint { field: "client_endpoint", value: String::new(), reason: "it is empty" }
        );
        assert!(matches!(
            refused(|hb| hb.raft_endpoint = "nohost".into()),
            InvalidHeartbeat::BadEndpoint { field: "raft_endpoint", .. }
        ));
        assert_eq!(
            refused(|hb| hb.topics[0].queue_count = 0),
            InvalidHeartbeat::BadQueueCount { topic: "b".into(), count: 0 }
        );
        assert_eq!(
            refused(|hb| hb.topics[0].queue_count = 1025),
            InvalidHeartbeat::BadQueueCount { topic: "b".into(), count: 1025 }
        );
        assert_eq!(refused(|hb| hb.topics[1].name = "b".into()), InvalidHeartbeat::DuplicateTopic("b".into()));
        assert!(matches!(refused(|hb| hb.topics[0].name = "t!".into()), InvalidHeartbeat::BadTopic { .. }));
        assert_eq!(
            refused(|hb| hb.topics[0].message_types = vec!["normal".into()]),
            InvalidHeartbeat::BadMessageType { topic: "b".into(), value: "normal".into() }
        );
        assert!(matches!(
            refused(|hb| hb.topics[0].message_types = vec!["NORMAL".into(); 5]),
            InvalidHeartbeat::TooManyMessageTypes { count: 5, .. }
        ));
    }

    #[test]
    fn the_topic_count_is_bounded() {
        let topic = |i: usize| TopicInfo { name: format!("t{i}"), queue_count: 1, message_types: vec![], perm: 6 };
        let mut hb = valid();
        hb.topics = (0..MAX_TOPICS_PER_HEARTBEAT).map(topic).collect();
        assert!(heartbeat(hb.clone()).is_ok());
        hb.topics.push(topic(MAX_TOPICS_PER_HEARTBEAT));
        assert_eq!(heartbeat(hb), Err(InvalidHeartbeat::TooManyTopics { count: MAX_TOPICS_PER_HEARTBEAT + 1 }));
    }

    #[test]
    fn an_empty_cluster_and_raft_endpoint_are_allowed() {
        let mut hb = valid();
        hb.cluster.clear();
        hb.raft_endpoint.clear();
        assert!(heartbeat(hb).is_ok());
    }
}
