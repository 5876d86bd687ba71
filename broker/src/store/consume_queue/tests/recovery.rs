//! Tests of damage and recovery: corrupt records and headers, unsupported versions, torn tails, leftovers, and the
//! record encoding itself.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use super::*;
use crate::store::consume_queue::format::{Decoded, decode_record, encode_header, encode_record};

#[test]
fn corrupt_record_in_older_file_is_reported_with_file_and_byte() {
    let dir = TempDir::new().unwrap();
    let cq = open(dir.path(), 4);
    append_range(&cq, 0..10);
    cq.sync().unwrap();
    let file = fpath(dir.path(), 4);
    let at = HEADER_LEN + RECORD_LEN_U64; // offset 5 = slot 1 of file 4
    patch(&file, at + 5, &[raw(&file, at + 5, 1)[0] ^ 0x40]);
    let (path, byte, reason) = expect_corrupt(cq.read(T, Q, QueueOffset(5)));
    assert_eq!((path, byte), (file.clone(), 112));
    assert!(reason.contains("checksum"), "{reason}");
    drop(cq);
    let cq = open(dir.path(), 4); // reopen does not look at older files' records
    assert_eq!(bounds(&cq), Some((0, 10)));
    let err = cq.read(T, Q, QueueOffset(5)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&file.display().to_string()) && msg.contains("at byte 112"), "{msg}");
    assert!(msg.contains("rebuilds it from the CommitLog"), "{msg}");
    assert_eq!(expect_corrupt(cq.read_range(T, Q, QueueOffset(3), 10)).1, 112);
    assert_eq!(cq.read(T, Q, QueueOffset(4)).unwrap(), Some(rec(4)));
    assert_eq!(cq.read(T, Q, QueueOffset(6)).unwrap(), Some(rec(6)));
    // An unwritten (zero) record inside [min, end) is corrupt too.
    patch(&file, at, &[0u8; RECORD_LEN]);
    let (path, byte, reason) = expect_corrupt(cq.read(T, Q, QueueOffset(5)));
    assert_eq!((path, byte), (file, 112));
    assert!(reason.contains("not written"), "{reason}");
}

#[test]
fn corrupt_record_in_newest_file_fails_open() {
    let dir = TempDir::new().unwrap();
    append_range(&open(dir.path(), 16), 0..10);
    let file = fpath(dir.path(), 0);
    patch(&file, slot_byte(3) + 8, &[0xff]);
    let cq = open(dir.path(), 16);
    let (path, byte, reason) = expect_corrupt(cq.bounds(T, Q));
    assert_eq!((path, byte), (file, slot_byte(3)));
    assert!(reason.contains("records follow"), "{reason}");
    // Still an error (not a panic) on every later use; removing the queue lets it be rebuilt.
    assert!(matches!(cq.append(T, Q, QueueOffset(10), &rec(10)), Err(CqError::Corrupt { .. })));
    cq.remove_queue(T, Q).unwrap();
    append_range(&cq, 0..2);
    assert_eq!(bounds(&cq), Some((0, 2)));
}

#[test]
fn unsupported_version_is_reported() {
    let dir = TempDir::new().unwrap();
    append_range(&open(dir.path(), 4), 0..10);
    let middle = fpath(dir.path(), 4);
    patch(&middle, 8, &3u32.to_le_bytes());
    let cq = open(dir.path(), 4);
    assert_eq!(bounds(&cq), Some((0, 10)), "only the first and newest files are opened at load");
    assert_eq!(cq.read(T, Q, QueueOffset(3)).unwrap(), Some(rec(3)));
    match cq.read(T, Q, QueueOffset(5)) {
        Err(CqError::UnsupportedVersion { path, found: 3, supported: 2 }) => assert_eq!(path, middle),
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    for start in [0, 8] {
        let file = fpath(dir.path(), start);
        patch(&file, 8, &3u32.to_le_bytes());
        let err = open(dir.path(), 4).bounds(T, Q).unwrap_err();
        assert!(matches!(&err, CqError::UnsupportedVersion { path, found: 3, .. } if *path == file), "{err:?}");
        assert!(err.to_string().contains("format version 3"), "{err}");
        patch(&file, 8, &2u32.to_le_bytes());
    }
}

#[test]
fn torn_tail_is_trimmed_and_logged() {
    let dir = TempDir::new().unwrap();
    append_range(&open(dir.path(), 16), 0..7);
    let file = fpath(dir.path(), 0);
    let mut torn = [0u8; RECORD_LEN];
    torn[..20].fill(0xab); // half-written: garbage, then zeros
    patch(&file, slot_byte(6), &torn);
    let (logs, cq) = capture_logs(|| {
        let cq = open(dir.path(), 16);
        assert_eq!(bounds(&cq), Some((0, 6)));
        cq
    });
    let warning =
        logs.iter().find(|l| l.contains("torn tail")).unwrap_or_else(|| panic!("no torn-tail log in {logs:?}"));
    assert!(warning.starts_with("WARN"), "{warning}");
    assert!(warning.contains(&file.display().to_string()) && warning.contains("byte_offset=352"), "{warning}");
    assert_eq!(raw(&file, 352, RECORD_LEN), vec![0u8; RECORD_LEN], "torn record is zeroed");
    append_range(&cq, 6..7);
    drop(cq);
    assert_eq!(bounds(&open(dir.path(), 16)), Some((0, 7)));
}

#[test]
fn unsynced_leftovers_after_end_are_zeroed() {
    let dir = TempDir::new().unwrap();
    append_range(&open(dir.path(), 16), 0..8);
    let file = fpath(dir.path(), 0);
    patch(&file, slot_byte(4), &[0u8; RECORD_LEN]); // a hole: offsets 5..8 look like writes that beat offset 4
    let cq = open(dir.path(), 16);
    assert_eq!(bounds(&cq), Some((0, 4)));
    assert_eq!(raw(&file, slot_byte(4), 4 * RECORD_LEN), vec![0u8; 4 * RECORD_LEN]);
}

#[test]
fn never_written_newest_files_are_removed() {
    let dir = TempDir::new().unwrap();
    append_range(&open(dir.path(), 4), 0..8);
    File::create(fpath(dir.path(), 8)).unwrap(); // created, size never persisted
    let cq = open(dir.path(), 4);
    assert_eq!(bounds(&cq), Some((0, 8)));
    assert_eq!(files_in(dir.path()), names(&[0, 4]));
    append_range(&cq, 8..9);
    // A newest file with a header but no record is removed too.
    cq.truncate_to(T, Q, QueueOffset(8)).unwrap();
    let f = File::create(fpath(dir.path(), 8)).unwrap();
    f.set_len(HEADER_LEN + 4 * RECORD_LEN_U64).unwrap();
    f.write_all_at(&encode_header(8, 4), 0).unwrap();
    assert_eq!(bounds(&open(dir.path(), 4)), Some((0, 8)));
    assert_eq!(files_in(dir.path()), names(&[0, 4]));
}

#[test]
fn missing_middle_file_is_corrupt() {
    let dir = TempDir::new().unwrap();
    append_range(&open(dir.path(), 4), 0..12);
    fs::remove_file(fpath(dir.path(), 4)).unwrap();
    let (path, _, reason) = expect_corrupt(open(dir.path(), 4).bounds(T, Q));
    assert_eq!(path, qdir(dir.path()));
    assert!(reason.contains(&format!("file {} is missing", file_name(4))), "{reason}");
}

#[test]
fn header_damage_and_config_mismatch_are_corrupt() {
    let dir = TempDir::new().unwrap();
    append_range(&open(dir.path(), 4), 0..10);
    let (_, byte, reason) = expect_corrupt(open(dir.path(), 2).bounds(T, Q));
    assert_eq!(byte, 12);
    assert!(reason.contains("records_per_file 4") && reason.contains("configured with 2"), "{reason}");
    let (path, byte, reason) = expect_corrupt(open(dir.path(), 8).bounds(T, Q));
    assert_eq!((path, byte), (fpath(dir.path(), 4), 0));
    assert!(reason.contains("records_per_file"), "{reason}");
    let newest = fpath(dir.path(), 8);
    patch(&newest, 30, &[1]);
    assert_eq!(expect_corrupt(open(dir.path(), 4).bounds(T, Q)).1, 60, "header checksum");
    patch(&newest, 0, b"XX");
    assert_eq!(expect_corrupt(open(dir.path(), 4).bounds(T, Q)).1, 0, "magic");
}

#[test]
fn record_encoding_round_trips_and_is_never_zero() {
    assert_ne!(crc32c::crc32c(&[0u8; 36]), 0, "an encoded record can never be all zero");
    let samples = [
        QueueRecord {
            log_index: LogIndex(0),
            slot: Slot(0),
            size_bytes: 0,
            tag_hash: None,
            group_hash: None,
            store_time: Millis(0),
        },
        QueueRecord {
            log_index: LogIndex(0),
            slot: Slot(0),
            size_bytes: 0,
            tag_hash: Some(0),
            group_hash: Some(0),
            store_time: Millis(0),
        },
        QueueRecord {
            log_index: LogIndex(u64::MAX),
            slot: Slot(u32::MAX),
            size_bytes: u32::MAX,
            tag_hash: Some(u64::MAX),
            group_hash: Some(u64::MAX),
            store_time: Millis(i64::MIN),
        },
    ];
    for r in samples {
        let b = encode_record(&r);
        assert!(b.iter().any(|&x| x != 0));
        assert!(matches!(decode_record(&b), Decoded::Valid(d) if d == r), "{r:?}");
    }
    let mut b = encode_record(&samples[0]);
    b[40] = 4; // unknown flag, with a matching checksum
    let crc = crc32c::crc32c(&b[..44]);
    b[44..].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(decode_record(&b), Decoded::Invalid(m) if m.contains("unknown flags")));
}

// ---- log capture ----

/// Runs `f` with a subscriber that records every event as "LEVEL field=value ...".
fn capture_logs<R>(f: impl FnOnce() -> R) -> (Vec<String>, R) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let result = tracing::subscriber::with_default(Capture(lines.clone()), f);
    let lines = lines.lock().unwrap().clone();
    (lines, result)
}

struct Capture(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = event.metadata().level().to_string();
        event.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}
