//! openraft's `RaftLogStorage` and `RaftLogReader` over [`Log`], for any type config whose
//! types are serde-serializable (openraft's `serde` feature) and whose committed leader id
//! carries a term (openraft's default leader id mode).
//!
//! Entries are encoded with bincode 2 into the record payload, after a 4-byte entry format
//! version the application chooses ([`RaftLogStore::with_entry_version`]): an entry of a
//! version this build does not read is an error naming its index. The record header carries
//! the entry's index and term. The vote, the committed id and the purged id live in the
//! meta file. Reads through this adapter never return purged entries; [`Log::read`] does,
//! while retention keeps them. Only [`RaftLogStore::retained_entries`] heeds the log's
//! incomplete mark ([`Log::set_incomplete`]); openraft's own reads do not.
//!
//! openraft's `IOFlushed` for an append is the log's append callback: after the fdatasync
//! under [`crate::SyncPolicy::EveryBatch`], once written under
//! [`crate::SyncPolicy::Interval`] (so openraft counts an entry as persisted while a power
//! loss could still take it). Votes, truncations and purges are durable either way.

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds, RangeInclusive};

use bytes::Bytes;
use openraft::alias::{LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, RaftTypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::log::Log;
use crate::record::Record;

/// The term of a committed leader id, stored in each record header.
pub trait CommittedTerm {
    /// The term as a number.
    fn term_number(&self) -> u64;
}

impl<T: openraft::vote::RaftTerm, N: openraft::NodeId> CommittedTerm
    for openraft::impls::leader_id_adv::LeaderId<T, N>
{
    fn term_number(&self) -> u64 {
        self.term.as_u64().unwrap_or(0)
    }
}

type CommittedOf<C> = <<C as RaftTypeConfig>::LeaderId as openraft::vote::RaftLeaderId>::Committed;

/// openraft log storage backed by the CommitLog. Clones share the log.
pub struct RaftLogStore<C> {
    log: Log,
    entry_version: u32,
    /// The oldest entry format version read (the application's encoding of that version
    /// decodes the same with today's types).
    oldest_read: u32,
    _types: PhantomData<fn() -> C>,
}

/// The entry format version [`RaftLogStore::new`] writes and reads.
pub const DEFAULT_ENTRY_VERSION: u32 = 1;

impl<C> Clone for RaftLogStore<C> {
    fn clone(&self) -> Self {
        Self {
            log: self.log.clone(),
            entry_version: self.entry_version,
            oldest_read: self.oldest_read,
            _types: PhantomData,
        }
    }
}

impl<C> Debug for RaftLogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftLogStore").field("log", &self.log).finish()
    }
}

impl<C> RaftLogStore<C> {
    /// Wraps an open log; entries carry [`DEFAULT_ENTRY_VERSION`].
    pub fn new(log: Log) -> Self {
        Self::with_entry_version(log, DEFAULT_ENTRY_VERSION)
    }

    /// Wraps an open log whose entries carry (and must carry) format version `version`:
    /// the application's encoding of its commands.
    pub fn with_entry_version(log: Log, version: u32) -> Self {
        Self::with_entry_versions(log, version..=version)
    }

    /// Wraps an open log whose entries are written with format version `versions.end()` and
    /// read with any of `versions` (older encodings that today's types decode the same, for
    /// a log written by an earlier build).
    pub fn with_entry_versions(log: Log, versions: RangeInclusive<u32>) -> Self {
        let (oldest_read, entry_version) = versions.into_inner();
        Self { log, entry_version, oldest_read: oldest_read.min(entry_version), _types: PhantomData }
    }

    /// The entry format version written.
    pub fn entry_version(&self) -> u32 {
        self.entry_version
    }

    /// The entry format versions read.
    pub fn readable_versions(&self) -> RangeInclusive<u32> {
        self.oldest_read..=self.entry_version
    }

    /// The underlying log, for reads of retained (even purged) records.
    pub fn log(&self) -> &Log {
        &self.log
    }
}

impl<C: RaftTypeConfig> RaftLogStore<C> {
    /// Decoded entries `from..to` that the log still holds, purged ones included (message
    /// bodies stay readable until retention deletes their segment).
    pub fn retained_entries(&self, from: u64, to: u64) -> io::Result<Vec<C::Entry>> {
        let records = self.log.read(from, to)?;
        records.iter().map(|r| self.decode_entry(r)).collect()
    }

    /// Encodes an entry as this store writes it: the format version, then bincode.
    pub fn encode_entry(&self, entry: &C::Entry) -> io::Result<Bytes> {
        encode_entry::<C>(entry, self.entry_version)
    }

    /// Decodes a record written by [`Self::encode_entry`] (or by a build whose format this
    /// one reads), checking its format version.
    pub fn decode_entry(&self, record: &Record) -> io::Result<C::Entry> {
        decode_entry::<C>(record, self.readable_versions())
    }
}

/// Encodes an entry as [`RaftLogStore::encode_entry`] does with entry format `version`: the
/// version, then bincode.
pub fn encode_entry<C: RaftTypeConfig>(entry: &C::Entry, version: u32) -> io::Result<Bytes> {
    let mut out = version.to_le_bytes().to_vec();
    bincode::serde::encode_into_std_write(entry, &mut out, bincode_config())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("encode log entry: {e}")))?;
    Ok(Bytes::from(out))
}

/// Decodes a record written by [`RaftLogStore::encode_entry`] with an entry format in
/// `versions`; another version is an error naming the record's index.
pub fn decode_entry<C: RaftTypeConfig>(record: &Record, versions: RangeInclusive<u32>) -> io::Result<C::Entry> {
    let Some((found, body)) = record.payload.split_first_chunk::<4>() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("log entry {} is {} bytes, too short for its format version", record.index, record.payload.len()),
        ));
    };
    let found = u32::from_le_bytes(*found);
    if !versions.contains(&found) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "log entry {} has entry format version {found}, this build reads {}; \
                 run a raftmq build that reads version {found}",
                record.index,
                describe_versions(&versions)
            ),
        ));
    }
    decode(body, &format!("log entry {}", record.index))
}

/// "version 9" or "versions 8 to 9".
pub fn describe_versions(versions: &RangeInclusive<u32>) -> String {
    if versions.start() == versions.end() {
        format!("version {}", versions.end())
    } else {
        format!("versions {} to {}", versions.start(), versions.end())
    }
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a value the way this adapter stores it.
pub fn encode<T: Serialize>(value: &T) -> io::Result<Bytes> {
    bincode::serde::encode_to_vec(value, bincode_config())
        .map(Bytes::from)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("encode: {e}")))
}

/// Most bytes of bincode's limit one byte of input claims: every value claims its size in
/// memory (at most 16 bytes) and takes at least one byte; a byte string claims its length and
/// takes as many bytes.
const CLAIM_PER_BYTE: usize = 16;

/// `bincode::serde::decode_from_slice` under a limit no value `bytes` can hold reaches: bincode
/// allocates the length a byte string's prefix claims before reading it, so without one,
/// damaged bytes claiming 2^60 bytes would abort the process instead of failing to decode.
/// (The same guard as `raftmq_machine::bounded`, which this crate does not depend on.)
fn decode_bounded<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), String> {
    let config = bincode_config();
    let claim = bytes.len().saturating_mul(CLAIM_PER_BYTE);
    let decoded = if claim <= 1 << 20 {
        bincode::serde::decode_from_slice(bytes, config.with_limit::<{ 1 << 20 }>())
    } else if claim <= 1 << 26 {
        bincode::serde::decode_from_slice(bytes, config.with_limit::<{ 1 << 26 }>())
    } else if claim <= u32::MAX as usize {
        bincode::serde::decode_from_slice(bytes, config.with_limit::<{ u32::MAX as usize }>())
    } else {
        bincode::serde::decode_from_slice(bytes, config)
    };
    decoded.map_err(|e| match e {
        bincode::error::DecodeError::LimitExceeded => {
            format!("a length in it claims more than the {} bytes it has", bytes.len())
        }
        e => e.to_string(),
    })
}

/// Decodes a value stored by this adapter.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> io::Result<T> {
    let (v, used) =
        decode_bounded(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("decode {what}: {e}")))?;
    if used != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("decode {what}: {} trailing bytes", bytes.len() - used),
        ));
    }
    Ok(v)
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(&x) => x,
        Bound::Excluded(&x) => x.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&x) => x.saturating_add(1),
        Bound::Excluded(&x) => x,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl<C> RaftLogStore<C>
where
    C: RaftTypeConfig,
{
    fn purged_id(&self) -> io::Result<Option<LogIdOf<C>>> {
        match self.log.view().purged {
            Some(p) => decode(&p.id, "purged log id").map(Some),
            None => Ok(None),
        }
    }

    fn read_entries(&self, from: u64, to: u64) -> io::Result<Vec<C::Entry>> {
        let view = self.log.view();
        let from = from.max(view.purged.map_or(0, |p| p.index + 1));
        let records = self.log.read_for_raft(from, to)?;
        records.iter().map(|r| self.decode_entry(r)).collect()
    }
}

impl<C> RaftLogReader<C> for RaftLogStore<C>
where
    C: RaftTypeConfig,
    CommittedOf<C>: CommittedTerm,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        let (from, to) = bounds(&range);
        self.read_entries(from, to)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.log.vote().map(|v| decode(&v, "vote")).transpose()
    }
}

impl<C> RaftLogStorage<C> for RaftLogStore<C>
where
    C: RaftTypeConfig,
    CommittedOf<C>: CommittedTerm,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let purged = self.purged_id()?;
        let view = self.log.view();
        let purged_index = view.purged.as_ref().map(|p| p.index);
        let last = match view.last {
            Some((index, _)) if purged_index.is_none_or(|p| index > p) => {
                let entries = self.read_entries(index, index + 1)?;
                let entry = entries.first().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("last log entry {index} could not be read"))
                })?;
                Some(entry.log_id())
            }
            _ => purged.clone(),
        };
        Ok(LogState { last_purged_log_id: purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        Ok(self.log.save_vote(encode(vote)?).await?)
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let bytes = committed.as_ref().map(encode).transpose()?;
        Ok(self.log.save_committed(bytes).await?)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        self.log.committed().map(|c| decode(&c, "committed log id")).transpose()
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut records = Vec::new();
        for entry in entries {
            let log_id = entry.log_id();
            records.push(Record {
                index: log_id.index(),
                term: log_id.committed_leader_id().term_number(),
                payload: self.encode_entry(&entry)?,
            });
        }
        let done = Box::new(move |r: crate::Result<()>| callback.io_completed(r.map_err(io::Error::from)));
        Ok(self.log.append(records, done).await?)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        Ok(self.log.truncate_after(last_log_id.map(|id| id.index())).await?)
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        Ok(self.log.purge(log_id.index(), encode(&log_id)?).await?)
    }
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;
    use openraft::impls::leader_id_adv::LeaderId;

    use super::*;

    openraft::declare_raft_types!(Types: D = String, R = String);
    type Entry = <Types as RaftTypeConfig>::Entry;

    /// What the `entry` fuzz target found: an entry whose text claims 2^60 bytes made the
    /// decoder allocate them (and the process abort) instead of refusing it.
    #[test]
    fn an_entry_claiming_2_60_bytes_is_refused_naming_it() {
        let log_id = LogIdOf::<Types>::new(LeaderId { term: 3, node_id: 1 }, 5);
        let entry = Entry::new(log_id, EntryPayload::Normal("x".to_string()));
        let bytes = encode_entry::<Types>(&entry, 9).expect("encodes");
        let decoded = decode_entry::<Types>(&Record { index: 5, term: 3, payload: bytes.clone() }, 9..=9);
        assert_eq!(decoded.expect("decodes"), entry);
        // The text is last: its length 1 and its byte; claim 2^60 bytes instead.
        assert_eq!(bytes[bytes.len() - 2..], [1, b'x']);
        let mut damaged = bytes[..bytes.len() - 2].to_vec();
        damaged.extend_from_slice(&[253, 0, 0, 0, 0, 0, 0, 0, 0x10]);
        let record = Record { index: 5, term: 3, payload: Bytes::from(damaged) };
        let err = decode_entry::<Types>(&record, 9..=9).expect_err("refused").to_string();
        assert!(err.contains("log entry 5") && err.contains("claims more than the"), "{err}");
    }
}
