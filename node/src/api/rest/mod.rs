//! Lambda's REST API (`/2015-03-31/functions/...`), as botocore's service
//! model describes it, so that boto3 and the aws CLI work unchanged.
//!
//! - `mod.rs`: the listener (bounded connections, header and body timeouts,
//!   size limits), signature checks, and Lambda's error shape;
//! - `handlers.rs`: one function per operation, each a call into the service;
//! - `shapes.rs`: Lambda's JSON documents.

mod handlers;
mod shapes;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

use crate::api::unverified::{read_body, ReadRefusal};
use crate::error::NodeError;
use crate::error::NO_CAPACITY;
use crate::service::{limits, Service};

/// Invoke's limit (Lambda's 6 MB), and the message Lambda gives past it.
pub const INVOKE_BODY_LIMIT: usize = limits::MAX_INVOKE_PAYLOAD_BYTES;
/// CreateFunction and UpdateFunctionCode: the largest zip, base64-encoded
/// (4/3 of its size), in JSON with the function's configuration (70 MB).
pub const CODE_BODY_LIMIT: usize = limits::MAX_ZIPPED_BYTES / 5 * 7;
/// Every other operation.
pub const OTHER_BODY_LIMIT: usize = limits::MAX_OTHER_REQUEST_BYTES;
/// Request line and headers together.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// An error as Lambda returns it: status, `x-amzn-ErrorType`, JSON body.
#[derive(Debug)]
pub struct LambdaError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// `TooManyRequestsException`'s `Reason`.
    pub reason: Option<String>,
}

impl LambdaError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> LambdaError {
        LambdaError {
            status,
            code: code.to_string(),
            message: message.into(),
            reason: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> LambdaError {
        LambdaError::new(StatusCode::BAD_REQUEST, "InvalidParameterValueException", message)
    }
}

impl From<NodeError> for LambdaError {
    fn from(error: NodeError) -> Self {
        let message = error.to_string();
        let (status, code) = match &error {
            NodeError::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "InvalidParameterValueException"),
            NodeError::NotFound(_) => (StatusCode::NOT_FOUND, "ResourceNotFoundException"),
            NodeError::AlreadyExists(_) | NodeError::FailedPrecondition(_) => {
                (StatusCode::CONFLICT, "ResourceConflictException")
            }
            NodeError::RevisionMismatch(_) => (StatusCode::PRECONDITION_FAILED, "PreconditionFailedException"),
            // What Lambda answers (botocore's model names RequestTooLargeException, which Lambda does not send).
            NodeError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLargeException"),
            NodeError::Throttled(_) | NodeError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException")
            }
            NodeError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceException"),
            NodeError::OutcomeUnknown(_) | NodeError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "ServiceException")
            }
            NodeError::Unauthenticated { code, .. } => (StatusCode::FORBIDDEN, code.as_str()),
        };
        let code = code.to_string();
        let reason = match error {
            NodeError::Throttled(_) => Some(NO_CAPACITY.to_string()),
            NodeError::TooManyRequests { reason, .. } => Some(reason.as_str().to_string()),
            _ => None,
        };
        LambdaError {
            status,
            code,
            message,
            reason,
        }
    }
}

impl IntoResponse for LambdaError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() {
            "Service"
        } else {
            "User"
        };
        // botocore reads `message` or `Message`; each shape names one of them.
        let message_key = match self.code.as_str() {
            "ResourceNotFoundException" | "ServiceException" => "Message",
            _ => "message",
        };
        let mut body = serde_json::json!({ "Type": kind, message_key: self.message });
        if let Some(reason) = &self.reason {
            body["Reason"] = reason.clone().into();
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Ok(code) = HeaderValue::from_str(&self.code) {
            headers.insert("x-amzn-ErrorType", code);
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The body limit of the operation at `path`.
fn body_limit(method: &http::Method, path: &str) -> usize {
    if path.ends_with("/invocations") {
        INVOKE_BODY_LIMIT
    } else if path.ends_with("/code")
        || (method == http::Method::POST && path.trim_end_matches('/').ends_with("/functions"))
    {
        CODE_BODY_LIMIT
    } else {
        OTHER_BODY_LIMIT
    }
}

fn too_large(limit: usize, path: &str) -> LambdaError {
    let operation = if path.ends_with("/invocations") {
        "the InvokeFunction operation"
    } else {
        "this operation"
    };
    LambdaError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLargeException",
        format!("Request must be smaller than {limit} bytes for {operation}"),
    )
}

/// Reads the whole body (bounded in size and time), then checks the
/// signature over it. Runs before every handler; handlers get the body back.
async fn authenticate(State(service): State<Arc<Service>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let limit = body_limit(&parts.method, &path);
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return too_large(limit, &path).into_response();
    }
    // The key first: requests from strangers are refused before any buffering.
    let key = match service.access.signing_key(&parts.headers).await {
        Ok(key) => key,
        Err(e) => return LambdaError::from(e).into_response(),
    };
    let read = read_body(
        &service.access.unverified,
        body,
        limit,
        service.node.config.api.http_body_timeout,
    )
    .await;
    let (bytes, held) = match read {
        Ok(read) => read,
        Err(ReadRefusal::TooLarge) => return too_large(limit, &path).into_response(),
        Err(ReadRefusal::Broken(error)) => {
            return LambdaError::new(StatusCode::BAD_REQUEST, "InvalidRequestContentException", error).into_response()
        }
        Err(ReadRefusal::TimedOut) => {
            return LambdaError::new(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeoutException",
                "the request body did not arrive in time",
            )
            .into_response()
        }
        Err(ReadRefusal::Busy) => {
            return LambdaError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                "the node is busy reading other requests' bodies: retry",
            )
            .into_response()
        }
        Err(ReadRefusal::OverBudget) => {
            return LambdaError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLargeException",
                "the request is larger than this node's api.unverified_body_budget",
            )
            .into_response()
        }
    };
    if let Some(key) = key {
        let unsigned = parts
            .headers
            .get("x-amz-content-sha256")
            .is_some_and(|v| v == floe_proto::sigv4::UNSIGNED_PAYLOAD);
        let payload_hash = if unsigned {
            floe_proto::sigv4::UNSIGNED_PAYLOAD.to_string()
        } else {
            floe_proto::sigv4::sha256_hex(&bytes)
        };
        let signed = floe_proto::sigv4::RequestParts {
            method: parts.method.as_str(),
            path: &path,
            query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
            payload_hash: &payload_hash,
        };
        if let Err(e) = key.verify(floe_proto::sigv4::REST_SERVICE, &signed) {
            return LambdaError::from(NodeError::from(e)).into_response();
        }
    }
    // Verified: its bytes no longer count against the budget.
    drop(held);
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// Every response carries a request id, as Lambda's do.
async fn request_id(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if !response.headers().contains_key("x-amzn-RequestId") {
        if let Ok(value) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
            response.headers_mut().insert("x-amzn-RequestId", value);
        }
    }
    response
}

async fn unknown_operation() -> LambdaError {
    LambdaError::new(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        "floe does not serve this Lambda operation",
    )
}

pub fn router(service: Arc<Service>) -> axum::Router {
    handlers::routes()
        .fallback(unknown_operation)
        .layer(axum::middleware::from_fn_with_state(service.clone(), authenticate))
        .layer(axum::middleware::from_fn(request_id))
        // `authenticate` enforces each operation's own limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(service)
}

/// Serves the REST API on `listener` (over TLS with `tls`) until
/// `shutdown`, then lets requests in flight finish (for at most `grace`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    service: Arc<Service>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let api = service.node.config.api.clone();
    let router = router(service);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let connections = Arc::new(tokio::sync::Semaphore::new(api.http_max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, for instance: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Without NODELAY small responses wait ~40 ms for delayed ACKs.
        let _ = stream.set_nodelay(true);
        let (router, api, acceptor, watcher) = (router.clone(), api.clone(), acceptor.clone(), graceful.watcher());
        tokio::spawn(async move {
            let result = match acceptor {
                None => serve_connection(stream, router, &api, watcher).await,
                // The handshake counts against the header timeout: a client that stalls in it is cut off.
                Some(acceptor) => match tokio::time::timeout(api.http_header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, router, &api, watcher).await,
                    Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
                    Err(_) => Err("TLS handshake timed out".to_string()),
                },
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("HTTP requests still running at shutdown were cut off");
    }
}

/// One HTTP/1.1 connection, plain or TLS, until it ends or the node shuts down.
async fn serve_connection<IO>(
    io: IO,
    router: axum::Router,
    api: &crate::config::ApiConfig,
    watcher: hyper_util::server::graceful::Watcher,
) -> Result<(), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(api.http_header_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .serve_connection(
            hyper_util::rt::TokioIo::new(io),
            hyper_util::service::TowerToHyperService::new(router),
        );
    watcher.watch(connection).await.map_err(|e| e.to_string())
}

/// The headers of a successful answer (a request id, like Lambda's).
pub fn headers_with_request_id(request_id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-RequestId", value);
    }
    headers
}
