//! Small state files written so that a crash leaves the old or the new content, never a
//! mix: the snapshot, the backfill range, the store checkpoint.

use std::io;
use std::path::Path;

/// Writes `bytes` to `path` durably: a temporary file, fsynced, renamed, directory fsynced.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
