//! Reading one message of a log entry over a real CommitLog: every slot of entries large and
//! small reads back alone, from memory and from the files, the same as the whole entry's
//! decode; a flipped byte in one message's bytes on disk is an error naming the entry and
//! slot, while its neighbours still read; entries that are not sends have no messages.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;

use broker::raft::slot::read_message;
use broker::raft::{Entry, LogId, TypeConfig};
use bytes::Bytes;
use openraft::EntryPayload;
use openraft::entry::RaftEntry;
use raft_log::{Log, LogConfig, RaftLogStore, Record};
use raftmq_machine::codec::ENTRY_VERSION;
use raftmq_machine::types::{StoredMessage, TopicConfig, TopicName};
use raftmq_machine::{Command, LogIndex, MessageBatch, Millis, NodeId, QueueId, Slot};

fn log_id(index: u64) -> LogId {
    LogId::new(openraft::impls::leader_id_adv::LeaderId { term: 2, node_id: NodeId(1) }, index)
}

fn message(entry: u64, slot: usize, body_bytes: usize) -> StoredMessage {
    StoredMessage {
        topic: TopicName::new("orders").expect("valid"),
        queue: QueueId((slot % 4) as u32),
        topic_epoch: LogIndex(1),
        message_id: format!("m-{entry}-{slot}"),
        tag: Some("paid".into()),
        keys: vec![format!("order-{entry}-{slot}")],
        message_group: None,
        properties: BTreeMap::from([("slot".to_string(), slot.to_string())]),
        born: Millis(1_700_000_000_000),
        deliver_at: None,
        transactional: false,
        born_host: "10.0.0.7".into(),
        body: Bytes::from(vec![(entry as u8).wrapping_add(slot as u8); body_bytes]),
        body_gzip: false,
    }
}

/// Entry 1 creates the topic; entries 2.. are sends of various shapes: one message, many
/// small ones (a table longer than the first read), a few large ones.
fn entries() -> Vec<(Entry, Vec<StoredMessage>)> {
    let topic =
        Command::UpsertTopic { topic: TopicName::new("orders").expect("valid"), config: TopicConfig::all_types(4) };
    let mut out = vec![(Entry::new(log_id(1), EntryPayload::Normal(topic)), Vec::new())];
    let shapes = [(1usize, 100usize), (900, 16), (5, 40_000), (64, 1000), (0, 0)];
    for (i, (count, body)) in shapes.into_iter().enumerate() {
        let index = i as u64 + 2;
        let messages: Vec<_> = (0..count).map(|s| message(index, s, body)).collect();
        let batch = MessageBatch::encode(&messages).expect("encodes");
        let send = Command::Send { now: Millis(1_700_000_000_100), messages: batch, proposal: None };
        out.push((Entry::new(log_id(index), EntryPayload::Normal(send)), messages));
    }
    out.push((Entry::new(log_id(7), EntryPayload::Blank), Vec::new()));
    out
}

fn check_all(log: &Log, entries: &[(Entry, Vec<StoredMessage>)]) -> anyhow::Result<()> {
    for (entry, messages) in entries {
        let index = entry.log_id.index();
        for (slot, m) in messages.iter().enumerate() {
            let read = read_message(log, &(ENTRY_VERSION..=ENTRY_VERSION), index, Slot(slot as u32))?;
            anyhow::ensure!(read.as_ref() == Some(m), "entry {index} slot {slot}");
        }
        let past = read_message(log, &(ENTRY_VERSION..=ENTRY_VERSION), index, Slot(messages.len() as u32))?;
        anyhow::ensure!(past.is_none(), "entry {index} has no slot {}", messages.len());
    }
    anyhow::ensure!(read_message(log, &(ENTRY_VERSION..=ENTRY_VERSION), 99, Slot(0))?.is_none(), "no entry 99");
    Ok(())
}

#[tokio::test]
async fn every_slot_reads_alone_from_memory_and_files_and_damage_is_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = LogConfig { segment_size: 4 << 20, max_payload: 1 << 20, cache_bytes: 0, ..LogConfig::default() };
    let (log, _) = Log::open(dir.path(), config)?;
    let store = RaftLogStore::<TypeConfig>::with_entry_version(log.clone(), ENTRY_VERSION);
    let entries = entries();
    let mut records = Vec::new();
    for (entry, _) in &entries {
        records.push(Record { index: entry.log_id.index(), term: 2, payload: store.encode_entry(entry)? });
    }
    log.append(records.clone(), Box::new(|_| {})).await?;
    check_all(&log, &entries)?;
    log.flush().await?;
    check_all(&log, &entries)?;

    // Flip one byte inside entry 4's third message (large bodies: the slot is far past the
    // first read) in the segment file, as a disk's bit rot would after the write.
    let target = &entries[3];
    let batch_bytes = match &target.0.payload {
        EntryPayload::Normal(Command::Send { messages, .. }) => messages.as_bytes().clone(),
        _ => unreachable!("entry 4 is a send"),
    };
    let at = MessageBatch::locate_in(&batch_bytes, Slot(2))?.expect("slot 2 exists");
    let payload = &records[3].payload;
    let batch_start = payload.windows(batch_bytes.len()).position(|w| w == &batch_bytes[..]).expect("batch in payload");
    let segment = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("a segment file");
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&segment)?;
    let data = std::fs::read(&segment)?;
    let record_at = data.windows(payload.len()).position(|w| w == &payload[..]).expect("payload in segment");
    let flip = (record_at + batch_start + at.bytes.start + 100) as u64;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, flip)?;
    file.write_all_at(&[byte[0] ^ 0x20], flip)?;
    file.sync_all()?;
    drop(file);

    let error =
        read_message(&log, &(ENTRY_VERSION..=ENTRY_VERSION), 4, Slot(2)).expect_err("a damaged message is an error");
    let text = error.to_string();
    assert!(text.contains("log entry 4") && text.contains("slot 2") && text.contains("CRC32C"), "{text}");
    for slot in [0u32, 1, 3, 4] {
        let read = read_message(&log, &(ENTRY_VERSION..=ENTRY_VERSION), 4, Slot(slot))?;
        assert_eq!(read.as_ref(), Some(&target.1[slot as usize]), "neighbour slot {slot} still reads");
    }
    // The whole-record read checks the record's CRC and refuses it too.
    assert!(store.retained_entries(4, 5).is_err(), "the record's own check sees the damage");
    log.shutdown().await?;
    Ok(())
}
