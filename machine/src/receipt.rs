//! Receipt handles: opaque to clients, they name the broker group, queue, offset and the
//! pop that delivered the message, so any node can route an ack.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{PopId, QueueId, QueueOffset};

/// Longest receipt handle accepted.
pub const MAX_RECEIPT_LEN: usize = 256;

/// A decoded receipt handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Broker group that holds the queue.
    pub broker_group: String,
    /// Queue.
    pub queue: QueueId,
    /// Offset in the queue.
    pub offset: QueueOffset,
    /// The pop (delivery) this receipt belongs to; a later delivery invalidates it.
    pub pop_id: PopId,
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r1.{}.{}.{:x}.{}", self.queue.0, self.offset.0, self.pop_id.0, self.broker_group)
    }
}

impl FromStr for Receipt {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_RECEIPT_LEN {
            return Err(format!("receipt handle is {} bytes, the limit is {MAX_RECEIPT_LEN}", s.len()));
        }
        let mut parts = s.splitn(5, '.');
        let bad = || format!("malformed receipt handle {s:?}");
        if parts.next() != Some("r1") {
            return Err(bad());
        }
        let queue = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let offset = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let pop_id = parts.next().and_then(|p| u64::from_str_radix(p, 16).ok()).ok_or_else(bad)?;
        let broker_group = parts.next().filter(|g| !g.is_empty()).ok_or_else(bad)?.to_string();
        Ok(Receipt { broker_group, queue: QueueId(queue), offset: QueueOffset(offset), pop_id: PopId(pop_id) })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn round_trip(queue: u32, offset: u64, pop_id: u64, group in "[a-zA-Z0-9_%|.-]{1,40}") {
            let r = Receipt { broker_group: group, queue: QueueId(queue), offset: QueueOffset(offset), pop_id: PopId(pop_id) };
            prop_assert_eq!(r.to_string().parse::<Receipt>(), Ok(r));
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(s in ".{0,300}") {
            let _ = s.parse::<Receipt>();
        }
    }

    #[test]
    fn malformed_handles_are_refused() {
        for bad in
            ["", "r1", "r2.1.2.3.g", "r1.x.2.3.g", "r1.1.2.zz.g", "r1.1.2.3.", &format!("r1.1.2.3.{}", "g".repeat(300))]
        {
            assert!(bad.parse::<Receipt>().is_err(), "{bad:?} must be refused");
        }
    }
}
