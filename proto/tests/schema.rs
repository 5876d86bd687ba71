//! The compiled `apache.rocketmq.v2` schema equals, line for line, the listing taken
//! from the official definitions (`tests/data/rocketmq-v2-schema.txt`): every field
//! number, type, oneof, enum value and rpc of every message and service.

#[path = "support/schema_listing.rs"]
mod schema_listing;

use prost::Message as _;
use prost_types::FileDescriptorSet;

const OFFICIAL: &str = include_str!("data/rocketmq-v2-schema.txt");

fn compiled() -> FileDescriptorSet {
    FileDescriptorSet::decode(raftmq_proto::FILE_DESCRIPTOR_SET).expect("build.rs writes a valid descriptor set")
}

#[test]
fn rocketmq_v2_schema_matches_the_official_listing() {
    let official: Vec<&str> = OFFICIAL.lines().filter(|line| !line.starts_with('#') && !line.is_empty()).collect();
    let ours = schema_listing::schema_lines(&compiled(), "apache.rocketmq.v2");

    let missing: Vec<&str> = official.iter().copied().filter(|line| !ours.iter().any(|ours| ours == line)).collect();
    let extra: Vec<&str> = ours.iter().map(String::as_str).filter(|line| !official.contains(line)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "schema differs\nmissing:\n{missing:#?}\nextra:\n{extra:#?}");
    assert_eq!(ours.len(), official.len(), "duplicate lines");
}

#[test]
fn official_listing_covers_the_whole_protocol() {
    // Guards the listing itself: a truncated file must not pass as a match.
    let rpcs = OFFICIAL.lines().filter(|line| line.starts_with("rpc /apache.rocketmq.v2.MessagingService/")).count();
    assert_eq!(rpcs, 17);
    assert!(OFFICIAL.contains("field .apache.rocketmq.v2.Message.body = 4 Optional Bytes\n"));
    assert!(OFFICIAL.contains("enum .apache.rocketmq.v2.Code.MESSAGE_NOT_FOUND = 40401\n"));
}

#[test]
fn descriptor_set_holds_every_package() {
    let set = compiled();
    for package in ["apache.rocketmq.v2", "raftmq.raft.v1", "raftmq.namesrv.v1", "raftmq.admin.v1"] {
        assert!(set.file.iter().any(|file| file.package() == package), "{package} missing");
    }
    assert!(set.file.iter().all(|file| file.source_code_info.is_none()), "comments are stripped");
}
