//! Behaviour of the engine over real files: segment roll-over, truncation across segments,
//! purge past the end, retention, and the concurrent `Log` front under both sync policies.

use std::io::{self, IoSlice};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use raft_log::fs::{FileIo, Fs, RealFs};
use raft_log::{Log, LogConfig, LogCore, LogError, Record, Retention, SyncPolicy};

fn config() -> LogConfig {
    LogConfig { segment_size: 64 << 10, max_payload: 16 << 10, ..LogConfig::default() }
}

fn rec(index: u64, term: u64, len: usize) -> Record {
    let payload: Vec<u8> = (0..len).map(|i| (index as usize * 31 + i) as u8).collect();
    Record { index, term, payload: Bytes::from(payload) }
}

fn open(dir: &Path) -> anyhow::Result<LogCore> {
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

/// Real files that count their `fdatasync`s.
#[derive(Debug, Default, Clone)]
struct CountingFs {
    syncs: Arc<AtomicU64>,
}

impl CountingFs {
    fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct CountingFile {
    inner: Arc<dyn FileIo>,
    syncs: Arc<AtomicU64>,
}

impl FileIo for CountingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<usize> {
        self.inner.write_vectored_at(bufs, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()?;
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.inner.allocate(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

impl Fs for CountingFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        RealFs.create_dir_all(path)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FileIo>> {
        Ok(Arc::new(CountingFile { inner: RealFs.open(path, create)?, syncs: self.syncs.clone() }))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealFs.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        RealFs.list_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        RealFs.sync_dir(path)
    }
    fn modified(&self, path: &Path) -> io::Result<SystemTime> {
        RealFs.modified(path)
    }
}

fn interval_config(every: Duration) -> LogConfig {
    LogConfig { sync: SyncPolicy::Interval(every), ..config() }
}

/// Polls `cond` until it holds; fails after `limit`.
async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !cond() {
        anyhow::ensure!(Instant::now() < deadline, "gave up after {limit:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// What an append's callback saw when it ran.
#[derive(Debug)]
struct Report {
    ok: bool,
    syncs: u64,
    written: Option<u64>,
    durable: Option<u64>,
}

/// Appends `records` and returns what the callback saw, without waiting for durability.
async fn append_and_report(log: &Log, fs: &CountingFs, records: Vec<Record>) -> anyhow::Result<Report> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (seen_log, seen_fs) = (log.clone(), fs.clone());
    log.append(
        records,
        Box::new(move |r| {
            let view = seen_log.view();
            let report = Report { ok: r.is_ok(), syncs: seen_fs.syncs(), written: view.written, durable: view.durable };
            drop(tx.send(report));
        }),
    )
    .await?;
    Ok(tokio::time::timeout(Duration::from_secs(30), rx).await??)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batch_reports_appends_only_after_their_sync() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fs = CountingFs::default();
    let (log, _) = Log::open_with(Arc::new(fs.clone()), dir.path(), config())?;
    log.append_durable(vec![rec(1, 1, 100)]).await?;
    let before = fs.syncs();
    let report = append_and_report(&log, &fs, (2..=20).map(|i| rec(i, 1, 100)).collect()).await?;
    assert!(report.ok);
    assert!(report.syncs > before, "the batch was fsynced before its callback ran: {report:?}");
    assert_eq!((report.written, report.durable), (Some(20), Some(20)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_sync_reports_appends_before_their_sync_and_syncs_them_soon_after() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fs = CountingFs::default();
    let (log, _) = Log::open_with(Arc::new(fs.clone()), dir.path(), interval_config(Duration::from_millis(50)))?;
    // The first append creates the segment (which syncs its header): get that out of the way.
    log.append_durable(vec![rec(1, 1, 100)]).await?;
    log.flush().await?;
    assert_eq!(log.view().durable, Some(1));
    let before = fs.syncs();
    let report = append_and_report(&log, &fs, (2..=20).map(|i| rec(i, 1, 100)).collect()).await?;
    assert!(report.ok);
    assert_eq!(report.syncs, before, "the callback ran before any fdatasync of the batch: {report:?}");
    assert_eq!((report.written, report.durable), (Some(20), Some(1)), "written, not yet durable");
    assert_eq!(log.read(2, 21)?.len(), 19, "reported records are readable");
    // Nothing more comes: the writer syncs on its own (idle, or at the latest the interval).
    wait_until(Duration::from_secs(10), "the batch is durable", || log.view().durable == Some(20)).await?;
    assert!(fs.syncs() > before, "durable only through an fdatasync");
    drop(log);
    let (log, report) = Log::open(dir.path(), config())?;
    assert_eq!(report.torn_tail, None);
    assert_eq!(log.read(1, 100)?, (1..=20).map(|i| rec(i, 1, 100)).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_sync_makes_reported_appends_durable_before_a_vote_truncation_or_shutdown() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fs = CountingFs::default();
    let (log, _) = Log::open_with(Arc::new(fs.clone()), dir.path(), interval_config(Duration::from_secs(60)))?;
    log.append_durable((1..=10).map(|i| rec(i, 1, 100)).collect()).await?;
    log.save_vote(Bytes::from_static(b"vote-1")).await?;
    assert_eq!(log.view().durable, Some(10), "a saved vote follows every earlier append to disk");
    log.append_durable((11..=30).map(|i| rec(i, 2, 100)).collect()).await?;
    log.truncate_after(Some(25)).await?;
    assert_eq!(log.view().durable, Some(25));
    log.append_durable((26..=40).map(|i| rec(i, 3, 100)).collect()).await?;
    log.shutdown().await?;
    let view = log.view();
    assert_eq!((view.written, view.durable), (Some(40), Some(40)), "shutdown syncs what was written");
    let err = log.append_durable(vec![rec(41, 3, 10)]).await.expect_err("the log is shut down");
    assert!(matches!(err, LogError::Stopped(_)), "got {err}");
    drop(log);
    let (log, _) = Log::open(dir.path(), config())?;
    assert_eq!(log.view().last, Some((40, 3)));
    assert_eq!(log.vote(), Some(Bytes::from_static(b"vote-1")));
    Ok(())
}

#[test]
fn a_sync_interval_out_of_range_is_refused() {
    for every in [Duration::ZERO, Duration::from_micros(999), raft_log::MAX_SYNC_INTERVAL + Duration::from_millis(1)] {
        let err = interval_config(every).validate().expect_err("out of range");
        assert!(err.to_string().contains("sync interval"), "{err}");
    }
    interval_config(Duration::from_millis(1)).validate().expect("1 ms is allowed");
    interval_config(raft_log::MAX_SYNC_INTERVAL).validate().expect("the maximum is allowed");
}

#[tokio::test]
async fn a_part_of_a_payload_reads_alike_from_memory_and_from_files() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // No cache beyond what is not yet written: after a flush every read goes to the files.
    let cfg = LogConfig { cache_bytes: 0, ..config() };
    let (log, _) = Log::open(dir.path(), cfg.clone())?;
    let records: Vec<Record> = (1..=120).map(|i| rec(i, 2, 1000 + i as usize)).collect();
    for chunk in records.chunks(10) {
        log.append(chunk.to_vec(), Box::new(|_| {})).await?;
    }
    log.flush().await?;
    let check = |log: &Log| -> anyhow::Result<()> {
        for r in &records {
            for range in [0..16u64, 500..700, 990..5000, 5000..6000] {
                let part = log.read_payload_part(r.index, range.clone())?.expect("held");
                let len = r.payload.len() as u64;
                let (start, end) = (range.start.min(len), range.end.min(len));
                assert_eq!((part.index, part.term, part.payload_len, part.offset), (r.index, 2, len, start));
                assert_eq!(part.bytes, r.payload.slice(start as usize..end as usize), "record {}", r.index);
            }
        }
        assert_eq!(log.read_payload_part(121, 0..10)?, None);
        Ok(())
    };
    check(&log)?;
    log.shutdown().await?;
    drop(log);
    // After a reopen too, and a record that is not where its index says is an error.
    let (log, _) = Log::open(dir.path(), cfg)?;
    check(&log)?;
    log.shutdown().await?;
    Ok(())
}
