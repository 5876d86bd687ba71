//! The server side of Raft RPC: `raftmq.raft.v1.RaftService` handing requests to the local
//! openraft node, and serving retained CommitLog ranges to members that need them.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use raft_log::Log;
use raftmq_proto::raft::v1 as pb;
use raftmq_proto::raft::v1::raft_service_server::RaftService;
use tonic::{Request, Response, Status, Streaming};

use super::codec::{decode, encode};
use super::state::SnapshotBytes;
use super::{NodeId, Raft, TypeConfig};
use raftmq_machine::codec;

/// Records read from the log at a time for `ReadSegment` (an entry holds up to one
/// group-commit batch, about 8 MiB).
const SEGMENT_READ_RECORDS: u64 = 16;
/// Most payload bytes in one `SegmentChunk` (a larger single record goes alone).
const SEGMENT_CHUNK_BYTES: usize = 16 << 20;

/// Serves Raft RPC for one node.
#[derive(Clone)]
pub struct RaftRpc {
    group: String,
    node: NodeId,
    raft: Raft,
    log: Log,
    /// Where received snapshots are written as they arrive.
    spool_dir: std::path::PathBuf,
}

impl std::fmt::Debug for RaftRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftRpc").field("group", &self.group).field("node", &self.node).finish()
    }
}

impl RaftRpc {
    /// Serves `raft` (node `node` of `group`), reads from `log` and writes received
    /// snapshots into `spool_dir` (the state directory: the same file system as the
    /// snapshot, so installing one is a rename).
    pub fn new(group: &str, node: NodeId, raft: Raft, log: Log, spool_dir: std::path::PathBuf) -> Self {
        Self { group: group.to_string(), node, raft, log, spool_dir }
    }

    fn check(&self, group: &str, target: u64) -> Result<(), Status> {
        if group != self.group || target != self.node.0 {
            return Err(Status::failed_precondition(format!(
                "this is node {} of group {:?}, the request is for node {target} of group {group:?}",
                self.node, self.group
            )));
        }
        Ok(())
    }
}

impl RaftRpc {
    /// Refuses to vote while this node holds nothing of the log (at most the initial
    /// membership) for a candidate whose log holds more: the group has run, so this node
    /// lost its data (or was wiped) and no longer knows whom it voted for in which term;
    /// voting again could elect two leaders in one term. It votes again once the leader
    /// has brought it back (the leader's log gives it the current term), or should be
    /// replaced under a new id.
    fn check_not_blank(&self, vote: &VoteRequest<TypeConfig>) -> Result<(), Status> {
        let theirs = vote.last_log_id.as_ref().map_or(0, |l| l.index());
        let mine = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            let snapshot = m.snapshot.as_ref().map(|l| l.index());
            m.last_log_index.max(snapshot).max(m.purged.as_ref().map(|l| l.index())).unwrap_or(0)
        };
        if mine > 0 || theirs == 0 {
            return Ok(());
        }
        tracing::warn!(
            candidate = %vote.vote.leader_id().node_id,
            candidate_last_index = theirs,
            "refusing to vote: this node's log is empty but the group's is not, so its earlier votes may be lost; \
             it votes again once the leader has brought it up to date (or replace it under a new node id)"
        );
        Err(Status::failed_precondition(format!(
            "node {} of group {} holds no log while the candidate's reaches index {theirs}: it lost its data and does \
             not vote until the leader has brought it up to date",
            self.node, self.group
        )))
    }
}

/// A snapshot being received: written to a file in the state directory as its chunks
/// arrive (removed unless it is installed).
struct Spool {
    file: std::fs::File,
    path: tempfile::TempPath,
    /// The length its header declares.
    len: u64,
}

impl Spool {
    async fn create(dir: &std::path::Path, len: u64) -> Result<Spool, Status> {
        let dir = dir.to_path_buf();
        let created = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new().prefix("snapshot.recv.").tempfile_in(&dir).map_err(|e| {
                Status::internal(format!("cannot create a file for a received snapshot in {}: {e}", dir.display()))
            })
        })
        .await
        .map_err(|e| Status::internal(format!("snapshot spool task: {e}")))??;
        let (file, path) = created.into_parts();
        Ok(Spool { file, path, len })
    }

    async fn write(self, data: bytes::Bytes) -> Result<Spool, Status> {
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut spool = self;
            match spool.file.write_all(&data) {
                Ok(()) => Ok(spool),
                Err(e) => Err(Status::resource_exhausted(format!(
                    "cannot write a received snapshot to {}: {e}",
                    spool.path.display()
                ))),
            }
        })
        .await
        .map_err(|e| Status::internal(format!("snapshot spool task: {e}")))?
    }

    /// Fsyncs the file and hands it over for installing.
    async fn finish(self) -> Result<SnapshotBytes, Status> {
        tokio::task::spawn_blocking(move || {
            use std::io::Seek;
            let Spool { mut file, path, len } = self;
            file.sync_all()
                .and_then(|()| file.rewind())
                .map_err(|e| Status::internal(format!("cannot sync the received snapshot {}: {e}", path.display())))?;
            Ok(SnapshotBytes::received(file, len, path))
        })
        .await
        .map_err(|e| Status::internal(format!("snapshot spool task: {e}")))?
    }
}

fn bad(e: String) -> Status {
    Status::invalid_argument(e)
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl RaftService for RaftRpc {
    type AppendStream = BoxStream<pb::AppendResponse>;
    type ReadSegmentStream = BoxStream<pb::SegmentChunk>;

    async fn append(
        &self,
        request: Request<Streaming<pb::AppendRequest>>,
    ) -> Result<Response<Self::AppendStream>, Status> {
        let this = self.clone();
        // A request for another node or one that does not decode ends the input (answers
        // go by position, so none may be skipped); openraft sees the stream end and
        // retries on a new one.
        let input = request
            .into_inner()
            .map(move |item| {
                let req = item.ok()?;
                if let Err(e) = this.check(&req.group, req.target_node) {
                    tracing::warn!(error = %e.message(), "ending an append stream meant for another node");
                    return None;
                }
                decode::<AppendEntriesRequest<TypeConfig>>(&req.payload, "append request")
                    .inspect_err(|e| tracing::warn!(error = %e, "ending an append stream with an undecodable request"))
                    .ok()
            })
            .take_while(|req| futures::future::ready(req.is_some()))
            .filter_map(futures::future::ready);
        let output = self.raft.stream_append(Box::pin(input)).enumerate().map(|(seq, item)| match item {
            Ok(result) => {
                encode(&result).map(|payload| pb::AppendResponse { seq: seq as u64, payload }).map_err(Status::internal)
            }
            Err(fatal) => Err(Status::unavailable(format!("raft node stopped: {fatal}"))),
        });
        Ok(Response::new(Box::pin(output)))
    }

    async fn vote(&self, request: Request<pb::VoteRequest>) -> Result<Response<pb::VoteResponse>, Status> {
        let req = request.into_inner();
        self.check(&req.group, req.target_node)?;
        let vote: VoteRequest<TypeConfig> = decode(&req.payload, "vote request").map_err(bad)?;
        self.check_not_blank(&vote)?;
        let resp = if req.pre_vote { self.raft.pre_vote(vote).await } else { self.raft.vote(vote).await }
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::VoteResponse { payload: encode(&resp).map_err(Status::internal)? }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let mut stream = request.into_inner();
        let mut meta = None;
        let mut spool: Option<Spool> = None;
        let mut received = 0u64;
        let mut done = false;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            self.check(&chunk.group, chunk.target_node)?;
            if chunk.offset != received {
                return Err(bad(format!("snapshot chunk at offset {} but {received} bytes received", chunk.offset)));
            }
            let spooled = match spool.take() {
                Some(s) => s,
                None => {
                    // The first chunk carries the header: refuse a snapshot too large, or
                    // not one, before a byte of it is kept.
                    let len = codec::snapshot_len(&chunk.data, "received snapshot").map_err(|e| bad(e.to_string()))?;
                    meta = Some(chunk.meta.clone());
                    Spool::create(&self.spool_dir, len).await?
                }
            };
            if received + chunk.data.len() as u64 > spooled.len {
                return Err(bad(format!(
                    "snapshot runs past the {} bytes its header declares (chunk at offset {received} of {} bytes)",
                    spooled.len,
                    chunk.data.len()
                )));
            }
            received += chunk.data.len() as u64;
            spool = Some(spooled.write(chunk.data).await?);
            if chunk.done {
                done = true;
                break;
            }
        }
        if !done {
            return Err(Status::aborted("snapshot stream ended before its last chunk"));
        }
        let (Some(meta), Some(spool)) = (meta, spool) else {
            return Err(bad("empty snapshot stream".into()));
        };
        if received != spool.len {
            return Err(bad(format!("snapshot ended at {received} bytes, its header declares {}", spool.len)));
        }
        let (vote, meta) = decode(&meta, "snapshot meta").map_err(bad)?;
        let snapshot =
            openraft::alias::SnapshotOf::<TypeConfig, SnapshotBytes> { meta, snapshot: spool.finish().await? };
        let resp = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| Status::unavailable(format!("raft node stopped: {e}")))?;
        Ok(Response::new(pb::SnapshotResponse { payload: encode(&resp).map_err(Status::internal)? }))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let req = request.into_inner();
        self.check(&req.group, req.target_node)?;
        let transfer: TransferLeaderRequest<TypeConfig> =
            decode(&req.payload, "transfer-leader request").map_err(bad)?;
        let resp = self
            .raft
            .handle_transfer_leader(transfer)
            .await
            .map_err(|e| Status::unavailable(format!("raft node stopped: {e}")))?;
        Ok(Response::new(pb::TransferLeaderResponse { payload: encode(&resp).map_err(Status::internal)? }))
    }

    async fn read_segment(
        &self,
        request: Request<pb::ReadSegmentRequest>,
    ) -> Result<Response<Self::ReadSegmentStream>, Status> {
        let req = request.into_inner();
        self.check(&req.group, req.target_node)?;
        if req.from_index > req.to_index {
            return Err(bad(format!("range {}..{} is reversed", req.from_index, req.to_index)));
        }
        // Only committed records are the same on every member: a stale member may still hold
        // records of an overwritten term. Refuse rather than serve past our commit point.
        let committed = self.raft.metrics().borrow_watched().local_committed.map(|l| l.index());
        if req.to_index > req.from_index && committed.is_none_or(|c| req.to_index - 1 > c) {
            return Err(Status::failed_precondition(format!(
                "records {}..{} are not all committed on node {} (committed through {committed:?}); ask another member",
                req.from_index, req.to_index, self.node
            )));
        }
        let log = self.log.clone();
        let ranges = (req.from_index..req.to_index).step_by(SEGMENT_READ_RECORDS as usize).map(move |from| {
            let to = (from + SEGMENT_READ_RECORDS).min(req.to_index);
            (from, to)
        });
        let output = futures::stream::iter(ranges)
            .then(move |(from, to)| {
                let log = log.clone();
                async move {
                    let records = tokio::task::spawn_blocking(move || log.read(from, to))
                        .await
                        .map_err(|e| Status::internal(format!("log reader task: {e}")))?
                        .map_err(|e| Status::internal(e.to_string()))?;
                    Ok(chunks(records))
                }
            })
            .map(|read: Result<Vec<pb::SegmentChunk>, Status>| match read {
                Ok(chunks) => futures::stream::iter(chunks.into_iter().map(Ok)).left_stream(),
                Err(e) => futures::stream::once(async move { Err(e) }).right_stream(),
            })
            .flatten();
        Ok(Response::new(Box::pin(output)))
    }
}

/// Splits records into chunks of at most [`SEGMENT_CHUNK_BYTES`] of payload each.
fn chunks(records: Vec<raft_log::Record>) -> Vec<pb::SegmentChunk> {
    let mut out = Vec::new();
    let mut current = pb::SegmentChunk { records: Vec::new() };
    let mut bytes = 0;
    for r in records {
        if !current.records.is_empty() && bytes + r.payload.len() > SEGMENT_CHUNK_BYTES {
            out.push(std::mem::replace(&mut current, pb::SegmentChunk { records: Vec::new() }));
            bytes = 0;
        }
        bytes += r.payload.len();
        current.records.push(pb::LogRecord { index: r.index, term: r.term, payload: r.payload });
    }
    if !current.records.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn record(index: u64, len: usize) -> raft_log::Record {
        raft_log::Record { index, term: 1, payload: Bytes::from(vec![0u8; len]) }
    }

    #[test]
    fn chunks_stay_under_the_byte_limit_and_keep_order() {
        let big = SEGMENT_CHUNK_BYTES / 3 + 1;
        let out = chunks((1..=7).map(|i| record(i, big)).collect());
        let sizes: Vec<usize> = out.iter().map(|c| c.records.len()).collect();
        assert_eq!(sizes, [2, 2, 2, 1]);
        let indexes: Vec<u64> = out.iter().flat_map(|c| c.records.iter().map(|r| r.index)).collect();
        assert_eq!(indexes, (1..=7).collect::<Vec<_>>());
        // A record larger than the limit travels alone.
        let out = chunks(vec![record(1, 1), record(2, SEGMENT_CHUNK_BYTES + 1), record(3, 1)]);
        assert_eq!(out.iter().map(|c| c.records.len()).collect::<Vec<_>>(), [1, 1, 1]);
        assert!(chunks(Vec::new()).is_empty());
    }
}
