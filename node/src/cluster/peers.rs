//! The node-to-node client: one gRPC channel per peer address, created
//! lazily and reused, over mutual TLS (`transport.rs`), and one typed method
//! per internal RPC, with its deadline. Callers send and receive floe's own types (commands, grants,
//! reports); the encoding (bincode in a `Payload`, as openraft's messages)
//! and the deadlines live here only. Errors stay `tonic::Status`, because
//! what a failure means (retry, unreachable, outcome unknown) depends on
//! the call, and its caller decides.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use floe_proto::internal::peer_client::PeerClient;
use floe_proto::internal::raft_client::RaftClient;
use floe_proto::internal::scheduler_client::SchedulerClient;
use floe_proto::internal::{
    Execution, GetPackageRequest, HelloRequest, HelloResponse, Package, Payload, ReadIndexRequest,
    RenewCertificateRequest,
};
use floe_proto::v1::cluster_client::ClusterClient;
use floe_proto::v1::{
    AddNodeRequest, GetLogsRequest, InviteRequest, JoinRequest, JoinResponse, LogRecord, RemoveNodeRequest,
};
use floe_proto::MAX_MESSAGE_BYTES;
use floe_raft_store::{codec, Command, CommandResult, NodeId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::wire::{GrantAsk, GrantReply, HeartbeatReply, LoadReport, LoadView, Release, ShadowGrant};

/// How long a call to the leader's scheduler may wait for its answer (grant,
/// shadow, release, load; a heartbeat waits at most this long too).
pub const LEADER_RPC_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a question to a peer for `floe cluster status` or logs may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// A pool of channels keyed by `host:port`.
#[derive(Default)]
pub struct Peers {
    channels: Mutex<HashMap<String, Channel>>,
    /// This node's TLS as a client, once it has a certificate.
    tls: OnceLock<Arc<rustls::ClientConfig>>,
}

impl Peers {
    /// Peers reached with `tls` (this node's certificate, the CA, the pins).
    pub fn with_tls(tls: Arc<rustls::ClientConfig>) -> Peers {
        let peers = Peers::default();
        peers.set_tls(tls);
        peers
    }

    /// Once this node has its certificate: channels are made from then on.
    pub fn set_tls(&self, tls: Arc<rustls::ClientConfig>) {
        let _ = self.tls.set(tls);
    }

    pub fn channel(&self, address: &str) -> Result<Channel, tonic::Status> {
        let mut channels = self.channels.lock().expect("peers lock");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let tls = self
            .tls
            .get()
            .ok_or_else(|| tonic::Status::unavailable("this node has no peer certificate yet (it has not joined)"))?;
        // The scheme only names HTTP/2 to tonic: the connector does TLS.
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| tonic::Status::invalid_argument(format!("bad peer address {address:?}: {e}")))?
            // A peer cut off mid-call is noticed in seconds, not when TCP gives up.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true)
            // h2 counts every answer that arrives for a call it abandoned
            // (a timeout during a fault) over the connection's whole life,
            // and closes the connection at 1,024 by default, failing every
            // call on it — a guard against hostile servers that, between
            // members of one cluster, only turns old faults into new ones.
            .http2_max_local_error_reset_streams(None);
        let channel = endpoint.connect_with_connector_lazy(super::transport::connector(tls.clone()));
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// openraft's service, for the append stream (`append_stream.rs`), which
    /// drives the stream itself.
    pub fn raft(&self, address: &str) -> Result<RaftClient<Channel>, tonic::Status> {
        Ok(RaftClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    fn peer(&self, address: &str) -> Result<PeerClient<Channel>, tonic::Status> {
        Ok(PeerClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    fn scheduler(&self, address: &str) -> Result<SchedulerClient<Channel>, tonic::Status> {
        Ok(SchedulerClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// One `Scheduler` call: `message` encoded in a `Payload`, the answer decoded.
    async fn scheduler_call<M, A, F, Fut>(
        &self,
        address: &str,
        message: &M,
        deadline: Duration,
        rpc: F,
    ) -> Result<A, Status>
    where
        M: Serialize,
        A: DeserializeOwned,
        F: FnOnce(SchedulerClient<Channel>, Request<Payload>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Payload>, Status>>,
    {
        let data = codec::encode(message).map_err(Status::internal)?;
        let mut request = Request::new(Payload { data });
        request.set_timeout(deadline);
        let reply = rpc(self.scheduler(address)?, request).await?;
        decode_from(address, &reply.into_inner().data)
    }

    // The leader's scheduler.

    pub async fn grant(&self, leader: &str, ask: &GrantAsk) -> Result<GrantReply, Status> {
        self.scheduler_call(
            leader,
            ask,
            LEADER_RPC_TIMEOUT,
            |mut c, r| async move { c.grant(r).await },
        )
        .await
    }

    /// Records a grant on another voter before anyone may use it.
    pub async fn shadow(&self, voter: &str, shadow: &ShadowGrant) -> Result<(), Status> {
        self.scheduler_call(voter, shadow, LEADER_RPC_TIMEOUT, |mut c, r| async move {
            c.shadow(r).await
        })
        .await
    }

    pub async fn release(&self, leader: &str, release: &Release) -> Result<(), Status> {
        self.scheduler_call(leader, release, LEADER_RPC_TIMEOUT, |mut c, r| async move {
            c.release(r).await
        })
        .await
    }

    /// Sends this node's load; `deadline` is at most [`LEADER_RPC_TIMEOUT`].
    pub async fn heartbeat(
        &self,
        leader: &str,
        report: &LoadReport,
        deadline: Duration,
    ) -> Result<HeartbeatReply, Status> {
        let deadline = deadline.min(LEADER_RPC_TIMEOUT);
        self.scheduler_call(leader, report, deadline, |mut c, r| async move { c.heartbeat(r).await })
            .await
    }

    /// The leader's load view.
    pub async fn load(&self, leader: &str) -> Result<LoadView, Status> {
        // The request carries nothing: `()` encodes to no bytes.
        self.scheduler_call(
            leader,
            &(),
            LEADER_RPC_TIMEOUT,
            |mut c, r| async move { c.load(r).await },
        )
        .await
    }

    /// Runs an invocation on the node its grant names; `deadline` is what
    /// the invocation may take at most (lease, timeout, slack).
    pub async fn execute(&self, node: &str, execution: Execution, deadline: Duration) -> Result<Execution, Status> {
        let mut request = Request::new(execution);
        request.set_timeout(deadline);
        Ok(self.scheduler(node)?.execute(request).await?.into_inner())
    }

    // Any member.

    /// Proposes `command` on the leader: the entry's index and the result.
    pub async fn propose(&self, leader: &str, command: &Command) -> Result<(u64, CommandResult), Status> {
        let data = codec::encode(command).map_err(Status::internal)?;
        let reply = self.peer(leader)?.propose(Payload { data }).await?;
        decode_from(leader, &reply.into_inner().data)
    }

    /// The leader's commit index, confirmed by a majority (a read barrier).
    pub async fn read_index(&self, leader: &str) -> Result<u64, Status> {
        Ok(self
            .peer(leader)?
            .read_index(ReadIndexRequest {})
            .await?
            .into_inner()
            .index)
    }

    /// Who the node at `address` is (id, region, sandbox mode).
    pub async fn hello(&self, address: &str) -> Result<HelloResponse, Status> {
        let mut request = Request::new(HelloRequest {});
        request.set_timeout(QUERY_TIMEOUT);
        Ok(self.peer(address)?.hello(request).await?.into_inner())
    }

    /// Asks a member (which forwards to its leader) to make the registered
    /// node at peer address `new_node` a voter.
    pub async fn add_node(&self, member: &str, new_node: &str) -> Result<NodeId, Status> {
        let request = AddNodeRequest {
            address: new_node.to_string(),
        };
        Ok(self.peer(member)?.add_node(request).await?.into_inner().node_id)
    }

    /// Forwards a join to the leader.
    pub async fn join(&self, leader: &str, request: JoinRequest) -> Result<JoinResponse, Status> {
        let mut request = Request::new(request);
        request.set_timeout(QUERY_TIMEOUT * 5);
        Ok(self.peer(leader)?.join(request).await?.into_inner())
    }

    /// A new certificate for this node's key, from the leader.
    pub async fn renew_certificate(&self, leader: &str, certificate_request: Vec<u8>) -> Result<Vec<u8>, Status> {
        let mut request = Request::new(RenewCertificateRequest { certificate_request });
        request.set_timeout(QUERY_TIMEOUT);
        Ok(self
            .peer(leader)?
            .renew_certificate(request)
            .await?
            .into_inner()
            .certificate)
    }

    pub async fn remove_node(&self, leader: &str, node_id: NodeId) -> Result<(), Status> {
        self.peer(leader)?.remove_node(RemoveNodeRequest { node_id }).await?;
        Ok(())
    }

    pub async fn put_package(&self, address: &str, sha256: String, data: Vec<u8>) -> Result<(), Status> {
        self.peer(address)?.put_package(Package { sha256, data }).await?;
        Ok(())
    }

    /// The zip with this SHA-256, as the peer holds it (the caller checks it).
    pub async fn get_package(&self, address: &str, sha256: &str) -> Result<Vec<u8>, Status> {
        let request = GetPackageRequest {
            sha256: sha256.to_string(),
        };
        Ok(self.peer(address)?.get_package(request).await?.into_inner().data)
    }

    /// The log records a peer holds for a function.
    pub async fn local_logs(&self, address: &str, request: GetLogsRequest) -> Result<Vec<LogRecord>, Status> {
        let mut request = Request::new(request);
        request.set_timeout(QUERY_TIMEOUT);
        Ok(self.peer(address)?.get_local_logs(request).await?.into_inner().records)
    }
}

// The only calls to another node's public listener: a node that has no
// certificate yet cannot use the peer plane, so it joins there.

/// A one-off plain channel to a node's public gRPC address.
async fn public_cluster(address: &str) -> Result<ClusterClient<Channel>, Status> {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| Status::invalid_argument(format!("bad address {address:?}: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("cannot reach {address}: {e}")))?;
    Ok(ClusterClient::new(channel))
}

/// Asks the member at public address `member` to admit this node.
pub async fn join_through(member: &str, request: JoinRequest) -> Result<JoinResponse, Status> {
    let mut request = Request::new(request);
    request.set_timeout(QUERY_TIMEOUT * 5);
    Ok(public_cluster(member).await?.join(request).await?.into_inner())
}

/// Invites the waiting node at public address `node` to join through
/// `through` with `token`; answers its new id once it joined.
pub async fn invite(node: &str, token: String, through: Vec<String>) -> Result<NodeId, Status> {
    let mut request = Request::new(InviteRequest { token, join: through });
    request.set_timeout(Duration::from_secs(90));
    Ok(public_cluster(node).await?.invite(request).await?.into_inner().node_id)
}

fn decode_from<T: DeserializeOwned>(address: &str, data: &[u8]) -> Result<T, Status> {
    codec::decode(data).map_err(|e| Status::internal(format!("undecodable answer from {address}: {e}")))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use floe_proto::internal::scheduler_server::{Scheduler, SchedulerServer};
    use floe_proto::internal::{Execution, Payload};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tonic::{Request, Response, Status};

    use super::Peers;

    /// A peer that answers at once, and runs `Execute` for 300 ms.
    struct Quick;

    #[tonic::async_trait]
    impl Scheduler for Quick {
        async fn heartbeat(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
            Ok(Response::new(Payload::default()))
        }
        async fn grant(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
            Ok(Response::new(Payload::default()))
        }
        async fn release(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
            Ok(Response::new(Payload::default()))
        }
        async fn load(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
            Ok(Response::new(Payload::default()))
        }
        async fn execute(&self, _: Request<Execution>) -> Result<Response<Execution>, Status> {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(Response::new(Execution::default()))
        }
        async fn shadow(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
            Ok(Response::new(Payload::default()))
        }
    }

    /// A TCP proxy whose answers (server to client) can be held back, as a
    /// link cut in one direction holds them until it heals.
    async fn proxy(server: std::net::SocketAddr, hold: Arc<AtomicBool>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = tokio::net::TcpStream::connect(server).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = upstream.into_split();
                tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
                let hold = hold.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(n) = server_read.read(&mut buffer).await {
                        while hold.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        if n == 0 || client_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        address
    }

    /// Calls abandoned midway (timeouts while a link is cut) leave a peer
    /// connection whole once their answers arrive. h2 counts each answer to
    /// a call it reset and forgot, over the connection's whole life, and by
    /// default closes the connection at 1,024 — failing every call then on
    /// it. Between members that count only grows with faults, so peer
    /// channels do not limit it.
    #[tokio::test(flavor = "multi_thread")]
    async fn answers_to_abandoned_calls_do_not_close_a_peer_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let (server_tls, client_tls, pins) = crate::cluster::tls::two_members();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SchedulerServer::new(Quick))
                .serve_with_incoming(crate::cluster::transport::accept(
                    listener,
                    server_tls,
                    pins,
                    tokio_util::sync::CancellationToken::new(),
                )),
        );
        let hold = Arc::new(AtomicBool::new(false));
        let address = proxy(server, hold.clone()).await.to_string();
        let peers = Peers::with_tls(client_tls);
        peers
            .scheduler(&address)
            .unwrap()
            .shadow(Payload::default())
            .await
            .unwrap();
        // 1,200 calls time out while their answers are held back.
        hold.store(true, Ordering::SeqCst);
        for _ in 0..6 {
            let calls = (0..200).map(|_| {
                let mut client = peers.scheduler(&address).unwrap();
                async move {
                    let mut request = Request::new(Payload::default());
                    request.set_timeout(Duration::from_millis(50));
                    client.shadow(request).await
                }
            });
            for result in futures::future::join_all(calls).await {
                assert!(result.is_err(), "held back, so timed out");
            }
        }
        // A call in flight when the held answers arrive.
        let mut client = peers.scheduler(&address).unwrap();
        let in_flight = tokio::spawn(async move { client.execute(Execution::default()).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        hold.store(false, Ordering::SeqCst);
        in_flight
            .await
            .unwrap()
            .expect("the connection stays up after the abandoned calls' answers arrive");
    }
}
