//! Delay timers: what the replicated state keeps of messages waiting for their delivery time.
//!
//! A message of a `Send` whose delivery time is later than the entry's own time (the
//! proposer's clock) is scheduled: apply gives it no queue offset yet. The waiting messages
//! themselves live in each node's timer store, derived from the log like the ConsumeQueue;
//! the state keeps only how many wait and which `FireTimers` entry was accepted last. The
//! leader proposes `FireTimers` naming due messages it found in its timer store; apply takes
//! it only if no other `FireTimers` was accepted since the one the leader's store had seen
//! (`prev_fire`), so a stale plan (an old leader's, or one planned before the store caught
//! up) fires nothing twice. Messages the plan missed (applied after it was made) wait for the
//! next plan. Whether a `FireTimers` was accepted follows from the chain of `prev_fire`
//! links, so dispatch can tell without apply results.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::batch::MessageHead;
use crate::command::CommandError;
use crate::ids::{LogIndex, Millis, Slot};

/// Most messages one `FireTimers` makes visible.
pub const MAX_FIRES_PER_COMMAND: usize = 1024;

/// Whether a message with delivery time `deliver_at`, in a `Send` entry proposed at `now`,
/// waits for a timer (else it is stored at once).
pub fn scheduled(deliver_at: Option<Millis>, now: Millis) -> bool {
    deliver_at.is_some_and(|at| at > now)
}

/// A due message made visible: where it is in the log and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fire {
    /// The log entry of its `Send`.
    pub log_index: LogIndex,
    /// Its slot in that entry.
    pub slot: Slot,
    /// Its topic, queue, topic incarnation and delivery time.
    pub head: MessageHead,
}

/// Refuses a fire that names a message named before in the same command (`seen`): each
/// message fires once. Dispatch applies the same rule.
pub fn check_fire(seen: &mut BTreeSet<(LogIndex, Slot)>, fire: &Fire) -> Result<(), CommandError> {
    if !seen.insert((fire.log_index, fire.slot)) {
        return Err(CommandError::StalePlan(format!(
            "message {} of log entry {} is named twice in one fire",
            fire.slot.0, fire.log_index.0
        )));
    }
    Ok(())
}

/// The replicated progress of timers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerState {
    /// Scheduled messages not fired yet (those of topics deleted meanwhile included, until
    /// their time comes).
    pub pending: u64,
    /// The index of the last accepted `FireTimers` (0: none yet).
    pub last_fire: LogIndex,
}
