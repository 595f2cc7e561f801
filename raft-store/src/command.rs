//! Every replicated write, and what applying it returns.
//!
//! Commands are stored in the Raft log: variants are only ever appended, and
//! each carries the ids and timestamps it needs, so that apply is
//! deterministic (no clock, no randomness on the apply path).

use serde::{Deserialize, Serialize};

use crate::model::{AliasRecord, AliasRouting, CodeRef, FunctionConfig, FunctionRecord, NodeRecord, VersionRecord};

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
