//! RocketMQ v2 status values and the mapping of broker errors onto them. Only codes the
//! official clients of every language know are used (see the client notes).

use raftmq_proto::rocketmq::v2::{Code, Status};

use raftmq_machine::CommandError;
use raftmq_machine::types::NameError;

/// A status with `code` and `message`.
pub fn status(code: Code, message: impl Into<String>) -> Status {
    Status { code: code as i32, message: message.into() }
}

/// The OK status.
pub fn ok() -> Status {
    status(Code::Ok, "OK")
}

/// A refused request: a code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Code.
    pub code: Code,
    /// Message.
    pub message: String,
}

impl Refusal {
    /// Makes a refusal.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// As a status value.
    pub fn status(&self) -> Status {
        status(self.code, self.message.clone())
    }

    /// A bad topic name.
    pub fn topic(name: &str, e: NameError) -> Self {
        Self::new(Code::IllegalTopic, format!("topic {name:?}: {e}"))
    }

    /// A bad group name.
    pub fn group(name: &str, e: NameError) -> Self {
        Self::new(Code::IllegalConsumerGroup, format!("group {name:?}: {e}"))
    }

    /// The cluster could not do it now (no leader, stopped node).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::InternalServerError, message)
    }
}

impl From<CommandError> for Refusal {
    fn from(e: CommandError) -> Self {
        let code = match &e {
            CommandError::TopicNotFound(_) => Code::TopicNotFound,
            CommandError::QueueNotFound { .. } | CommandError::BadConfig(_) => Code::BadRequest,
            CommandError::NotPermitted(_) => Code::Forbidden,
            CommandError::InvalidReceipt(_) => Code::InvalidReceiptHandle,
            // Retryable: the sender checks the topic again.
            CommandError::TopicChanged(_) => Code::InternalServerError,
            CommandError::LimitReached(_) => Code::TooManyRequests,
            CommandError::Damaged(_) | CommandError::StalePlan(_) => Code::InternalServerError,
        };
        Refusal::new(code, e.to_string())
    }
}

/// The status summarising per-entry statuses: OK when all are, the common code when all
/// failed alike, MULTIPLE_RESULTS otherwise.
pub fn summary<'a>(entries: impl IntoIterator<Item = &'a Status>) -> Status {
    let mut first: Option<&Status> = None;
    for s in entries {
        match first {
            None => first = Some(s),
            Some(f) if f.code != s.code => return status(Code::MultipleResults, "entries have different results"),
            Some(_) => {}
        }
    }
    match first {
        None => ok(),
        Some(s) if s.code == Code::Ok as i32 => ok(),
        Some(s) => s.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_entries() {
        let bad = status(Code::TopicNotFound, "x");
        assert_eq!(summary([&ok(), &ok()]).code, Code::Ok as i32);
        assert_eq!(summary([&bad, &bad]), bad);
        assert_eq!(summary([&ok(), &bad]).code, Code::MultipleResults as i32);
        assert_eq!(summary([]).code, Code::Ok as i32);
    }
}
