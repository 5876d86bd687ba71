//! What can go wrong in a client call: each error says which operation failed, at which
//! endpoint, and with what code and message.

use std::time::Duration;

use raftmq_proto::rocketmq::v2::Code;

/// A client error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint list could not be used.
    #[error("invalid endpoints {list:?}: {reason}; give \"host:port;host:port\"")]
    Endpoints {
        /// The list as given.
        list: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An argument was refused before anything was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The gRPC call failed: the transport, or a gRPC status from the server.
    #[error("{operation} at {endpoint}: gRPC {code:?}: {message}")]
    Rpc {
        /// What the client was doing.
        operation: &'static str,
        /// Where.
        endpoint: String,
        /// gRPC status code.
        code: tonic::Code,
        /// The server's or the transport's message.
        message: String,
    },
    /// The broker answered with a RocketMQ status other than OK.
    #[error("{operation} at {endpoint}: the broker answered {code:?}: {message}")]
    Broker {
        /// What the client was doing.
        operation: &'static str,
        /// Where.
        endpoint: String,
        /// RocketMQ status code.
        code: Code,
        /// The broker's message.
        message: String,
    },
    /// No answer in time.
    #[error("{operation} at {endpoint}: no answer within {timeout:?}")]
    Timeout {
        /// What the client was doing.
        operation: &'static str,
        /// Where.
        endpoint: String,
        /// How long the client waited.
        timeout: Duration,
    },
    /// The answer did not follow the protocol, or a message arrived damaged.
    #[error("{operation} at {endpoint}: {message}")]
    Protocol {
        /// What the client was doing.
        operation: &'static str,
        /// Where.
        endpoint: String,
        /// What was wrong.
        message: String,
    },
    /// Every retry failed before the operation's deadline.
    #[error("{operation}: gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        /// What the client was doing.
        operation: &'static str,
        /// How many calls were made.
        attempts: u32,
        /// The last failure.
        last: Box<Error>,
    },
}

impl Error {
    pub(crate) fn rpc(operation: &'static str, endpoint: &str, status: &tonic::Status) -> Self {
        // Transport failures keep their cause (e.g. "connection refused") in the source chain.
        let mut message = status.message().to_string();
        let mut source = std::error::Error::source(status);
        for _ in 0..4 {
            let Some(s) = source else { break };
            let text = s.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            source = s.source();
        }
        Error::Rpc { operation, endpoint: endpoint.to_string(), code: status.code(), message }
    }

    /// Ok when the broker's answer says OK, else the broker's refusal.
    pub(crate) fn unless_ok(
        operation: &'static str,
        endpoint: &str,
        status: Option<&raftmq_proto::rocketmq::v2::Status>,
    ) -> Result<(), Self> {
        match status {
            Some(s) if s.code == Code::Ok as i32 => Ok(()),
            other => Err(Error::broker(operation, endpoint, other)),
        }
    }

    pub(crate) fn broker(
        operation: &'static str,
        endpoint: &str,
        status: Option<&raftmq_proto::rocketmq::v2::Status>,
    ) -> Self {
        match status {
            Some(s) => Error::Broker {
                operation,
                endpoint: endpoint.to_string(),
                code: Code::try_from(s.code).unwrap_or(Code::Unspecified),
                message: s.message.clone(),
            },
            None => Error::protocol(operation, endpoint, "the answer carried no status"),
        }
    }

    pub(crate) fn protocol(operation: &'static str, endpoint: &str, message: impl Into<String>) -> Self {
        Error::Protocol { operation, endpoint: endpoint.to_string(), message: message.into() }
    }

    /// The error that ended the operation (the last one, after retries).
    pub fn last(&self) -> &Error {
        match self {
            Error::GaveUp { last, .. } => last.last(),
            e => e,
        }
    }

    /// The gRPC status code, when the server or transport gave one.
    pub fn grpc_code(&self) -> Option<tonic::Code> {
        match self.last() {
            Error::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The broker's RocketMQ status code, when it refused.
    pub fn broker_code(&self) -> Option<Code> {
        match self.last() {
            Error::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether another attempt (maybe at another endpoint) could succeed: transport
    /// failures, timeouts, a node without a leader or one that is stepping down.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Rpc { code, message, .. } => {
                matches!(
                    code,
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                        | tonic::Code::Aborted
                        | tonic::Code::DeadlineExceeded
                )
                // A connection the server closed (GOAWAY) mid-call: the node is stopping.
                || (*code == tonic::Code::Internal && message.contains("h2 protocol error"))
            }
            Error::Broker { code, .. } => matches!(
                code,
                Code::InternalServerError
                    | Code::InternalError
                    | Code::HaNotAvailable
                    | Code::ProxyTimeout
                    | Code::MasterPersistenceTimeout
                    | Code::SlavePersistenceTimeout
                    | Code::RequestTimeout
                    | Code::TooManyRequests
            ),
            Error::Timeout { .. } => true,
            Error::Endpoints { .. } | Error::InvalidArgument(_) | Error::Protocol { .. } | Error::GaveUp { .. } => {
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_found_through_retries() {
        let last = Error::rpc("create topic", "h:1", &tonic::Status::invalid_argument("bad name"));
        assert!(!last.is_retryable());
        let e = Error::GaveUp { operation: "create topic", attempts: 3, last: Box::new(last) };
        assert_eq!(e.grpc_code(), Some(tonic::Code::InvalidArgument));
        assert_eq!(e.broker_code(), None);
        let text = e.to_string();
        assert!(text.contains("h:1") && text.contains("bad name") && text.contains("3 attempts"), "{text}");
    }

    #[test]
    fn leader_trouble_is_retryable_and_bad_input_is_not() {
        let status = |code: Code| raftmq_proto::rocketmq::v2::Status { code: code as i32, message: "m".into() };
        assert!(Error::broker("send", "h:1", Some(&status(Code::InternalServerError))).is_retryable());
        assert!(!Error::broker("send", "h:1", Some(&status(Code::IllegalTopic))).is_retryable());
        assert!(Error::rpc("send", "h:1", &tonic::Status::unavailable("connection refused")).is_retryable());
        assert!(!Error::broker("send", "h:1", None).is_retryable());
        let goaway = tonic::Status::internal("h2 protocol error: connection error received: not a result of an error");
        assert!(Error::rpc("send", "h:1", &goaway).is_retryable(), "a stopping node's GOAWAY");
        assert!(!Error::rpc("send", "h:1", &tonic::Status::internal("decode failed")).is_retryable());
    }
}
