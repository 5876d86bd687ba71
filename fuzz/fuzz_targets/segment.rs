//! CommitLog recovery (`LogCore::open`: segment headers, scans, sealed indexes, the meta
//! file) over bytes damaged at random, on the in-memory file system of the crash tests.
//!
//! A log of a few records (spread over one to three 64 KiB segments) is written, some bytes
//! of its files are overwritten, and the log is opened again. Checked: opening gives the log
//! or an error, never a panic; the records written before the first damaged byte of the
//! segment files are all still there, unchanged (recovery cuts only a torn tail); a log
//! that opened opens again to the same records (recovery is done once); it takes the next
//! append; and with every segment verified on open, every record it lists reads back.
//!
//! Input (through `arbitrary`): the records, then up to four overwrites (file, offset, bytes).

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arbitrary::Unstructured;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use raft_log::fs::Fs;
use raft_log::record::HEADER_LEN;
use raft_log::sim::SimFs;
use raft_log::{LogConfig, LogCore, Record};

const DIR: &str = "/log";
/// The smallest segment the log takes, so that a few records span several.
const SEGMENT_BYTES: u64 = 64 << 10;
/// Bytes of a segment file's header.
const SEGMENT_HEADER_BYTES: u64 = 64;

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

fn config(verify_sealed_segments: usize) -> LogConfig {
    LogConfig { segment_size: SEGMENT_BYTES, max_payload: 16 << 10, verify_sealed_segments, ..LogConfig::default() }
}

fn open(fs: &SimFs, verify: usize) -> raft_log::Result<LogCore> {
    let fs: Arc<dyn Fs> = Arc::new(fs.clone());
    LogCore::open(fs, Path::new(DIR), config(verify)).map(|(core, _)| core)
}

/// Records with index 1.., payloads of a repeated byte (so a short input makes long records).
fn records(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<Record>> {
    let count = u.int_in_range(1..=24)?;
    let mut term = 1;
    let mut out = Vec::with_capacity(count);
    for index in 1..=count as u64 {
        term += u64::from(u.ratio(1, 4)?);
        let len = u.int_in_range(0..=6000)?;
        let fill: u8 = u.arbitrary()?;
        out.push(Record { index, term, payload: Bytes::from(vec![fill; len]) });
    }
    Ok(out)
}

/// Where each record lies: its segment's data file and its byte range there, found the way
/// the log places records (a new segment when the next record does not fit).
fn layout(records: &[Record]) -> Vec<(PathBuf, std::ops::Range<u64>)> {
    let mut out = Vec::with_capacity(records.len());
    let (mut first, mut end) = (0u64, SEGMENT_BYTES);
    for r in records {
        let len = r.stored_len();
        if end + len > SEGMENT_BYTES {
            (first, end) = (r.index, SEGMENT_HEADER_BYTES);
        }
        out.push((Path::new(DIR).join(format!("{first:020}.log")), end..end + len));
        end += len;
    }
    out
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let fs = SimFs::new();
    let written = records(u)?;
    {
        let mut log = open(&fs, 2).expect("a new log opens");
        let split = u.choose_index(written.len())?;
        log.append(&written[..split]).expect("append");
        log.append(&written[split..]).expect("append");
        log.sync().expect("sync");
    }
    let places = layout(&written);
    let mut files = fs.list_dir(Path::new(DIR)).expect("list");
    files.sort();
    // The first damaged byte of the segment data files; other files damaged or not.
    let mut first_damage: Option<(PathBuf, u64)> = None;
    let mut other_damage = false;
    for _ in 0..u.int_in_range(0..=4)? {
        let path = Path::new(DIR).join(u.choose(&files)?);
        let before = fs.contents(&path).expect("listed file exists");
        let at = u.int_in_range(0..=before.len() as u64)?;
        let bytes: Vec<u8> = u.arbitrary()?;
        let bytes = &bytes[..bytes.len().min(64)];
        let file = fs.open(&path, false).expect("open listed file");
        file.write_all_at(bytes, at).expect("write");
        file.sync_data().expect("sync");
        let changed = bytes.iter().enumerate().find(|&(i, b)| before.get(at as usize + i) != Some(b));
        let Some((i, _)) = changed else { continue };
        if path.extension().is_some_and(|e| e == "log") {
            let at = at + i as u64;
            if first_damage.as_ref().is_none_or(|(p, a)| (&path, at) < (p, *a)) {
                first_damage = Some((path, at));
            }
        } else {
            other_damage = true;
        }
    }
    let verify = u.int_in_range(0..=3)?;
    let Ok(log) = open(&fs, verify) else { return Ok(()) };

    // Records wholly before the first damaged byte survive, unchanged.
    if !other_damage {
        for (r, (path, range)) in written.iter().zip(&places) {
            let damaged = first_damage.as_ref().is_some_and(|(p, at)| (path, range.end) > (p, *at));
            if damaged {
                break;
            }
            let read = log.read(r.index, r.index + 1);
            assert_eq!(
                read.as_deref().ok(),
                Some(std::slice::from_ref(r)),
                "record {} before the damage: {read:?}",
                r.index
            );
        }
    }
    let ranges = log.segment_ranges();
    let (first, last) = (log.first_index(), log.last_index());
    let all = first.zip(last).map(|(first, last)| log.read(first, last + 1));
    if verify >= ranges.len()
        && let Some(all) = &all
    {
        let all = all.as_ref().expect("every segment was verified on open, so every record reads");
        assert!(all.windows(2).all(|w| w[1].index == w[0].index + 1 && w[1].term >= w[0].term));
    }
    let next = log.next_index().unwrap_or(1);
    let term = log.last_term();
    drop(log);

    // A log that opened opens again as it was: recovery changed what it had to, once.
    let mut log = open(&fs, verify).expect("a log that opened opens again");
    assert_eq!(log.segment_ranges(), ranges);
    assert_eq!((log.first_index(), log.last_index()), (first, last));
    if let (Some(Ok(before)), Some((first, last))) = (&all, first.zip(last)) {
        let again = log.read(first, last + 1).expect("read what read before");
        assert_eq!(&again, before, "records changed between two opens");
    }

    // It takes the next record.
    let next_record = Record { index: next, term, payload: Bytes::from_static(b"after recovery") };
    if next_record.stored_len() + HEADER_LEN as u64 <= SEGMENT_BYTES {
        log.append(std::slice::from_ref(&next_record)).expect("append after recovery");
        log.sync().expect("sync after recovery");
        let read = log.read(next, next + 1).expect("read the new record");
        assert_eq!(read, [next_record]);
    }
    Ok(())
}
