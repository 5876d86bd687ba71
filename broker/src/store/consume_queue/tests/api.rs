//! Tests of the operations on healthy queues: append and read, reopen, truncation, retention, handles, listing.

use super::*;

#[test]
fn append_read_round_trip_across_files() {
    let dir = TempDir::new().unwrap();
    let cq = open(dir.path(), 4);
    assert_eq!(bounds(&cq), None);
    append_range(&cq, 0..10);
    assert_eq!(files_in(dir.path()), names(&[0, 4, 8]));
    for o in 0..10 {
        assert_eq!(cq.read(T, Q, QueueOffset(o)).unwrap(), Some(rec(o)), "offset {o}");
    }
    assert_eq!(cq.read(T, Q, QueueOffset(10)).unwrap(), None);
    assert_eq!(bounds(&cq), Some((0, 10)));
    let range = cq.read_range(T, Q, QueueOffset(2), 5).unwrap();
    assert_eq!(range, (2..7).map(|o| (QueueOffset(o), rec(o))).collect::<Vec<_>>());
    let tail = cq.read_range(T, Q, QueueOffset(7), 100).unwrap();
    assert_eq!(tail, (7..10).map(|o| (QueueOffset(o), rec(o))).collect::<Vec<_>>());
    assert!(cq.read_range(T, Q, QueueOffset(10), 5).unwrap().is_empty());
    assert!(cq.read_range(T, Q, QueueOffset(0), 0).unwrap().is_empty());
    // Store times are 10 * offset.
    let at = |t: i64| cq.offset_at_time(T, Q, Millis(t)).unwrap().0;
    assert_eq!((at(-5), at(0), at(1), at(35), at(40), at(90), at(91)), (0, 0, 1, 4, 4, 9, 10));
}

#[test]
fn append_all_writes_what_appends_one_by_one_write() {
    let recs = |r: std::ops::Range<u64>| r.map(rec).collect::<Vec<_>>();
    let (one_by_one, all) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    append_range(&open(one_by_one.path(), 4), 2..13);
    let cq = open(all.path(), 4);
    // A first run starting inside a file, then runs across file boundaries, then nothing.
    cq.append_all(T, Q, QueueOffset(2), &recs(2..3)).unwrap();
    cq.append_all(T, Q, QueueOffset(3), &recs(3..9)).unwrap();
    cq.append_all(T, Q, QueueOffset(9), &recs(9..13)).unwrap();
    cq.append_all(T, Q, QueueOffset(13), &[]).unwrap();
    assert_eq!(files_in(all.path()), names(&[0, 4, 8, 12]));
    for start in [0, 4, 8, 12] {
        let len = fs::metadata(fpath(one_by_one.path(), start)).unwrap().len() as usize;
        assert_eq!(
            raw(&fpath(all.path(), start), 0, len),
            raw(&fpath(one_by_one.path(), start), 0, len),
            "file {start}"
        );
    }
    assert_eq!(bounds(&cq), Some((2, 13)));
    drop(cq);
    let reopened = open(all.path(), 4);
    assert_eq!(reopened.read_range(T, Q, QueueOffset(0), 100).unwrap().len(), 11);
    // Records already held are accepted again as they are; others, and gaps, are refused
    // as `append` refuses them, and nothing is written.
    reopened.append_all(T, Q, QueueOffset(5), &recs(5..8)).unwrap();
    let clash = [rec(6), rec_v(7, 1)];
    assert!(matches!(reopened.append_all(T, Q, QueueOffset(6), &clash), Err(CqError::Invalid(_))));
    assert!(matches!(reopened.append_all(T, Q, QueueOffset(14), &recs(14..15)), Err(CqError::Invalid(_))));
    assert_eq!(reopened.read(T, Q, QueueOffset(7)).unwrap(), Some(rec(7)));
    assert_eq!(bounds(&reopened), Some((2, 13)));
}

#[test]
fn read_range_is_capped() {
    let dir = TempDir::new().unwrap();
    let cq = open(dir.path(), 300);
    append_range(&cq, 0..1100);
    let all = cq.read_range(T, Q, QueueOffset(0), 5000).unwrap();
    assert_eq!(all.len(), MAX_READ_RANGE);
    assert_eq!(all.last().map(|(o, r)| (o.0, *r)), Some((1023, rec(1023))));
}

#[test]
fn reopen_finds_same_end_and_records() {
    let dir = TempDir::new().unwrap();
    {
        let cq = open(dir.path(), 4);
        append_range(&cq, 0..10);
        cq.sync().unwrap();
    }
    let cq = open(dir.path(), 4);
    assert_eq!(bounds(&cq), Some((0, 10)));
    let all = cq.read_range(T, Q, QueueOffset(0), 100).unwrap();
    assert_eq!(all, (0..10).map(|o| (QueueOffset(o), rec(o))).collect::<Vec<_>>());
    append_range(&cq, 10..13);
    assert_eq!(bounds(&cq), Some((0, 13)));
}

#[test]
fn first_append_of_new_queue_defines_min() {
    let dir = TempDir::new().unwrap();
    let cq = open(dir.path(), 4);
    append_range(&cq, 6..9);
    assert_eq!(bounds(&cq), Some((6, 9)));
    assert_eq!(cq.read(T, Q, QueueOffset(5)).unwrap(), None);
    assert_eq!(files_in(dir.path()), names(&[4, 8]));
    drop(cq);
    let cq = open(dir.path(), 4);
    assert_eq!(bounds(&cq), Some((6, 9)));
    assert_eq!(cq.read(T, Q, QueueOffset(6)).unwrap(), Some(rec(6)));
    // Same with the first file also the newest.
    let cq2 = open(dir.path(), 4);
    cq2.append("other", Q, QueueOffset(5), &rec(5)).unwrap();
    drop(cq2);
    assert_eq!(open(dir.path(), 4).bounds("other", Q).unwrap(), Some((QueueOffset(5), QueueOffset(6))));
}

#[test]
fn truncate_in_middle_of_file_then_append() {
    let dir = TempDir::new().unwrap();
    let cq = open(dir.path(), 4);
    append_range(&cq, 0..10);
    cq.truncate_to(T, Q, QueueOffset(6)).unwrap();
    assert_eq!(bounds(&cq), Some((0, 6)));
    assert_eq!(files_in(dir.path()), names(&[0, 4]));
    assert_eq!(cq.read(T, Q, QueueOffset(6)).unwrap(), None);
    assert_eq!(raw(&fpath(dir.path(), 4), slot_byte(2), 80), vec![0u8; 80], "slots of offsets 6 and 7 are zeroed");
    cq.truncate_to(T, Q, QueueOffset(50)).unwrap(); // past the end: no-op
    assert_eq!(bounds(&cq), Some((0, 6)));
    let new6 = rec_v(6, 9);
    cq.append(T, Q, QueueOffset(6), &new6).unwrap();
    drop(cq);
    let cq = open(dir.path(), 4);
    assert_eq!(bounds(&cq), Some((0, 7)));
    assert_eq!(cq.read(T, Q, QueueOffset(6)).unwrap(), Some(new6));
}

#[test]
fn truncate_at_file_boundary_then_append() {
    let dir = TempDir::new().unwrap();
    let cq = open(dir.path(), 4);
    append_range(&cq, 0..10);
    cq.truncate_to(T, Q, QueueOffset(8)).unwrap();
    assert_eq!(bounds(&cq), Some((0, 8)));
    assert_eq!(files_in(dir.path()), names(&[0, 4]));
    append_range(&cq, 8..9);
    assert_eq!(files_in(dir.path()), names(&[0, 4, 8]));
    drop(cq);
    assert_eq!(bounds(&open(dir.path(), 4)), Some((0, 9)));
}

#[test]
fn truncate_to_min_empties_queue() {
    let dir = TempDir::new().unwrap();
    let cq = open(dir.path(), 4);
    append_range(&cq, 2..10);
    cq.truncate_to(T, Q, QueueOffset(2)).unwrap();
    assert_eq!(bounds(&cq), None);
    assert!(files_in(dir.path()).is_empty());
    assert_eq!(cq.read(T, Q, QueueOffset(2)).unwrap(), None);
    append_range(&cq, 20..21); // no file left: any first offset is accepted
    assert_eq!(bounds(&cq), Some((20, 21)));
}

#[test]
fn duplicate_append_is_noop_and_conflicts_are_invalid() {
    let dir = TempDir::new().unwrap();
    let cq = open(dir.path(), 4);
    append_range(&cq, 0..6);
    cq.append(T, Q, QueueOffset(3), &rec(3)).unwrap();
    assert_eq!(bounds(&cq), Some((0, 6)));
    let conflict = cq.append(T, Q, QueueOffset(3), &rec_v(3, 1));
    assert!(matches!(conflict, Err(CqError::Invalid(_))), "{conflict:?}");
    let gap = cq.append(T, Q, QueueOffset(7), &rec(7));
    assert!(matches!(&gap, Err(CqError::Invalid(m)) if m.contains("must be at 6")), "{gap:?}");
    cq.delete_below(T, Q, QueueOffset(4)).unwrap();
    let below = cq.append(T, Q, QueueOffset(2), &rec(2));
    assert!(matches!(below, Err(CqError::Invalid(_))), "{below:?}");
    assert_eq!(cq.read(T, Q, QueueOffset(3)).unwrap(), None);
    assert_eq!(bounds(&cq), Some((4, 6)));
}

#[test]
fn delete_below_removes_whole_files_and_frees_bytes() {
    let dir = TempDir::new().unwrap();
    let cq = open(dir.path(), 4);
    append_range(&cq, 0..14);
    cq.sync().unwrap();
    let expected: u64 = [0, 4].iter().map(|&s| allocated_bytes(&fpath(dir.path(), s)).unwrap()).sum();
    assert!(expected > 0);
    let before = cq.disk_bytes().unwrap();
    let freed = cq.delete_below(T, Q, QueueOffset(9)).unwrap();
    assert_eq!(freed, expected);
    assert_eq!(cq.disk_bytes().unwrap(), before - freed);
    assert_eq!(files_in(dir.path()), names(&[8, 12]));
    assert_eq!(bounds(&cq), Some((9, 14)));
    assert_eq!(cq.read(T, Q, QueueOffset(8)).unwrap(), None);
    assert_eq!(cq.read(T, Q, QueueOffset(9)).unwrap(), Some(rec(9)));
    assert_eq!(
        cq.read_range(T, Q, QueueOffset(0), 2).unwrap(),
        vec![(QueueOffset(9), rec(9)), (QueueOffset(10), rec(10))]
    );
    assert_eq!(cq.delete_below(T, Q, QueueOffset(9)).unwrap(), 0);
    drop(cq);
    // After a restart the minimum is the first record still on disk.
    let cq = open(dir.path(), 4);
    assert_eq!(bounds(&cq), Some((8, 14)));
    assert_eq!(cq.read(T, Q, QueueOffset(8)).unwrap(), Some(rec(8)));
    // Deleting below a minimum past the last file removes everything.
    assert!(cq.delete_below(T, Q, QueueOffset(16)).unwrap() > 0);
    assert!(files_in(dir.path()).is_empty());
    assert_eq!(bounds(&cq), None);
}

#[test]
fn max_open_files_bounds_handles_and_sync_covers_evicted_files() {
    let dir = TempDir::new().unwrap();
    let cq = open_with(dir.path(), 4, 2).unwrap();
    for o in 0..10 {
        for q in 0..5 {
            cq.append(T, QueueId(q), QueueOffset(o), &rec_v(o, u64::from(q))).unwrap();
            assert!(cq.open_handles() <= 2);
        }
    }
    cq.sync().unwrap();
    assert!(cq.inner.lock().unwrap().store.dirty_files.is_empty());
    drop(cq);
    let cq = open_with(dir.path(), 4, 2).unwrap();
    for q in 0..5 {
        let want: Vec<_> = (0..10).map(|o| (QueueOffset(o), rec_v(o, u64::from(q)))).collect();
        assert_eq!(cq.read_range(T, QueueId(q), QueueOffset(0), 100).unwrap(), want, "queue {q}");
        assert!(cq.open_handles() <= 2);
    }
}

#[test]
fn topic_names_are_validated() {
    let dir = TempDir::new().unwrap();
    let cq = open(dir.path(), 4);
    for bad in ["", "a/b", "..", "a.b", "é", &"x".repeat(128)] {
        assert!(matches!(cq.append(bad, Q, QueueOffset(0), &rec(0)), Err(CqError::Invalid(_))), "{bad:?}");
        assert!(matches!(cq.remove_topic(bad), Err(CqError::Invalid(_))), "{bad:?}");
    }
    for good in ["%RETRY%group|a-1_2", &"x".repeat(127)] {
        cq.append(good, Q, QueueOffset(0), &rec(0)).unwrap();
    }
}

#[test]
fn queues_lists_directories_and_remove_deletes_them() {
    let dir = TempDir::new().unwrap();
    let cq = open(dir.path(), 4);
    for (topic, q) in [("t2", 5), ("t1", 1), ("t1", 0)] {
        cq.append(topic, QueueId(q), QueueOffset(0), &rec(0)).unwrap();
    }
    fs::write(dir.path().join("stray.txt"), b"x").unwrap();
    fs::create_dir(dir.path().join("t1").join("not-a-queue")).unwrap();
    let list = |cq: &ConsumeQueues| cq.queues().unwrap();
    assert_eq!(list(&cq), vec![("t1".into(), QueueId(0)), ("t1".into(), QueueId(1)), ("t2".into(), QueueId(5))]);
    cq.remove_queue("t1", QueueId(1)).unwrap();
    assert_eq!(list(&cq), vec![("t1".into(), QueueId(0)), ("t2".into(), QueueId(5))]);
    assert_eq!(cq.bounds("t1", QueueId(1)).unwrap(), None);
    cq.remove_topic("t2").unwrap();
    assert_eq!(list(&cq), vec![("t1".into(), QueueId(0))]);
    assert_eq!(cq.read("t2", QueueId(5), QueueOffset(0)).unwrap(), None);
    cq.remove_queue("t9", QueueId(0)).unwrap(); // removing what does not exist is fine
    cq.sync().unwrap();
}

#[test]
fn consume_queues_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ConsumeQueues>();
}

#[test]
fn bad_config_is_invalid() {
    let dir = TempDir::new().unwrap();
    assert!(matches!(ConsumeQueues::open(CqConfig::default()), Err(CqError::Invalid(_))));
    assert!(matches!(open_with(dir.path(), 0, 4), Err(CqError::Invalid(_))));
    assert!(matches!(open_with(dir.path(), 4, 0), Err(CqError::Invalid(_))));
    assert_eq!(CqConfig::new("x").records_per_file, 300_000);
}
