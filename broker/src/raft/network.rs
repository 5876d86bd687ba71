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

use super::codec::{decode, encode};
use super::{NodeId, NodeInfo, TypeConfig};

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
        let client = channel(&node.raft_addr).map(|c| RaftServiceClient::new(c).max_decoding_message_size(usize::MAX));
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
            // An encoding failure ends the outgoing stream; the peer's answers then stop
            // short and openraft retries.
            let requests = input.enumerate().filter_map(move |(seq, req)| {
                let group = group.clone();
                async move {
                    match encode(&req) {
                        Ok(payload) => {
                            Some(pb::AppendRequest { group, target_node: target.0, seq: seq as u64, payload })
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot encode append request");
                            None
                        }
                    }
                }
            });
            let response = client.append(requests).await.map_err(status_err)?;
            let output = response.into_inner().map(|item| {
                let resp = item.map_err(status_err)?;
                decode::<StreamAppendResult<TypeConfig>>(&resp.payload, "append response").map_err(network_err)
            });
            Ok(Box::pin(output) as BoxStream<'s, _>)
        })
    }
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
    type SnapshotData = std::io::Cursor<Vec<u8>>;

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Self::SnapshotData>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client()?;
        let meta = encode(&(vote, snapshot.meta.clone())).map_err(network_err)?;
        let data = bytes::Bytes::from(snapshot.snapshot.into_inner());
        let mut chunks = Vec::new();
        let mut offset = 0usize;
        loop {
            let end = (offset + SNAPSHOT_CHUNK).min(data.len());
            let done = end == data.len();
            chunks.push(pb::SnapshotChunk {
                group: self.group.clone(),
                target_node: self.target.0,
                meta: if offset == 0 { meta.clone() } else { bytes::Bytes::new() },
                offset: offset as u64,
                data: data.slice(offset..end),
                done,
            });
            if done {
                break;
            }
            offset = end;
        }
        let resp = client.install_snapshot(futures::stream::iter(chunks)).await.map_err(status_err)?.into_inner();
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
    let mut client = RaftServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    let request =
        pb::ReadSegmentRequest { group: group.to_string(), target_node: target.0, from_index: from, to_index: to };
    Ok(client.read_segment(request).await?.into_inner())
}
