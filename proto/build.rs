//! Generates the Rust code for every `.proto` file under `proto/`.
//!
//! The files are compiled in process with `protox` (no system `protoc`), then
//! `tonic-prost-build` writes messages, clients and servers to `OUT_DIR`, next to the
//! encoded descriptor set that `raftmq_proto::FILE_DESCRIPTOR_SET` exposes.

use std::path::{Path, PathBuf};

use protox::prost::Message as _;

/// Every file we compile; their imports (google.protobuf) come along.
const PROTOS: &[&str] = &[
    "apache/rocketmq/v2/definition.proto",
    "apache/rocketmq/v2/service.proto",
    "raftmq/raft/v1/raft.proto",
    "raftmq/namesrv/v1/namesrv.proto",
    "raftmq/admin/v1/admin.proto",
];

const INCLUDE_DIR: &str = "proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in PROTOS {
        println!("cargo:rerun-if-changed={}", Path::new(INCLUDE_DIR).join(file).display());
    }
    println!("cargo:rerun-if-changed=build.rs");

    let descriptors = protox::compile(PROTOS, [INCLUDE_DIR])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut without_comments = descriptors.clone();
    for file in &mut without_comments.file {
        file.source_code_info = None;
    }
    std::fs::write(out_dir.join("file_descriptor_set.bin"), without_comments.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Message bodies and Raft payloads are passed on without copying.
        .bytes(".apache.rocketmq.v2.Message.body")
        .bytes(".raftmq")
        // Printed in key order.
        .btree_map(".raftmq.admin.v1.QueriedMessage.properties")
        .compile_fds(descriptors)?;
    Ok(())
}
