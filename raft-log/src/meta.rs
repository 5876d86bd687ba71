//! The meta file: vote, committed log id and purge point, written in two alternating
//! 4 KiB slots so a torn write never loses the previous state.
//!
//! Slot layout: magic (8) | version (4) | length (4) | sequence (8) | body | CRC32C (4) over
//! everything before it. The body is three optional byte strings (vote, committed, purged
//! log id) and the purged index. The newest slot that passes its checks wins.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{LogError, Result};
use crate::fs::{FileIo, Fs};
use crate::segment::FORMAT_VERSION;

const META_MAGIC: &[u8; 8] = b"RMQMETA\0";
const SLOT_LEN: usize = 4096;
const SLOT_HEADER: usize = 24;
/// Largest vote, committed id or purged id the meta file stores, in bytes.
pub const MAX_META_FIELD: usize = 1024;
/// File name of the meta file.
pub const META_FILE: &str = "meta";

/// The purge point: every index up to and including `index` is logically gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    /// Last purged index.
    pub index: u64,
    /// The purged entry's log id, encoded by the caller.
    pub id: Bytes,
}

/// Everything the meta file holds; the byte strings are opaque to the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaState {
    /// Last saved vote.
    pub vote: Option<Bytes>,
    /// Last saved committed log id.
    pub committed: Option<Bytes>,
    /// Purge point.
    pub purged: Option<Purged>,
}

/// The open meta file.
#[derive(Debug)]
pub struct MetaFile {
    file: Arc<dyn FileIo>,
    path: PathBuf,
    seq: u64,
}

fn put_field(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        Some(b) => {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
    }
}

fn take_field(body: &mut &[u8]) -> Option<Option<Bytes>> {
    let len = u32::from_le_bytes(body.get(0..4)?.try_into().ok()?);
    *body = &body[4..];
    if len == u32::MAX {
        return Some(None);
    }
    let len = len as usize;
    let v = Bytes::copy_from_slice(body.get(..len)?);
    *body = &body[len..];
    Some(Some(v))
}

fn encode_slot(state: &MetaState, seq: u64) -> Result<Vec<u8>> {
    for (name, f) in [("vote", &state.vote), ("committed", &state.committed)] {
        if f.as_ref().is_some_and(|b| b.len() > MAX_META_FIELD) {
            return Err(LogError::Invalid(format!("{name} is larger than {MAX_META_FIELD} bytes")));
        }
    }
    if state.purged.as_ref().is_some_and(|p| p.id.len() > MAX_META_FIELD) {
        return Err(LogError::Invalid(format!("purged log id is larger than {MAX_META_FIELD} bytes")));
    }
    let mut body = Vec::new();
    put_field(&mut body, state.vote.as_deref());
    put_field(&mut body, state.committed.as_deref());
    put_field(&mut body, state.purged.as_ref().map(|p| &p.id[..]));
    body.extend_from_slice(&state.purged.as_ref().map_or(0, |p| p.index).to_le_bytes());
    let mut slot = Vec::with_capacity(SLOT_LEN);
    slot.extend_from_slice(META_MAGIC);
    slot.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    slot.extend_from_slice(&(body.len() as u32).to_le_bytes());
    slot.extend_from_slice(&seq.to_le_bytes());
    slot.extend_from_slice(&body);
    let crc = crc32c::crc32c(&slot);
    slot.extend_from_slice(&crc.to_le_bytes());
    assert!(slot.len() <= SLOT_LEN, "fields are bounded by MAX_META_FIELD");
    slot.resize(SLOT_LEN, 0);
    Ok(slot)
}

/// Decodes one slot: `Ok(None)` when it holds no valid state (never written or torn).
fn decode_slot(slot: &[u8], path: &Path) -> Result<Option<(u64, MetaState)>> {
    if &slot[0..8] != META_MAGIC {
        return Ok(None);
    }
    let body_len = u32::from_le_bytes(slot[12..16].try_into().expect("4 bytes")) as usize;
    if SLOT_HEADER + body_len + 4 > SLOT_LEN {
        return Ok(None);
    }
    let end = SLOT_HEADER + body_len;
    let crc = u32::from_le_bytes(slot[end..end + 4].try_into().expect("4 bytes"));
    if crc != crc32c::crc32c(&slot[..end]) {
        return Ok(None);
    }
    let version = u32::from_le_bytes(slot[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(LogError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let seq = u64::from_le_bytes(slot[16..24].try_into().expect("8 bytes"));
    let mut body = &slot[SLOT_HEADER..end];
    let parse = |body: &mut &[u8]| -> Option<MetaState> {
        let vote = take_field(body)?;
        let committed = take_field(body)?;
        let purged_id = take_field(body)?;
        let index = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
        Some(MetaState { vote, committed, purged: purged_id.map(|id| Purged { index, id }) })
    };
    match parse(&mut body) {
        Some(state) => Ok(Some((seq, state))),
        None => Err(LogError::corrupt(path, 0, "meta slot passes its checksum but its fields do not parse")),
    }
}

impl MetaFile {
    /// Opens the meta file in `dir`. `Ok(None)` when the file does not exist or never had
    /// a complete first write.
    pub fn open(fs: &dyn Fs, dir: &Path) -> Result<Option<(MetaFile, MetaState)>> {
        let path = dir.join(META_FILE);
        let names = fs.list_dir(dir).map_err(|e| LogError::io("list", dir, e))?;
        if !names.iter().any(|n| n == META_FILE) {
            return Ok(None);
        }
        let file = fs.open(&path, false).map_err(|e| LogError::io("open", &path, e))?;
        let len = file.len().map_err(|e| LogError::io("stat", &path, e))?;
        let mut buf = vec![0u8; 2 * SLOT_LEN];
        let readable = (len as usize).min(buf.len());
        file.read_exact_at(&mut buf[..readable], 0).map_err(|e| LogError::io("read", &path, e))?;
        let a = decode_slot(&buf[..SLOT_LEN], &path)?;
        let b = decode_slot(&buf[SLOT_LEN..], &path)?;
        let best = match (a, b) {
            (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        Ok(best.map(|(seq, state)| (MetaFile { file, path, seq }, state)))
    }

    /// Creates the meta file with an empty state, durable when this returns.
    pub fn create(fs: &dyn Fs, dir: &Path) -> Result<MetaFile> {
        let path = dir.join(META_FILE);
        let file = fs.open(&path, true).map_err(|e| LogError::io("create", &path, e))?;
        let mut meta = MetaFile { file, path, seq: 0 };
        meta.file.set_len(2 * SLOT_LEN as u64).map_err(|e| LogError::io("size", &meta.path, e))?;
        meta.store(&MetaState::default())?;
        fs.sync_dir(dir).map_err(|e| LogError::io("fsync directory", dir, e))?;
        Ok(meta)
    }

    /// Writes `state` into the older slot, durable when this returns. Every write is
    /// synced: an unsynced write could tear the older slot while the newer one is not yet
    /// durable, leaving no valid slot.
    pub fn store(&mut self, state: &MetaState) -> Result<()> {
        let seq = self.seq + 1;
        let slot = encode_slot(state, seq)?;
        let at = (seq % 2) * SLOT_LEN as u64;
        self.file.write_all_at(&slot, at).map_err(|e| LogError::io("write", &self.path, e))?;
        self.file.sync_data().map_err(|e| LogError::io("fdatasync", &self.path, e))?;
        self.seq = seq;
        Ok(())
    }
}
