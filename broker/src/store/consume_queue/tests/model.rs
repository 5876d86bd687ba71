//! Model check: random operation sequences on one queue, compared after every step with an in-memory model.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// Append `n` records at the end (at offset `fresh_at` if the queue has no file).
    Append {
        n: u8,
        fresh_at: u8,
    },
    /// Re-append a record in [min, end): identical (no-op) or different (Invalid).
    Rewrite {
        pick: u16,
        same: bool,
    },
    /// Append past the end or below the minimum: Invalid.
    Misplaced {
        ahead: u8,
    },
    Truncate(u8),
    /// Truncate after a log index near a served record's (`pick`), or below or above them all; `shift` 0, 1, 2
    /// means one below, at, or one above it.
    TruncateAfterLogIndex {
        pick: u16,
        shift: u8,
    },
    DeleteBelow(u8),
    Reopen,
    Sync,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..7, 0u8..20).prop_map(|(n, fresh_at)| Op::Append { n, fresh_at }),
        1 => (any::<u16>(), any::<bool>()).prop_map(|(pick, same)| Op::Rewrite { pick, same }),
        1 => (0u8..3).prop_map(|ahead| Op::Misplaced { ahead }),
        2 => any::<u8>().prop_map(Op::Truncate),
        2 => (any::<u16>(), 0u8..3).prop_map(|(pick, shift)| Op::TruncateAfterLogIndex { pick, shift }),
        2 => any::<u8>().prop_map(Op::DeleteBelow),
        1 => Just(Op::Reopen),
        1 => Just(Op::Sync),
    ]
}

/// The `i`-th record appended at offset `o` by the operation numbered `version`: records come in pairs sharing a
/// log index (two messages of one entry), and log indexes grow along the queue.
fn model_rec(o: u64, version: u64, i: u64) -> QueueRecord {
    QueueRecord { log_index: LogIndex(1000 * version + i / 2), slot: Slot((i % 2) as u32), ..rec(o) }
}

/// What the queue should hold. `recs` are the records physically on disk (including those below a
/// `delete_below` minimum that stay in the remaining first file).
#[derive(Debug, Default)]
struct Model {
    recs: BTreeMap<u64, QueueRecord>,
    min: u64,
    end: u64,
    first_file: u64,
    has_files: bool,
}

impl Model {
    /// Applies `truncate_to(x)`.
    fn truncate(&mut self, x: u64) {
        if self.has_files && x < self.end {
            if x <= self.min {
                *self = Model { min: x, end: x, ..Model::default() };
            } else {
                self.recs.split_off(&x);
                self.end = x;
            }
        }
    }

    /// The first served offset whose record is of a log entry after `last`, or the end.
    fn cut_after(&self, last: LogIndex) -> u64 {
        (self.min..self.end).find(|o| self.recs[o].log_index > last).unwrap_or(self.end)
    }
}

const RPF: u64 = 4;

fn check_against(cq: &ConsumeQueues, m: &Model) -> Result<(), TestCaseError> {
    let expect_bounds = (m.has_files && m.min < m.end).then_some((m.min, m.end));
    prop_assert_eq!(bounds(cq), expect_bounds);
    prop_assert_eq!(cq.end_log_index(T, Q).unwrap(), expect_bounds.map(|(_, end)| m.recs[&(end - 1)].log_index));
    if !m.has_files {
        return Ok(());
    }
    for o in m.min.saturating_sub(5)..m.end + 3 {
        let want = (m.min..m.end).contains(&o).then(|| m.recs[&o]);
        prop_assert_eq!(cq.read(T, Q, QueueOffset(o)).unwrap(), want, "offset {}", o);
    }
    let want: Vec<_> = (m.min..m.end).map(|o| (QueueOffset(o), m.recs[&o])).collect();
    prop_assert_eq!(cq.read_range(T, Q, QueueOffset(0), 1024).unwrap(), want);
    for o in m.min..=m.end {
        let t = Millis(10 * o as i64 - 5);
        prop_assert_eq!(cq.offset_at_time(T, Q, t).unwrap(), QueueOffset(o));
    }
    Ok(())
}

/// The store under test, its directory and the model it must match.
struct Harness {
    dir: TempDir,
    cq: ConsumeQueues,
    m: Model,
}

impl Harness {
    /// Applies `op`, the operation numbered `version`, to the store and the model.
    fn step(&mut self, version: u64, op: Op) -> Result<(), TestCaseError> {
        let m = &mut self.m;
        match op {
            Op::Append { n, fresh_at } => self.append(version, n, fresh_at),
            Op::Rewrite { pick, same } => self.rewrite(version, pick, same)?,
            Op::Misplaced { ahead } if m.has_files => {
                let mut offsets = vec![m.end + 1 + u64::from(ahead)];
                offsets.extend(m.min.checked_sub(1 + u64::from(ahead)));
                for o in offsets {
                    let r = self.cq.append(T, Q, QueueOffset(o), &rec_v(o, version));
                    prop_assert!(matches!(r, Err(CqError::Invalid(_))), "offset {}: {:?}", o, r);
                }
            }
            Op::Misplaced { .. } => {}
            Op::Truncate(raw) => {
                let x = u64::from(raw) % (m.end + 3);
                self.cq.truncate_to(T, Q, QueueOffset(x)).unwrap();
                m.truncate(x);
            }
            Op::TruncateAfterLogIndex { pick, shift } => self.truncate_after_log_index(pick, shift)?,
            Op::DeleteBelow(raw) => self.delete_below(raw)?,
            Op::Reopen => {
                self.cq = open(self.dir.path(), RPF as u32);
                if m.has_files {
                    m.min = *m.recs.keys().next().unwrap();
                }
            }
            Op::Sync => self.cq.sync().unwrap(),
        }
        check_against(&self.cq, &self.m)
    }

    fn append(&mut self, version: u64, n: u8, fresh_at: u8) {
        let m = &mut self.m;
        if !m.has_files {
            let o = u64::from(fresh_at);
            *m = Model { min: o, end: o, first_file: o - o % RPF, has_files: true, ..Model::default() };
        }
        for i in 0..u64::from(n) {
            let r = model_rec(m.end, version, i);
            self.cq.append(T, Q, QueueOffset(m.end), &r).unwrap();
            m.recs.insert(m.end, r);
            m.end += 1;
        }
    }

    fn rewrite(&mut self, version: u64, pick: u16, same: bool) -> Result<(), TestCaseError> {
        let m = &self.m;
        if !m.has_files || m.min == m.end {
            return Ok(());
        }
        let o = m.min + u64::from(pick) % (m.end - m.min);
        if same {
            self.cq.append(T, Q, QueueOffset(o), &m.recs[&o]).unwrap();
        } else {
            let r = self.cq.append(T, Q, QueueOffset(o), &rec_v(o, version));
            prop_assert!(matches!(r, Err(CqError::Invalid(_))), "{:?}", r);
        }
        Ok(())
    }

    fn truncate_after_log_index(&mut self, pick: u16, shift: u8) -> Result<(), TestCaseError> {
        let m = &mut self.m;
        let served: Vec<u64> = (m.min..m.end).filter(|_| m.has_files).map(|o| m.recs[&o].log_index.0).collect();
        let base = match usize::from(pick) % (served.len() + 2) {
            i if i < served.len() => served[i],
            i if i == served.len() => 0,
            _ => 1_000_000,
        };
        let last = LogIndex((base + u64::from(shift)).saturating_sub(1));
        let dropped = self.cq.truncate_after_log_index(last).unwrap();
        let cut = if m.has_files { m.cut_after(last) } else { m.end };
        prop_assert_eq!(dropped, m.end - cut, "last {:?}", last);
        if cut < m.end {
            m.truncate(cut);
        }
        Ok(())
    }

    fn delete_below(&mut self, raw: u8) -> Result<(), TestCaseError> {
        let (cq, m) = (&self.cq, &mut self.m);
        let x = u64::from(raw) % (m.end + 6);
        let before = cq.disk_bytes().unwrap();
        let freed = cq.delete_below(T, Q, QueueOffset(x)).unwrap();
        prop_assert_eq!(cq.disk_bytes().unwrap(), before - freed);
        let mut deleted = false;
        if m.has_files {
            let last_file = (m.end - 1) - (m.end - 1) % RPF;
            if last_file + RPF <= x {
                *m = Model { min: m.end, end: m.end, ..Model::default() };
                deleted = true;
            } else {
                let new_first = m.first_file.max(x - x % RPF);
                deleted = new_first > m.first_file;
                m.recs = m.recs.split_off(&new_first);
                m.first_file = new_first;
                m.min = m.min.max(x.min(m.end));
            }
        }
        prop_assert_eq!(freed > 0, deleted, "freed {} bytes", freed);
        Ok(())
    }
}

fn run_model(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = TempDir::new().unwrap();
    let cq = open(dir.path(), RPF as u32);
    let mut h = Harness { dir, cq, m: Model::default() };
    for (version, op) in (1u64..).zip(ops) {
        h.step(version, op)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn matches_in_memory_model(ops in prop::collection::vec(op_strategy(), 1..40)) {
        run_model(ops)?;
    }
}
