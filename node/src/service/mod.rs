//! The service layer: every operation of floe, once, whatever the adapter
//! (gRPC today, Lambda REST later) that calls it. Adapters convert wire
//! types to these calls and [`ServiceError`] back to their status codes.

pub mod auth;
pub mod cluster;
pub mod events;
pub mod functions;
pub mod invoke;
mod logs;
mod packages;
pub mod scheduling;

use std::sync::{Arc, Mutex, OnceLock};

use floe_raft_store::{ApplyError, LogStore, StateMachineStore, StateReader, StoreError};

use crate::cluster::peers::Peers;
use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::executor::Executor;
use crate::packages::Packages;
use crate::scheduler::clock::Clock;
use crate::scheduler::node::NodeScheduling;

/// Why an operation failed, in terms an API can map to a status code.
/// Serializable: a node that ran a forwarded invocation sends it back as is.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ServiceError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Too many invocations for the capacity or quota: retry later.
    #[error("{0}")]
    Throttled(String),
    /// Over a region's quota or a function's reserved concurrency: Lambda's
    /// 429 `TooManyRequestsException` with its reason.
    #[error("{message}")]
    TooManyRequests {
        reason: crate::scheduler::ThrottleReason,
        message: String,
    },
    #[error("{0}")]
    Unavailable(String),
    /// The request reached the leader, which failed before answering: it may
    /// or may not have been applied. Never retried blindly.
    #[error("{0}")]
    OutcomeUnknown(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// The caller's expected revision id is not the current one.
    #[error("{0}")]
    RevisionMismatch(String),
    /// A request without a valid signature.
    #[error("{message}")]
    Unauthenticated { code: String, message: String },
}

impl From<ApplyError> for ServiceError {
    fn from(error: ApplyError) -> Self {
        let message = error.to_string();
        match error {
            ApplyError::InvalidArgument { .. } => ServiceError::InvalidArgument(message),
            ApplyError::FunctionNotFound { .. }
            | ApplyError::VersionNotFound { .. }
            | ApplyError::AliasNotFound { .. }
            | ApplyError::NodeNotFound { .. }
            | ApplyError::AccessKeyNotFound { .. } => ServiceError::NotFound(message),
            ApplyError::FunctionExists { .. } | ApplyError::AliasExists { .. } | ApplyError::AccessKeyExists { .. } => {
                ServiceError::AlreadyExists(message)
            }
            ApplyError::RevisionMismatch { .. } => ServiceError::RevisionMismatch(message),
            ApplyError::FailedPrecondition { .. } => ServiceError::FailedPrecondition(message),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        ServiceError::Internal(error.to_string())
    }
}

/// The inverse of `api::error::into_status`, for answers of other nodes:
/// what a peer reported keeps its meaning here (an outcome unknown stays
/// unknown, a 429 keeps its reason).
impl From<tonic::Status> for ServiceError {
    fn from(status: tonic::Status) -> Self {
        use crate::api::error::{NO_CAPACITY, REASON_HEADER};
        use crate::scheduler::ThrottleReason;
        let message = status.message().to_string();
        match status.code() {
            tonic::Code::InvalidArgument => ServiceError::InvalidArgument(message),
            tonic::Code::NotFound => ServiceError::NotFound(message),
            tonic::Code::AlreadyExists => ServiceError::AlreadyExists(message),
            tonic::Code::FailedPrecondition => ServiceError::FailedPrecondition(message),
            tonic::Code::ResourceExhausted => {
                match status.metadata().get(REASON_HEADER).and_then(|v| v.to_str().ok()) {
                    Some(NO_CAPACITY) => ServiceError::Throttled(message),
                    Some("ConcurrentInvocationLimitExceeded") => ServiceError::TooManyRequests {
                        reason: ThrottleReason::ConcurrentInvocationLimitExceeded,
                        message,
                    },
                    Some("ReservedFunctionConcurrentInvocationLimitExceeded") => ServiceError::TooManyRequests {
                        reason: ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded,
                        message,
                    },
                    _ => ServiceError::PayloadTooLarge(message),
                }
            }
            tonic::Code::Unauthenticated => ServiceError::Unauthenticated {
                code: "UnrecognizedClientException".into(),
                message,
            },
            tonic::Code::Unknown => ServiceError::OutcomeUnknown(message),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => ServiceError::Unavailable(message),
            _ => ServiceError::Internal(message),
        }
    }
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Stale,
}

/// The storage a node opened but has not handed to Raft yet (a node that
/// waits to join has no id, so no Raft).
pub struct PendingStore {
    pub log_store: LogStore,
    pub state_machine: StateMachineStore,
}

/// One node's service: configuration, Raft (once started), packages, executor.
pub struct Service {
    pub config: NodeConfig,
    /// The address peers and clients use for this node.
    pub address: String,
    pub reader: StateReader,
    pub peers: Arc<Peers>,
    pub packages: Packages,
    pub executor: Arc<Executor>,
    /// Scheduling as this node holds it: the leader's soft state while it
    /// leads, the grants it runs, the shadows it keeps, leaders' clocks.
    pub scheduling: NodeScheduling,
    /// Wakes the event dispatcher when this node accepts an event.
    pub events_queued: tokio::sync::Notify,
    /// On the leader: grants given back, each of which lets one event
    /// waiting for its quota try again (see `run_dispatcher`).
    pub freed_slots: events::FreedSlots,
    cluster: OnceLock<Arc<Cluster>>,
    pending_store: Mutex<Option<PendingStore>>,
    /// Serialises membership changes on the leader (ids are allocated one at a time).
    membership_lock: tokio::sync::Mutex<()>,
}

impl Service {
    pub fn new(
        config: NodeConfig,
        address: String,
        reader: StateReader,
        pending_store: PendingStore,
        packages: Packages,
        executor: Arc<Executor>,
    ) -> Service {
        Service {
            scheduling: NodeScheduling::new(
                config.scheduler.clone(),
                Clock {
                    epoch: std::time::Instant::now(),
                },
            ),
            events_queued: tokio::sync::Notify::new(),
            freed_slots: Default::default(),
            config,
            address,
            reader,
            peers: Arc::new(Peers::default()),
            packages,
            executor,
            cluster: OnceLock::new(),
            pending_store: Mutex::new(Some(pending_store)),
            membership_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The Raft side, or Unavailable while this node waits to join.
    pub fn cluster(&self) -> Result<&Arc<Cluster>, ServiceError> {
        self.cluster
            .get()
            .ok_or_else(|| ServiceError::Unavailable("this node has not joined a cluster yet".into()))
    }

    pub fn started_cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Starts Raft under `id` (once).
    pub async fn start_raft(&self, id: u64) -> anyhow::Result<Arc<Cluster>> {
        let pending = self.pending_store.lock().expect("store lock").take();
        let Some(pending) = pending else {
            return self
                .cluster
                .get()
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("raft is starting"));
        };
        let cluster = Cluster::start(
            id,
            &self.config.raft,
            pending.log_store,
            pending.state_machine,
            self.reader.clone(),
            self.peers.clone(),
        )
        .await?;
        let cluster = Arc::new(cluster);
        let _ = self.cluster.set(cluster.clone());
        Ok(cluster)
    }

    /// Makes a read as fresh as asked.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), ServiceError> {
        let cluster = self.cluster()?;
        match consistency {
            Consistency::Stale => Ok(()),
            Consistency::Linearizable => cluster.read_barrier().await,
        }
    }
}
