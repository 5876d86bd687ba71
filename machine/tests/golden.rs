//! Golden samples of every persisted format the state machine owns: the commands inside log
//! entries and the snapshot. A failing test here means the bytes changed: bump the format
//! version (`codec::ENTRY_VERSION`, `codec::SNAPSHOT_VERSION`) and regenerate the samples with
//! `RAFTMQ_BLESS=1 cargo test -p raftmq-machine --test golden`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use raftmq_machine::codec::{self, ENTRY_VERSION, SNAPSHOT_VERSION};
use raftmq_machine::timer::Fire;
use raftmq_machine::types::{GroupConfig, GroupName, StoredMessage, TopicConfig, TopicName};
use raftmq_machine::{
    Command, DeadLetter, LogIndex, Machine, MessageBatch, Millis, PopId, PopTake, QueueId, QueueOffset, Receipt,
    Response, Slot,
};

fn sample_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

/// Compares `bytes` with the stored sample, or stores it when blessing.
fn check(name: &str, bytes: &[u8]) {
    let path = sample_path(name);
    if std::env::var_os("RAFTMQ_BLESS").is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the golden directory");
        }
        std::fs::write(&path, bytes).expect("write golden sample");
        return;
    }
    let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        stored == bytes,
        "{} changed ({} bytes stored, {} now): bump the format version and bless the samples",
        path.display(),
        stored.len(),
        bytes.len()
    );
}

fn topic() -> TopicName {
    TopicName::new("orders").expect("valid")
}

fn group() -> GroupName {
    GroupName::new("billing").expect("valid")
}

fn message(slot: u8) -> StoredMessage {
    StoredMessage {
        topic: topic(),
        queue: QueueId(u32::from(slot % 2)),
        topic_epoch: LogIndex(1),
        message_id: format!("01ABCDEF{slot:02}"),
        tag: Some("paid".into()),
        keys: vec!["order-7".into(), "customer-3".into()],
        message_group: None,
        properties: BTreeMap::from([("region".to_string(), "eu".to_string())]),
        born: Millis(1_700_000_000_000),
        deliver_at: None,
        transactional: false,
        born_host: "10.0.0.7".into(),
        body: Bytes::from(vec![slot; 16]),
        body_gzip: false,
    }
}

/// Slot 3: a delay message, scheduled (its time is after the entry's), fired below.
fn delayed() -> StoredMessage {
    StoredMessage { deliver_at: Some(Millis(1_700_000_060_000)), ..message(3) }
}

/// Slots 4 and 5: transactional half messages; 4 stays open (checked back once), 5 is
/// rolled back below.
fn half(slot: u8) -> StoredMessage {
    StoredMessage { transactional: true, ..message(slot) }
}

fn commands() -> Vec<Command> {
    // The pop takes offsets 0 and 1 of queue 0 (slots 0 and 2) with pop id 0.
    let receipt = |offset| Receipt {
        broker_group: "g1".into(),
        queue: QueueId(0),
        offset: QueueOffset(offset),
        pop_id: PopId(0),
    };
    vec![
        Command::UpsertTopic { topic: topic(), config: TopicConfig::all_types(2) },
        Command::Send {
            now: Millis(1_700_000_000_100),
            messages: MessageBatch::encode(&[message(0), message(1), message(2), delayed(), half(4), half(5)])
                .expect("encodes"),
            proposal: None,
        },
        Command::Pop {
            now: Millis(1_700_000_000_200),
            group: group(),
            topic: topic(),
            invisible_ms: 30_000,
            takes: vec![PopTake {
                queue: QueueId(0),
                redeliver: vec![],
                fresh_from: QueueOffset(0),
                fresh_end: QueueOffset(2),
                deliver: vec![QueueOffset(0), QueueOffset(1)],
                undefer: vec![],
                defer: vec![],
                groups: vec![(QueueOffset(1), 0x5eed)],
                dead: vec![DeadLetter {
                    offset: QueueOffset(9),
                    pop_id: PopId(3),
                    log_index: LogIndex(2),
                    slot: Slot(0),
                }],
            }],
        },
        Command::Ack { group: group(), topic: topic(), receipts: vec![receipt(0)] },
        Command::ChangeInvisible {
            now: Millis(1_700_000_000_300),
            group: group(),
            topic: topic(),
            receipt: receipt(1),
            invisible_ms: 60_000,
        },
        Command::CommitOffset { group: group(), topic: topic(), queue: QueueId(0), offset: QueueOffset(1) },
        Command::FireTimers {
            now: Millis(1_700_000_060_000),
            prev_fire: LogIndex(0),
            fires: vec![Fire { log_index: LogIndex(2), slot: Slot(3), head: delayed().head() }],
            drops: vec![(LogIndex(2), Slot(5))],
        },
        Command::CheckTransactions { now: Millis(1_700_000_070_000), keys: vec![(LogIndex(2), Slot(4))] },
        Command::UpsertGroup { group: group(), config: GroupConfig { fifo: true, max_attempts: 5 } },
        Command::ResetOffset { group: group(), topic: topic(), offsets: vec![(QueueId(1), QueueOffset(0))] },
        Command::TrimQueues { mins: vec![(topic(), QueueId(1), QueueOffset(1))] },
        Command::ForwardToDeadLetter {
            group: group(),
            topic: topic(),
            queue: QueueId(0),
            letter: DeadLetter { offset: QueueOffset(1), pop_id: PopId(1), log_index: LogIndex(2), slot: Slot(1) },
        },
        Command::DeleteTopic { topic: TopicName::new("gone").expect("valid") },
    ]
}

#[test]
fn commands_keep_their_bytes() {
    assert_eq!(ENTRY_VERSION, 9, "a new entry version needs a new sample file");
    let mut all = Vec::new();
    for command in commands() {
        let bytes = bincode::serde::encode_to_vec(&command, bincode::config::standard()).expect("encodes");
        let (back, _): (Command, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).expect("decodes");
        assert_eq!(back, command);
        all.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        all.extend_from_slice(&bytes);
    }
    check("commands-v9.bin", &all);
}

/// Entries written by a build of the oldest format still read decode to today's commands:
/// the version 8 sample holds every command but the one version 9 added.
#[test]
fn older_entries_still_read() {
    assert_eq!(codec::OLDEST_READ_ENTRY_VERSION, 8, "a sample of each version still read");
    let stored = std::fs::read(sample_path("commands-v8.bin")).expect("read the version 8 sample");
    let mut rest = &stored[..];
    let mut decoded = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        let (bytes, tail) = tail.split_at(len);
        let (command, used): (Command, usize) =
            bincode::serde::decode_from_slice(bytes, bincode::config::standard()).expect("a version 8 entry decodes");
        assert_eq!(used, len);
        decoded.push(command);
        rest = tail;
    }
    let expected: Vec<Command> =
        commands().into_iter().filter(|c| !matches!(c, Command::ForwardToDeadLetter { .. })).collect();
    assert_eq!(decoded, expected);
}

#[test]
fn snapshot_keeps_its_bytes() {
    assert_eq!(SNAPSHOT_VERSION, 7, "a new snapshot version needs a new sample file");
    let mut machine = Machine::new("g1");
    for (i, command) in commands().iter().enumerate() {
        let response = machine.apply(LogIndex(i as u64 + 1), command);
        let refused = match &response {
            Response::Failed(_) => true,
            Response::Acked(results) => results.iter().any(Result::is_err),
            _ => false,
        };
        // Every command takes effect but the delete of a topic that never existed.
        assert_eq!(refused, matches!(command, Command::DeleteTopic { .. }), "{command}: {response:?}");
    }
    let bytes = codec::encode_snapshot(&machine).expect("encodes");
    let back: Machine = codec::decode_snapshot(&bytes, "sample").expect("decodes");
    assert_eq!(back, machine);
    check("snapshot-v7.bin", &bytes);
}
