//! Crash test: random appends, syncs, truncations, purges, votes and backfills (of gaps
//! below the purge point) on [`LogCore`] over the simulated file system, a crash at a
//! random point (inside an operation or inside recovery too), then a reopen that must find
//! a prefix of what was written holding every durable entry, every record below the purge
//! point it held, the backfilled records whole segment by segment (a prefix of the batch),
//! and the vote and purge point of the last completed call. The same operations also run
//! through [`raft_log::Log`] under each [`SyncPolicy`] (see `log_mode`).

#[path = "crash/log_mode.rs"]
mod log_mode;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError};
use raft_log::fs::Fs;
use raft_log::sim::SimFs;
use raft_log::{LogCore, LogError, Purged, Record, SyncPolicy};
use support::{MAX_PAYLOAD, record, small_config};

const DIR: &str = "/raftmq/log";
/// Index of the first entry of a new log.
const FIRST_INDEX: u64 = 1;

/// An operation as generated; its arguments are resolved against the model when it runs.
#[derive(Debug, Clone)]
enum OpSpec {
    Append {
        sizes: Vec<usize>,
        new_term: bool,
    },
    Sync,
    /// Keep entries up to `back` below the last index (never below the purge point); the
    /// next entries get a term just above the last kept one's when `lower_term` is set.
    Truncate {
        back: u64,
        lower_term: bool,
    },
    /// Purge up to `back` below the last index, or `beyond` past it when non-zero.
    Purge {
        back: u64,
        beyond: u64,
    },
    SaveVote,
    /// Fill part of a gap below the purge point (none: a sync): the gap, where in it to
    /// start, and the sizes of the records.
    Backfill {
        gap: Index,
        start: Index,
        sizes: Vec<usize>,
    },
}

/// An operation with its arguments, as run.
#[derive(Clone)]
enum Step {
    Append(Vec<Record>),
    Sync,
    Truncate(Option<u64>),
    Purge(u64),
    SaveVote(u64),
    Backfill(Vec<Record>),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Append(rs) => {
                let sizes: Vec<usize> = rs.iter().map(|r| r.payload.len()).collect();
                match (rs.first(), rs.last()) {
                    (Some(a), Some(b)) => write!(f, "append {}..={} term {} sizes {sizes:?}", a.index, b.index, a.term),
                    _ => write!(f, "append nothing"),
                }
            }
            Step::Sync => write!(f, "sync"),
            Step::Truncate(k) => write!(f, "truncate_after({k:?})"),
            Step::Purge(p) => write!(f, "purge({p})"),
            Step::SaveVote(v) => write!(f, "save_vote({v})"),
            Step::Backfill(rs) => match (rs.first(), rs.last()) {
                (Some(a), Some(b)) => write!(f, "backfill {}..={} term {}", a.index, b.index, a.term),
                _ => write!(f, "backfill nothing"),
            },
        }
    }
}

fn purge_id(index: u64) -> Bytes {
    Bytes::from(format!("log-id-{index}"))
}

fn vote_bytes(n: u64) -> Bytes {
    Bytes::from(format!("vote-{n}"))
}

/// What the log should hold.
#[derive(Debug, Clone, Default)]
struct Model {
    /// Entries after the purge point, contiguous.
    entries: Vec<Record>,
    /// How many of `entries` (a prefix) are durable.
    durable: usize,
    purged: Option<Purged>,
    vote: Option<Bytes>,
    /// Records at or below the purge point that are on disk (purged or backfilled).
    below: BTreeMap<u64, Record>,
}

impl Model {
    fn next_index(&self) -> u64 {
        match (self.entries.last(), &self.purged) {
            (Some(r), _) => r.index + 1,
            (None, Some(p)) => p.index + 1,
            (None, None) => FIRST_INDEX,
        }
    }

    /// Entries after purge point `purged`.
    fn live(&self, purged: Option<u64>) -> &[Record] {
        let from = purged.map_or(0, |p| p + 1);
        &self.entries[self.entries.partition_point(|r| r.index < from)..]
    }

    /// The model once `step` has completed.
    fn after(&self, step: &Step) -> Model {
        let mut m = self.clone();
        match step {
            Step::Append(rs) => m.entries.extend(rs.iter().cloned()),
            Step::Sync => {}
            Step::Truncate(k) => m.entries.retain(|r| k.is_some_and(|k| r.index <= k)),
            Step::Purge(p) => {
                // Purge syncs first: every entry up to the point stays on disk.
                let (gone, kept): (Vec<Record>, Vec<Record>) = m.entries.drain(..).partition(|r| r.index <= *p);
                m.below.extend(gone.into_iter().map(|r| (r.index, r)));
                m.entries = kept;
                m.purged = Some(Purged { index: *p, id: purge_id(*p) });
            }
            Step::SaveVote(v) => m.vote = Some(vote_bytes(*v)),
            Step::Backfill(rs) => m.below.extend(rs.iter().map(|r| (r.index, r.clone()))),
        }
        if !matches!(step, Step::Append(_)) {
            // Everything but append syncs before it returns.
            m.durable = m.entries.len();
        }
        m
    }
}

/// Terms, payload versions and votes, each new when first used.
#[derive(Debug, Clone, Default)]
struct Gen {
    /// Term of the entries appended now.
    term: u64,
    /// Every term used so far: an (index, term) pair never names two different entries,
    /// as in Raft, where a term has at most one leader.
    used_terms: BTreeSet<u64>,
    version: u64,
    vote: u64,
    /// When set, every payload has this size, so a rewritten entry lands where its stale
    /// predecessor was.
    fixed_size: Option<usize>,
}

impl Gen {
    /// A term above every term used so far (leaving room below for `lowest_unused_above`).
    fn new_term(&mut self) {
        self.term = self.used_terms.last().map_or(1, |t| t + 4);
        self.used_terms.insert(self.term);
    }

    /// The lowest term above `floor` never used: a leader that missed the truncated
    /// entries' (higher) terms.
    fn lowest_unused_above(&mut self, floor: u64) {
        self.term = (floor + 1..).find(|t| !self.used_terms.contains(t)).expect("terms are unbounded");
        self.used_terms.insert(self.term);
    }
}

/// Ranges `a..=b` at or below the purge point that hold no record.
fn gaps(model: &Model) -> Vec<(u64, u64)> {
    let Some(purged) = model.purged.as_ref().map(|p| p.index) else { return Vec::new() };
    let mut out = Vec::new();
    let mut at = FIRST_INDEX;
    for &i in model.below.keys() {
        if i > at {
            out.push((at, i - 1));
        }
        at = i + 1;
    }
    if at <= purged {
        out.push((at, purged));
    }
    out
}

/// Records copied into part of a gap: the term of the nearest record below (or above), as
/// a committed run between them would have.
fn backfill_step(gap: &Index, start: &Index, sizes: &[usize], model: &Model, g: &mut Gen) -> Step {
    let gaps = gaps(model);
    if gaps.is_empty() || sizes.is_empty() {
        return Step::Sync;
    }
    let (a, b) = gaps[gap.index(gaps.len())];
    let first = a + start.index((b - a + 1) as usize) as u64;
    let count = (sizes.len() as u64).min(b - first + 1);
    let below = model.below.range(..first).next_back().map(|(_, r)| r.term);
    let above = model.below.range(first..).next().map(|(_, r)| r.term).or(model.entries.first().map(|r| r.term));
    let term = below.or(above).unwrap_or(1);
    g.version += 1;
    let size = |n: usize| g.fixed_size.unwrap_or(n);
    Step::Backfill((0..count).map(|i| record(first + i, term, g.version, size(sizes[i as usize]))).collect())
}

fn resolve(spec: &OpSpec, model: &Model, g: &mut Gen) -> Step {
    let top = model.next_index() - 1;
    let floor = model.purged.as_ref().map(|p| p.index);
    match spec {
        OpSpec::Append { sizes, new_term } => {
            if *new_term || g.term == 0 {
                g.new_term();
            }
            g.version += 1;
            let first = model.next_index();
            let size = |n: usize| g.fixed_size.unwrap_or(n);
            Step::Append(
                sizes.iter().enumerate().map(|(i, &n)| record(first + i as u64, g.term, g.version, size(n))).collect(),
            )
        }
        OpSpec::Sync => Step::Sync,
        OpSpec::Truncate { back, lower_term } => {
            let keep = match floor {
                Some(p) => Some(top.saturating_sub(*back).max(p)),
                None if *back > top => None,
                None => Some(top - back),
            };
            // A truncation means a new leader. Its entries may carry a term below the cut
            // ones' (Raft allows any term not below the last kept entry's).
            match keep.and_then(|k| model.entries.iter().find(|r| r.index == k)) {
                Some(kept) if *lower_term => g.lowest_unused_above(kept.term),
                _ => g.new_term(),
            }
            Step::Truncate(keep)
        }
        OpSpec::Purge { back, beyond } => {
            let target = if *beyond > 0 { top + beyond } else { top.saturating_sub(*back) };
            Step::Purge(floor.map_or(target, |p| target.max(p)))
        }
        OpSpec::SaveVote => {
            g.vote += 1;
            Step::SaveVote(g.vote)
        }
        OpSpec::Backfill { gap, start, sizes } => backfill_step(gap, start, sizes, model, g),
    }
}

fn exec(core: &mut LogCore, step: &Step) -> raft_log::Result<()> {
    match step {
        Step::Append(rs) => core.append(rs),
        Step::Sync => core.sync(),
        Step::Truncate(k) => core.truncate_after(*k),
        Step::Purge(p) => core.purge(*p, purge_id(*p)),
        Step::SaveVote(v) => core.save_vote(vote_bytes(*v)),
        Step::Backfill(rs) => core.backfill(rs).map(|_| ()),
    }
}

/// Every record at or below `purged` on disk, read segment by segment (there may be gaps).
fn read_below(core: &LogCore, purged: Option<u64>) -> raft_log::Result<BTreeMap<u64, Record>> {
    let Some(purged) = purged else { return Ok(BTreeMap::new()) };
    let mut out = BTreeMap::new();
    for (first, next) in core.segment_ranges() {
        let to = next.min(purged + 1);
        if first < to {
            out.extend(core.read(first, to)?.into_iter().map(|r| (r.index, r)));
        }
    }
    Ok(out)
}

/// Checks the records at or below the purge point: all those expected are there, and any
/// other is one of a failed backfill's, which must show as a prefix of its batch.
fn check_below(
    got: &BTreeMap<u64, Record>,
    expected: &BTreeMap<u64, Record>,
    backfill: Option<&[Record]>,
) -> Result<(), String> {
    for (i, want) in expected {
        match got.get(i) {
            Some(r) if r == want => {}
            Some(r) => return Err(format!("below the purge point: got {}, expected {}", show(r), show(want))),
            None => return Err(format!("below the purge point: lost {}", show(want))),
        }
    }
    let extra: Vec<&Record> = got.iter().filter(|(i, _)| !expected.contains_key(i)).map(|(_, r)| r).collect();
    let batch = backfill.unwrap_or_default();
    if extra.len() > batch.len() || extra.iter().zip(batch).any(|(a, b)| *a != b) {
        let what: Vec<String> = extra.iter().take(3).map(|r| show(r)).collect();
        return Err(format!("below the purge point: records {what:?} are not a prefix of a backfill"));
    }
    Ok(())
}

fn open(fs: &SimFs) -> raft_log::Result<LogCore> {
    let fs: Arc<dyn Fs> = Arc::new(fs.clone());
    LogCore::open(fs, Path::new(DIR), small_config()).map(|(core, _)| core)
}

/// How one round of operations ended.
struct RoundRun {
    /// The model after the last operation that succeeded.
    before: Model,
    /// The operation that failed, with the model as it would be had it completed.
    failed: Option<(Step, Model)>,
    error: Option<LogError>,
    /// File-system mutations so far: before the open, after it, and after each operation.
    marks: Vec<u64>,
}

/// What runs the operations.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// [`LogCore`] on the test thread: appends are durable after the next sync.
    Core,
    /// [`raft_log::Log`] with its writer thread under this policy.
    Log(SyncPolicy),
}

fn run_ops_in(mode: Mode, fs: &SimFs, model: &Model, g: &mut Gen, ops: &[OpSpec], trace: &mut Vec<String>) -> RoundRun {
    match mode {
        Mode::Core => run_ops(fs, model, g, ops, trace),
        Mode::Log(sync) => log_mode::run_ops(fs, model, g, ops, trace, sync),
    }
}

fn run_ops(fs: &SimFs, model: &Model, g: &mut Gen, ops: &[OpSpec], trace: &mut Vec<String>) -> RoundRun {
    let mut run = RoundRun { before: model.clone(), failed: None, error: None, marks: vec![fs.mutations()] };
    let mut core = match open(fs) {
        Ok(core) => core,
        Err(e) => {
            trace.push(format!("open -> {e}"));
            run.error = Some(e);
            return run;
        }
    };
    run.marks.push(fs.mutations());
    for spec in ops {
        let step = resolve(spec, &run.before, g);
        let after = run.before.after(&step);
        match exec(&mut core, &step) {
            Ok(()) => {
                trace.push(step.to_string());
                run.before = after;
                run.marks.push(fs.mutations());
            }
            Err(e) => {
                trace.push(format!("{step} -> {e}"));
                run.failed = Some((step, after));
                run.error = Some(e);
                break;
            }
        }
    }
    run
}

/// Which pending operations survive the crash.
#[derive(Debug, Clone)]
enum Keep {
    All,
    Nothing,
    Prefix(Index),
}

#[derive(Debug, Clone)]
struct RoundSpec {
    ops: Vec<OpSpec>,
    /// In which unit (the open, then each operation) the crash lands...
    crash_unit: Index,
    /// ...and after how many of that unit's mutating calls (all of them: between units).
    crash_offset: Index,
    /// How much of the failing write reaches the page cache.
    tear_seed: u64,
    keep: Keep,
    /// How much of the first lost pending write survives anyway.
    tear: Option<Index>,
    /// Whether the leader after the restart has a term just above the last entry's rather
    /// than above every term so far.
    low_term: bool,
}

fn failure(trace: &[String], msg: impl fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("{msg}\ntrace:\n  {}", trace.join("\n  ")))
}

fn show(r: &Record) -> String {
    let version = r.payload.get(16..24).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    format!("#{} term {} {} bytes version {version:?}", r.index, r.term, r.payload.len())
}

/// Why `got` is not a prefix of `want`.
fn mismatch(got: &[Record], want: &[Record]) -> String {
    if got.len() > want.len() {
        return format!("{} records, expected at most {}; extra {}", got.len(), want.len(), show(&got[want.len()]));
    }
    match got.iter().zip(want).find(|(a, b)| a != b) {
        Some((a, b)) => format!("got {}, expected {}", show(a), show(b)),
        None => "is a prefix".into(),
    }
}

/// Checks the reopened log against the model before and after the failed operation and
/// returns the model of what it holds.
fn check_recovered(core: &LogCore, run: &RoundRun, trace: &[String]) -> Result<Model, TestCaseError> {
    let before = &run.before;
    let after = run.failed.as_ref().map_or(before, |(_, m)| m);
    let meta = core.meta();
    if meta.vote != before.vote && meta.vote != after.vote {
        return Err(failure(trace, format!("vote {:?}, expected {:?} or {:?}", meta.vote, before.vote, after.vote)));
    }
    if meta.purged != before.purged && meta.purged != after.purged {
        let msg = format!("purge point {:?}, expected {:?} or {:?}", meta.purged, before.purged, after.purged);
        return Err(failure(trace, msg));
    }
    let purged = meta.purged.as_ref().map(|p| p.index);
    let from = purged.map_or(0, |p| p + 1);
    let got = match core.last_index() {
        Some(last) if last >= from => {
            core.read(from, last + 1).map_err(|e| failure(trace, format!("read {from}..={last}: {e}")))?
        }
        _ => Vec::new(),
    };
    let is_prefix = |m: &Model| {
        let live = m.live(purged);
        got.len() <= live.len() && got[..] == live[..got.len()]
    };
    if !is_prefix(before) && !is_prefix(after) {
        let msg = format!(
            "recovered log is a prefix of neither model: vs before: {}; vs after: {}",
            mismatch(&got, before.live(purged)),
            mismatch(&got, after.live(purged))
        );
        return Err(failure(trace, msg));
    }
    // Durable entries, less those the failed operation was removing.
    let cut = match &run.failed {
        Some((Step::Truncate(k), _)) => *k,
        _ => Some(u64::MAX),
    };
    let required: Vec<&Record> = before.entries[..before.durable]
        .iter()
        .filter(|r| purged.is_none_or(|p| r.index > p) && cut.is_some_and(|k| r.index <= k))
        .collect();
    if got.len() < required.len() {
        let lost = show(required[got.len()]);
        return Err(failure(
            trace,
            format!("lost durable entry {lost}: recovered {} of {} durable", got.len(), required.len()),
        ));
    }
    if let Some(last) = got.last()
        && core.last_term() != last.term
    {
        return Err(failure(
            trace,
            format!("last_term {} but the last record has term {}", core.last_term(), last.term),
        ));
    }
    let below = read_below(core, purged).map_err(|e| failure(trace, format!("read below the purge point: {e}")))?;
    let expected = if meta.purged == after.purged { &after.below } else { &before.below };
    let backfill = match &run.failed {
        Some((Step::Backfill(rs), _)) => Some(&rs[..]),
        _ => None,
    };
    let expected = if backfill.is_some() { &before.below } else { expected };
    check_below(&below, expected, backfill).map_err(|e| failure(trace, e))?;
    let durable = got.len();
    Ok(Model { entries: got, durable, purged: meta.purged.clone(), vote: meta.vote.clone(), below })
}

/// Runs one round: a dry run on a copy to count the file-system mutations, the real run
/// with a crash armed at a chosen one of them, the crash, and the checks after reopening.
/// Returns the reopened log.
fn round(
    mode: Mode,
    fs: &SimFs,
    model: &mut Model,
    g: &mut Gen,
    spec: &RoundSpec,
    trace: &mut Vec<String>,
) -> Result<LogCore, TestCaseError> {
    // A restart: the next entries come from a leader of a term not used before.
    match model.entries.last() {
        Some(last) if spec.low_term => g.lowest_unused_above(last.term),
        _ => g.new_term(),
    }
    let dry = fs.fork();
    let mut dry_trace = Vec::new();
    let dry_run = run_ops_in(mode, &dry, model, &mut g.clone(), &spec.ops, &mut dry_trace);
    if let Some(e) = dry_run.error {
        return Err(failure(&dry_trace, format!("without a crash the operation failed: {e}")));
    }
    // Every unit is as likely to hold the crash, however many calls it makes.
    let marks = &dry_run.marks;
    let total = marks[marks.len() - 1] - marks[0];
    let unit = spec.crash_unit.index(marks.len() - 1);
    let calls = usize::try_from(marks[unit + 1] - marks[unit]).expect("call count fits usize");
    let crash_at = marks[unit] - marks[0] + spec.crash_offset.index(calls + 1) as u64;
    fs.crash_after_ops(crash_at, spec.tear_seed);
    let run = run_ops_in(mode, fs, model, g, &spec.ops, trace);
    if let Some(e) = &run.error
        && (!fs.crashed() || !log_mode::from_crash(e))
    {
        return Err(failure(trace, format!("error not caused by the crash: {e}")));
    }
    let pending = fs.pending_ops();
    let keep = match &spec.keep {
        Keep::All => pending,
        Keep::Nothing => 0,
        Keep::Prefix(i) => i.index(pending + 1),
    };
    let tear = spec.tear.as_ref().and_then(|t| fs.pending_write_len(keep).map(|n| t.index(n + 1)));
    trace.push(format!(
        "CRASH after {crash_at} of {total} mutations (fired: {}); kept {keep} of {pending} pending ops, tear {tear:?}",
        fs.crashed()
    ));
    fs.crash(keep, tear);
    let core = open(fs).map_err(|e| failure(trace, format!("reopen after crash failed: {e}")))?;
    *model = check_recovered(&core, &run, trace)?;
    trace.push(format!(
        "reopened: {} entries {:?}..={:?}, purged {:?}, vote {:?}",
        model.entries.len(),
        model.entries.first().map(|r| r.index),
        model.entries.last().map(|r| r.index),
        model.purged.as_ref().map(|p| p.index),
        model.vote
    ));
    Ok(core)
}

fn run_case(mode: Mode, rounds: &[RoundSpec], fixed_size: Option<usize>) -> Result<(), TestCaseError> {
    let fs = SimFs::new();
    let mut model = Model::default();
    let mut g = Gen { fixed_size, ..Gen::default() };
    let mut trace = Vec::new();
    let mut core = None;
    for (i, spec) in rounds.iter().enumerate() {
        trace.push(format!("--- round {i}"));
        drop(core.take());
        core = Some(round(mode, &fs, &mut model, &mut g, spec, &mut trace)?);
    }
    let Some(mut core) = core else { return Ok(()) };
    // The recovered log takes appends and serves them, also after another reopen.
    g.new_term();
    let step = resolve(&OpSpec::Append { sizes: vec![10, 5000, 0], new_term: true }, &model, &mut g);
    trace.push(format!("{step} (after recovery)"));
    exec(&mut core, &step)
        .and_then(|()| core.sync())
        .map_err(|e| failure(&trace, format!("append after recovery: {e}")))?;
    let model = model.after(&step).after(&Step::Sync);
    let want = model.live(model.purged.as_ref().map(|p| p.index));
    let from = want.first().map_or(0, |r| r.index);
    for attempt in ["before", "after"] {
        let got =
            core.read(from, model.next_index()).map_err(|e| failure(&trace, format!("read {attempt} reopen: {e}")))?;
        if got[..] != want[..] {
            return Err(failure(&trace, format!("{attempt} a clean reopen: {}", mismatch(&got, want))));
        }
        let purged = model.purged.as_ref().map(|p| p.index);
        let below = read_below(&core, purged).map_err(|e| failure(&trace, format!("read below {attempt}: {e}")))?;
        check_below(&below, &model.below, None)
            .map_err(|e| failure(&trace, format!("{attempt} a clean reopen: {e}")))?;
        drop(core);
        core = open(&fs).map_err(|e| failure(&trace, format!("clean reopen failed: {e}")))?;
    }
    Ok(())
}

fn op() -> impl Strategy<Value = OpSpec> {
    // Sizes from empty to the limit, so segments (64 KiB) fill after a few appends.
    let size = prop_oneof![3 => 0usize..200, 4 => 200usize..3000, 2 => 3000usize..=MAX_PAYLOAD as usize];
    // Mostly short cuts within the active segment, sometimes across several segments.
    let back = prop_oneof![3 => 0u64..8, 1 => 0u64..100];
    let beyond = prop_oneof![6 => Just(0u64), 2 => 1u64..5, 1 => 5u64..200];
    prop_oneof![
        8 => (vec(size.clone(), 1..12), prop::bool::weighted(0.2)).prop_map(|(sizes, new_term)| OpSpec::Append { sizes, new_term }),
        3 => Just(OpSpec::Sync),
        2 => (back, any::<bool>()).prop_map(|(back, lower_term)| OpSpec::Truncate { back, lower_term }),
        1 => (0u64..100, beyond).prop_map(|(back, beyond)| OpSpec::Purge { back, beyond }),
        1 => Just(OpSpec::SaveVote),
        2 => (any::<Index>(), any::<Index>(), vec(size, 1..80))
            .prop_map(|(gap, start, sizes)| OpSpec::Backfill { gap, start, sizes }),
    ]
}

fn round_spec() -> impl Strategy<Value = RoundSpec> {
    let keep = prop_oneof![1 => Just(Keep::All), 1 => Just(Keep::Nothing), 3 => any::<Index>().prop_map(Keep::Prefix)];
    (
        vec(op(), 1..60),
        any::<Index>(),
        any::<Index>(),
        any::<u64>(),
        keep,
        proptest::option::of(any::<Index>()),
        any::<bool>(),
    )
        .prop_map(|(ops, crash_unit, crash_offset, tear_seed, keep, tear, low_term)| RoundSpec {
            ops,
            crash_unit,
            crash_offset,
            tear_seed,
            keep,
            tear,
            low_term,
        })
}

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64);
    // Failures print the shrunk case and the trace; no regression file is written.
    Config { cases, failure_persistence: None, ..Config::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn crash_anywhere_leaves_a_prefix_holding_every_durable_entry(
        rounds in vec(round_spec(), 1..=3),
        fixed_size in proptest::option::weighted(0.3, 0usize..4000),
    ) {
        run_case(Mode::Core, &rounds, fixed_size)?;
    }

    #[test]
    fn through_the_writer_every_reported_append_survives_a_crash(
        rounds in vec(round_spec(), 1..=3),
        fixed_size in proptest::option::weighted(0.3, 0usize..4000),
    ) {
        run_case(Mode::Log(SyncPolicy::EveryBatch), &rounds, fixed_size)?;
    }

    #[test]
    fn with_interval_sync_a_crash_leaves_a_prefix_holding_everything_flushed(
        rounds in vec(round_spec(), 1..=3),
        fixed_size in proptest::option::weighted(0.3, 0usize..4000),
        interval_ms in prop_oneof![Just(1u64), Just(20), Just(60_000)],
    ) {
        run_case(Mode::Log(SyncPolicy::Interval(Duration::from_millis(interval_ms))), &rounds, fixed_size)?;
    }
}

// The fault model itself: if these fail, the crash test above proves nothing.

fn write_file(fs: &SimFs, path: &str, data: &[u8]) -> std::io::Result<Arc<dyn raft_log::fs::FileIo>> {
    let f = fs.open(Path::new(path), true)?;
    f.write_all_at(data, 0)?;
    Ok(f)
}

#[test]
fn simfs_crash_keeps_synced_writes_and_drops_unsynced_ones() -> anyhow::Result<()> {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/d"))?;
    let f = write_file(&fs, "/d/a", b"durable")?;
    f.sync_data()?;
    fs.sync_dir(Path::new("/d"))?;
    f.write_all_at(b"LOST", 0)?;
    fs.crash(0, None);
    assert_eq!(fs.contents(Path::new("/d/a")).as_deref(), Some(&b"durable"[..]));
    let err = f.read_at(&mut [0u8; 4], 0).expect_err("handles from before the crash are dead");
    assert_eq!(err.to_string(), "stale handle from before a simulated crash");
    Ok(())
}

#[test]
fn simfs_crash_keeps_a_prefix_of_pending_writes_and_tears_the_next() -> anyhow::Result<()> {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/d"))?;
    let f = write_file(&fs, "/d/a", b"")?;
    f.sync_data()?;
    fs.sync_dir(Path::new("/d"))?;
    f.write_all_at(b"aaaa", 0)?;
    f.write_all_at(b"bbbb", 4)?;
    f.write_all_at(b"cccc", 8)?;
    assert_eq!(fs.pending_ops(), 3);
    assert_eq!(fs.pending_write_len(1), Some(4));
    fs.crash(1, Some(2));
    assert_eq!(fs.contents(Path::new("/d/a")).as_deref(), Some(&b"aaaabb"[..]));
    Ok(())
}

#[test]
fn simfs_directory_entries_need_sync_dir() -> anyhow::Result<()> {
    let fs = SimFs::new();
    let d = Path::new("/d");
    fs.create_dir_all(d)?;
    write_file(&fs, "/d/kept", b"k")?.sync_data()?;
    fs.sync_dir(d)?;
    write_file(&fs, "/d/new", b"n")?.sync_data()?;
    fs.remove_file(Path::new("/d/kept"))?;
    assert_eq!(fs.list_dir(d)?, vec!["new".to_string()]);
    fs.crash(usize::MAX, None);
    assert_eq!(fs.list_dir(d)?, vec!["kept".to_string()]);
    assert_eq!(fs.contents(Path::new("/d/kept")).as_deref(), Some(&b"k"[..]));
    Ok(())
}

#[test]
fn simfs_crash_after_ops_fails_the_next_call_and_tears_the_failing_write() -> anyhow::Result<()> {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/d"))?;
    let f = write_file(&fs, "/d/a", b"")?;
    fs.crash_after_ops(1, 3);
    f.write_all_at(b"xy", 0)?;
    let err = f.write_all_at(b"0123456789", 2).expect_err("the second mutation crashes");
    assert_eq!(err.to_string(), "simulated crash");
    assert!(fs.crashed());
    assert!(f.read_at(&mut [0u8; 1], 0).is_err(), "every call fails after the crash");
    let torn = fs.contents(Path::new("/d/a"));
    assert_eq!(torn.as_deref(), Some(&b"xy012"[..]), "the failing write tore after 3 of its bytes");
    assert_eq!(fs.pending_ops(), 2, "the write of \"xy\" and the torn write");
    fs.crash(2, None);
    // The file was never made durable in its directory.
    assert_eq!(fs.list_dir(Path::new("/d"))?, Vec::<String>::new());
    Ok(())
}

// Crash scenarios found by (or distilled from) the property test above, as plain tests.

fn open_with_report(fs: &SimFs) -> anyhow::Result<(LogCore, raft_log::OpenReport)> {
    let fs: Arc<dyn Fs> = Arc::new(fs.clone());
    Ok(LogCore::open(fs, Path::new(DIR), small_config())?)
}

/// A crash keeping everything written, torn or not.
fn crash_keeping_all(fs: &SimFs) {
    fs.crash(fs.pending_ops(), None);
}

#[test]
fn a_torn_tail_left_in_a_segment_that_is_later_sealed_does_not_block_reopen() -> anyhow::Result<()> {
    let fs = SimFs::new();
    let (mut core, _) = open_with_report(&fs)?;
    let r1 = record(1, 1, 1, 0);
    core.append(std::slice::from_ref(&r1))?;
    core.sync()?;
    // Record 2's header reaches the disk without its last 4 bytes (the CRC).
    fs.crash_after_ops(0, 28);
    let err = core.append(&[record(2, 1, 1, 20)]).expect_err("the write crashes");
    assert!(matches!(err, LogError::Io { op: "write", .. }), "got {err}");
    drop(core);
    crash_keeping_all(&fs);
    let (mut core, report) = open_with_report(&fs)?;
    let first_segment = Path::new(DIR).join("00000000000000000001.log");
    assert_eq!(report.torn_tail, Some((first_segment, 64 + 32)));
    assert_eq!(core.last_index(), Some(1));
    // A purge past the end starts a new segment at 3 and seals the one holding the cut tail.
    core.purge(2, purge_id(2))?;
    let r3 = record(3, 2, 2, 100);
    core.append(std::slice::from_ref(&r3))?;
    core.sync()?;
    assert_eq!(core.segment_count(), 2);
    drop(core);
    let (core, report) = open_with_report(&fs)?;
    assert_eq!(report.torn_tail, None);
    assert_eq!(core.read(1, 2)?, vec![r1]);
    assert_eq!(core.read(3, 4)?, vec![r3]);
    Ok(())
}

/// One crash inside `truncate_after(Some(5))` of a log of 1..=10, then what a follower does
/// next: cut 6.. again if it is back, take entries 6..=7 of the new leader, restart.
fn truncate_crash_then_rewrite(crash_after: u64, tear_seed: u64, keep_all: bool) -> anyhow::Result<()> {
    let fs = SimFs::new();
    let (mut core, _) = open_with_report(&fs)?;
    // 1..=5 from term 1, 6..=10 from a leader of term 5 that lost its leadership.
    let old: Vec<Record> = (1..=10).map(|i| record(i, if i <= 5 { 1 } else { 5 }, 1, 100)).collect();
    core.append(&old)?;
    core.sync()?;
    fs.crash_after_ops(crash_after, tear_seed);
    let truncated = core.truncate_after(Some(5));
    assert_eq!(truncated.is_err(), fs.crashed(), "truncate fails exactly when the crash hits it");
    drop(core);
    fs.crash(if keep_all { fs.pending_ops() } else { 0 }, None);
    let (mut core, _) = open_with_report(&fs).context("reopen after the crash")?;
    let last = core.last_index().context("the durable entries 1..=5 survive")?;
    assert!(last >= 5, "durable entries were lost: last index {last}");
    assert_eq!(core.read(1, last + 1)?, old[..last as usize].to_vec(), "a prefix of the log before the cut");
    if last > 5 {
        core.truncate_after(Some(5))?;
    }
    // The leader of term 2 (which never saw term 5) sends entries of the same size, so
    // they land exactly where the cut entries 6 and 7 were.
    let newer: Vec<Record> = (6..=7).map(|i| record(i, 2, 2, 100)).collect();
    core.append(&newer)?;
    core.sync()?;
    drop(core);
    let (core, _) = open_with_report(&fs).context("clean reopen")?;
    let want: Vec<Record> = old[..5].iter().chain(&newer).cloned().collect();
    let got = core.read(1, 11)?;
    assert_eq!(
        got.iter().map(|r| (r.index, r.term)).collect::<Vec<_>>(),
        want.iter().map(|r| (r.index, r.term)).collect::<Vec<_>>(),
        "entries 8..=10 of term 5 were cut and must not follow entry 7 of term 2"
    );
    assert_eq!(got, want);
    Ok(())
}

#[test]
fn a_crash_anywhere_inside_truncate_never_blocks_reopen_or_brings_cut_entries_back() -> anyhow::Result<()> {
    // Every call truncate makes (it makes fewer than 8 here), torn at no byte, inside the
    // first header, at the first header's end, after two whole records, and mid-record.
    for crash_after in 0..8 {
        for tear_seed in [0, 16, 32, 2 * 132, 5 * 132 - 1] {
            for keep_all in [true, false] {
                truncate_crash_then_rewrite(crash_after, tear_seed, keep_all).with_context(|| {
                    format!("crash after {crash_after} calls, failing write torn by seed {tear_seed}, keep all pending: {keep_all}")
                })?;
            }
        }
    }
    Ok(())
}

#[test]
fn a_torn_record_whose_payload_holds_a_record_encoding_is_still_a_torn_tail() -> anyhow::Result<()> {
    let fs = SimFs::new();
    let (mut core, _) = open_with_report(&fs)?;
    let r1 = record(1, 1, 1, 10);
    core.append(std::slice::from_ref(&r1))?;
    core.sync()?;
    // A client's message that happens to be a raft-log record (say, a segment being
    // shipped through the broker): record 3 of term 1, then more bytes.
    let body = b"an embedded entry";
    let mut payload = raft_log::record::encode_header(1, 3, body).to_vec();
    payload.extend_from_slice(body);
    payload.extend_from_slice(&[7u8; 200]);
    let r2 = Record { index: 2, term: 1, payload: Bytes::from(payload) };
    // The crash tears record 2 after the embedded record, before its end.
    fs.crash_after_ops(0, 32 + 32 + body.len() as u64 + 50);
    core.append(&[r2]).expect_err("the write crashes");
    drop(core);
    crash_keeping_all(&fs);
    let (core, report) = open_with_report(&fs)?;
    let segment = Path::new(DIR).join("00000000000000000001.log");
    assert_eq!(report.torn_tail, Some((segment, 64 + 32 + 10)));
    assert_eq!(core.read(1, 3)?, vec![r1]);
    Ok(())
}
