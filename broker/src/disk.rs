//! The disk guard: how full the file system holding a node's data is, and the refusal of
//! new messages when it is nearly full (RocketMQ's `diskSpaceWarningLevelRatio`, 90% by
//! default), so that the CommitLog never runs into a full disk in the middle of an append.
//! A share alone says little on a large disk (95% of 2 TB still leaves 100 GB), so a send
//! is refused only when the share is reached *and* less than a floor of free space
//! remains ([`DEFAULT_REFUSE_FREE_MIB`], two default CommitLog segments).
//!
//! Only sends are refused: receives, acks and offset commits are small entries and go on,
//! so consumers drain the backlog while the disk is full, and retention can then delete
//! the consumed segments. The leader decides (a send is refused where it would be
//! proposed); sends resume by themselves once space returns. The usage is sampled every
//! [`SAMPLE_EVERY`] by a background task, not on each send.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often the usage is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// The default usage, in percent, at and above which sends are refused.
pub const DEFAULT_REFUSE_PERCENT: u8 = 90;

/// The default free space, in MiB, below which (with the share reached) sends are refused.
pub const DEFAULT_REFUSE_FREE_MIB: u64 = 2048;

/// When sends are refused: at `percent` full or more with fewer than `free_mib` MiB free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    /// The share in use, 1-100 (100: only a disk with nothing left).
    pub percent: u8,
    /// The free space in MiB under which a disk past `percent` refuses (`u64::MAX`: the
    /// share alone decides).
    pub free_mib: u64,
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold { percent: DEFAULT_REFUSE_PERCENT, free_mib: DEFAULT_REFUSE_FREE_MIB }
    }
}

/// What one sample of a file system said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes in use (as `df` counts them: blocks less free blocks).
    pub used: u64,
    /// Bytes still available to this process.
    pub available: u64,
}

impl Usage {
    /// The share in use, in hundredths of a percent (as `df` computes it: used over used
    /// plus available, so a file system's root reserve counts as full).
    pub fn basis_points(self) -> u64 {
        let size = self.used.saturating_add(self.available);
        if size == 0 { 10_000 } else { (u128::from(self.used) * 10_000 / u128::from(size)) as u64 }
    }

    /// Reads the file system holding `path`.
    pub fn of(path: &Path) -> std::io::Result<Usage> {
        let s = rustix::fs::statvfs(path)?;
        let block = s.f_frsize.max(1);
        Ok(Usage {
            used: s.f_blocks.saturating_sub(s.f_bfree).saturating_mul(block),
            available: s.f_bavail.saturating_mul(block),
        })
    }
}

/// Samples the file system of a node's data directory and says whether a send may be
/// stored. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DiskGuard {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    threshold: Threshold,
    used: AtomicU64,
    available: AtomicU64,
}

impl DiskGuard {
    /// A guard over the file system holding `path`, refusing sends past `threshold`.
    /// Samples once now.
    pub fn new(path: &Path, threshold: Threshold) -> std::io::Result<DiskGuard> {
        let usage = Usage::of(path)?;
        let guard = DiskGuard {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                threshold,
                used: AtomicU64::new(usage.used),
                available: AtomicU64::new(usage.available),
            }),
        };
        Ok(guard)
    }

    /// The last sample.
    pub fn usage(&self) -> Usage {
        Usage { used: self.inner.used.load(Ordering::Relaxed), available: self.inner.available.load(Ordering::Relaxed) }
    }

    /// `Err` with what to tell the client when the disk is too full for new messages.
    pub fn check(&self) -> Result<(), String> {
        refusal(self.usage(), self.inner.threshold, &self.inner.path).map_or(Ok(()), Err)
    }

    fn sample(&self) -> std::io::Result<Usage> {
        let usage = Usage::of(&self.inner.path)?;
        self.inner.used.store(usage.used, Ordering::Relaxed);
        self.inner.available.store(usage.available, Ordering::Relaxed);
        Ok(usage)
    }

    /// Samples every [`SAMPLE_EVERY`] until aborted, logging when sends start and stop
    /// being refused.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let guard = self.clone();
        tokio::spawn(async move {
            let mut refusing = guard.check().is_err();
            let mut failing = false;
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match guard.sample() {
                    Ok(_) => failing = false,
                    Err(e) => {
                        // Keep the last sample: an unreadable usage neither opens nor
                        // closes the gate.
                        if !failing {
                            tracing::warn!(path = %guard.inner.path.display(), error = %e, "cannot read the disk usage");
                        }
                        failing = true;
                        continue;
                    }
                }
                match (guard.check(), refusing) {
                    (Err(why), false) => {
                        tracing::warn!("{why}");
                        refusing = true;
                    }
                    (Ok(()), true) => {
                        tracing::info!(
                            used_percent = guard.usage().basis_points() as f64 / 100.0,
                            "disk space returned: accepting sends again"
                        );
                        refusing = false;
                    }
                    _ => {}
                }
            }
        })
    }
}

fn mib(bytes: u64) -> u64 {
    bytes >> 20
}

/// Why a send is refused at `usage`, if it is.
fn refusal(usage: Usage, threshold: Threshold, path: &Path) -> Option<String> {
    let bp = usage.basis_points();
    let Threshold { percent, free_mib } = threshold;
    let short = usage.available < free_mib.saturating_mul(1 << 20);
    (bp >= u64::from(percent) * 100 && short).then(|| {
        let floor = if free_mib == u64::MAX { String::new() } else { format!(" with less than {free_mib} MiB free") };
        format!(
            "the disk holding {} is {}.{:02}% full ({} MiB used, {} MiB free); this broker refuses new messages \
             at {percent}%{floor} and takes them again once space is freed (consumption goes on, and retention \
             deletes consumed segments)",
            path.display(),
            bp / 100,
            bp % 100,
            mib(usage.used),
            mib(usage.available),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_are_refused_at_the_threshold_with_what_and_where() {
        let path = Path::new("/data");
        let share = Threshold { percent: 90, free_mib: u64::MAX };
        let at = |used: u64, available: u64| refusal(Usage { used, available }, share, path);
        assert_eq!(at(89, 11), None);
        let why = at(90, 10).expect("90% of 90% refuses");
        assert!(why.contains("/data") && why.contains("90.00% full") && why.contains("at 90% and"), "{why}");
        assert!(at(1 << 30, 0).is_some(), "a full disk refuses");
        assert!(at(0, 0).is_some(), "a file system with no room at all refuses");
        let only_full = Threshold { percent: 100, free_mib: u64::MAX };
        assert_eq!(refusal(Usage { used: 99, available: 1 }, only_full, path), None, "100 refuses only when full");
        assert_eq!(Usage { used: 1, available: 2 }.basis_points(), 3333);

        // With the floor: a large disk past the share with room left takes sends.
        let gib = 1u64 << 30;
        let default = Threshold::default();
        assert_eq!(refusal(Usage { used: 95 * gib, available: 5 * gib }, default, path), None, "5 GiB free");
        let why = refusal(Usage { used: 19 * gib, available: gib }, default, path).expect("1 GiB free refuses");
        assert!(why.contains("95.00% full") && why.contains("with less than 2048 MiB free"), "{why}");
        assert_eq!(refusal(Usage { used: gib, available: gib }, default, path), None, "50% full, whatever is free");
    }

    #[test]
    fn a_guard_reads_the_real_file_system() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let guard = DiskGuard::new(dir.path(), Threshold { percent: 100, free_mib: u64::MAX })?;
        let u = guard.usage();
        assert!(u.used + u.available > 0, "{u:?}");
        guard.sample()?;
        // Not full, unless the machine's disk truly is.
        assert_eq!(guard.check().is_ok(), u.available > 0);
        Ok(())
    }
}
