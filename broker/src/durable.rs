//! Small state files written so that a crash leaves the old or the new content, never a
//! mix: the snapshot, the backfill range, the store checkpoint.

use std::io;
use std::path::Path;

/// Writes `bytes` to `path` durably: a temporary file, fsynced, renamed, directory fsynced.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_durably_open(path, bytes).map(drop)
}

/// [`write_durably`], keeping the file open for reading: the handle reads what was
/// written even after a later write replaces the file under `path`.
pub fn write_durably_open(path: &Path, bytes: &[u8]) -> io::Result<std::fs::File> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_parent(path)?;
    Ok(f)
}

/// Makes a rename or a new file in `path`'s directory durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
