//! Damaged files on the real file system: a flipped bit is an error naming the file and the
//! record's byte offset (at open for the active and the newest sealed segments, at read for
//! older ones), a torn tail is cut back to the last whole record, and a file of an unknown
//! format version is refused by name.

mod support;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft_log::fs::RealFs;
use raft_log::{FORMAT_VERSION, Log, LogCore, LogError, OpenReport, Record};
use support::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, record, small_config};

fn open_core(dir: &Path) -> raft_log::Result<(LogCore, OpenReport)> {
    LogCore::open(Arc::new(RealFs), dir, small_config())
}

/// Writes `records` durably and closes the log.
fn write_log(dir: &Path, records: &[Record]) -> anyhow::Result<()> {
    let (mut core, _) = open_core(dir)?;
    for chunk in records.chunks(5) {
        core.append(chunk)?;
    }
    core.sync()?;
    Ok(())
}

/// Records 1..=n of term 1 with payloads of differing sizes.
fn records(n: u64, base_len: usize) -> Vec<Record> {
    (1..=n).map(|i| record(i, 1, 1, base_len + (i as usize * 37) % 200)).collect()
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.log"))
}

/// First indexes of the segments in `dir`, ascending.
fn segment_firsts(dir: &Path) -> anyhow::Result<Vec<u64>> {
    let mut firsts = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".log") {
            firsts.push(stem.parse()?);
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

/// Byte offset of record `index` in the segment starting at `first`: the segment header,
/// then each earlier record's header and payload.
fn offset_of(records: &[Record], first: u64, index: u64) -> u64 {
    let before = records.iter().filter(|r| r.index >= first && r.index < index);
    SEGMENT_HEADER_LEN + before.map(|r| RECORD_HEADER_LEN + r.payload.len() as u64).sum::<u64>()
}

fn flip_bit(path: &Path, offset: u64, bit: u8) -> anyhow::Result<()> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset)?;
    b[0] ^= 1 << bit;
    file.write_all_at(&b, offset)?;
    Ok(())
}

/// Asserts `result` is `LogError::Corrupt` for `path` at `offset`, and that its message
/// names both.
fn assert_corrupt<T>(result: raft_log::Result<T>, path: &Path, offset: u64) {
    let err = match result {
        Ok(_) => panic!("expected corruption in {} at {offset}, got success", path.display()),
        Err(e) => e,
    };
    let msg = err.to_string();
    match &err {
        LogError::Corrupt { path: p, offset: o, .. } => assert_eq!((p.as_path(), *o), (path, offset), "{msg}"),
        other => panic!("expected LogError::Corrupt, got {other:?}"),
    }
    assert!(msg.contains(&path.display().to_string()), "message names the file: {msg}");
    assert!(msg.contains(&format!("byte offset {offset}")), "message names the offset: {msg}");
}

#[test]
fn a_flipped_payload_bit_in_the_active_segment_fails_open_naming_file_and_offset() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let recs = records(10, 100);
    write_log(dir.path(), &recs)?;
    assert_eq!(segment_firsts(dir.path())?, vec![1]);
    let path = segment_path(dir.path(), 1);
    let at = offset_of(&recs, 1, 5);
    flip_bit(&path, at + RECORD_HEADER_LEN + 17, 3)?;
    assert_corrupt(open_core(dir.path()), &path, at);
    // The threaded front refuses the same way.
    assert_corrupt(Log::open(dir.path(), small_config()), &path, at);
    Ok(())
}

/// Writes enough records of about 1 KiB for four segments: the oldest sealed one is outside
/// the verified window of two.
fn four_segments(dir: &Path) -> anyhow::Result<(Vec<Record>, Vec<u64>)> {
    let recs = records(230, 900);
    write_log(dir, &recs)?;
    let firsts = segment_firsts(dir)?;
    assert_eq!(firsts.len(), 4, "230 records of ~1 KiB fill four 64 KiB segments: {firsts:?}");
    Ok((recs, firsts))
}

#[test]
fn a_flipped_bit_in_a_verified_sealed_segment_fails_open() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (recs, firsts) = four_segments(dir.path())?;
    // The second segment is the older of the two newest sealed ones.
    let first = firsts[1];
    let index = first + 10;
    let path = segment_path(dir.path(), first);
    let at = offset_of(&recs, first, index);
    flip_bit(&path, at + RECORD_HEADER_LEN + 100, 0)?;
    assert_corrupt(open_core(dir.path()), &path, at);
    Ok(())
}

#[test]
fn a_flipped_bit_in_an_older_sealed_segment_fails_the_read_of_that_record() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (recs, firsts) = four_segments(dir.path())?;
    let (first, next) = (firsts[0], firsts[1]);
    // A record in the middle: open checks only a sealed segment's first and last records.
    let index = (first + next) / 2;
    let path = segment_path(dir.path(), first);
    let at = offset_of(&recs, first, index);
    flip_bit(&path, at + RECORD_HEADER_LEN + 5, 7)?;
    let (core, report) = open_core(dir.path())?;
    assert_eq!(report.torn_tail, None);
    assert_eq!(core.last_index(), Some(230));
    assert_corrupt(core.read(index, index + 1), &path, at);
    assert_corrupt(core.read(first, next), &path, at);
    // Its neighbours and the other segments read fine.
    assert_eq!(core.read(first, index)?, recs[..(index - 1) as usize].to_vec());
    assert_eq!(core.read(index + 1, 231)?, recs[index as usize..].to_vec());
    Ok(())
}

#[tokio::test]
async fn a_record_cut_short_at_the_tail_is_dropped_and_appends_continue_after_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let recs = records(10, 100);
    write_log(dir.path(), &recs)?;
    let path = segment_path(dir.path(), 1);
    let at = offset_of(&recs, 1, 10);
    // The file ends in the middle of record 10's payload (its preallocation is gone too).
    OpenOptions::new().write(true).open(&path)?.set_len(at + RECORD_HEADER_LEN + 20)?;
    let (log, report) = Log::open(dir.path(), small_config())?;
    assert_eq!(report.torn_tail, Some((path.clone(), at)));
    assert_eq!(log.view().last, Some((9, 1)));
    assert_eq!(log.read(1, 11)?, recs[..9].to_vec());
    let newer = vec![record(10, 2, 2, 300), record(11, 2, 2, 40)];
    log.append_durable(newer.clone()).await?;
    drop(log);
    let (log, report) = Log::open(dir.path(), small_config())?;
    assert_eq!(report.torn_tail, None);
    let want: Vec<Record> = recs[..9].iter().chain(&newer).cloned().collect();
    assert_eq!(log.read(1, 100)?, want);
    Ok(())
}

#[test]
fn a_last_record_with_zeroed_payload_bytes_is_cut_and_the_log_goes_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let recs = records(10, 100);
    write_log(dir.path(), &recs)?;
    let path = segment_path(dir.path(), 1);
    let at = offset_of(&recs, 1, 10);
    // The last 16 bytes of record 10 never reached the disk (preallocated space is zeros).
    let end = at + recs[9].stored_len();
    OpenOptions::new().write(true).open(&path)?.write_all_at(&[0u8; 16], end - 16)?;
    let (mut core, report) = open_core(dir.path())?;
    assert_eq!(report.torn_tail, Some((path, at)));
    assert_eq!(core.last_index(), Some(9));
    assert_eq!(core.read(1, 11)?, recs[..9].to_vec());
    let newer = record(10, 2, 2, 10);
    core.append(std::slice::from_ref(&newer))?;
    core.sync()?;
    drop(core);
    let (core, report) = open_core(dir.path())?;
    assert_eq!(report.torn_tail, None);
    assert_eq!(core.read(10, 11)?, vec![newer]);
    Ok(())
}

/// Asserts `result` is `LogError::UnsupportedVersion` for `path` with version 2.
fn assert_unsupported<T>(result: raft_log::Result<T>, path: &Path) {
    let err = match result {
        Ok(_) => panic!("expected an unsupported version in {}, got success", path.display()),
        Err(e) => e,
    };
    let msg = err.to_string();
    match &err {
        LogError::UnsupportedVersion { path: p, found, supported } => {
            assert_eq!((p.as_path(), *found, *supported), (path, 2, FORMAT_VERSION), "{msg}")
        }
        other => panic!("expected LogError::UnsupportedVersion, got {other:?}"),
    }
    assert!(msg.contains(&path.display().to_string()), "message names the file: {msg}");
    assert!(msg.contains("version 2"), "message names the version found: {msg}");
}

/// Rewrites a segment header's version as 2, with a matching header checksum.
fn set_segment_version(path: &Path) -> anyhow::Result<()> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let mut h = [0u8; 64];
    file.read_exact_at(&mut h, 0)?;
    h[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&h, 0)?;
    Ok(())
}

#[test]
fn a_segment_of_an_unknown_format_version_is_refused_by_name() -> anyhow::Result<()> {
    // The active segment, then the oldest sealed one (opened without a full scan).
    for which in [3, 0] {
        let dir = tempfile::tempdir()?;
        let (_, firsts) = four_segments(dir.path())?;
        let path = segment_path(dir.path(), firsts[which]);
        set_segment_version(&path)?;
        assert_unsupported(open_core(dir.path()), &path);
    }
    Ok(())
}

#[test]
fn a_meta_file_of_an_unknown_format_version_is_refused_by_name() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut core, _) = open_core(dir.path())?;
    core.append(&records(3, 10))?;
    core.save_vote(bytes::Bytes::from_static(b"vote"))?;
    drop(core);
    // Slot layout: magic (8) | version (4) | body length (4) | sequence (8) | body | CRC32C.
    let path = dir.path().join("meta");
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    let mut patched = 0;
    for slot_at in [0u64, 4096] {
        let mut slot = vec![0u8; 4096];
        file.read_exact_at(&mut slot, slot_at)?;
        if &slot[0..8] != b"RMQMETA\0" {
            continue;
        }
        let end = 24 + u32::from_le_bytes(slot[12..16].try_into()?) as usize;
        slot[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c::crc32c(&slot[..end]);
        slot[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        file.write_all_at(&slot, slot_at)?;
        patched += 1;
    }
    assert_eq!(patched, 2, "creating the log and saving the vote wrote both slots");
    assert_unsupported(open_core(dir.path()), &path);
    Ok(())
}

// Damage that looks like never-written space must still be told apart from it when
// records follow: durable records are never dropped without an error.

#[test]
fn a_zeroed_record_header_in_the_middle_of_the_active_segment_fails_open() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let recs = records(10, 100);
    write_log(dir.path(), &recs)?;
    let path = segment_path(dir.path(), 1);
    let at = offset_of(&recs, 1, 5);
    OpenOptions::new().write(true).open(&path)?.write_all_at(&[0u8; 32], at)?;
    assert_corrupt(open_core(dir.path()), &path, at);
    Ok(())
}

#[test]
fn a_zeroed_header_of_an_active_segment_holding_records_fails_open() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let recs = records(10, 100);
    write_log(dir.path(), &recs)?;
    let path = segment_path(dir.path(), 1);
    OpenOptions::new().write(true).open(&path)?.write_all_at(&[0u8; 64], 0)?;
    assert_corrupt(open_core(dir.path()), &path, 0);
    assert!(path.exists(), "the segment holding records 1..=10 is still there");
    Ok(())
}
