//! Tests of the log-index operations: `truncate_after_log_index` and `end_log_index` (used on restart) and
//! `offset_of` (used by message queries).

use super::*;

/// The queues [`dispatch`] writes to, each with the offset its first record is at.
const QUEUES: [(&str, QueueId, u64); 3] =
    [("orders", QueueId(0), 0), ("orders", QueueId(1), 0), ("audit", QueueId(7), 2)];

/// The records of each of [`QUEUES`], in order.
type Written = Vec<Vec<(QueueOffset, QueueRecord)>>;

/// Like the broker's dispatcher: log entries 1..=30 go round-robin to [`QUEUES`] (entry `i` to `QUEUES[i % 3]`),
/// and entries divisible by 5 hold two messages. With 4 records per file:
/// - orders/0 holds entries 3 6 9 12 | 15 15 18 21 | 24 27 30 30 at offsets 0..12;
/// - orders/1 holds entries 1 4 7 10 | 10 13 16 19 | 22 25 25 28 at offsets 0..12;
/// - audit/7 holds entries _ _ 2 5 | 5 8 11 14 | 17 20 20 23 | 26 29 at offsets 2..14.
///
/// Writes them, syncs and closes the store, so the test's store has never opened these queues.
fn dispatch(root: &Path) -> Written {
    let cq = open(root, 4);
    let mut written: Written = vec![Vec::new(); QUEUES.len()];
    for li in 1..=30u64 {
        let k = (li % 3) as usize;
        let (topic, queue, first) = QUEUES[k];
        for slot in 0..if li.is_multiple_of(5) { 2 } else { 1 } {
            let o = QueueOffset(first + written[k].len() as u64);
            let size_bytes = 100 + slot;
            let r = QueueRecord {
                log_index: LogIndex(li),
                slot: Slot(slot),
                size_bytes,
                tag_hash: None,
                group_hash: None,
                store_time: Millis(li as i64),
            };
            cq.append(topic, queue, o, &r).unwrap();
            written[k].push((o, r));
        }
    }
    cq.sync().unwrap();
    written
}

/// Checks that each of [`QUEUES`] has the `expected` bounds and holds exactly its written records up to `last`.
fn assert_holds(cq: &ConsumeQueues, written: &Written, last: u64, expected: [Option<(u64, u64)>; 3]) {
    for (k, (topic, queue, _)) in QUEUES.into_iter().enumerate() {
        let got = cq.bounds(topic, queue).unwrap().map(|(a, b)| (a.0, b.0));
        assert_eq!(got, expected[k], "bounds of {topic}/{}", queue.0);
        let want: Vec<_> = written[k].iter().copied().filter(|(_, r)| r.log_index.0 <= last).collect();
        assert_eq!(cq.read_range(topic, queue, QueueOffset(0), 100).unwrap(), want, "records of {topic}/{}", queue.0);
        let last_index = want.last().map(|(_, r)| r.log_index);
        assert_eq!(cq.end_log_index(topic, queue).unwrap(), last_index, "end log index of {topic}/{}", queue.0);
    }
}

fn files_of(root: &Path, topic: &str, queue: QueueId) -> Vec<String> {
    let mut names: Vec<String> =
        list_dir(&root.join(topic).join(queue.0.to_string())).unwrap().into_iter().map(|(n, _)| n).collect();
    names.sort();
    names
}

#[test]
fn truncate_after_log_index_in_middle_of_file() {
    let dir = TempDir::new().unwrap();
    let written = dispatch(dir.path());
    let cq = open(dir.path(), 4);
    // Entry 16 is orders/1's offset 6 and stays; orders/0 is cut after offset 5 and audit/7 at its file 8.
    assert_eq!(cq.truncate_after_log_index(LogIndex(16)).unwrap(), 6 + 5 + 6);
    let expected = [Some((0, 6)), Some((0, 7)), Some((2, 8))];
    assert_holds(&cq, &written, 16, expected);
    assert_eq!(cq.read("orders", QueueId(1), QueueOffset(6)).unwrap().map(|r| r.log_index), Some(LogIndex(16)));
    for (topic, queue, _) in QUEUES {
        assert_eq!(files_of(dir.path(), topic, queue), names(&[0, 4]), "{topic}/{}", queue.0);
    }
    let file = dir.path().join("orders").join("0").join(file_name(4));
    assert_eq!(raw(&file, slot_byte(2), 2 * RECORD_LEN), vec![0u8; 2 * RECORD_LEN], "offsets 6 and 7 are zeroed");
    drop(cq);
    let cq = open(dir.path(), 4);
    assert_holds(&cq, &written, 16, expected);
    assert_eq!(cq.truncate_after_log_index(LogIndex(16)).unwrap(), 0, "a second call has nothing to drop");
    cq.append("orders", QueueId(0), QueueOffset(6), &written[0][6].1).unwrap();
    assert_eq!(cq.bounds("orders", QueueId(0)).unwrap(), Some((QueueOffset(0), QueueOffset(7))));
}

#[test]
fn truncate_after_log_index_at_file_boundary() {
    let dir = TempDir::new().unwrap();
    let written = dispatch(dir.path());
    let cq = open(dir.path(), 4);
    // orders/0 and orders/1 now end exactly where their file 8 started; audit/7 ends inside its file 8.
    assert_eq!(cq.truncate_after_log_index(LogIndex(21)).unwrap(), 4 + 4 + 3);
    let expected = [Some((0, 8)), Some((0, 8)), Some((2, 11))];
    assert_holds(&cq, &written, 21, expected);
    assert_eq!(files_of(dir.path(), "orders", QueueId(0)), names(&[0, 4]));
    assert_eq!(files_of(dir.path(), "orders", QueueId(1)), names(&[0, 4]));
    assert_eq!(files_of(dir.path(), "audit", QueueId(7)), names(&[0, 4, 8]));
    drop(cq);
    let cq = open(dir.path(), 4);
    assert_holds(&cq, &written, 21, expected);
    cq.append("orders", QueueId(0), QueueOffset(8), &written[0][8].1).unwrap();
    assert_eq!(files_of(dir.path(), "orders", QueueId(0)), names(&[0, 4, 8]));
}

#[test]
fn truncate_after_log_index_below_every_record_empties_queues() {
    let dir = TempDir::new().unwrap();
    let written = dispatch(dir.path());
    let cq = open(dir.path(), 4);
    assert_eq!(cq.truncate_after_log_index(LogIndex(0)).unwrap(), 36);
    assert_holds(&cq, &written, 0, [None, None, None]);
    for (topic, queue, _) in QUEUES {
        assert!(files_of(dir.path(), topic, queue).is_empty(), "{topic}/{}", queue.0);
    }
    assert_eq!(cq.disk_bytes().unwrap(), 0);
    drop(cq);
    let cq = open(dir.path(), 4);
    assert_holds(&cq, &written, 0, [None, None, None]);
    assert_eq!(cq.truncate_after_log_index(LogIndex(0)).unwrap(), 0);
    // Appending again at each queue's old first offset works.
    for (k, (topic, queue, first)) in QUEUES.into_iter().enumerate() {
        cq.append(topic, queue, QueueOffset(first), &written[k][0].1).unwrap();
    }
    assert_holds(&cq, &written, 3, [Some((0, 1)), Some((0, 1)), Some((2, 3))]);
}

#[test]
fn truncate_after_log_index_above_every_record_is_noop() {
    let dir = TempDir::new().unwrap();
    let written = dispatch(dir.path());
    let cq = open(dir.path(), 4);
    let full = [Some((0, 12)), Some((0, 12)), Some((2, 14))];
    assert_eq!(cq.truncate_after_log_index(LogIndex(30)).unwrap(), 0, "the last entry is kept");
    assert_holds(&cq, &written, 30, full);
    assert_eq!(cq.truncate_after_log_index(LogIndex(u64::MAX)).unwrap(), 0);
    assert_holds(&cq, &written, 30, full);
    let empty = TempDir::new().unwrap();
    assert_eq!(open(empty.path(), 4).truncate_after_log_index(LogIndex(0)).unwrap(), 0, "no queue at all");
}

#[test]
fn end_log_index_is_that_of_the_last_record() {
    let dir = TempDir::new().unwrap();
    let cq = open(dir.path(), 4);
    assert_eq!(cq.end_log_index("orders", QueueId(0)).unwrap(), None, "unknown queue");
    drop(cq);
    dispatch(dir.path());
    let cq = open(dir.path(), 4);
    let ends = |cq: &ConsumeQueues| QUEUES.map(|(t, q, _)| cq.end_log_index(t, q).unwrap().map(|li| li.0));
    assert_eq!(ends(&cq), [Some(30), Some(28), Some(29)]);
    cq.truncate_after_log_index(LogIndex(16)).unwrap();
    assert_eq!(ends(&cq), [Some(15), Some(16), Some(14)]);
    cq.truncate_to("audit", QueueId(7), QueueOffset(3)).unwrap();
    assert_eq!(ends(&cq), [Some(15), Some(16), Some(2)]);
    // Retention up to the end leaves no served record, as for `bounds`.
    cq.delete_below("orders", QueueId(0), QueueOffset(6)).unwrap();
    assert_eq!(cq.bounds("orders", QueueId(0)).unwrap(), None);
    assert_eq!(ends(&cq), [None, Some(16), Some(2)]);
}

#[test]
fn offset_of_finds_each_record_by_its_log_position() {
    let dir = TempDir::new().unwrap();
    let written = dispatch(dir.path());
    let cq = open(dir.path(), 4);
    for (k, (topic, queue, _)) in QUEUES.into_iter().enumerate() {
        for (offset, r) in &written[k] {
            assert_eq!(cq.offset_of(topic, queue, r.log_index, r.slot).unwrap(), Some(*offset), "{topic}/{}", queue.0);
        }
    }
    // Entry 15 holds two messages, both in orders/0 (offsets 4 and 5); it has no third, and entry 16 is elsewhere.
    let of = |li: u64, slot: u32| cq.offset_of("orders", QueueId(0), LogIndex(li), Slot(slot)).unwrap().map(|o| o.0);
    assert_eq!((of(15, 0), of(15, 1), of(15, 2), of(16, 0)), (Some(4), Some(5), None, None));
    assert_eq!((of(0, 0), of(31, 0)), (None, None), "before the first and after the last record");
    assert_eq!(cq.offset_of("nowhere", QueueId(0), LogIndex(3), Slot(0)).unwrap(), None, "unknown queue");
    // Records below the queue's minimum are not found any more.
    cq.delete_below("orders", QueueId(0), QueueOffset(4)).unwrap();
    assert_eq!((of(3, 0), of(12, 0), of(15, 1)), (None, None, Some(5)));
}
