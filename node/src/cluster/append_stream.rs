//! AppendEntries over one long-lived gRPC stream per target node.
//!
//! Every write's replication, every heartbeat and every leadership check of
//! a linearizable read is an AppendEntries. As unary calls each paid for a
//! new HTTP/2 stream, its headers and a task on the receiver — most of a
//! replication round on loopback. Here requests share one stream per target:
//! a frame carries a sequence number, the receiver answers frames in order
//! (`server.rs`), and a reader task hands each answer to the caller waiting
//! for that number. Callers that give up (timeouts) leave their answer to be
//! dropped. A stream that fails fails its waiting callers and is opened anew
//! by the next one; HTTP/2 keep-alive (see `peers.rs`) notices a dead link.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floe_proto::internal::RaftFrame;
use tokio::sync::{mpsc, oneshot};

use super::peers::Peers;

/// Frames queued to a stream at most; past that the target is not keeping
/// up (or the link is dead and keep-alive has not said so yet), and a caller
/// fails at once rather than queueing behind them.
const QUEUE: usize = 64;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("AppendEntries stream to {0}: {1}")]
    Status(String, tonic::Status),
    #[error("AppendEntries stream to {0} closed")]
    Closed(String),
    #[error("AppendEntries stream to {0}: {QUEUE} requests already waiting")]
    Full(String),
    #[error("AppendEntries to {0}: no answer within {1:?}")]
    Timeout(String, Duration),
}

type Answer = Result<Vec<u8>, StreamError>;

/// The streams of one node, one per target address.
#[derive(Default)]
pub struct AppendStreams {
    slots: Mutex<HashMap<String, Slot>>,
}

/// A target's stream, if open; locked while it opens, so callers arriving
/// then wait for that stream instead of opening their own.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<AppendStream>>>>;

impl AppendStreams {
    /// Sends one encoded AppendEntries request to `address` and waits, at
    /// most `timeout` in all, for its encoded answer.
    pub async fn exchange(&self, peers: &Peers, address: &str, data: Vec<u8>, timeout: Duration) -> Answer {
        let attempt = async {
            let stream = self.stream(peers, address).await?;
            stream.exchange(data).await
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(StreamError::Timeout(address.to_string(), timeout)))
    }

    async fn stream(&self, peers: &Peers, address: &str) -> Result<Arc<AppendStream>, StreamError> {
        let slot = self
            .slots
            .lock()
            .expect("append streams lock")
            .entry(address.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(stream) = slot.as_ref().filter(|stream| !stream.broken.load(Ordering::Acquire)) {
            return Ok(stream.clone());
        }
        let stream = AppendStream::open(peers, address).await?;
        *slot = Some(stream.clone());
        Ok(stream)
    }
}

/// One open stream.
struct AppendStream {
    address: String,
    requests: mpsc::Sender<RaftFrame>,
    /// Callers waiting for an answer, by the seq of their request.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_seq: AtomicU64,
    /// Set by the reader once the stream has ended: no answer comes any more.
    broken: AtomicBool,
}

impl AppendStream {
    async fn open(peers: &Peers, address: &str) -> Result<Arc<AppendStream>, StreamError> {
        let status = |status| StreamError::Status(address.to_string(), status);
        let mut client = peers.raft(address).map_err(status)?;
        let (requests, queue) = mpsc::channel(QUEUE);
        let mut answers = client
            .append_entries_stream(tokio_stream::wrappers::ReceiverStream::new(queue))
            .await
            .map_err(status)?
            .into_inner();
        let stream = Arc::new(AppendStream {
            address: address.to_string(),
            requests,
            waiting: Mutex::default(),
            next_seq: AtomicU64::new(1),
            broken: AtomicBool::new(false),
        });
        let reader = stream.clone();
        tokio::spawn(async move {
            let ended = loop {
                match answers.message().await {
                    Ok(Some(answer)) => {
                        let waiter = reader.waiting.lock().expect("waiting lock").remove(&answer.seq);
                        // No waiter: its caller gave up.
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(Ok(answer.data));
                        }
                    }
                    Ok(None) => break StreamError::Closed(reader.address.clone()),
                    Err(status) => break StreamError::Status(reader.address.clone(), status),
                }
            };
            reader.broken.store(true, Ordering::Release);
            let waiters: Vec<_> = reader.waiting.lock().expect("waiting lock").drain().collect();
            tracing::debug!(error = %ended, waiting = waiters.len(), "AppendEntries stream ended");
            for (_, waiter) in waiters {
                let _ = waiter.send(Err(StreamError::Closed(reader.address.clone())));
            }
        });
        Ok(stream)
    }

    async fn exchange(&self, data: Vec<u8>) -> Answer {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let (answer, wait) = oneshot::channel();
        self.waiting.lock().expect("waiting lock").insert(seq, answer);
        // Taken out again however this call ends, answered or not.
        let _waiting = Waiting { stream: self, seq };
        // Checked after registering: the reader drains waiters after marking
        // the stream broken, so no waiter is left behind.
        if self.broken.load(Ordering::Acquire) {
            return Err(StreamError::Closed(self.address.clone()));
        }
        self.requests.try_send(RaftFrame { seq, data }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StreamError::Full(self.address.clone()),
            mpsc::error::TrySendError::Closed(_) => StreamError::Closed(self.address.clone()),
        })?;
        wait.await
            .unwrap_or_else(|_| Err(StreamError::Closed(self.address.clone())))
    }
}

/// Removes a caller's entry from `waiting` when its call ends.
struct Waiting<'a> {
    stream: &'a AppendStream,
    seq: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.stream.waiting.lock().expect("waiting lock").remove(&self.seq);
    }
}
