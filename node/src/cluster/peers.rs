//! gRPC channels to other nodes, one per address, created lazily and reused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use floe_proto::internal::peer_client::PeerClient;
use floe_proto::internal::raft_client::RaftClient;
use floe_proto::internal::scheduler_client::SchedulerClient;
use floe_proto::MAX_MESSAGE_BYTES;
use tonic::transport::{Channel, Endpoint};

/// How long a connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A pool of channels keyed by `host:port`.
#[derive(Default)]
pub struct Peers {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Peers {
    pub fn channel(&self, address: &str) -> Result<Channel, tonic::Status> {
        let mut channels = self.channels.lock().expect("peers lock");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| tonic::Status::invalid_argument(format!("bad peer address {address:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
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
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    pub fn raft(&self, address: &str) -> Result<RaftClient<Channel>, tonic::Status> {
        Ok(RaftClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub fn peer(&self, address: &str) -> Result<PeerClient<Channel>, tonic::Status> {
        Ok(PeerClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub fn scheduler(&self, address: &str) -> Result<SchedulerClient<Channel>, tonic::Status> {
        Ok(SchedulerClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
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
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SchedulerServer::new(Quick))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let hold = Arc::new(AtomicBool::new(false));
        let address = proxy(server, hold.clone()).await.to_string();
        let peers = Peers::default();
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
