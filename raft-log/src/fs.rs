//! The file-system seam: every byte the log reads or writes goes through [`Fs`] and
//! [`FileIo`], so tests can run the same code over a file layer that injects faults and
//! simulates crashes. [`RealFs`] is the production implementation (positional IO,
//! `fallocate`, `fdatasync`).

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// One open file, shared by the writer and readers (all IO is positional).
// A file length is a size, not a collection length; `is_empty` would say nothing useful.
#[allow(clippy::len_without_is_empty)]
pub trait FileIo: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes `bufs` back to back starting at `offset`; returns how many bytes were written.
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<usize>;
    /// Makes every completed write durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Reserves space so the file is at least `len` bytes long, filled with zeros.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Sets the length, cutting or zero-extending.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_vectored_at(&[IoSlice::new(buf)], offset)
    }

    /// Writes all of `bufs` back to back at `offset`, retrying short writes.
    fn write_all_vectored_at(&self, bufs: &[IoSlice<'_>], mut offset: u64) -> io::Result<()> {
        let mut slices: Vec<&[u8]> = bufs.iter().map(|s| &**s).filter(|s| !s.is_empty()).collect();
        let mut first = 0;
        while first < slices.len() {
            // IOV_MAX is 1024 on Linux.
            let end = slices.len().min(first + 1024);
            let iov: Vec<IoSlice<'_>> = slices[first..end].iter().map(|s| IoSlice::new(s)).collect();
            let mut n = self.write_vectored_at(&iov, offset)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0 bytes"));
            }
            offset += n as u64;
            while first < slices.len() && n >= slices[first].len() {
                n -= slices[first].len();
                first += 1;
            }
            if n > 0 {
                slices[first] = &slices[first][n..];
            }
        }
        Ok(())
    }

    /// Fills `buf` from `offset`; a file shorter than that is an `UnexpectedEof` error.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(buf, offset)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file ends before the requested range"));
            }
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
}

/// A directory tree of [`FileIo`] files.
pub trait Fs: Send + Sync + Debug {
    /// Creates `path` and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Opens `path` for reading and writing; creates it empty when `create` is set and it
    /// does not exist.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FileIo>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists; durable once the directory is synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Names of the entries of a directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Makes the directory's entries (created and removed files) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// When the file's content last changed.
    fn modified(&self, path: &Path) -> io::Result<SystemTime>;
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile {
    file: File,
    path: PathBuf,
}

impl FileIo for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<usize> {
        rustix::io::pwritev(&self.file, bufs, offset).map_err(io::Error::from)
    }

    fn sync_data(&self) -> io::Result<()> {
        rustix::fs::fdatasync(&self.file).map_err(io::Error::from)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let current = self.len()?;
        if current >= len {
            return Ok(());
        }
        match rustix::fs::fallocate(&self.file, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            // Some file systems (tmpfs on old kernels, overlay over some backends) lack
            // fallocate; a sparse file still works, only without the reservation.
            Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => {
                tracing::debug!(path = %self.path.display(), "fallocate not supported; using a sparse file");
                self.file.set_len(len)
            }
            // Less free space than a whole segment: go on without the reservation (the
            // broker's disk guard refuses sends well before the disk is full).
            Err(rustix::io::Errno::NOSPC) => {
                tracing::warn!(
                    path = %self.path.display(),
                    bytes = len,
                    "not enough free space to reserve a whole segment; using a sparse file"
                );
                self.file.set_len(len)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

impl Fs for RealFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FileIo>> {
        let file = OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path)?;
        Ok(Arc::new(RealFile { file, path: path.to_path_buf() }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn modified(&self, path: &Path) -> io::Result<SystemTime> {
        std::fs::metadata(path)?.modified()
    }
}
