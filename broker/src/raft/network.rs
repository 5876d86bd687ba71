//! The client side of Raft RPC: openraft's network traits over `raftmq.raft.v1` gRPC, and
//! [`read_segment`] (copying retained log ranges, outside openraft). Channels connect
//! lazily and reconnect by themselves; an unreachable peer is reported as `Unreachable` so
//! openraft backs off.

use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{Backoff, NetBackoff, NetSnapshot, NetStreamAppend, NetTransferLeader, NetVote, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, SnapshotResponse, StreamAppendResult, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, OptionalSend, RaftNetworkFactory};
use raftmq_proto::raft::v1 as pb;
use raftmq_proto::raft::v1::raft_service_client::RaftServiceClient;
use tonic::transport::{Channel, Endpoint};

use super::codec::{APPEND_PIECE_BYTES, MAX_RAFT_MESSAGE, decode, encode, encoded_len};
use super::state::SnapshotBytes;
use super::{Entry, LogId, NodeId, NodeInfo, TypeConfig};

/// Bytes of snapshot data per chunk.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Makes connections to the other members of one group.
#[derive(Debug, Clone)]
pub struct Network {
    group: String,
}

impl Network {
    /// A network for the members of `group`.
    pub fn new(group: &str) -> Self {
        Self { group: group.to_string() }
    }
}

/// A connection to one member.
#[derive(Debug)]
pub struct Connection {
    group: String,
    target: NodeId,
    client: Result<RaftServiceClient<Channel>, String>,
}

/// A lazily connected channel to a member's Raft service at `addr` (`host:port`).
pub(crate) fn channel(addr: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|e| format!("bad address {addr:?}: {e}"))?;
    Ok(endpoint
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect_lazy())
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Connection {
        let client = channel(&node.raft_addr).map(|c| {
            RaftServiceClient::new(c)
                .max_decoding_message_size(MAX_RAFT_MESSAGE)
                .max_encoding_message_size(MAX_RAFT_MESSAGE)
        });
        Connection { group: self.group.clone(), target, client }
    }
}

fn unreachable<E: std::fmt::Display>(e: E) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&AnyError::error(e.to_string())))
}

fn network_err<E: std::fmt::Display>(e: E) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&AnyError::error(e.to_string())))
}

/// A failed call: connection trouble means the peer is unreachable.
fn status_err(s: tonic::Status) -> RPCError<TypeConfig> {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => unreachable(s),
        _ => network_err(s),
    }
}

impl Connection {
    fn client(&self) -> Result<RaftServiceClient<Channel>, RPCError<TypeConfig>> {
        self.client.clone().map_err(unreachable)
    }
}

impl NetStreamAppend<TypeConfig> for Connection {
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let group = self.group.clone();
        let target = self.target;
        Box::pin(async move {
            // Wait for the first request before connecting: openraft's request stream
            // sleeps out its backoff before yielding it, and a peer whose port refuses
            // connections would otherwise be retried in a tight loop (a busy core and a
            // flood of warnings on the leader for as long as a follower is down).
            let mut input = input.peekable();
            if std::pin::Pin::new(&mut input).peek().await.is_none() {
                return Ok(Box::pin(futures::stream::empty()) as BoxStream<'s, _>);
            }
            let mut client = self.client()?;
            // One openraft request may go out as several pieces; `sizes` tells the answer
            // side how many answers make up each request's one. An encoding failure ends
            // the outgoing stream; the peer's answers then stop short and openraft retries.
            let (sizes_tx, sizes_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
            let requests = input
                .map(move |req| match split_append(req) {
                    Ok(pieces) => {
                        let _ = sizes_tx.send(pieces.len());
                        Some(pieces)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode append request");
                        None
                    }
                })
                .take_while(|pieces| futures::future::ready(pieces.is_some()))
                .flat_map(|pieces| futures::stream::iter(pieces.unwrap_or_default()))
                .enumerate()
                .map(move |(seq, payload)| pb::AppendRequest {
                    group: group.clone(),
                    target_node: target.0,
                    seq: seq as u64,
                    payload,
                });
            let response = client.append(requests).await.map_err(status_err)?;
            let output =
                futures::stream::unfold((response.into_inner(), sizes_rx), |(mut answers, mut sizes)| async move {
                    let pieces = sizes.recv().await?;
                    let joined = join_answers(&mut answers, pieces).await?;
                    Some((joined, (answers, sizes)))
                });
            Ok(Box::pin(output) as BoxStream<'s, _>)
        })
    }
}

/// Encodes an append request as one payload, or, when that would pass
/// [`APPEND_PIECE_BYTES`], as several requests of consecutive entries (each piece's
/// `prev_log_id` the last entry of the one before), so that no message on the Raft port
/// passes [`MAX_RAFT_MESSAGE`](super::codec::MAX_RAFT_MESSAGE) however far a follower lags.
pub(crate) fn split_append(req: AppendEntriesRequest<TypeConfig>) -> Result<Vec<bytes::Bytes>, String> {
    if req.entries.len() <= 1 || encoded_len(&req)? <= APPEND_PIECE_BYTES {
        return Ok(vec![encode(&req)?]);
    }
    let AppendEntriesRequest { vote, prev_log_id, entries, leader_commit } = req;
    let mut pieces = Vec::new();
    let mut prev = prev_log_id;
    let mut piece: Vec<Entry> = Vec::new();
    let mut bytes = 0;
    let mut flush = |piece: &mut Vec<Entry>, prev: &mut Option<LogId>| -> Result<(), String> {
        let last = piece.last().map(|e| e.log_id);
        let entries = std::mem::take(piece);
        pieces.push(encode(&AppendEntriesRequest::<TypeConfig> { vote, prev_log_id: *prev, entries, leader_commit })?);
        *prev = last;
        Ok(())
    };
    for entry in entries {
        let len = encoded_len(&entry)?;
        if !piece.is_empty() && bytes + len > APPEND_PIECE_BYTES {
            flush(&mut piece, &mut prev)?;
            bytes = 0;
        }
        bytes += len;
        piece.push(entry);
    }
    flush(&mut piece, &mut prev)?;
    Ok(pieces)
}

/// Reads the `pieces` answers to one split request and makes openraft's one answer of
/// them: the first refusal, else the last piece's (its match is the request's last
/// entry). `None` when the stream ended.
async fn join_answers(
    answers: &mut tonic::Streaming<pb::AppendResponse>,
    pieces: usize,
) -> Option<Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> {
    let mut joined = None;
    for _ in 0..pieces {
        let answer = match answers.next().await? {
            Ok(a) => a,
            Err(status) => return Some(Err(status_err(status))),
        };
        let result = match decode::<StreamAppendResult<TypeConfig>>(&answer.payload, "append response") {
            Ok(r) => r,
            Err(e) => return Some(Err(network_err(e))),
        };
        if !matches!(joined, Some(Err(_))) {
            joined = Some(result);
        }
    }
    joined.map(Ok)
}

impl Connection {
    /// A vote or (with `pre_vote`) a Pre-Vote request over the `Vote` RPC.
    async fn send_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
        pre_vote: bool,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let payload = encode(&rpc).map_err(network_err)?;
        let mut req = tonic::Request::new(pb::VoteRequest {
            group: self.group.clone(),
            target_node: self.target.0,
            payload,
            pre_vote,
        });
        req.set_timeout(option.hard_ttl());
        let resp = client.vote(req).await.map_err(status_err)?.into_inner();
        decode(&resp.payload, if pre_vote { "pre-vote response" } else { "vote response" }).map_err(network_err)
    }
}

impl NetVote<TypeConfig> for Connection {
    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.send_vote(rpc, option, false).await
    }

    /// A real Pre-Vote (openraft would count an unimplemented one as granted): a follower
    /// with a shorter log then cannot bump the term and split the vote of the one that can win.
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.send_vote(rpc, option, true).await
    }
}

impl NetSnapshot<TypeConfig> for Connection {
    type SnapshotData = SnapshotBytes;

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Self::SnapshotData>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client()?;
        let meta = encode(&(vote, snapshot.meta.clone())).map_err(network_err)?;
        let (group, target) = (self.group.clone(), self.target.0);
        let data = snapshot.snapshot;
        // Chunks are read from the snapshot's file as the stream is sent. A failed read
        // ends the stream before its last chunk, and the receiver refuses it.
        let chunks = futures::stream::unfold(Some(0u64), move |offset| {
            let (data, meta, group) = (data.clone(), meta.clone(), group.clone());
            async move {
                let offset = offset?;
                let reader = data.clone();
                let bytes = match tokio::task::spawn_blocking(move || reader.read_at(offset, SNAPSHOT_CHUNK)).await {
                    Ok(Ok(bytes)) => bytes,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, offset, "cannot read the snapshot being sent");
                        return None;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the snapshot reader task failed");
                        return None;
                    }
                };
                let end = offset + bytes.len() as u64;
                let done = end >= data.len();
                let chunk = pb::SnapshotChunk {
                    group,
                    target_node: target,
                    meta: if offset == 0 { meta } else { bytes::Bytes::new() },
                    offset,
                    data: bytes.into(),
                    done,
                };
                Some((chunk, (!done).then_some(end)))
            }
        });
        let resp = client.install_snapshot(chunks).await.map_err(status_err)?.into_inner();
        Ok(decode(&resp.payload, "snapshot response").map_err(network_err)?)
    }
}

impl NetTransferLeader<TypeConfig> for Connection {
    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let payload = encode(&req).map_err(network_err)?;
        let resp = client
            .transfer_leader(pb::TransferLeaderRequest {
                group: self.group.clone(),
                target_node: self.target.0,
                payload,
            })
            .await
            .map_err(status_err)?
            .into_inner();
        decode(&resp.payload, "transfer-leader response").map_err(network_err)
    }
}

impl NetBackoff<TypeConfig> for Connection {
    fn backoff(&self) -> Option<Backoff> {
        Some(Backoff::new(std::iter::repeat(Duration::from_millis(100))))
    }
}

/// Opens a `ReadSegment` stream: the records `from..to` that member `target` (of `group`, at
/// `addr`) retains, in order, in chunks. A member that lacks the start of the range skips
/// it; one that lacks a record inside it, or is still copying it in, ends the stream with
/// an error.
pub(crate) async fn read_segment(
    addr: &str,
    group: &str,
    target: NodeId,
    from: u64,
    to: u64,
) -> Result<tonic::Streaming<pb::SegmentChunk>, tonic::Status> {
    let channel = channel(addr).map_err(tonic::Status::invalid_argument)?;
    let mut client = RaftServiceClient::new(channel).max_decoding_message_size(MAX_RAFT_MESSAGE);
    let request =
        pb::ReadSegmentRequest { group: group.to_string(), target_node: target.0, from_index: from, to_index: to };
    Ok(client.read_segment(request).await?.into_inner())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use openraft::EntryPayload;
    use openraft::entry::RaftEntry;
    use raftmq_machine::types::{StoredMessage, TopicName};
    use raftmq_machine::{Command, LogIndex, MessageBatch, Millis, QueueId};

    use super::*;

    fn entry(index: u64, body_bytes: usize) -> Entry {
        let message = StoredMessage {
            topic: TopicName::new("t").expect("valid"),
            queue: QueueId(0),
            topic_epoch: LogIndex(1),
            deliver_at: None,
            transactional: false,
            message_id: format!("m{index}"),
            tag: None,
            keys: Vec::new(),
            message_group: None,
            properties: BTreeMap::new(),
            born: Millis(0),
            born_host: String::new(),
            body: Bytes::from(vec![index as u8; body_bytes]),
            body_gzip: false,
        };
        let messages = MessageBatch::encode(&[message]).expect("encodes");
        let log_id = LogId::new(openraft::impls::leader_id_adv::LeaderId { term: 2, node_id: NodeId(1) }, index);
        Entry::new(log_id, EntryPayload::Normal(Command::Send { now: Millis(0), messages, proposal: None }))
    }

    fn request(entries: Vec<Entry>) -> AppendEntriesRequest<TypeConfig> {
        let leader = openraft::impls::leader_id_adv::LeaderId { term: 2, node_id: NodeId(1) };
        AppendEntriesRequest {
            vote: openraft::impls::Vote::new_committed(2, NodeId(1)),
            prev_log_id: Some(LogId::new(leader, 9)),
            entries,
            leader_commit: Some(LogId::new(leader, 8)),
        }
    }

    #[test]
    fn a_small_request_goes_whole() -> Result<(), String> {
        let req = request((10..20).map(|i| entry(i, 1000)).collect());
        let pieces = split_append(req.clone())?;
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0], encode(&req)?);
        Ok(())
    }

    #[test]
    fn a_large_request_goes_in_consecutive_pieces_under_the_limit() -> Result<(), String> {
        // 40 entries of 3 MiB (120 MiB, past the Raft port's limit as one message) and one
        // entry larger than a piece, which goes alone.
        let mut entries: Vec<Entry> = (10..50).map(|i| entry(i, 3 << 20)).collect();
        entries.push(entry(50, APPEND_PIECE_BYTES + (1 << 20)));
        entries.push(entry(51, 10));
        let req = request(entries.clone());
        let pieces = split_append(req.clone())?;
        assert!(pieces.len() >= 8, "{} pieces", pieces.len());
        let mut prev = req.prev_log_id;
        let mut seen = Vec::new();
        for bytes in &pieces {
            assert!(bytes.len() <= MAX_RAFT_MESSAGE, "a piece of {} bytes", bytes.len());
            let piece: AppendEntriesRequest<TypeConfig> = decode(bytes, "piece")?;
            assert!(!piece.entries.is_empty());
            assert!(bytes.len() <= APPEND_PIECE_BYTES || piece.entries.len() == 1, "an oversized piece of many");
            assert_eq!(piece.prev_log_id, prev, "pieces are not consecutive");
            assert_eq!((piece.vote, piece.leader_commit), (req.vote, req.leader_commit));
            prev = piece.entries.last().map(|e| e.log_id);
            seen.extend(piece.entries);
        }
        assert_eq!(seen, entries, "the pieces hold the entries in order, each once");
        Ok(())
    }
}
