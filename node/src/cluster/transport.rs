//! The peer plane's transport: mutual TLS under the node-to-node gRPC.
//!
//! The listener side accepts TCP connections, completes each TLS handshake
//! within [`HANDSHAKE_TIMEOUT`] (at most [`MAX_HANDSHAKES`] at once, so a
//! stranger who opens connections and sends nothing ties up little), and
//! hands tonic only connections whose peer presented a pinned member's
//! certificate, tagged with that member's identity ([`PeerIdentity`]).
//! [`check_member`] checks that identity again on every request, so a node
//! removed while connected is refused from its next call on.
//!
//! The client side is a connector for tonic's channels: TCP (no Nagle), then
//! TLS to a peer that must itself be a pinned member.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use super::tls::{Pins, PEER_SERVER_NAME};
use crate::shared::PeerIdentity;

/// How long a connection may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once; further connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 64;
/// How long a connection attempt to a peer may take, TLS included.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An accepted, authenticated peer connection.
pub struct PeerStream {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerIdentity,
}

impl tonic::transport::server::Connected for PeerStream {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.peer
    }
}

impl tokio::io::AsyncRead for PeerStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for PeerStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The authenticated connections of `listener`, until `shutdown`, each
/// with the member `pins` say its key is.
pub fn accept(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    pins: Pins,
    shutdown: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<Result<PeerStream, std::io::Error>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(MAX_HANDSHAKES);
    let acceptor = TlsAcceptor::from(config);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                permit = handshakes.clone().acquire_owned() => permit.expect("never closed"),
                _ = shutdown.cancelled() => return,
            };
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors, say: wait rather than spin.
                        tracing::warn!(%error, "peer listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, sender, pins) = (acceptor.clone(), sender.clone(), pins.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%remote, %error, "peer listener: TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "peer listener: TLS handshake timed out");
                        return;
                    }
                };
                // The verifier accepted the certificate, so its key is a member's.
                let Some(peer) = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|certificate| pins.check(certificate).ok())
                    .map(|(node, pin)| PeerIdentity { node, pin })
                else {
                    return;
                };
                let _ = sender.send(Ok(PeerStream { stream, peer })).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// An interceptor for the peer services: the caller's certificate must still
/// name a member with that key (a removed node's open connection is refused).
pub fn check_member(pins: Pins) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |request: tonic::Request<()>| {
        let Some(peer) = request.extensions().get::<PeerIdentity>() else {
            return Err(tonic::Status::permission_denied("not a member's connection"));
        };
        pins.check_pin(peer.node, &peer.pin)
            .map_err(|e| tonic::Status::permission_denied(e.to_string()))?;
        Ok(request)
    }
}

/// A connector for tonic's `Endpoint::connect_with_connector_lazy`: TCP to
/// the URI's `host:port`, then mutual TLS with a pinned member.
pub fn connector(
    config: Arc<rustls::ClientConfig>,
) -> impl tower::Service<
    http::Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    let connector = TlsConnector::from(config);
    tower::service_fn(move |uri: http::Uri| {
        let connector = connector.clone();
        async move {
            let address = uri
                .authority()
                .map(|authority| authority.as_str().to_string())
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a peer URI without host"))?;
            let connecting = async {
                let tcp = TcpStream::connect(&address).await?;
                tcp.set_nodelay(true)?;
                let name = ServerName::try_from(PEER_SERVER_NAME).expect("a valid name");
                connector.connect(name, tcp).await
            };
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connect to {address}")))??;
            Ok(TokioIo::new(stream))
        }
    })
}
