//! Backfill over real files: records copied from another replica fill the log below its
//! purge point as sealed segments, conflicting local leftovers are replaced by the copy,
//! recovery accepts the result (and still refuses a real gap), reads of a range marked
//! incomplete are refused, and retention deletes expired segments whatever their file time.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use raft_log::fs::RealFs;
use raft_log::{Log, LogCore, LogError, Record, Retention};
use support::{record, small_config};

fn open(dir: &Path) -> anyhow::Result<LogCore> {
    Ok(LogCore::open(Arc::new(RealFs), dir, small_config())?.0)
}

/// Records `from..=to` of `term`, payload version `version`, 1000 bytes each.
fn run(from: u64, to: u64, term: u64, version: u64) -> Vec<Record> {
    (from..=to).map(|i| record(i, term, version, 1000)).collect()
}

fn purge(core: &mut LogCore, index: u64) -> anyhow::Result<()> {
    Ok(core.purge(index, Bytes::from(format!("id-{index}")))?)
}

/// A node that holds 1..=20, then installed a snapshot at 100 and took 101..=120.
fn caught_up_by_snapshot(dir: &Path) -> anyhow::Result<LogCore> {
    let mut core = open(dir)?;
    core.append(&run(1, 20, 1, 1))?;
    purge(&mut core, 100)?;
    core.append(&run(101, 120, 3, 1))?;
    core.sync()?;
    Ok(core)
}

#[test]
fn the_gap_below_the_purge_point_is_filled_with_sealed_segments_that_survive_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut core = caught_up_by_snapshot(dir.path())?;
    assert!(matches!(core.read(1, 121), Err(LogError::Invalid(_))), "records 21..=100 are missing");
    let copy = run(21, 100, 2, 1);
    let done = core.backfill(&copy)?;
    assert_eq!(done.already_held, 0);
    assert!(done.removed.is_empty());
    assert!(done.written.len() >= 2, "80 KB in 64 KiB segments takes two: {:?}", done.written);
    assert_eq!(done.written.first().map(|w| w.0), Some(21));
    assert_eq!(done.written.last().map(|w| w.1), Some(101));
    assert!(done.written.windows(2).all(|w| w[0].1 == w[1].0), "contiguous: {:?}", done.written);
    let want: Vec<Record> = run(1, 20, 1, 1).into_iter().chain(copy.clone()).chain(run(101, 120, 3, 1)).collect();
    assert_eq!(core.read(1, 121)?, want);
    // Appends go on after the live tail, not into a backfilled segment.
    core.append(&run(121, 125, 3, 1))?;
    core.sync()?;
    drop(core);
    let core = open(dir.path())?;
    assert_eq!(core.read(1, 126)?.len(), 125);
    assert_eq!(core.read(21, 101)?, copy);
    assert_eq!(core.last_index(), Some(125));
    Ok(())
}

#[test]
fn a_backfill_can_fill_a_gap_part_by_part_from_either_end() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut core = caught_up_by_snapshot(dir.path())?;
    core.backfill(&run(61, 100, 2, 1))?;
    core.backfill(&run(21, 40, 2, 1))?;
    drop(core);
    // The layout with a hole (41..=60) below the purge point is accepted on open.
    let mut core = open(dir.path())?;
    assert_eq!(core.read(61, 121)?.len(), 60);
    assert!(core.read(30, 70).is_err(), "the hole is reported, not skipped");
    core.backfill(&run(41, 60, 2, 1))?;
    assert_eq!(core.read(1, 121)?.len(), 120);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_of_an_empty_log_after_a_snapshot_install_is_readable_and_appends_follow() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (log, _) = Log::open(dir.path(), small_config())?;
    // A node with an empty disk: the snapshot covers 1..=50.
    log.purge(50, Bytes::from_static(b"id-50")).await?;
    let copy = run(10, 50, 2, 1);
    let done = log.backfill(copy.clone()).await?;
    assert_eq!(done.written.first().map(|w| w.0), Some(10));
    assert_eq!(log.read(1, 100)?, copy);
    assert_eq!(log.view().first, Some(10));
    log.append_durable(run(51, 55, 3, 1)).await?;
    assert_eq!(log.read(10, 56)?.len(), 46);
    Ok(())
}

#[test]
fn bad_backfills_are_refused_without_changing_the_log() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fresh = tempfile::tempdir()?;
    let mut empty = open(fresh.path())?;
    assert!(matches!(empty.backfill(&run(1, 5, 1, 1)), Err(LogError::Invalid(_))), "nothing is purged");
    let mut core = caught_up_by_snapshot(dir.path())?;
    let refused = |r: raft_log::Result<raft_log::Backfilled>| matches!(r, Err(LogError::Invalid(_)));
    assert!(refused(core.backfill(&[])), "empty");
    assert!(refused(core.backfill(&run(95, 105, 2, 1))), "past the purge point");
    let mut holes = run(21, 30, 2, 1);
    holes.remove(4);
    assert!(refused(core.backfill(&holes)), "not contiguous");
    let mut falling = run(21, 30, 2, 1);
    falling[5].term = 1;
    assert!(refused(core.backfill(&falling)), "a term going down");
    // Record 20 (term 1) is below a copy of term 0 that starts right after it.
    assert!(refused(core.backfill(&run(21, 30, 0, 1))), "a lower term than the record before");
    let mut twin = run(15, 25, 1, 1);
    twin[0] = record(15, 1, 9, 1000);
    assert!(refused(core.backfill(&twin)), "same index and term, different bytes");
    assert_eq!(core.segment_count(), 2, "no file was added");
    assert!(core.read(21, 22)?.is_empty());
    Ok(())
}

#[test]
fn held_records_are_kept_and_conflicting_leftovers_are_replaced_by_the_copy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut core = open(dir.path())?;
    // 1..=20 committed (term 1); 21..=30 written by a leader of term 2 that lost them.
    core.append(&run(1, 20, 1, 1))?;
    core.append(&run(21, 30, 2, 1))?;
    purge(&mut core, 60)?;
    core.sync()?;
    // The group committed 21..=60 in term 3; the copy starts at 15.
    let copy: Vec<Record> = run(15, 20, 1, 1).into_iter().chain(run(21, 60, 3, 2)).collect();
    let done = core.backfill(&copy)?;
    assert_eq!(done.already_held, 6, "15..=20 are the same entries");
    assert_eq!(done.removed, vec![(21, 31)]);
    assert_eq!(done.written.first().map(|w| w.0), Some(21));
    let want: Vec<Record> = run(1, 14, 1, 1).into_iter().chain(copy).collect();
    assert_eq!(core.read(1, 61)?, want);
    drop(core);
    let core = open(dir.path())?;
    assert_eq!(core.read(1, 61)?, want);
    Ok(())
}

#[test]
fn a_leftover_right_after_the_copy_is_removed_too() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut core = open(dir.path())?;
    core.append(&run(1, 10, 1, 1))?;
    purge(&mut core, 30)?;
    // 31..=35 of term 2: never committed (the group's 31 has term 3).
    core.append(&run(31, 35, 2, 1))?;
    purge(&mut core, 40)?;
    core.append(&run(41, 45, 5, 1))?;
    core.sync()?;
    let done = core.backfill(&run(11, 30, 3, 1))?;
    assert_eq!(done.removed, vec![(31, 36)], "a term-2 record cannot follow a committed term-3 one");
    assert!(core.read(31, 36)?.is_empty());
    core.backfill(&run(31, 40, 3, 1))?;
    assert_eq!(core.read(1, 46)?.len(), 45);
    Ok(())
}

#[test]
fn a_conflict_in_a_segment_holding_live_records_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut core = open(dir.path())?;
    core.append(&run(1, 30, 1, 1))?;
    purge(&mut core, 20)?;
    core.sync()?;
    let err = core.backfill(&run(15, 20, 2, 1)).expect_err("records 21..=30 are Raft's");
    assert!(err.to_string().contains("past the purge point"), "{err}");
    assert_eq!(core.read(1, 31)?, run(1, 30, 1, 1));
    Ok(())
}

#[test]
fn discard_removes_a_range_and_the_rest_of_its_segment() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut core = open(dir.path())?;
    core.append(&run(1, 100, 1, 1))?;
    purge(&mut core, 200)?;
    core.sync()?;
    let segments = core.segment_ranges();
    let holding_40 = *segments.iter().find(|s| s.0 <= 40 && 40 < s.1).expect("some segment holds 40");
    let done = core.discard(40, 45)?;
    assert_eq!(done.removed, vec![(40, holding_40.1)]);
    assert_eq!(core.read(1, 40)?.len(), 39);
    assert!(core.read(40, holding_40.1)?.is_empty());
    assert!(matches!(core.discard(1, 202), Err(LogError::Invalid(_))), "past the purge point");
    drop(core);
    let core = open(dir.path())?;
    assert!(core.read(40, holding_40.1)?.is_empty());
    assert_eq!(core.read(holding_40.1, 101)?.len() as u64, 101 - holding_40.1);
    Ok(())
}

#[test]
fn open_removes_staged_files_and_orphan_indexes_and_still_refuses_a_real_gap() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = caught_up_by_snapshot(dir.path())?;
    drop(core);
    let staged = dir.path().join(format!("{:020}.log.tmp", 21));
    let orphan = dir.path().join(format!("{:020}.idx", 50));
    std::fs::write(&staged, b"half a segment")?;
    std::fs::write(&orphan, [0u8; 16])?;
    let mut core = open(dir.path())?;
    assert!(!staged.exists() && !orphan.exists());
    assert_eq!(core.read(101, 121)?.len(), 20);
    // A hole above the purge point is damage, not a backfill layout.
    core.append(&(121..=400).map(|i| record(i, 3, 1, 1000)).collect::<Vec<_>>())?;
    core.sync()?;
    let middle = core.segment_ranges()[3];
    assert!(middle.0 > 101, "{:?}", core.segment_ranges());
    drop(core);
    std::fs::remove_file(dir.path().join(format!("{:020}.log", middle.0)))?;
    let err = open(dir.path()).expect_err("a missing segment above the purge point");
    assert!(matches!(err.downcast_ref::<LogError>(), Some(LogError::Corrupt { .. })), "{err}");
    Ok(())
}

#[test]
fn retention_deletes_segments_below_expired_before_whatever_their_file_time() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut core = caught_up_by_snapshot(dir.path())?;
    core.backfill(&run(21, 100, 2, 1))?;
    let now = SystemTime::now();
    let by_file_age =
        Retention { max_age: Some(Duration::from_secs(3600)), keep_from: u64::MAX, ..Retention::default() };
    assert!(core.retain(by_file_age, now)?.is_empty(), "every file is new");
    let expired = Retention { expired_before: 60, keep_from: u64::MAX, ..Retention::default() };
    let removed = core.retain(expired, now)?;
    assert!(!removed.is_empty());
    assert!(removed.iter().all(|s| s.next <= 60), "{removed:?}");
    let first = core.first_index().expect("records remain");
    assert!(first > 20 && first <= 60, "first {first}");
    assert_eq!(core.read(first, 121)?.len() as u64, 121 - first);
    let protected = Retention { expired_before: 101, keep_from: first, ..Retention::default() };
    assert!(core.retain(protected, now)?.is_empty(), "keep_from still protects");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_an_incomplete_range_are_refused_until_it_is_filled() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    drop(caught_up_by_snapshot(dir.path())?);
    let (log, _) = Log::open(dir.path(), small_config())?;
    log.set_incomplete(Some(21..101));
    let err = log.read(50, 51).expect_err("50 is being copied");
    assert!(matches!(err, LogError::Incomplete { from: 21, to: 101 }), "{err}");
    assert_eq!(std::io::Error::from(err).kind(), std::io::ErrorKind::WouldBlock);
    assert!(log.read(15, 25).is_err(), "a range touching the mark is refused");
    assert_eq!(log.read(1, 21)?.len(), 20, "below the mark reads work");
    assert_eq!(log.read(101, 121)?.len(), 20, "above the mark reads work");
    log.backfill(run(21, 60, 2, 1)).await?;
    log.set_incomplete(Some(61..101));
    assert_eq!(log.read(21, 61)?, run(21, 60, 2, 1));
    log.backfill(run(61, 100, 2, 1)).await?;
    log.set_incomplete(None);
    assert_eq!(log.read(1, 200)?.len(), 120);
    // Appends and backfills share the writer's queue; the live tail is untouched.
    log.append_durable(run(121, 130, 3, 1)).await?;
    assert_eq!(log.view().last, Some((130, 3)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incomplete_mark_does_not_hide_raft_entries_from_raft() -> anyhow::Result<()> {
    use openraft::storage::{RaftLogReader, RaftLogStorage};
    openraft::declare_raft_types!(Types: D = String, R = String);
    let dir = tempfile::tempdir()?;
    let (log, _) = Log::open(dir.path(), small_config())?;
    let mut store = raft_log::RaftLogStore::<Types>::new(log.clone());
    use openraft::entry::RaftEntry;
    let entries: Vec<<Types as openraft::RaftTypeConfig>::Entry> = (1..=5u64)
        .map(|i| {
            let leader = openraft::impls::leader_id_adv::LeaderId { term: 1, node_id: 1 };
            let id = openraft::alias::LogIdOf::<Types>::new(leader, i);
            RaftEntry::new(id, openraft::EntryPayload::Blank)
        })
        .collect();
    let records: Vec<Record> = entries
        .iter()
        .map(|e| -> anyhow::Result<Record> {
            Ok(Record { index: e.log_id().index(), term: 1, payload: store.encode_entry(e)? })
        })
        .collect::<anyhow::Result<_>>()?;
    log.append_durable(records).await?;
    // A snapshot through 5 is being installed; the purge point has not moved yet.
    log.set_incomplete(Some(3..6));
    assert_eq!(store.try_get_log_entries(1..6).await?.len(), 5, "openraft reads its live entries");
    assert_eq!(store.get_log_state().await?.last_log_id.map(|l| l.index()), Some(5));
    let err = store.retained_entries(4, 5).expect_err("message reads wait for the copy");
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    Ok(())
}
