//! Behaviour of the engine over real files: segment roll-over, truncation across segments,
//! purge past the end, retention, and the concurrent `Log` front.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use raft_log::fs::RealFs;
use raft_log::{Log, LogConfig, LogCore, LogError, Record, Retention};

fn config() -> LogConfig {
    LogConfig { segment_size: 64 << 10, max_payload: 16 << 10, ..LogConfig::default() }
}

fn rec(index: u64, term: u64, len: usize) -> Record {
    let payload: Vec<u8> = (0..len).map(|i| (index as usize * 31 + i) as u8).collect();
    Record { index, term, payload: Bytes::from(payload) }
}

fn open(dir: &std::path::Path) -> anyhow::Result<LogCore> {
    Ok(LogCore::open(Arc::new(RealFs), dir, config())?.0)
}

#[test]
fn appends_roll_over_segments_and_read_back_after_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut log = open(dir.path())?;
    let records: Vec<Record> = (1..=200).map(|i| rec(i, 1 + i / 50, 1000)).collect();
    for chunk in records.chunks(7) {
        log.append(chunk)?;
    }
    log.sync()?;
    assert!(log.segment_count() >= 3, "200 KB in 64 KiB segments spans several, got {}", log.segment_count());
    drop(log);
    let log = open(dir.path())?;
    assert_eq!(log.first_index(), Some(1));
    assert_eq!(log.last_index(), Some(200));
    assert_eq!(log.last_term(), 5);
    assert_eq!(log.read(1, 201)?, records);
    assert_eq!(log.read(90, 95)?, records[89..94].to_vec());
    Ok(())
}

#[test]
fn truncation_across_segments_is_durable_and_appends_continue() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut log = open(dir.path())?;
    log.append(&(1..=200).map(|i| rec(i, 1, 1000)).collect::<Vec<_>>())?;
    log.sync()?;
    log.truncate_after(Some(42))?;
    assert_eq!(log.last_index(), Some(42));
    let newer: Vec<Record> = (43..=60).map(|i| rec(i, 2, 500)).collect();
    log.append(&newer)?;
    log.sync()?;
    drop(log);
    let log = open(dir.path())?;
    assert_eq!(log.last_index(), Some(60));
    assert_eq!(log.read(43, 61)?, newer);
    assert_eq!(log.read(42, 43)?[0].term, 1);
    Ok(())
}

#[test]
fn append_rules_are_enforced() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut log = open(dir.path())?;
    log.append(&[rec(5, 2, 10)])?;
    assert!(matches!(log.append(&[rec(7, 2, 10)]), Err(LogError::Invalid(_))), "a gap is refused");
    assert!(matches!(log.append(&[rec(6, 1, 10)]), Err(LogError::Invalid(_))), "a lower term is refused");
    assert!(matches!(log.append(&[rec(6, 2, (16 << 10) + 1)]), Err(LogError::Invalid(_))), "oversize is refused");
    log.append(&[rec(6, 3, 10)])?;
    assert_eq!(log.last_index(), Some(6));
    Ok(())
}

#[test]
fn purge_past_the_end_starts_a_new_segment_after_the_purge_point() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut log = open(dir.path())?;
    log.append(&(1..=10).map(|i| rec(i, 1, 100)).collect::<Vec<_>>())?;
    log.purge(1000, Bytes::from_static(b"id-1000"))?;
    assert_eq!(log.next_index(), Some(1001));
    assert!(matches!(log.append(&[rec(11, 1, 10)]), Err(LogError::Invalid(_))));
    log.append(&(1001..=1005).map(|i| rec(i, 2, 100)).collect::<Vec<_>>())?;
    log.sync()?;
    drop(log);
    let log = open(dir.path())?;
    assert_eq!(
        log.meta().purged.as_ref().map(|p| (p.index, p.id.clone())),
        Some((1000, Bytes::from_static(b"id-1000")))
    );
    assert_eq!(log.last_index(), Some(1005));
    assert_eq!(log.read(1001, 1006)?.len(), 5);
    // The purged records are still on disk until retention removes them.
    assert_eq!(log.read(1, 11)?.len(), 10);
    Ok(())
}

#[test]
fn retention_deletes_only_whole_segments_below_purge_and_keep_from() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut log = open(dir.path())?;
    log.append(&(1..=300).map(|i| rec(i, 1, 1000)).collect::<Vec<_>>())?;
    log.sync()?;
    let segments = log.segment_count();
    let now = SystemTime::now();
    let everything = Retention { max_bytes: Some(0), keep_from: u64::MAX, ..Retention::default() };
    assert!(log.retain(everything, now)?.is_empty(), "nothing is purged yet, so nothing may go");

    log.purge(150, Bytes::from_static(b"p"))?;
    let kept_by_reader = Retention { keep_from: 70, ..everything };
    let removed = log.retain(kept_by_reader, now)?;
    assert!(!removed.is_empty());
    assert!(removed.iter().all(|s| s.next <= 70), "no removed segment holds index 70 or later: {removed:?}");
    let first = log.first_index().expect("records remain");
    assert!(first <= 70);
    assert_eq!(log.read(first, 301)?.len() as u64, 301 - first);

    let removed = log.retain(everything, now)?;
    assert!(removed.iter().all(|s| s.next <= 151), "never past the purge point: {removed:?}");
    assert!(log.first_index().is_some_and(|f| f <= 151));
    assert!(log.segment_count() < segments);

    // Age-based: nothing is older than an hour.
    let by_age = Retention { max_age: Some(Duration::from_secs(3600)), keep_from: u64::MAX, ..Retention::default() };
    assert!(log.retain(by_age, now)?.is_empty());
    drop(log);
    let log = open(dir.path())?;
    assert_eq!(log.last_index(), Some(300));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_are_batched_and_all_become_durable() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (log, _) = Log::open(dir.path(), config())?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    for i in 1..=500u64 {
        let tx = tx.clone();
        log.append(
            vec![rec(i, 1, 200)],
            Box::new(move |r| {
                let _ = tx.try_send((i, r.is_ok()));
            }),
        )
        .await?;
        // Entries are readable as soon as append returns, before they are durable.
        assert_eq!(log.read(i, i + 1)?.len(), 1);
    }
    drop(tx);
    let mut done = Vec::new();
    while let Some((i, ok)) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await? {
        assert!(ok, "append {i} failed");
        done.push(i);
    }
    assert_eq!(done, (1..=500).collect::<Vec<_>>(), "callbacks run once each, in order");
    assert_eq!(log.view().durable, Some(500));
    Ok(())
}

#[tokio::test]
async fn a_second_open_of_a_truncated_log_sees_the_same_records() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let (log, _) = Log::open(dir.path(), config())?;
        log.append_durable((1..=100).map(|i| rec(i, 1, 900)).collect()).await?;
        log.truncate_after(Some(50)).await?;
        assert_eq!(log.read(1, 1000)?.len(), 50);
        log.append_durable((51..=70).map(|i| rec(i, 2, 10)).collect()).await?;
        assert_eq!(log.view().last, Some((70, 2)));
    }
    let (log, report) = Log::open(dir.path(), config())?;
    assert_eq!(report.torn_tail, None);
    let got = log.read(1, 1000)?;
    assert_eq!(got.len(), 70);
    assert_eq!(got[50], rec(51, 2, 10));
    Ok(())
}
