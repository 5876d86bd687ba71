//! Golden samples of the broker's persisted formats: a log entry as the CommitLog stores it
//! (entry format version, then openraft's entry around the command) and a snapshot file
//! (versioned header, openraft's metadata, the applied state). A failing test means the
//! bytes changed: bump the version in `raftmq_machine::codec` and regenerate the samples
//! with `RAFTMQ_BLESS=1 cargo test -p broker --test golden`. The derived stores' files (the
//! ConsumeQueue and IndexFile) are pinned here too, by their own format versions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use broker::raft::state::{self, Applied, SnapshotFile};
use broker::raft::{Entry, LogId, NodeInfo, TypeConfig};
use bytes::Bytes;
use openraft::entry::RaftEntry;
use openraft::{EntryPayload, Membership, StoredMembership};
use raft_log::{Log, LogConfig, RaftLogStore, Record};
use raftmq_machine::codec::{self, ENTRY_VERSION};
use raftmq_machine::types::{StoredMessage, TopicConfig, TopicName};
use raftmq_machine::{Command, LogIndex, Machine, MessageBatch, Millis, NodeId, QueueId};

fn check(name: &str, bytes: &[u8]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("RAFTMQ_BLESS").is_some() {
        std::fs::write(&path, bytes).expect("write golden sample");
        return;
    }
    let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(stored == bytes, "{} changed: bump the format version and bless the samples", path.display());
}

fn log_id(index: u64) -> LogId {
    LogId::new(openraft::impls::leader_id_adv::LeaderId { term: 3, node_id: NodeId(2) }, index)
}

fn send() -> Command {
    let message = StoredMessage {
        topic: TopicName::new("orders").expect("valid"),
        queue: QueueId(1),
        topic_epoch: LogIndex(41),
        message_id: "01ABCDEF".into(),
        tag: Some("paid".into()),
        keys: vec!["order-7".into()],
        message_group: None,
        properties: BTreeMap::from([("region".to_string(), "eu".to_string())]),
        born: Millis(1_700_000_000_000),
        deliver_at: None,
        transactional: false,
        born_host: "10.0.0.7".into(),
        body: Bytes::from_static(b"hello, raftmq"),
        body_gzip: false,
    };
    let second = StoredMessage { message_id: "01ABCDF0".into(), keys: Vec::new(), tag: None, ..message.clone() };
    let messages = MessageBatch::encode(&[message, second]).expect("encodes");
    Command::Send { now: Millis(1_700_000_000_100), messages, proposal: None }
}

#[test]
fn log_entries_keep_their_bytes_and_refuse_other_versions() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (log, _) =
        Log::open(dir.path(), LogConfig { segment_size: 1 << 20, max_payload: 256 << 10, ..LogConfig::default() })?;
    let store = RaftLogStore::<TypeConfig>::with_entry_version(log.clone(), ENTRY_VERSION);
    let entry = Entry::new(log_id(42), EntryPayload::Normal(send()));
    let bytes = store.encode_entry(&entry)?;
    assert_eq!(bytes[..4], ENTRY_VERSION.to_le_bytes());
    check("entry-v9.bin", &bytes);

    let record = Record { index: 42, term: 3, payload: bytes.clone() };
    assert_eq!(store.decode_entry(&record)?, entry);
    let mut newer = bytes.to_vec();
    newer[..4].copy_from_slice(&(ENTRY_VERSION + 1).to_le_bytes());
    let error = store
        .decode_entry(&Record { payload: Bytes::from(newer), ..record })
        .expect_err("an unknown version is refused")
        .to_string();
    assert!(error.contains("log entry 42") && error.contains(&format!("version {}", ENTRY_VERSION + 1)), "{error}");
    Ok(())
}

/// A log entry written by a build of the oldest format still read (version 8) is decoded by
/// a node's store; a store that reads only today's format refuses it.
#[test]
fn log_entries_of_the_oldest_format_still_read() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (log, _) =
        Log::open(dir.path(), LogConfig { segment_size: 1 << 20, max_payload: 256 << 10, ..LogConfig::default() })?;
    let old = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/entry-v8.bin"))?;
    assert_eq!(old[..4], codec::OLDEST_READ_ENTRY_VERSION.to_le_bytes());
    let record = Record { index: 42, term: 3, payload: Bytes::from(old) };
    let store =
        RaftLogStore::<TypeConfig>::with_entry_versions(log.clone(), codec::OLDEST_READ_ENTRY_VERSION..=ENTRY_VERSION);
    let entry = Entry::new(log_id(42), EntryPayload::Normal(send()));
    assert_eq!(store.decode_entry(&record)?, entry);
    let strict = RaftLogStore::<TypeConfig>::with_entry_version(log, ENTRY_VERSION);
    let error = strict.decode_entry(&record).expect_err("only today's format").to_string();
    assert!(error.contains("version 8") && error.contains(&format!("reads version {ENTRY_VERSION}")), "{error}");
    Ok(())
}

#[test]
fn snapshot_files_keep_their_bytes() -> anyhow::Result<()> {
    let mut machine = Machine::new("g1");
    let topic = TopicName::new("orders")?;
    machine.apply(LogIndex(41), &Command::UpsertTopic { topic, config: TopicConfig::all_types(2) });
    machine.apply(LogIndex(42), &send());
    let nodes = BTreeMap::from([(
        NodeId(1),
        NodeInfo { raft_addr: "10.0.0.1:9081".into(), client_addr: "10.0.0.1:8081".into() },
    )]);
    let membership = Membership::new(vec![BTreeSet::from([NodeId(1)])], nodes)?;
    let stored = StoredMembership::new(Some(log_id(1)), membership);
    let applied = Applied {
        machine,
        last_applied: Some(log_id(42)),
        membership: stored.clone(),
        retired: BTreeSet::from([NodeId(4)]),
    };
    let meta = openraft::alias::SnapshotMetaOf::<TypeConfig> { last_log_id: Some(log_id(42)), last_membership: stored };
    let bytes = codec::encode_snapshot(&SnapshotFile { meta: meta.clone(), applied: applied.clone() })?;
    check("snapshot-v7.bin", &bytes);
    let back = state::decode(&bytes, "sample")?;
    assert_eq!(back.applied, applied);

    // A file of the oldest format still read (version 6, written before retired ids were
    // kept) is read with none retired.
    let old = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/snapshot-v6.bin"))?;
    assert_eq!(old[8..12], codec::OLDEST_READ_SNAPSHOT_VERSION.to_le_bytes());
    let back = state::decode(&old, "snapshot-v6.bin")?;
    assert_eq!((back.meta, back.applied), (meta, Applied { retired: BTreeSet::new(), ..applied }));
    Ok(())
}

#[test]
fn derived_store_files_keep_their_bytes() -> anyhow::Result<()> {
    use broker::store::consume_queue::{self, ConsumeQueues, CqConfig, QueueRecord};
    use broker::store::index_file::{self, IndexConfig, IndexFiles, IndexKey};
    use raftmq_machine::{QueueOffset, Slot};
    assert_eq!((consume_queue::FORMAT_VERSION, index_file::FORMAT_VERSION), (2, 1), "new versions need new samples");
    let dir = tempfile::tempdir()?;

    let cq = ConsumeQueues::open(CqConfig { records_per_file: 4, ..CqConfig::new(dir.path().join("cq")) })?;
    for (offset, tag) in [(0u64, Some(0x1234_5678_9abc_def0)), (1, None)] {
        let record = QueueRecord {
            log_index: LogIndex(42 + offset),
            slot: Slot(offset as u32),
            size_bytes: 256,
            tag_hash: tag,
            group_hash: tag.map(|t| t ^ 1),
            store_time: Millis(1_700_000_000_000),
        };
        cq.append("orders", QueueId(1), QueueOffset(offset), &record)?;
    }
    cq.sync()?;
    check("consumequeue-v2.bin", &std::fs::read(dir.path().join("cq/orders/1/00000000000000000000.cq"))?);

    let index = IndexFiles::open(IndexConfig {
        slot_count: 8,
        max_entries: 4,
        max_results: 4,
        ..IndexConfig::new(dir.path().join("index"))
    })?;
    index.add(IndexKey::Id("01ABCDEF"), LogIndex(42), Slot(0), Millis(1_700_000_000_000))?;
    index.add(IndexKey::Key("order-7"), LogIndex(42), Slot(0), Millis(1_700_000_000_000))?;
    index.sync()?;
    check("indexfile-v1.bin", &std::fs::read(dir.path().join("index/00000000000000000042.idx"))?);
    Ok(())
}
