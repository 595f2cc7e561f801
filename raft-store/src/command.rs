//! Every replicated write, and what applying it returns.
//!
//! Commands are stored in the Raft log: variants are only ever appended, and
//! each carries the ids and timestamps it needs, so that apply is
//! deterministic (no clock, no randomness on the apply path).

use serde::{Deserialize, Serialize};

use crate::model::{
    AliasRecord, AliasRouting, CodeRef, EventInvokeConfig, EventRecord, FunctionConfig, FunctionRecord, NodeRecord,
    VersionRecord,
};

/// A replicated write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    CreateFunction {
        name: String,
        config: FunctionConfig,
        code: CodeRef,
        revision_id: String,
        now_ms: i64,
    },
    /// Changes `$LATEST`: the fields that are `Some`.
    UpdateFunction {
        name: String,
        config: Option<FunctionConfig>,
        code: Option<CodeRef>,
        expected_revision_id: Option<String>,
        revision_id: String,
        now_ms: i64,
    },
    /// Deletes the function with its versions and aliases.
    DeleteFunction {
        name: String,
    },
    PutFunctionConcurrency {
        name: String,
        reserved_concurrency: Option<u32>,
    },
    /// Freezes `$LATEST` as the next version, unless it equals the latest version.
    PublishVersion {
        name: String,
        description: String,
        expected_revision_id: Option<String>,
        now_ms: i64,
    },
    CreateAlias {
        function: String,
        name: String,
        version: String,
        routing: Option<AliasRouting>,
        description: String,
        revision_id: String,
    },
    /// Changes the fields that are `Some`; `routing: Some(None)` clears the routing.
    UpdateAlias {
        function: String,
        name: String,
        version: Option<String>,
        routing: Option<Option<AliasRouting>>,
        description: Option<String>,
        expected_revision_id: Option<String>,
        revision_id: String,
    },
    DeleteAlias {
        function: String,
        name: String,
    },
    SetRegionQuota {
        region: String,
        concurrency: u32,
    },
    /// Records a node in the registry. With `id: None` the state machine
    /// allocates the next id; the bootstrap node registers itself with its id.
    RegisterNode {
        id: Option<u64>,
        address: String,
        region: String,
    },
    /// Removes a node from the registry (its Raft membership is changed apart).
    RemoveNode {
        id: u64,
    },
    /// Several commands proposed together (one log entry, one fsync); each is
    /// applied in order and answered on its own, as if proposed alone.
    Batch(Vec<Command>),
    /// Sets how asynchronous invocations of `function:qualifier` are retried;
    /// `None` fields keep their current (or default) value.
    PutEventInvokeConfig {
        function: String,
        qualifier: String,
        max_retry_attempts: Option<u32>,
        max_event_age_s: Option<u32>,
        on_success: Option<Option<String>>,
        on_failure: Option<Option<String>>,
        now_ms: i64,
    },
    DeleteEventInvokeConfig {
        function: String,
        qualifier: String,
    },
    /// Accepts an asynchronous invocation. Accepting an id twice keeps the
    /// first (a retried accept is harmless).
    EnqueueEvent(EventRecord),
    /// What one dispatch of an event came to. Ignored unless the event still
    /// has `attempts` attempts (so a repeated or stale report changes nothing).
    RecordAttempt {
        id: String,
        attempts: u32,
        outcome: AttemptOutcome,
        now_ms: i64,
    },
    /// Moves events of the failed-event store back into the queue, due now.
    ReplayFailedEvents {
        function: String,
        ids: Vec<String>,
        now_ms: i64,
    },
    DeleteFailedEvents {
        function: String,
        ids: Vec<String>,
    },
}

/// The result of dispatching an asynchronous event once. The dispatcher
/// picks the retry delays (apply has no clock or randomness); apply decides
/// whether a retry is left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AttemptOutcome {
    /// The function ran and returned `response`.
    Succeeded { response: String, executed_version: String },
    /// The function ran and failed (an error, a timeout, a crash).
    Failed {
        error: String,
        executed_version: String,
        retry_in_ms: i64,
    },
    /// It could not run (throttled, no node): try again after the delay
    /// without counting an attempt, unless the event has grown too old.
    NotRun { reason: String, retry_in_ms: i64 },
}

/// What a successful apply returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    None,
    Function(FunctionRecord),
    Version(VersionRecord),
    Alias(AliasRecord),
    Node(NodeRecord),
    /// The answers to a [`Command::Batch`], in order.
    Batch(Vec<CommandResult>),
    EventInvokeConfig(EventInvokeConfig),
    Event(EventRecord),
    /// How many events a replay or delete affected.
    Count(u64),
}

/// Why a command was refused. A refusal changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    #[error("{message}")]
    InvalidArgument { message: String },
    #[error("function {name} not found")]
    FunctionNotFound { name: String },
    #[error("function {name} already exists")]
    FunctionExists { name: String },
    #[error("version {version} of function {function} not found")]
    VersionNotFound { function: String, version: String },
    #[error("alias {name} of function {function} not found")]
    AliasNotFound { function: String, name: String },
    #[error("alias {name} of function {function} already exists")]
    AliasExists { function: String, name: String },
    #[error("{what} has revision {actual}, not the expected {expected}: read it again and retry")]
    RevisionMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("node {id} not found")]
    NodeNotFound { id: u64 },
    #[error("{message}")]
    FailedPrecondition { message: String },
}

/// The state machine's answer to one command, as carried back to the proposer.
pub type CommandResult = Result<Response, ApplyError>;
