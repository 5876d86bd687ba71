//! Transactions: the transaction id of a half message, and `EndTransaction`.
//!
//! A transaction id names the broker group and where the half message is in its log,
//! `t1.<log index>.<slot>.<broker group>`: opaque to clients, it routes itself, so any node
//! takes the producer's commit or rollback (a follower forwards it to the leader, whose
//! release driver ends it once; see [`crate::timers`]).

use raftmq_machine::transaction::TransactionKey;
use raftmq_machine::types::TopicName;
use raftmq_machine::{LogIndex, Slot};
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;

use super::Broker;
use super::route::write_topic_of;
use super::status::{self, Refusal};
use crate::timers::ResolveError;

const PREFIX: &str = "t1";
/// Longest transaction id accepted.
const MAX_ID_BYTES: usize = 512;

/// The transaction id of the half message at `key` in `group`'s log.
pub fn encode(group: &str, key: TransactionKey) -> String {
    format!("{PREFIX}.{}.{}.{group}", key.0.0, key.1.0)
}

/// The broker group and half message a transaction id names.
pub fn parse(id: &str) -> Result<(String, TransactionKey), Refusal> {
    let bad = |why: &str| {
        let shown: String = id.chars().take(64).collect();
        Refusal::new(Code::InvalidTransactionId, format!("transaction id {shown:?} {why}"))
    };
    if id.len() > MAX_ID_BYTES {
        return Err(bad(&format!("is longer than {MAX_ID_BYTES} bytes")));
    }
    let mut parts = id.splitn(4, '.');
    let (Some(PREFIX), Some(index), Some(slot), Some(group)) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("is not one this broker gave (t1.<log index>.<slot>.<broker group>)"));
    };
    let index: u64 = index.parse().map_err(|_| bad("has no log index"))?;
    let slot: u32 = slot.parse().map_err(|_| bad("has no slot"))?;
    if group.is_empty() || index == 0 {
        return Err(bad("names no broker group or log entry"));
    }
    Ok((group.to_string(), (LogIndex(index), Slot(slot))))
}

/// An EndTransaction's topic, the half message its transaction id names (of
/// `broker_group`, this node's) and whether it commits (else it rolls back).
pub fn parse_end_transaction(
    req: &pb::EndTransactionRequest,
    broker_group: &str,
) -> Result<(TopicName, TransactionKey, bool), Refusal> {
    let topic = write_topic_of(req.topic.as_ref())?;
    let (group, key) = parse(&req.transaction_id)?;
    if group != broker_group {
        return Err(Refusal::new(
            Code::InvalidTransactionId,
            format!(
                "transaction {} belongs to broker group {group}, this node serves {broker_group}; send it to a node of {group}",
                req.transaction_id
            ),
        ));
    }
    let commit = match pb::TransactionResolution::try_from(req.resolution) {
        Ok(pb::TransactionResolution::Commit) => true,
        Ok(pb::TransactionResolution::Rollback) => false,
        _ => {
            return Err(Refusal::new(Code::BadRequest, "an end of transaction must say COMMIT or ROLLBACK"));
        }
    };
    Ok((topic, key, commit))
}

impl Broker {
    /// Commits or rolls back a transaction (on the leader; the caller forwards).
    pub(super) async fn serve_end_transaction(&self, req: pb::EndTransactionRequest) -> pb::EndTransactionResponse {
        let status = match self.end_transaction(&req).await {
            Ok(()) => status::ok(),
            Err(r) => r.status(),
        };
        pb::EndTransactionResponse { status: Some(status) }
    }

    async fn end_transaction(&self, req: &pb::EndTransactionRequest) -> Result<(), Refusal> {
        let (topic, key, commit) = parse_end_transaction(req, &self.inner.group)?;
        let open_topic = self.inner.state.read(|a| a.machine.transactions().get(&key).map(|o| o.head.topic.clone()));
        if let Some(open_topic) = open_topic
            && open_topic != topic
        {
            return Err(Refusal::new(
                Code::BadRequest,
                format!("transaction {} is of topic {open_topic}, not {topic}", req.transaction_id),
            ));
        }
        let source = pb::TransactionSource::try_from(req.source).map_or("UNKNOWN", |s| s.as_str_name());
        match self.inner.resolver.resolve(key, commit).await {
            Ok(()) => {
                tracing::debug!(
                    transaction = req.transaction_id,
                    message_id = req.message_id,
                    commit,
                    source,
                    "ended a transaction"
                );
                Ok(())
            }
            Err(ResolveError::NotOpen(why)) => Err(Refusal::new(Code::InvalidTransactionId, why)),
            Err(ResolveError::Unavailable(why)) => Err(Refusal::unavailable(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_round_trip_and_bad_ones_say_why() {
        let id = encode("broker-a", (LogIndex(42), Slot(3)));
        assert_eq!(id, "t1.42.3.broker-a");
        assert_eq!(parse(&id).expect("valid"), ("broker-a".to_string(), (LogIndex(42), Slot(3))));
        for bad in ["", "t1.42", "t2.42.3.g", "t1.x.3.g", "t1.42.-1.g", "t1.0.0.g", "t1.4.2."] {
            let e = parse(bad).expect_err(bad);
            assert_eq!(e.code, Code::InvalidTransactionId, "{bad}");
        }
        assert!(parse(&"t1.1.1.".repeat(100)).expect_err("long").message.contains("longer"));
    }
}
