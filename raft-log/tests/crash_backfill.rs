//! Crash sweep of a backfill: a crash at every file-system call of one backfill (with and
//! without local leftovers to replace, with the segment holding them newest or not), torn
//! in several ways, then a reopen that must show the old records, the copy as whole
//! segments oldest first, never a leftover beside the copy, and a retry that completes it.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use raft_log::fs::Fs;
use raft_log::sim::SimFs;
use raft_log::{LogCore, Record};
use support::{record, small_config};

const DIR: &str = "/raftmq/log";

fn open_with_report(fs: &SimFs) -> anyhow::Result<(LogCore, raft_log::OpenReport)> {
    let fs: Arc<dyn Fs> = Arc::new(fs.clone());
    Ok(LogCore::open(fs, Path::new(DIR), small_config())?)
}

fn purge_id(index: u64) -> Bytes {
    Bytes::from(format!("log-id-{index}"))
}

fn show(r: &Record) -> String {
    format!("#{} term {} {} bytes", r.index, r.term, r.payload.len())
}

/// Every record at or below `purged` on disk, read segment by segment (there may be gaps).
fn read_below(core: &LogCore, purged: u64) -> raft_log::Result<BTreeMap<u64, Record>> {
    let mut out = BTreeMap::new();
    for (first, next) in core.segment_ranges() {
        let to = next.min(purged + 1);
        if first < to {
            out.extend(core.read(first, to)?.into_iter().map(|r| (r.index, r)));
        }
    }
    Ok(out)
}

/// Crashes at every file-system call of one backfill of 21..=150 (several segments) into a
/// log holding 1..=20 and the purge point 150, with 151..=160 after it when `live_tail`
/// (otherwise the segment of 1..=20 is the newest, which recovery scans instead of trusting
/// its index); with `leftovers`, the log also holds 21..=40 of a term the group overwrote,
/// which the copy must replace. After each crash the log reopens; the old records stay; the
/// copy shows as whole segments, oldest first; no leftover shows beside a copied segment;
/// a retry completes the backfill.
fn backfill_crash_sweep(leftovers: bool, live_tail: bool) -> anyhow::Result<()> {
    let base = SimFs::new();
    let (mut core, _) = open_with_report(&base)?;
    let old: Vec<Record> = (1..=20).map(|i| record(i, 1, 1, 1000)).collect();
    let stale: Vec<Record> = (21..=40).map(|i| record(i, 2, 1, 1000)).collect();
    let live: Vec<Record> = if live_tail { (151..=160).map(|i| record(i, 4, 1, 1000)).collect() } else { vec![] };
    core.append(&old)?;
    if leftovers {
        core.append(&stale)?;
    }
    core.purge(150, purge_id(150))?;
    core.append(&live)?;
    core.sync()?;
    drop(core);
    let copy: Vec<Record> = (21..=150).map(|i| record(i, 3, 2, 1000)).collect();

    let dry = base.fork();
    let (mut core, _) = open_with_report(&dry)?;
    let before = dry.mutations();
    let done = core.backfill(&copy)?;
    let calls = dry.mutations() - before;
    assert!(done.written.len() >= 2, "the copy spans several segments: {:?}", done.written);
    assert_eq!(done.removed, if leftovers { vec![(21, 41)] } else { vec![] });

    // Torn at no byte, inside a record header, inside a record.
    let tears = [0, 20, 500];
    for (crash_after, keep_all, tear) in
        (0..calls).flat_map(|c| [true, false].into_iter().flat_map(move |k| tears.map(|t| (c, k, t))))
    {
        {
            let context =
                format!("crash after {crash_after} of {calls} calls, keep all pending: {keep_all}, tear seed {tear}");
            let fs = base.fork();
            let (mut core, _) = open_with_report(&fs).context(context.clone())?;
            fs.crash_after_ops(crash_after, tear);
            core.backfill(&copy).expect_err("the crash hits the backfill");
            drop(core);
            fs.crash(if keep_all { fs.pending_ops() } else { 0 }, None);
            let (mut core, _) = open_with_report(&fs).with_context(|| format!("reopen: {context}"))?;
            let below = read_below(&core, 150).with_context(|| format!("read: {context}"))?;
            for r in &old {
                anyhow::ensure!(below.get(&r.index) == Some(r), "{context}: lost {}", show(r));
            }
            // Each copied segment is there whole or not at all, oldest first.
            let shown: Vec<bool> = done
                .written
                .iter()
                .map(|&(first, next)| {
                    let n = (first..next).filter(|i| below.get(i) == copy.get((i - 21) as usize)).count() as u64;
                    anyhow::ensure!(
                        n == 0 || n == next - first,
                        "{context}: segment {first}..{next} shows {n} records"
                    );
                    Ok(n > 0)
                })
                .collect::<anyhow::Result<_>>()?;
            anyhow::ensure!(shown.windows(2).all(|w| w[0] || !w[1]), "{context}: copied segments {shown:?}");
            let leftovers_shown: Vec<u64> =
                stale.iter().filter(|r| below.get(&r.index) == Some(r)).map(|r| r.index).collect();
            anyhow::ensure!(
                leftovers_shown.is_empty() || !shown[0],
                "{context}: leftovers {leftovers_shown:?} beside the copy"
            );
            anyhow::ensure!(
                leftovers_shown.iter().enumerate().all(|(i, &x)| x == 21 + i as u64),
                "{context}: the leftovers that remain are a prefix: {leftovers_shown:?}"
            );
            anyhow::ensure!(
                below.len()
                    == old.len()
                        + leftovers_shown.len()
                        + shown
                            .iter()
                            .zip(&done.written)
                            .filter(|(s, _)| **s)
                            .map(|(_, w)| (w.1 - w.0) as usize)
                            .sum::<usize>(),
                "{context}: unexpected records below the purge point"
            );
            anyhow::ensure!(core.read(151, 161)? == live, "{context}: the live records changed");
            anyhow::ensure!(core.next_index() == Some(151 + live.len() as u64), "{context}: the next index moved");
            core.backfill(&copy).with_context(|| format!("retry: {context}"))?;
            let want: Vec<Record> = old.iter().chain(&copy).chain(&live).cloned().collect();
            anyhow::ensure!(core.read(1, 161)? == want, "{context}: after the retry");
        }
    }
    Ok(())
}

#[test]
fn a_crash_anywhere_inside_a_backfill_leaves_whole_segments_and_a_retry_completes_it() -> anyhow::Result<()> {
    backfill_crash_sweep(false, true)?;
    backfill_crash_sweep(false, false)
}

#[test]
fn a_crash_anywhere_inside_a_backfill_that_replaces_leftovers_never_mixes_them_with_the_copy() -> anyhow::Result<()> {
    backfill_crash_sweep(true, true)?;
    backfill_crash_sweep(true, false)
}
