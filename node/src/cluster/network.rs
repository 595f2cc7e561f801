//! openraft's network over tonic: each Raft RPC carries openraft's own types
//! encoded with `floe_raft_store::codec` in an opaque `Payload`.
//!
//! AppendEntries — every write's replication and every heartbeat — goes over
//! one long-lived stream per target (`append_stream.rs`); votes and snapshots
//! are unary calls.

use std::sync::Arc;

use floe_proto::internal::Payload;
use floe_raft_store::{codec, NodeId, TypeConfig};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::{de::DeserializeOwned, Serialize};

use super::append_stream::AppendStreams;
use super::peers::Peers;

/// Builds one [`Connection`] per target node.
#[derive(Clone)]
pub struct Network {
    pub peers: Arc<Peers>,
    /// Shared by every connection to a target: openraft makes one for
    /// replication and a fresh one for each leadership check.
    pub streams: Arc<AppendStreams>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        Connection {
            target,
            address: node.addr.clone(),
            peers: self.peers.clone(),
            streams: self.streams.clone(),
        }
    }
}

/// The sending side of Raft RPCs to one node.
pub struct Connection {
    target: NodeId,
    address: String,
    peers: Arc<Peers>,
    streams: Arc<AppendStreams>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CodecError(String);

/// Which of openraft's unary RPCs to call.
enum Rpc {
    Vote,
    InstallSnapshot,
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = codec::encode(request).map_err(|e| RPCError::Network(NetworkError::new(&CodecError(e))))?;
        let mut client = self
            .peers
            .raft(&self.address)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut request = tonic::Request::new(Payload { data });
        request.set_timeout(option.hard_ttl());
        let reply = match rpc {
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        }
        .map_err(|status| RPCError::Unreachable(Unreachable::new(&status)))?;
        self.answer(&reply.into_inner().data)
    }

    /// Decodes the target's answer: openraft's response, or its error.
    #[allow(clippy::result_large_err)] // openraft's error type, as its network trait returns it
    fn answer<Resp, E>(&self, data: &[u8]) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::decode(data).map_err(|e| RPCError::Network(NetworkError::new(&CodecError(e))))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let data = codec::encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&CodecError(e))))?;
        let answer = self
            .streams
            .exchange(&self.peers, &self.address, data, option.hard_ttl())
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        self.answer(&answer)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}
