//! What a failed call's transport error says about the call: whether the
//! server can have acted on it. The SDK retries a call only when it cannot
//! have (on another node), and so do the nodes when they forward one; any
//! other failure mid-call leaves the outcome unknown.

use std::error::Error;

/// True when the request cannot have reached the server's handler:
/// - the connection never opened (refused, connect timeout);
/// - the server had said GOAWAY without error (a graceful shutdown, or an
///   idle connection closed) before it processed the request: the request's
///   stream is above the GOAWAY's last processed stream, or was opened after
///   it. HTTP/2 (RFC 9113 §6.8) says such streams were not processed, and
///   h2 reports exactly those with the server's GOAWAY; a stream the server
///   had taken and then lost with the connection fails otherwise ("broken
///   pipe"). tonic calls the GOAWAY case `Internal` ("h2 protocol error:
///   http2 error"), which alone would read as a failure of the call itself;
/// - the server reset the stream with REFUSED_STREAM (§8.7: not processed).
pub fn not_processed(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn Error + 'static)> = status.source();
    while let Some(error) = source {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            let refused_unread = h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR);
            let refused_stream = h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            return h2.is_remote() && (refused_unread || refused_stream);
        }
        if status.code() == tonic::Code::Unavailable {
            let text = error.to_string();
            if text.contains("Connection refused")
                || text.contains("tcp connect error")
                || text.contains("connect timeout")
            {
                return true;
            }
        }
        source = error.source();
    }
    status.code() == tonic::Code::Unavailable && status.message().contains("tcp connect error")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::not_processed;
    use crate::internal::peer_client::PeerClient;
    use crate::internal::HelloRequest;

    /// A raw HTTP/2 server that says GOAWAY (no error, nothing processed) as
    /// soon as the connection opens, as a node shutting down does to a call
    /// that arrives at that moment; or, with `take_it`, takes the request
    /// first and then drops the connection, as a node that dies mid-call.
    async fn server(take_it: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::handshake(socket).await.unwrap();
            if take_it {
                let request = connection.accept().await;
                assert!(request.is_some_and(|r| r.is_ok()));
                drop(connection);
                return;
            }
            // Let the request arrive, unread: it is then above the GOAWAY's
            // last processed stream (0). The connection reads it before it
            // closes, so the socket ends with a FIN, not a reset that could
            // discard the GOAWAY.
            tokio::time::sleep(Duration::from_millis(300)).await;
            connection.abrupt_shutdown(h2::Reason::NO_ERROR);
            let _ = std::future::poll_fn(|cx| connection.poll_closed(cx)).await;
        });
        address
    }

    async fn call(address: &str) -> tonic::Status {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut request = tonic::Request::new(HelloRequest {});
        request.set_timeout(Duration::from_secs(5));
        PeerClient::new(channel)
            .hello(request)
            .await
            .expect_err("the call must fail")
    }

    #[tokio::test]
    async fn a_call_refused_by_goaway_was_not_processed() {
        let status = call(&server(false).await).await;
        assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
        assert!(not_processed(&status), "{status:?}");
    }

    #[tokio::test]
    async fn a_call_the_server_took_may_have_been_processed() {
        let status = call(&server(true).await).await;
        assert!(!not_processed(&status), "{status:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_was_not_processed() {
        let address = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_lazy();
        let status = PeerClient::new(channel).hello(HelloRequest {}).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(not_processed(&status), "{status:?}");
    }
}
