//! Tests of the index files: round trips, roll-over, truncation, retention, corruption and a model-based proptest.

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tempfile::TempDir;

use super::file::{file_name, load_header};
use super::format::{Entry, Header, KIND_ID, KIND_KEY, key_hash};
use super::*;

const ALL_TIME: (Millis, Millis) = (Millis(i64::MIN), Millis(i64::MAX));

fn config(dir: &Path, slot_count: u32, max_entries: u32, max_results: usize) -> IndexConfig {
    IndexConfig { root: dir.join("index"), slot_count, max_entries, max_results }
}

fn small(dir: &Path) -> IndexConfig {
    config(dir, 8, 16, 64)
}

fn open(cfg: &IndexConfig) -> IndexFiles {
    IndexFiles::open(cfg.clone()).expect("open index")
}

fn hit(log_index: u64, slot: u32, time: i64) -> Hit {
    Hit { log_index: LogIndex(log_index), slot: Slot(slot), store_time: Millis(time) }
}

fn all(idx: &IndexFiles, key: IndexKey<'_>) -> Vec<Hit> {
    idx.lookup(key, ALL_TIME.0, ALL_TIME.1).expect("lookup")
}

fn add(idx: &IndexFiles, key: IndexKey<'_>, log_index: u64, slot: u32, time: i64) {
    idx.add(key, LogIndex(log_index), Slot(slot), Millis(time)).expect("add");
}

/// Names of the index files, oldest first.
fn files(cfg: &IndexConfig) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(&cfg.root)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// In-memory model: every add as (is_id, text, hit), oldest first.
#[derive(Debug, Default)]
struct Model(Vec<(bool, String, Hit)>);

impl Model {
    fn add(&mut self, idx: &IndexFiles, is_id: bool, text: &str, h: Hit) {
        let key = if is_id { IndexKey::Id(text) } else { IndexKey::Key(text) };
        idx.add(key, h.log_index, h.slot, h.store_time).expect("add");
        self.0.push((is_id, text.to_string(), h));
    }

    fn lookup(&self, is_id: bool, text: &str, begin: i64, end: i64, max: usize) -> Vec<Hit> {
        let mut seen = HashSet::new();
        self.0
            .iter()
            .rev()
            .filter(|(i, t, h)| *i == is_id && t == text && (begin..=end).contains(&h.store_time.0))
            .map(|(_, _, h)| *h)
            .filter(|h| seen.insert((h.log_index, h.slot)))
            .take(max)
            .collect()
    }

    fn truncate_after(&mut self, log_index: u64) {
        self.0.retain(|(_, _, h)| h.log_index.0 <= log_index);
    }

    fn check(&self, idx: &IndexFiles, texts: &[&str], max: usize) {
        for text in texts {
            for is_id in [true, false] {
                let key = if is_id { IndexKey::Id(text) } else { IndexKey::Key(text) };
                assert_eq!(all(idx, key), self.lookup(is_id, text, i64::MIN, i64::MAX, max), "key {key:?}");
            }
        }
    }
}

/// Adds one entry per log index `from..=to`, key `k{log % 5}`, time `1000 + log`.
fn add_range(idx: &IndexFiles, model: &mut Model, from: u64, to: u64, tag: &str) {
    for log in from..=to {
        model.add(idx, false, &format!("k{}{tag}", log % 5), hit(log, 0, 1000 + log as i64));
    }
}

const RANGE_KEYS: &[&str] = &["k0", "k1", "k2", "k3", "k4", "k0x", "k1x", "k2x", "k3x", "k4x"];

#[test]
fn ids_and_keys_round_trip() {
    let dir = TempDir::new().expect("tempdir");
    let idx = open(&config(dir.path(), 1024, 1024, 64));
    add(&idx, IndexKey::Id("msg-1"), 5, 0, 100);
    add(&idx, IndexKey::Key("order-7"), 5, 0, 100);
    add(&idx, IndexKey::Id("msg-2"), 5, 1, 100);
    assert_eq!(all(&idx, IndexKey::Id("msg-1")), vec![hit(5, 0, 100)]);
    assert_eq!(all(&idx, IndexKey::Id("msg-2")), vec![hit(5, 1, 100)]);
    assert_eq!(all(&idx, IndexKey::Key("order-7")), vec![hit(5, 0, 100)]);
    assert_eq!(all(&idx, IndexKey::Key("missing")), vec![]);
    assert_eq!(idx.last_log_index(), Some(LogIndex(5)));
}

#[test]
fn same_key_on_many_messages_is_found_newest_first() {
    let dir = TempDir::new().expect("tempdir");
    let idx = open(&config(dir.path(), 1024, 1024, 64));
    for log in 1..=5 {
        add(&idx, IndexKey::Key("tag"), log, 2, 10 * log as i64);
        add(&idx, IndexKey::Key("other"), log, 3, 10 * log as i64);
    }
    let expected: Vec<Hit> = (1..=5).rev().map(|log| hit(log, 2, 10 * log as i64)).collect();
    assert_eq!(all(&idx, IndexKey::Key("tag")), expected);
}

#[test]
fn id_and_key_with_same_text_are_different_keys() {
    let dir = TempDir::new().expect("tempdir");
    let idx = open(&config(dir.path(), 1024, 1024, 64));
    add(&idx, IndexKey::Id("abc"), 1, 0, 1);
    add(&idx, IndexKey::Key("abc"), 2, 0, 2);
    assert_eq!(all(&idx, IndexKey::Id("abc")), vec![hit(1, 0, 1)]);
    assert_eq!(all(&idx, IndexKey::Key("abc")), vec![hit(2, 0, 2)]);
}

#[test]
fn time_range_filters_hits_and_files() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = config(dir.path(), 4, 4, 64);
    let idx = open(&cfg);
    for log in 1..=12u64 {
        add(&idx, IndexKey::Key("k"), log, 0, 100 * log as i64);
    }
    assert_eq!(files(&cfg).len(), 3);
    let got = idx.lookup(IndexKey::Key("k"), Millis(350), Millis(900)).expect("lookup");
    assert_eq!(got, (4..=9).rev().map(|l| hit(l, 0, 100 * l as i64)).collect::<Vec<_>>());
    let edges = idx.lookup(IndexKey::Key("k"), Millis(400), Millis(400)).expect("lookup");
    assert_eq!(edges, vec![hit(4, 0, 400)]);
    assert!(idx.lookup(IndexKey::Key("k"), Millis(1300), Millis(2000)).expect("lookup").is_empty());
    assert!(idx.lookup(IndexKey::Key("k"), Millis(900), Millis(100)).expect("lookup").is_empty());
}

#[test]
fn max_results_caps_hits() {
    let dir = TempDir::new().expect("tempdir");
    let idx = open(&config(dir.path(), 8, 5, 3));
    for log in 1..=20 {
        add(&idx, IndexKey::Key("k"), log, 0, log as i64);
    }
    assert_eq!(all(&idx, IndexKey::Key("k")), vec![hit(20, 0, 20), hit(19, 0, 19), hit(18, 0, 18)]);
}

#[test]
fn duplicate_positions_are_returned_once() {
    let dir = TempDir::new().expect("tempdir");
    let idx = open(&small(dir.path()));
    add(&idx, IndexKey::Key("dup"), 1, 0, 1);
    add(&idx, IndexKey::Key("dup"), 1, 0, 1);
    add(&idx, IndexKey::Key("dup"), 1, 1, 1);
    assert_eq!(all(&idx, IndexKey::Key("dup")), vec![hit(1, 1, 1), hit(1, 0, 1)]);
}

#[test]
fn small_files_roll_over_and_chains_collide() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = small(dir.path());
    let idx = open(&cfg);
    let mut model = Model::default();
    let texts: Vec<String> = (0..13).map(|i| format!("key-{i}")).collect();
    for i in 0..100u64 {
        model.add(&idx, i % 2 == 0, &texts[(i % 13) as usize], hit(i / 3 + 1, (i % 3) as u32, 1000 + i as i64));
    }
    assert_eq!(files(&cfg).len(), 7, "100 entries in files of 16");
    assert_eq!(files(&cfg)[1], "00000000000000000006.idx");
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    model.check(&idx, &refs, 64);
    for text in &refs {
        let n = model.0.iter().filter(|(_, t, _)| t == text).count();
        let found = all(&idx, IndexKey::Id(text)).len() + all(&idx, IndexKey::Key(text)).len();
        assert_eq!(found, n, "{text}");
    }
}

#[test]
fn reopen_finds_everything() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = small(dir.path());
    let mut model = Model::default();
    {
        let idx = open(&cfg);
        add_range(&idx, &mut model, 1, 50, "");
        idx.sync().expect("sync");
    }
    let idx = open(&cfg);
    assert_eq!(idx.last_log_index(), Some(LogIndex(50)));
    model.check(&idx, RANGE_KEYS, 64);
    add_range(&idx, &mut model, 51, 60, "x");
    model.check(&idx, RANGE_KEYS, 64);
}

fn read_bytes(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    File::open(path).expect("open").read_exact_at(&mut buf, offset).expect("read");
    buf
}

#[test]
fn add_all_writes_what_adds_one_by_one_write() {
    let (dir_one, dir_all) = (TempDir::new().expect("tempdir"), TempDir::new().expect("tempdir"));
    let (cfg_one, cfg_all) = (small(dir_one.path()), small(dir_all.path()));
    let (idx_one, idx_all) = (open(&cfg_one), open(&cfg_all));
    let entry = |log: u64| {
        NewEntry::new(IndexKey::Key(&format!("k{}", log % 5)), LogIndex(log), Slot(0), Millis(1000 + log as i64))
            .expect("a valid key")
    };
    for log in 1..=40 {
        add(&idx_one, IndexKey::Key(&format!("k{}", log % 5)), log, 0, 1000 + log as i64);
    }
    // Batches within one file and across the two file boundaries (16 entries per file).
    for batch in [1..=3, 4..=20, 21..=40] {
        idx_all.add_all(&batch.map(entry).collect::<Vec<_>>()).expect("add_all");
    }
    idx_all.add_all(&[]).expect("nothing to add");
    assert_eq!(files(&cfg_all), files(&cfg_one));
    for name in files(&cfg_one) {
        let (a, b) =
            (fs::read(cfg_all.root.join(&name)).expect("read"), fs::read(cfg_one.root.join(&name)).expect("read"));
        assert!(a == b, "{name} differs");
    }
    // A refused entry stops the batch; the ones before it are in, with the header.
    let refused = idx_all.add_all(&[entry(41), entry(39), entry(42)]);
    assert!(matches!(refused, Err(IndexError::Invalid(_))), "{refused:?}");
    drop(idx_all);
    let idx_all = open(&cfg_all);
    assert_eq!(idx_all.last_log_index(), Some(LogIndex(41)));
    assert_eq!(all(&idx_all, IndexKey::Key("k1"))[0], hit(41, 0, 1041));
}

#[test]
fn truncate_inside_last_file_then_readd() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = small(dir.path());
    let idx = open(&cfg);
    let mut model = Model::default();
    add_range(&idx, &mut model, 1, 10, "");
    idx.truncate_after(LogIndex(6)).expect("truncate");
    model.truncate_after(6);
    assert_eq!(idx.last_log_index(), Some(LogIndex(6)));
    model.check(&idx, RANGE_KEYS, 64);
    let path = cfg.root.join(file_name(1));
    let entry7 = 128 + 8 * 4 + 6 * 40;
    assert_eq!(read_bytes(&path, entry7, 4 * 40), vec![0u8; 160], "removed entries are zeroed");
    add_range(&idx, &mut model, 7, 14, "x");
    model.check(&idx, RANGE_KEYS, 64);
    drop(idx);
    let idx = open(&cfg);
    model.check(&idx, RANGE_KEYS, 64);
    assert!(idx.add(IndexKey::Key("k"), LogIndex(13), Slot(0), Millis(5000)).is_err());
}

#[test]
fn truncate_across_file_boundary_then_readd() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = small(dir.path());
    let idx = open(&cfg);
    let mut model = Model::default();
    add_range(&idx, &mut model, 1, 40, "");
    assert_eq!(files(&cfg), vec![file_name(1), file_name(17), file_name(33)]);
    idx.truncate_after(LogIndex(20)).expect("truncate");
    model.truncate_after(20);
    assert_eq!(files(&cfg), vec![file_name(1), file_name(17)]);
    assert_eq!(idx.last_log_index(), Some(LogIndex(20)));
    model.check(&idx, RANGE_KEYS, 64);
    add_range(&idx, &mut model, 21, 45, "x");
    assert_eq!(files(&cfg), vec![file_name(1), file_name(17), file_name(33)]);
    model.check(&idx, RANGE_KEYS, 64);
    idx.truncate_after(LogIndex(16)).expect("truncate");
    model.truncate_after(16);
    assert_eq!(files(&cfg), vec![file_name(1)]);
    model.check(&idx, RANGE_KEYS, 64);
    idx.truncate_after(LogIndex(0)).expect("truncate");
    assert!(files(&cfg).is_empty());
    assert_eq!(idx.last_log_index(), None);
    let mut model = Model::default();
    add_range(&idx, &mut model, 3, 5, "");
    drop(idx);
    model.check(&open(&cfg), RANGE_KEYS, 64);
}

#[test]
fn delete_before_removes_only_whole_old_files() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = small(dir.path());
    let idx = open(&cfg);
    let mut model = Model::default();
    add_range(&idx, &mut model, 1, 40, "");
    let before = idx.disk_bytes().expect("disk bytes");
    assert_eq!(idx.delete_before(LogIndex(16)).expect("delete"), 0, "file 1 still holds log index 16");
    let freed = idx.delete_before(LogIndex(17)).expect("delete");
    assert!(freed > 0);
    assert_eq!(idx.disk_bytes().expect("disk bytes"), before - freed);
    assert_eq!(files(&cfg), vec![file_name(17), file_name(33)]);
    let freed = idx.delete_before(LogIndex(1000)).expect("delete");
    assert!(freed > 0);
    assert_eq!(files(&cfg), vec![file_name(33)], "the newest file is never deleted");
    let expected: Vec<Hit> = [38, 33].iter().map(|&l| hit(l, 0, 1000 + l as i64)).collect();
    assert_eq!(all(&idx, IndexKey::Key("k3")), expected);
    assert_eq!(idx.last_log_index(), Some(LogIndex(40)));
}

fn flip(path: &Path, offset: u64, mask: u8) {
    let file = File::options().read(true).write(true).open(path).expect("open");
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset).expect("read");
    file.write_all_at(&[b[0] ^ mask], offset).expect("write");
}

fn corrupt_at(err: IndexError) -> (PathBuf, u64) {
    match err {
        IndexError::Corrupt { path, byte_offset, .. } => (path, byte_offset),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn flipped_entry_byte_is_corrupt_with_file_and_offset() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = config(dir.path(), 1024, 1024, 64);
    let idx = open(&cfg);
    add(&idx, IndexKey::Key("a"), 1, 0, 1);
    add(&idx, IndexKey::Key("b"), 2, 0, 2);
    add(&idx, IndexKey::Key("a"), 3, 0, 3);
    let path = cfg.root.join(file_name(1));
    let entry1 = 128 + 1024 * 4;
    flip(&path, entry1 + 9, 0x40);
    let err = idx.lookup(IndexKey::Key("a"), ALL_TIME.0, ALL_TIME.1).expect_err("corrupt chain");
    let message = err.to_string();
    assert_eq!(corrupt_at(err), (path.clone(), entry1));
    assert!(message.contains(&format!("{} at byte {entry1}", path.display())), "{message}");
    assert!(message.contains("rebuilds its index"), "{message}");
    assert_ne!(key_hash(KIND_KEY, b"a") % 1024, key_hash(KIND_KEY, b"b") % 1024, "a and b must not share a bucket");
    assert_eq!(all(&idx, IndexKey::Key("b")), vec![hit(2, 0, 2)], "other chains still work");
    // A chain link to a newer entry and a bucket head past the entry count are corrupt too.
    flip(&path, entry1 + 9, 0x40);
    let entry3 = entry1 + 2 * 40;
    let mut e = Entry::decode(&read_bytes(&path, entry3, 40)).expect("entry 3");
    e.prev = 3;
    File::options().write(true).open(&path).expect("open").write_all_at(&e.encode(), entry3).expect("write");
    let err = idx.lookup(IndexKey::Key("a"), ALL_TIME.0, ALL_TIME.1).expect_err("self link");
    assert_eq!(corrupt_at(err), (path.clone(), entry3));
    let slot_b = 128 + 4 * (key_hash(KIND_KEY, b"b") % 1024);
    File::options().write(true).open(&path).expect("open").write_all_at(&9u32.to_le_bytes(), slot_b).expect("write");
    let err = idx.lookup(IndexKey::Key("b"), ALL_TIME.0, ALL_TIME.1).expect_err("head past count");
    assert_eq!(corrupt_at(err), (path, slot_b));
}

#[test]
fn version_2_header_is_unsupported() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = small(dir.path());
    drop(open(&cfg).add(IndexKey::Key("a"), LogIndex(1), Slot(0), Millis(1)));
    let path = cfg.root.join(file_name(1));
    File::options().write(true).open(&path).expect("open").write_all_at(&2u32.to_le_bytes(), 8).expect("write");
    match IndexFiles::open(cfg) {
        Err(IndexError::UnsupportedVersion { path: p, found: 2, supported: 1 }) => assert_eq!(p, path),
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn bad_magic_and_header_checksum_are_corrupt() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = small(dir.path());
    open(&cfg).add(IndexKey::Key("a"), LogIndex(1), Slot(0), Millis(1)).expect("add");
    let path = cfg.root.join(file_name(1));
    flip(&path, 30, 1);
    assert_eq!(corrupt_at(IndexFiles::open(cfg.clone()).expect_err("crc")), (path.clone(), 124));
    flip(&path, 30, 1);
    flip(&path, 0, 1);
    assert_eq!(corrupt_at(IndexFiles::open(cfg).expect_err("magic")), (path, 0));
}

#[test]
fn cut_short_file_is_corrupt_not_a_panic() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = small(dir.path());
    let mut model = Model::default();
    let idx = open(&cfg);
    add_range(&idx, &mut model, 1, 20, "");
    let path = cfg.root.join(file_name(1));
    let short = 128 + 8 * 4 + 3 * 40;
    File::options().write(true).open(&path).expect("open").set_len(short).expect("set_len");
    let err = idx.lookup(IndexKey::Key("k1"), ALL_TIME.0, ALL_TIME.1).expect_err("cut while open");
    assert!(matches!(err, IndexError::Corrupt { path: ref p, .. } if *p == path), "{err:?}");
    drop(idx);
    let err = IndexFiles::open(cfg.clone()).expect_err("cut short");
    assert!(err.to_string().contains("cut short"), "{err}");
    assert_eq!(corrupt_at(err), (path.clone(), short));
    File::options().write(true).open(&path).expect("open").set_len(50).expect("set_len");
    assert_eq!(corrupt_at(IndexFiles::open(cfg).expect_err("shorter than header")), (path, 50));
}

#[test]
fn misnamed_or_overlapping_files_are_corrupt() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = small(dir.path());
    let mut model = Model::default();
    add_range(&open(&cfg), &mut model, 1, 20, "");
    let copy = cfg.root.join(file_name(10));
    fs::copy(cfg.root.join(file_name(1)), &copy).expect("copy");
    assert_eq!(corrupt_at(IndexFiles::open(cfg.clone()).expect_err("misnamed")), (copy.clone(), 24));
    let h = Header { first_log_index: 10, last_log_index: 12, ..load_header(&copy).expect("h").expect("some") };
    File::options().write(true).open(&copy).expect("open").write_all_at(&h.encode(), 0).expect("write");
    let err = IndexFiles::open(cfg).expect_err("overlap");
    assert!(err.to_string().contains("before"), "{err}");
    assert_eq!(corrupt_at(err), (copy, 24));
}

#[test]
fn invalid_requests_are_rejected() {
    let dir = TempDir::new().expect("tempdir");
    let idx = open(&config(dir.path(), 8, 4, 64));
    let long = "x".repeat(129);
    let max = "x".repeat(128);
    let invalid = |r: Result<(), IndexError>| matches!(r, Err(IndexError::Invalid(_)));
    assert!(invalid(idx.add(IndexKey::Key(""), LogIndex(1), Slot(0), Millis(1))));
    assert!(invalid(idx.add(IndexKey::Id(&long), LogIndex(1), Slot(0), Millis(1))));
    assert!(matches!(idx.lookup(IndexKey::Key(&long), ALL_TIME.0, ALL_TIME.1), Err(IndexError::Invalid(_))));
    add(&idx, IndexKey::Id(&max), 5, 0, 10);
    assert_eq!(all(&idx, IndexKey::Id(&max)), vec![hit(5, 0, 10)]);
    assert!(invalid(idx.add(IndexKey::Key("k"), LogIndex(4), Slot(0), Millis(10))), "log index backwards");
    assert!(invalid(idx.add(IndexKey::Key("k"), LogIndex(5), Slot(0), Millis(9))), "store time backwards");
    for _ in 0..7 {
        add(&idx, IndexKey::Key("k"), 6, 0, 10); // 3 fill file 5, 4 fill file 6
    }
    assert!(invalid(idx.add(IndexKey::Key("k"), LogIndex(6), Slot(0), Millis(10))), "log 6 fills a whole file");
    add(&idx, IndexKey::Key("k"), 7, 0, 10);
    assert!(matches!(IndexFiles::open(config(dir.path(), 0, 4, 64)), Err(IndexError::Invalid(_))));
}

/// Simulates a crash after a sync at log index 6: later entries and bucket heads may or may not have reached the
/// disk, and the header may be older or newer than they are.
fn crash_then_truncate(old_header: bool, lost_entries: bool) {
    let dir = TempDir::new().expect("tempdir");
    let cfg = small(dir.path());
    let path = cfg.root.join(file_name(1));
    let mut model = Model::default();
    {
        let idx = open(&cfg);
        add_range(&idx, &mut model, 1, 6, "");
        idx.sync().expect("sync");
        let synced_header = read_bytes(&path, 0, 128);
        add_range(&idx, &mut model, 7, 10, "");
        let file = File::options().write(true).open(&path).expect("open");
        if old_header {
            file.write_all_at(&synced_header, 0).expect("write");
        }
        if lost_entries {
            file.write_all_at(&[0u8; 80], 128 + 8 * 4 + 8 * 40).expect("zero entries 9 and 10");
        }
    }
    let idx = open(&cfg);
    idx.truncate_after(LogIndex(6)).expect("truncate");
    model.truncate_after(6);
    assert_eq!(idx.last_log_index(), Some(LogIndex(6)));
    model.check(&idx, RANGE_KEYS, 64);
    add_range(&idx, &mut model, 7, 30, "x");
    model.check(&idx, RANGE_KEYS, 64);
    drop(idx);
    model.check(&open(&cfg), RANGE_KEYS, 64);
}

#[test]
fn truncate_repairs_a_torn_tail_after_a_crash() {
    crash_then_truncate(true, false);
    crash_then_truncate(true, true);
    crash_then_truncate(false, true);
    crash_then_truncate(false, false);
}

#[test]
fn files_with_an_unwritten_header_are_dropped_on_open() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = small(dir.path());
    let mut model = Model::default();
    add_range(&open(&cfg), &mut model, 1, 20, "");
    File::create(cfg.root.join(file_name(30))).expect("create").set_len(4096).expect("set_len");
    File::create(cfg.root.join(file_name(40))).expect("create");
    fs::write(cfg.root.join("notes.txt"), b"not an index file").expect("write");
    let idx = open(&cfg);
    assert_eq!(files(&cfg), vec![file_name(1), file_name(17), "notes.txt".to_string()]);
    model.check(&idx, RANGE_KEYS, 64);
}

#[test]
fn sync_disk_bytes_and_clear() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = small(dir.path());
    let idx = open(&cfg);
    assert_eq!(idx.disk_bytes().expect("disk bytes"), 0);
    idx.sync().expect("sync empty");
    let mut model = Model::default();
    add_range(&idx, &mut model, 1, 40, "");
    idx.sync().expect("sync");
    idx.sync().expect("sync again");
    assert!(idx.disk_bytes().expect("disk bytes") > 0);
    idx.clear().expect("clear");
    assert!(files(&cfg).is_empty());
    assert_eq!(idx.disk_bytes().expect("disk bytes"), 0);
    assert_eq!(idx.last_log_index(), None);
    assert!(all(&idx, IndexKey::Key("k1")).is_empty());
    let mut model = Model::default();
    add_range(&idx, &mut model, 1, 3, "x");
    model.check(&idx, RANGE_KEYS, 64);
}

#[test]
fn remove_all_deletes_an_index_that_open_rejects() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = small(dir.path());
    let mut model = Model::default();
    add_range(&open(&cfg), &mut model, 1, 20, "");
    flip(&cfg.root.join(file_name(17)), 3, 0xff);
    assert!(IndexFiles::open(cfg.clone()).is_err());
    IndexFiles::remove_all(&cfg.root).expect("remove all");
    assert!(files(&cfg).is_empty());
    assert_eq!(open(&cfg).last_log_index(), None);
    IndexFiles::remove_all(&dir.path().join("missing")).expect("missing root is fine");
}

#[test]
fn many_files_keep_a_bounded_number_of_handles() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = config(dir.path(), 2, 1, 100);
    let idx = open(&cfg);
    for log in 1..=70 {
        add(&idx, IndexKey::Key("k"), log, 0, log as i64);
    }
    let expected: Vec<Hit> = (1..=70).rev().map(|l| hit(l, 0, l as i64)).collect();
    assert_eq!(all(&idx, IndexKey::Key("k")), expected);
    assert_eq!(all(&idx, IndexKey::Key("k")), expected);
    assert_eq!(idx.readers().0.len(), READ_HANDLES);
    let before = idx.disk_bytes().expect("disk bytes");
    let freed = idx.delete_before(LogIndex(69)).expect("delete");
    assert_eq!(before - freed, idx.disk_bytes().expect("disk bytes"));
    assert_eq!(files(&cfg), vec![file_name(69), file_name(70)]);
    assert!(idx.readers().0.len() <= 1);
}

#[test]
fn index_files_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<IndexFiles>();
}

#[test]
fn key_hash_is_pinned() {
    assert_eq!(key_hash(KIND_KEY, b"abc"), 8_500_018_598_930_104_364, "FNV-1a 64 of [2, a, b, c], then fmix64");
    assert_ne!(key_hash(KIND_ID, b"abc"), key_hash(KIND_KEY, b"abc"));
}

const TEXTS: &[&str] = &["a", "b", "c", "d", "e", "f"];

#[derive(Debug, Clone)]
enum Op {
    Message { id: usize, keys: Vec<usize>, new_log: bool, dt: i64 },
    Truncate(u64),
    Reopen,
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..TEXTS.len(), prop::collection::vec(0..TEXTS.len(), 0..4), any::<bool>(), 0..3i64)
            .prop_map(|(id, keys, new_log, dt)| Op::Message { id, keys, new_log, dt }),
        1 => (0..8u64).prop_map(Op::Truncate),
        1 => Just(Op::Reopen),
        1 => Just(Op::Sync),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn lookups_match_a_model(ops in prop::collection::vec(op(), 1..80), window in (0i64..120, 0i64..120)) {
        let dir = TempDir::new().expect("tempdir");
        let cfg = config(dir.path(), 4, 8, 5);
        let mut idx = open(&cfg);
        let mut model = Model::default();
        let (mut log, mut time, mut in_log, mut message) = (1u64, 0i64, 0usize, 0u32);
        for op in ops {
            match op {
                Op::Message { id, keys, new_log, dt } => {
                    if new_log || in_log + 1 + keys.len() > 8 {
                        log += 1;
                        in_log = 0;
                    }
                    in_log += 1 + keys.len();
                    time += dt;
                    message += 1;
                    let h = hit(log, message, time);
                    model.add(&idx, true, TEXTS[id], h);
                    for k in keys {
                        model.add(&idx, false, TEXTS[k], h);
                    }
                }
                Op::Truncate(back) => {
                    log = log.saturating_sub(back);
                    idx.truncate_after(LogIndex(log)).expect("truncate");
                    model.truncate_after(log);
                    in_log = model.0.iter().filter(|(_, _, h)| h.log_index.0 == log).count();
                }
                Op::Reopen => {
                    drop(idx);
                    idx = open(&cfg);
                }
                Op::Sync => idx.sync().expect("sync"),
            }
            prop_assert_eq!(idx.last_log_index(), model.0.last().map(|(_, _, h)| h.log_index));
            model.check(&idx, TEXTS, 5);
        }
        let (begin, end) = (window.0.min(window.1), window.0.max(window.1));
        for text in TEXTS {
            for is_id in [true, false] {
                let key = if is_id { IndexKey::Id(text) } else { IndexKey::Key(text) };
                let got = idx.lookup(key, Millis(begin), Millis(end)).expect("lookup");
                prop_assert_eq!(got, model.lookup(is_id, text, begin, end, 5));
            }
        }
    }
}
