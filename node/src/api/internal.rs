//! The internal adapter: the receiving side of node-to-node traffic —
//! openraft's RPCs, proposals forwarded to the leader, read-index requests,
//! joining, packages, and the scheduler's RPCs. Served to peers only.

use std::sync::{Arc, Mutex};

use floe_proto::internal::peer_server::Peer;
use floe_proto::internal::raft_server::Raft as RaftService;
use floe_proto::internal::scheduler_server::Scheduler as SchedulerService;
use floe_proto::internal::{
    Execution, GetPackageRequest, HelloRequest, HelloResponse, Package, Payload, PutPackageResponse, RaftFrame,
    ReadIndexRequest, ReadIndexResponse, RenewCertificateRequest, RenewCertificateResponse,
};
use floe_raft_store::{codec, Command, NodeId, TypeConfig};
use futures::StreamExt;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use tonic::{Request, Response, Status, Streaming};

use crate::error::into_status;
use crate::service::Service;

/// Both internal services over one shared [`Service`].
#[derive(Clone)]
pub struct InternalApi {
    pub service: Arc<Service>,
    /// Ends the long-lived streams, so that the server's graceful shutdown
    /// does not wait for them.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// How far the snapshot being received has come.
    pub snapshot_chunks: Arc<Mutex<SnapshotChunks>>,
}

/// The snapshot being received, and how many of its bytes have arrived.
///
/// openraft writes each chunk at the offset it names, seeking past the end
/// if asked: a chunk far beyond what has arrived would make the node fill
/// the gap with zeroes in memory. A leader sends chunks in order (and, to
/// retry, again from an earlier offset), so a chunk that would leave a gap
/// is refused before openraft sees it.
#[derive(Debug, Default)]
pub struct SnapshotChunks {
    receiving: Option<(String, u64)>,
}

impl SnapshotChunks {
    /// Checks a chunk of snapshot `id` at `offset`.
    pub fn admit(&self, id: &str, offset: u64) -> Result<(), String> {
        let received = match &self.receiving {
            Some((current, received)) if current == id => *received,
            _ => 0,
        };
        if offset > received {
            return Err(format!(
                "snapshot {id}: a chunk at offset {offset} would leave a gap ({received} bytes received)"
            ));
        }
        Ok(())
    }

    /// Records a chunk openraft took.
    pub fn taken(&mut self, id: &str, offset: u64, len: usize, done: bool) {
        let end = offset + len as u64;
        self.receiving = match self.receiving.take() {
            _ if done => None,
            Some((current, received)) if current == id => Some((current, received.max(end))),
            _ => Some((id.to_string(), end)),
        };
    }
}

fn decode<T: serde::de::DeserializeOwned>(payload: &Payload) -> Result<T, Status> {
    codec::decode(&payload.data).map_err(|e| Status::invalid_argument(format!("undecodable payload: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Response<Payload>, Status> {
    let data = codec::encode(value).map_err(Status::internal)?;
    Ok(Response::new(Payload { data }))
}

impl InternalApi {
    fn raft(&self) -> Result<&floe_raft_store::Raft, Status> {
        Ok(&self.service.node.cluster().map_err(into_status)?.raft)
    }
}

#[tonic::async_trait]
impl RaftService for InternalApi {
    type AppendEntriesStreamStream = futures::stream::BoxStream<'static, Result<RaftFrame, Status>>;

    /// Answers a leader's AppendEntries requests in order, as they arrive.
    async fn append_entries_stream(
        &self,
        request: Request<Streaming<RaftFrame>>,
    ) -> Result<Response<Self::AppendEntriesStreamStream>, Status> {
        let raft = self.raft()?.clone();
        let shutdown = self.shutdown.clone();
        let frames = request
            .into_inner()
            .take_until(async move { shutdown.cancelled().await });
        let answers = frames.then(move |frame| {
            let raft = raft.clone();
            async move {
                let frame = frame?;
                let rpc: AppendEntriesRequest<TypeConfig> = codec::decode(&frame.data)
                    .map_err(|e| Status::invalid_argument(format!("undecodable payload: {e}")))?;
                let answer = raft.append_entries(rpc).await;
                Ok(RaftFrame {
                    seq: frame.seq,
                    data: codec::encode(&answer).map_err(Status::internal)?,
                })
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: VoteRequest<NodeId> = decode(request.get_ref())?;
        encode(&self.raft()?.vote(rpc).await)
    }

    async fn install_snapshot(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request.get_ref())?;
        let (id, offset, len, done) = (rpc.meta.snapshot_id.clone(), rpc.offset, rpc.data.len(), rpc.done);
        self.snapshot_chunks
            .lock()
            .expect("snapshot chunks lock")
            .admit(&id, offset)
            .map_err(Status::invalid_argument)?;
        let answer = self.raft()?.install_snapshot(rpc).await;
        if answer.is_ok() {
            self.snapshot_chunks
                .lock()
                .expect("snapshot chunks lock")
                .taken(&id, offset, len, done);
        }
        encode(&answer)
    }
}

#[tonic::async_trait]
impl Peer for InternalApi {
    /// Applies a forwarded command if this node leads; FailedPrecondition
    /// (nothing written) otherwise, so the sender looks for the leader again.
    async fn propose(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let command: Command = decode(request.get_ref())?;
        let (index, result) = self
            .service
            .membership
            .propose_forwarded(command)
            .await
            .map_err(into_status)?;
        encode(&(index, result))
    }

    async fn read_index(&self, _request: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        match self.raft()?.get_read_log_id().await {
            Ok((read_log_id, _applied)) => Ok(Response::new(ReadIndexResponse {
                index: read_log_id.map(|id| id.index).unwrap_or(0),
            })),
            Err(e) => Err(Status::failed_precondition(format!("cannot serve a read index: {e}"))),
        }
    }

    async fn hello(&self, _request: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        Ok(Response::new(HelloResponse {
            node_id: self.service.node.id(),
            region: self.service.node.config.region.clone(),
            sandbox_mode: self.service.membership.sandbox_mode(),
            public_address: self.service.node.address.clone(),
            certificate_expires_ms: self.service.node.peer_tls().map(|tls| tls.expires_ms()).unwrap_or(0),
        }))
    }

    async fn join(
        &self,
        request: Request<floe_proto::v1::JoinRequest>,
    ) -> Result<Response<floe_proto::v1::JoinResponse>, Status> {
        let answer = self
            .service
            .membership
            .admit(request.into_inner())
            .await
            .map_err(into_status)?;
        Ok(Response::new(answer))
    }

    async fn renew_certificate(
        &self,
        request: Request<RenewCertificateRequest>,
    ) -> Result<Response<RenewCertificateResponse>, Status> {
        let caller = *request
            .extensions()
            .get::<crate::shared::PeerIdentity>()
            .ok_or_else(|| Status::permission_denied("not a member's connection"))?;
        let certificate = self
            .service
            .membership
            .renew_certificate(caller, &request.get_ref().certificate_request)
            .await
            .map_err(into_status)?;
        Ok(Response::new(RenewCertificateResponse { certificate }))
    }

    async fn put_package(&self, request: Request<Package>) -> Result<Response<PutPackageResponse>, Status> {
        let package = request.into_inner();
        self.service
            .packages
            .put_copy(&package.sha256, &package.data)
            .map_err(into_status)?;
        Ok(Response::new(PutPackageResponse {}))
    }

    async fn get_local_logs(
        &self,
        request: Request<floe_proto::v1::GetLogsRequest>,
    ) -> Result<Response<floe_proto::v1::GetLogsResponse>, Status> {
        let request = request.into_inner();
        let limit = if request.limit == 0 {
            1000
        } else {
            request.limit as usize
        };
        let records = self
            .service
            .logs
            .local(&request.function, request.since_ms, limit)
            .map_err(into_status)?;
        Ok(Response::new(floe_proto::v1::GetLogsResponse {
            records: records.into_iter().map(crate::api::grpc::into_log_record).collect(),
        }))
    }

    async fn add_node(
        &self,
        request: Request<floe_proto::v1::AddNodeRequest>,
    ) -> Result<Response<floe_proto::v1::AddNodeResponse>, Status> {
        let node_id = self
            .service
            .membership
            .promote(&request.into_inner().address)
            .await
            .map_err(into_status)?;
        Ok(Response::new(floe_proto::v1::AddNodeResponse { node_id }))
    }

    async fn remove_node(
        &self,
        request: Request<floe_proto::v1::RemoveNodeRequest>,
    ) -> Result<Response<floe_proto::v1::RemoveNodeResponse>, Status> {
        self.service
            .membership
            .remove_node(request.into_inner().node_id)
            .await
            .map_err(into_status)?;
        Ok(Response::new(floe_proto::v1::RemoveNodeResponse {}))
    }

    async fn get_package(&self, request: Request<GetPackageRequest>) -> Result<Response<Package>, Status> {
        let sha256 = request.into_inner().sha256;
        let data = self.service.packages.get_local(&sha256).map_err(into_status)?;
        Ok(Response::new(Package { sha256, data }))
    }
}

#[tonic::async_trait]
impl SchedulerService for InternalApi {
    async fn heartbeat(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let report: crate::wire::LoadReport = decode(request.get_ref())?;
        match self.service.scheduling.heartbeat_here(report) {
            Some(reply) => encode(&reply),
            None => Err(Status::failed_precondition("not the leader")),
        }
    }

    async fn grant(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let ask: crate::wire::GrantAsk = decode(request.get_ref())?;
        encode(&self.service.scheduling.grant_on_leader(&ask).await)
    }

    async fn shadow(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let shadow: crate::wire::ShadowGrant = decode(request.get_ref())?;
        self.service.scheduling.record_shadow(shadow).map_err(into_status)?;
        encode(&())
    }

    async fn release(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let release: crate::wire::Release = decode(request.get_ref())?;
        self.service.scheduling.release_here(&release);
        encode(&())
    }

    async fn load(&self, _request: Request<Payload>) -> Result<Response<Payload>, Status> {
        match self.service.scheduling.view_here() {
            Some(view) => encode(&view),
            None => Err(Status::failed_precondition("not the leader")),
        }
    }

    async fn execute(&self, request: Request<Execution>) -> Result<Response<Execution>, Status> {
        let execution = self
            .service
            .invocations
            .execute_forwarded(request.into_inner())
            .await
            .map_err(into_status)?;
        Ok(Response::new(execution))
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotChunks;

    #[test]
    fn snapshot_chunks_arrive_in_order_or_again_but_never_past_a_gap() {
        let mut chunks = SnapshotChunks::default();
        assert!(chunks.admit("s1", 0).is_ok());
        // The first chunk of a snapshot starts at 0; one far beyond is refused.
        let refusal = chunks.admit("s1", 1 << 40).unwrap_err();
        assert!(refusal.contains("would leave a gap"), "{refusal}");
        chunks.taken("s1", 0, 100, false);
        assert!(chunks.admit("s1", 100).is_ok());
        assert!(chunks.admit("s1", 50).is_ok(), "a retry resends from earlier");
        assert!(chunks.admit("s1", 101).is_err());
        // Another snapshot starts over.
        assert!(chunks.admit("s2", 100).is_err());
        chunks.taken("s2", 0, 10, false);
        assert!(chunks.admit("s2", 10).is_ok());
        assert!(chunks.admit("s1", 100).is_err());
        // Once done, nothing is being received.
        chunks.taken("s2", 10, 10, true);
        assert!(chunks.admit("s2", 20).is_err());
        assert!(chunks.admit("s3", 0).is_ok());
    }
}
