//! Tests of the on-disk ConsumeQueue, split by theme into submodules; this file holds the helpers they share.
#![allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::format::{HEADER_LEN, RECORD_LEN, RECORD_LEN_U64, file_name, slot_byte};
use super::store::{allocated_bytes, list_dir};
use super::*;

mod api;
mod log_index;
mod model;
mod recovery;

const T: &str = "orders";
const Q: QueueId = QueueId(3);

fn rec(o: u64) -> QueueRecord {
    rec_v(o, 0)
}

/// A record for offset `o`; `v` varies the CommitLog position so rewritten offsets hold different records.
fn rec_v(o: u64, v: u64) -> QueueRecord {
    QueueRecord {
        log_index: LogIndex(1000 * v + o + 1),
        slot: Slot((o % 7) as u32),
        size_bytes: 100 + o as u32,
        tag_hash: if o.is_multiple_of(3) { None } else { Some(o * 31) },
        group_hash: if o.is_multiple_of(4) { Some(o * 7) } else { None },
        store_time: Millis(10 * o as i64),
    }
}

fn open(root: &Path, rpf: u32) -> ConsumeQueues {
    open_with(root, rpf, 16).unwrap()
}

fn open_with(root: &Path, rpf: u32, max_open_files: usize) -> Result<ConsumeQueues, CqError> {
    ConsumeQueues::open(CqConfig { root: root.to_path_buf(), records_per_file: rpf, max_open_files })
}

fn qdir(root: &Path) -> PathBuf {
    root.join(T).join(Q.0.to_string())
}

fn fpath(root: &Path, start: u64) -> PathBuf {
    qdir(root).join(file_name(start))
}

fn files_in(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = list_dir(&qdir(root)).unwrap().into_iter().map(|(n, _)| n).collect();
    names.sort();
    names
}

fn names(starts: &[u64]) -> Vec<String> {
    starts.iter().map(|&s| file_name(s)).collect()
}

fn append_range(cq: &ConsumeQueues, offsets: std::ops::Range<u64>) {
    for o in offsets {
        cq.append(T, Q, QueueOffset(o), &rec(o)).unwrap();
    }
}

fn bounds(cq: &ConsumeQueues) -> Option<(u64, u64)> {
    cq.bounds(T, Q).unwrap().map(|(a, b)| (a.0, b.0))
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, at).unwrap();
}

fn raw(path: &Path, at: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    File::open(path).unwrap().read_exact_at(&mut buf, at).unwrap();
    buf
}

fn expect_corrupt(r: Result<impl std::fmt::Debug, CqError>) -> (PathBuf, u64, String) {
    match r {
        Err(CqError::Corrupt { path, byte_offset, reason }) => (path, byte_offset, reason),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
