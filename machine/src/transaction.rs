//! Transactions: half messages waiting for their producer's commit or rollback.
//!
//! A transactional message of a `Send` (a half message) is written to the log like any other
//! but gets no queue offset: the state keeps it in its table of open transactions (its head,
//! when it was sent, how often it was checked back), bounded by [`MAX_OPEN_TRANSACTIONS`].
//! A commit makes it visible the way a timer does: the leader names it in a `FireTimers`
//! (so every node's dispatch knows, from the same chain of `prev_fire` links, which commits
//! were accepted and at which offsets); a rollback names it in that command's `drops`. Both
//! take it out of the table, so a transaction ends once. `CheckTransactions` counts the
//! leader's check-backs, so a new leader goes on counting where the old one stopped.

use serde::{Deserialize, Serialize};

use crate::batch::MessageHead;
use crate::ids::{LogIndex, Millis, Slot};

/// Most open transactions a broker group keeps; a half message beyond is refused.
pub const MAX_OPEN_TRANSACTIONS: usize = 100_000;
/// Most transactions one `CheckTransactions` or one `FireTimers`' `drops` names.
pub const MAX_TRANSACTIONS_PER_COMMAND: usize = 1024;

/// Where a half message is in the log: its transaction's identity.
pub type TransactionKey = (LogIndex, Slot);

/// An open transaction: its half message waits for a commit or a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenTransaction {
    /// Where the message goes when committed.
    pub head: MessageHead,
    /// The time of the `Send` that wrote it.
    pub born: Millis,
    /// Check-backs sent so far.
    pub checks: u32,
    /// When the last one was sent.
    pub last_check: Option<Millis>,
}

impl OpenTransaction {
    /// When it is due for its next check-back: `first_ms` after it was sent, then every
    /// `interval_ms`.
    pub fn check_due(&self, first_ms: u64, interval_ms: u64) -> Millis {
        match self.last_check {
            None => self.born.plus_ms(first_ms),
            Some(at) => at.plus_ms(interval_ms),
        }
    }
}
