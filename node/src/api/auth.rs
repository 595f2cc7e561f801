//! SigV4 on the public gRPC services: a tower layer in front of tonic.
//!
//! Calls to `floe.v1.*` must be signed (service name `floe`, the body's
//! SHA-256 as payload hash), but for the two a node makes before it holds
//! any key — joining, with a join token's proof as its credential, and an
//! invitation to a waiting node. The node-to-node services are not served
//! here at all: they are on the peer listener, behind mutual TLS.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;

use crate::api::unverified::{read_body, ReadRefusal};
use crate::error::NodeError;
use crate::service::{limits, Service};

/// Public gRPC services start with this path prefix.
const PUBLIC_PREFIX: &str = "/floe.v1.";
/// Calls authenticated otherwise than by a signature (see above).
const UNSIGNED: &[&str] = &["/floe.v1.Cluster/Join", "/floe.v1.Cluster/Invite"];

const INVOKE: &str = "/floe.v1.Functions/Invoke";

/// gRPC's 5-byte frame header, and room for a message's other fields.
const ENVELOPE: usize = 64 * 1024;

/// The largest body a public gRPC method takes, as REST's operations do:
/// code uploads the most, an invocation its payload, the rest 1 MiB.
fn body_limit(path: &str) -> usize {
    match path {
        "/floe.v1.Functions/CreateFunction" | "/floe.v1.Functions/UpdateFunction" => floe_proto::MAX_MESSAGE_BYTES,
        INVOKE => limits::MAX_INVOKE_PAYLOAD_BYTES + limits::MAX_CLIENT_CONTEXT_BYTES + ENVELOPE,
        _ => limits::MAX_OTHER_REQUEST_BYTES,
    }
}

fn refused_body(refusal: ReadRefusal, path: &str, limit: usize) -> GrpcResponse {
    let status = match refusal {
        ReadRefusal::TooLarge if path == INVOKE => tonic::Status::resource_exhausted(format!(
            "the request payload is too large: the limit is {} bytes",
            limits::MAX_INVOKE_PAYLOAD_BYTES
        )),
        ReadRefusal::TooLarge => tonic::Status::resource_exhausted(format!(
            "the request is larger than this method's limit of {limit} bytes"
        )),
        ReadRefusal::TimedOut => tonic::Status::deadline_exceeded("the request did not arrive in time"),
        ReadRefusal::Busy => tonic::Status::unavailable("the node is busy reading other requests' bodies: retry"),
        ReadRefusal::OverBudget => {
            tonic::Status::resource_exhausted("the request is larger than this node's api.unverified_body_budget")
        }
        ReadRefusal::Broken(error) => tonic::Status::cancelled(format!("cannot read the request: {error}")),
    };
    status.into_http()
}

#[derive(Clone)]
pub struct AuthLayer {
    pub service: Arc<Service>,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            service: self.service.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    service: Arc<Service>,
}

type GrpcRequest = http::Request<tonic::body::Body>;
type GrpcResponse = http::Response<tonic::body::Body>;

fn refused(error: NodeError) -> GrpcResponse {
    let message = match &error {
        NodeError::Unauthenticated { code, message } => format!("{code}: {message}"),
        other => other.to_string(),
    };
    let status = match error {
        NodeError::Unauthenticated { .. } => tonic::Status::unauthenticated(message),
        other => crate::error::into_status(other),
    };
    status.into_http()
}

impl<S> tower::Service<GrpcRequest> for Authenticated<S>
where
    S: tower::Service<GrpcRequest, Response = GrpcResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = GrpcResponse;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<GrpcResponse, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: GrpcRequest) -> Self::Future {
        let path = request.uri().path();
        if !path.starts_with(PUBLIC_PREFIX) || UNSIGNED.contains(&path) || !self.service.access.auth_required() {
            return Box::pin(self.inner.call(request));
        }
        // The clone is not ready; the one poll_ready readied goes into the future.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let service = self.service.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            // The key is checked before the body is read: strangers cost no buffering.
            let key = match service.access.signing_key(&parts.headers).await {
                Ok(Some(key)) => key,
                Ok(None) => unreachable!("authentication is required here"),
                Err(error) => return Ok(refused(error)),
            };
            let limit = body_limit(parts.uri.path());
            let timeout = service.node.config.api.http_body_timeout;
            let (bytes, held) = match read_body(&service.access.unverified, body, limit, timeout).await {
                Ok(read) => read,
                Err(refusal) => return Ok(refused_body(refusal, parts.uri.path(), limit)),
            };
            let payload_hash = floe_proto::sigv4::sha256_hex(&bytes);
            let signed = floe_proto::sigv4::RequestParts {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query: parts.uri.query().unwrap_or(""),
                headers: &parts.headers,
                payload_hash: &payload_hash,
            };
            if let Err(error) = key.verify(floe_proto::sigv4::GRPC_SERVICE, &signed) {
                return Ok(refused(error.into()));
            }
            drop(held);
            let request = http::Request::from_parts(parts, tonic::body::Body::new(http_body_util::Full::new(bytes)));
            inner.call(request).await
        })
    }
}
