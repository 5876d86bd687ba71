//! A fault-injecting in-memory file system (feature `sim`, for crash tests of the log and of
//! the nodes above it): writes stay pending until `sync_data`, directory
//! entries until `sync_dir`, and [`SimFs::crash`] builds the state a power cut could leave.
//!
//! Model: every file (inode) has a durable image and a current image. Every write,
//! `set_len` and `allocate` goes into one global, ordered list of pending operations;
//! `sync_data` makes all of that file's pending operations durable. Creating, renaming and
//! removing a file is visible at once and durable once its directory is synced. A crash keeps the
//! durable images plus a prefix of the pending list (in global order, the last one
//! possibly torn) and the durable directory entries. Directories themselves are durable as
//! soon as they are created.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::fs::{FileIo, Fs};

type InodeId = u64;

#[derive(Debug, Clone)]
enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
    Allocate(u64),
}

impl FileOp {
    fn apply(&self, image: &mut Vec<u8>) {
        match self {
            FileOp::Write { offset, data } => {
                let start = usize::try_from(*offset).expect("simulated files fit in memory");
                if image.len() < start + data.len() {
                    image.resize(start + data.len(), 0);
                }
                image[start..start + data.len()].copy_from_slice(data);
            }
            FileOp::SetLen(len) => image.resize(to_usize(*len), 0),
            FileOp::Allocate(len) => {
                if image.len() < to_usize(*len) {
                    image.resize(to_usize(*len), 0);
                }
            }
        }
    }

    /// The part of the operation a torn write leaves: the first `bytes` bytes of a write;
    /// length changes are all or nothing, so a torn one is absent.
    fn torn(&self, bytes: usize) -> Option<FileOp> {
        match self {
            FileOp::Write { offset, data } => {
                Some(FileOp::Write { offset: *offset, data: data[..bytes.min(data.len())].to_vec() })
            }
            FileOp::SetLen(_) | FileOp::Allocate(_) => None,
        }
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("simulated files fit in memory")
}

#[derive(Debug, Clone)]
struct Pending {
    inode: InodeId,
    op: FileOp,
}

#[derive(Debug, Clone, Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    /// Logical time of the last change.
    modified: u64,
}

/// What the mutation gate decided.
enum Gate {
    Go,
    /// This call is the one that crashes: it fails (a write may tear first).
    CrashNow,
}

#[derive(Debug, Clone, Default)]
struct State {
    inodes: BTreeMap<InodeId, Inode>,
    next_inode: InodeId,
    dirs: BTreeSet<PathBuf>,
    names: BTreeMap<PathBuf, InodeId>,
    durable_names: BTreeMap<PathBuf, InodeId>,
    pending: Vec<Pending>,
    /// Mutating calls that may still succeed before the crash; `None` when none is armed.
    crash_budget: Option<u64>,
    /// The failing write keeps `tear_seed % (len + 1)` of its bytes.
    tear_seed: u64,
    crashed: bool,
    /// Bumped by every crash, so handles from before it stop working.
    generation: u64,
    /// Mutating calls that succeeded (the logical clock).
    mutations: u64,
}

fn crash_error() -> io::Error {
    io::Error::other("simulated crash")
}

impl State {
    fn check_alive(&self) -> io::Result<()> {
        if self.crashed { Err(crash_error()) } else { Ok(()) }
    }

    fn gate(&mut self) -> io::Result<Gate> {
        self.check_alive()?;
        if let Some(left) = &mut self.crash_budget {
            if *left == 0 {
                self.crashed = true;
                return Ok(Gate::CrashNow);
            }
            *left -= 1;
        }
        self.mutations += 1;
        Ok(Gate::Go)
    }

    fn inode(&mut self, id: InodeId) -> &mut Inode {
        self.inodes.get_mut(&id).expect("open handles keep their inode")
    }

    fn record(&mut self, inode: InodeId, op: FileOp) {
        let now = self.mutations;
        let file = self.inode(inode);
        op.apply(&mut file.current);
        file.modified = now;
        self.pending.push(Pending { inode, op });
    }

    fn parent_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(dir) if self.dirs.contains(dir) => Ok(()),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, format!("no directory for {}", path.display()))),
        }
    }
}

/// The simulated file system; clones share one state.
#[derive(Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFs").finish_non_exhaustive()
    }
}

impl SimFs {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("simfs lock poisoned by a panicking test")
    }

    /// An independent copy of the whole state (for a dry run of the same operations).
    pub fn fork(&self) -> SimFs {
        SimFs { state: Arc::new(Mutex::new(self.lock().clone())) }
    }

    /// After `n` more mutating calls succeed, the next one and every call after it fail
    /// with "simulated crash". A failing write first applies `tear_seed % (len + 1)` of its
    /// bytes, as a pending operation.
    pub fn crash_after_ops(&self, n: u64, tear_seed: u64) {
        let mut st = self.lock();
        st.crash_budget = Some(n);
        st.tear_seed = tear_seed;
    }

    /// Whether the armed crash has happened.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Mutating calls that succeeded so far.
    pub fn mutations(&self) -> u64 {
        self.lock().mutations
    }

    /// Operations written but not yet synced, in all files.
    pub fn pending_ops(&self) -> usize {
        self.lock().pending.len()
    }

    /// Bytes of the `i`-th pending operation if it is a write.
    pub fn pending_write_len(&self, i: usize) -> Option<usize> {
        match self.lock().pending.get(i).map(|p| &p.op) {
            Some(FileOp::Write { data, .. }) => Some(data.len()),
            _ => None,
        }
    }

    /// The state after a power cut: durable images, then the first `keep_prefix_ops`
    /// pending operations in order, then the next one cut to `tear_bytes` (if given and a
    /// write); later operations are lost. Directory entries revert to their durable sets.
    /// Handles from before fail; the file system is usable again.
    pub fn crash(&self, keep_prefix_ops: usize, tear_bytes: Option<usize>) {
        let mut st = self.lock();
        let pending = std::mem::take(&mut st.pending);
        let keep = keep_prefix_ops.min(pending.len());
        let torn = tear_bytes.and_then(|t| pending.get(keep).and_then(|p| Some((p.inode, p.op.torn(t)?))));
        let survivors = pending[..keep].iter().map(|p| (p.inode, p.op.clone())).chain(torn);
        for (inode, op) in survivors {
            op.apply(&mut st.inode(inode).durable);
        }
        st.names = st.durable_names.clone();
        let live: BTreeSet<InodeId> = st.names.values().copied().collect();
        st.inodes.retain(|id, _| live.contains(id));
        for inode in st.inodes.values_mut() {
            inode.current = inode.durable.clone();
        }
        st.generation += 1;
        st.crashed = false;
        st.crash_budget = None;
    }

    /// The current content of a file, for tests of the model itself.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.lock();
        st.names.get(path).map(|id| st.inodes[id].current.clone())
    }
}

/// An open file of a [`SimFs`].
struct SimFile {
    state: Arc<Mutex<State>>,
    inode: InodeId,
    generation: u64,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile").field("inode", &self.inode).field("generation", &self.generation).finish()
    }
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.state.lock().expect("simfs lock poisoned by a panicking test");
        if st.generation != self.generation {
            return Err(io::Error::other("stale handle from before a simulated crash"));
        }
        st.check_alive()?;
        f(&mut st)
    }

    fn change(&self, op: FileOp) -> io::Result<()> {
        self.with(|st| match st.gate()? {
            Gate::Go => {
                st.record(self.inode, op);
                Ok(())
            }
            Gate::CrashNow => Err(crash_error()),
        })
    }
}

impl FileIo for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|st| {
            let image = &st.inode(self.inode).current;
            let start = to_usize(offset).min(image.len());
            let n = buf.len().min(image.len() - start);
            buf[..n].copy_from_slice(&image[start..start + n]);
            Ok(n)
        })
    }

    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<usize> {
        let data: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let len = data.len();
        self.with(|st| match st.gate()? {
            Gate::Go => {
                st.record(self.inode, FileOp::Write { offset, data });
                Ok(len)
            }
            Gate::CrashNow => {
                let keep = to_usize(st.tear_seed % (len as u64 + 1));
                if keep > 0 {
                    st.record(self.inode, FileOp::Write { offset, data: data[..keep].to_vec() });
                }
                Err(crash_error())
            }
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|st| match st.gate()? {
            Gate::Go => {
                let file = st.inode(self.inode);
                file.durable = file.current.clone();
                st.pending.retain(|p| p.inode != self.inode);
                Ok(())
            }
            Gate::CrashNow => Err(crash_error()),
        })
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.change(FileOp::Allocate(len))
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|st| Ok(st.inode(self.inode).current.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.change(FileOp::SetLen(len))
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.check_alive()?;
        st.dirs.extend(path.ancestors().map(Path::to_path_buf));
        Ok(())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FileIo>> {
        let mut st = self.lock();
        st.check_alive()?;
        st.parent_exists(path)?;
        let inode = match st.names.get(path) {
            Some(&id) => id,
            None if create => match st.gate()? {
                Gate::Go => {
                    let id = st.next_inode;
                    st.next_inode += 1;
                    let modified = st.mutations;
                    st.inodes.insert(id, Inode { modified, ..Inode::default() });
                    st.names.insert(path.to_path_buf(), id);
                    id
                }
                Gate::CrashNow => return Err(crash_error()),
            },
            None => return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))),
        };
        Ok(Arc::new(SimFile { state: self.state.clone(), inode, generation: st.generation }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.check_alive()?;
        if !st.names.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display())));
        }
        match st.gate()? {
            Gate::Go => {
                st.names.remove(path);
                Ok(())
            }
            Gate::CrashNow => Err(crash_error()),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.check_alive()?;
        st.parent_exists(to)?;
        if !st.names.contains_key(from) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found", from.display())));
        }
        match st.gate()? {
            Gate::Go => {
                let inode = st.names.remove(from).expect("checked above");
                st.names.insert(to.to_path_buf(), inode);
                Ok(())
            }
            Gate::CrashNow => Err(crash_error()),
        }
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        st.check_alive()?;
        if !st.dirs.contains(path) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display())));
        }
        let names = st.names.keys().filter(|p| p.parent() == Some(path));
        Ok(names.filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned())).collect())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        match st.gate()? {
            Gate::Go => {
                st.durable_names.retain(|p, _| p.parent() != Some(path));
                let entries: Vec<(PathBuf, InodeId)> =
                    st.names.iter().filter(|(p, _)| p.parent() == Some(path)).map(|(p, &i)| (p.clone(), i)).collect();
                st.durable_names.extend(entries);
                Ok(())
            }
            Gate::CrashNow => Err(crash_error()),
        }
    }

    fn modified(&self, path: &Path) -> io::Result<SystemTime> {
        let st = self.lock();
        st.check_alive()?;
        let id = st.names.get(path).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(st.inodes[id].modified))
    }
}
