//! Lambda's Runtime API (2018-06-01), served to one sandbox on its own
//! loopback port, so a sandbox can only ever see its own events.
//!
//! The invoker puts one event at a time into [`RuntimeChannel`]; the runtime
//! long-polls `/invocation/next`, then posts `/response` or `/error` for that
//! request id, or `/init/error` if it cannot start.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{mpsc, oneshot};

/// An event handed to the runtime.
#[derive(Debug, Clone)]
pub struct Event {
    pub request_id: String,
    pub payload: Bytes,
    pub deadline_ms: i64,
    pub invoked_function_arn: String,
    pub client_context: Option<String>,
}

/// What the runtime answered for one event.
#[derive(Debug)]
pub enum RuntimeReply {
    Response(Bytes),
    /// `/invocation/{id}/error`: the error document and its declared type.
    Error {
        error_type: Option<String>,
        body: Bytes,
    },
    /// `/init/error`: the runtime could not start the function.
    InitError {
        error_type: Option<String>,
        body: Bytes,
    },
}

/// The one in-flight invocation's reply slot.
type ReplySlot = Mutex<Option<(String, oneshot::Sender<RuntimeReply>)>>;

/// The node's side of one sandbox's Runtime API.
pub struct RuntimeChannel {
    events: mpsc::Sender<Event>,
    reply: Arc<ReplySlot>,
    /// When the runtime first asked for an event: the end of its init phase.
    pub first_poll: Arc<OnceLock<Instant>>,
}

struct ApiState {
    events: tokio::sync::Mutex<mpsc::Receiver<Event>>,
    reply: Arc<ReplySlot>,
    first_poll: Arc<OnceLock<Instant>>,
}

impl RuntimeChannel {
    /// Queues an event; the reply arrives on the returned receiver.
    pub async fn send(&self, event: Event) -> oneshot::Receiver<RuntimeReply> {
        let (reply_tx, reply_rx) = oneshot::channel();
        *self.reply.lock().expect("reply slot") = Some((event.request_id.clone(), reply_tx));
        // The receiver lives as long as the server task; if it is gone the
        // sandbox is being torn down and the dropped reply says so.
        let _ = self.events.send(event).await;
        reply_rx
    }
}

/// Serves the Runtime API on `listener` (already bound) until `shutdown` fires.
pub fn serve(
    listener: std::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<(SocketAddr, RuntimeChannel)> {
    let (events_tx, events_rx) = mpsc::channel(1);
    let reply: Arc<ReplySlot> = Arc::new(Mutex::new(None));
    let first_poll = Arc::new(OnceLock::new());
    let state = Arc::new(ApiState {
        events: tokio::sync::Mutex::new(events_rx),
        reply: reply.clone(),
        first_poll: first_poll.clone(),
    });
    let router = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        // Past Lambda's 6 MB limit a response is refused with an error the
        // caller sees; far past it the connection is refused outright.
        .layer(axum::extract::DefaultBodyLimit::max(OVERSIZE_CUTOFF))
        .with_state(state);
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let address = listener.local_addr()?;
    // Without NODELAY every small response waits ~40 ms for delayed ACKs.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok((
        address,
        RuntimeChannel {
            events: events_tx,
            reply,
            first_poll,
        },
    ))
}

fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn next(State(state): State<Arc<ApiState>>) -> Response {
    let _ = state.first_poll.set(Instant::now());
    let event = state.events.lock().await.recv().await;
    let Some(event) = event else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "sandbox is shutting down").into_response();
    };
    let mut headers = HeaderMap::new();
    headers.insert("Lambda-Runtime-Aws-Request-Id", header(&event.request_id));
    headers.insert("Lambda-Runtime-Deadline-Ms", header(&event.deadline_ms.to_string()));
    headers.insert(
        "Lambda-Runtime-Invoked-Function-Arn",
        header(&event.invoked_function_arn),
    );
    headers.insert(
        "Lambda-Runtime-Trace-Id",
        header(&format!("Root=1-{}", event.request_id.replace('-', ""))),
    );
    if let Some(client_context) = &event.client_context {
        headers.insert("Lambda-Runtime-Client-Context", header(client_context));
    }
    headers.insert("Content-Type", HeaderValue::from_static("application/json"));
    (StatusCode::OK, headers, event.payload).into_response()
}

fn error_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get("Lambda-Runtime-Function-Error-Type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Hands a reply to the waiting invoker if `id` is the in-flight request.
fn deliver(state: &ApiState, id: Option<&str>, reply: RuntimeReply) -> Response {
    let mut slot = state.reply.lock().expect("reply slot");
    let matches = match (&*slot, id) {
        (Some((in_flight, _)), Some(id)) => in_flight == id,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if !matches {
        let body = r#"{"errorMessage":"unknown or finished request id","errorType":"InvalidRequestID"}"#;
        return (StatusCode::BAD_REQUEST, body).into_response();
    }
    if let Some((_, sender)) = slot.take() {
        let _ = sender.send(reply);
    }
    (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
}

/// Bodies above this are cut off unread; between the payload limit and this
/// the caller gets Lambda's "response too large" error.
const OVERSIZE_CUTOFF: usize = 4 * super::MAX_PAYLOAD_BYTES;

/// Answers a response or error document over Lambda's 6 MB limit: the caller
/// gets Lambda's error, the runtime a 413.
fn refuse_oversize(state: &ApiState, id: &str, size: usize) -> Response {
    let message = format!(
        "Response payload size ({size} bytes) exceeded maximum allowed payload size ({} bytes).",
        super::MAX_PAYLOAD_BYTES
    );
    let document = serde_json::json!({"errorMessage": message, "errorType": "Function.ResponseSizeTooLarge"});
    let reply = RuntimeReply::Error {
        error_type: Some("Function.ResponseSizeTooLarge".into()),
        body: Bytes::from(document.to_string()),
    };
    deliver(state, Some(id), reply);
    let body = r#"{"errorMessage":"payload too large","errorType":"RequestEntityTooLarge"}"#;
    (StatusCode::PAYLOAD_TOO_LARGE, body).into_response()
}

async fn response(State(state): State<Arc<ApiState>>, Path(id): Path<String>, body: Bytes) -> Response {
    if body.len() > super::MAX_PAYLOAD_BYTES {
        return refuse_oversize(&state, &id, body.len());
    }
    deliver(&state, Some(&id), RuntimeReply::Response(body))
}

async fn error(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.len() > super::MAX_PAYLOAD_BYTES {
        return refuse_oversize(&state, &id, body.len());
    }
    deliver(
        &state,
        Some(&id),
        RuntimeReply::Error {
            error_type: error_type(&headers),
            body,
        },
    )
}

async fn init_error(State(state): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> Response {
    let reply = RuntimeReply::InitError {
        error_type: error_type(&headers),
        body,
    };
    let response = deliver(&state, None, reply);
    // An init error before any event still counts as accepted.
    if response.status() == StatusCode::BAD_REQUEST {
        return (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response();
    }
    response
}
