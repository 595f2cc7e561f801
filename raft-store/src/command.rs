//! Every replicated write, and what applying it returns.
//!
//! Commands are stored in the Raft log: variants are only ever appended, and
//! each carries the ids and timestamps it needs, so that apply is
//! deterministic (no clock, no randomness on the apply path).

use serde::{Deserialize, Serialize};

use crate::model::{
    AccessKeyRecord, AliasRecord, AliasRouting, ClusterCaRecord, CodeRef, EventInvokeConfig, EventRecord,
    FunctionConfig, FunctionRecord, JoinTokenRecord, NodeRecord, TokenUse, VersionRecord,
};

/// A replicated write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum Command {
    /// With `publish`, also publishes the new `$LATEST` as version 1, in the
    /// same entry (Lambda's `Publish=true`): both happen or neither.
    CreateFunction {
        name: String,
        config: FunctionConfig,
        code: CodeRef,
        revision_id: String,
        now_ms: i64,
        /// Absent from entries written before it existed.
        #[serde(default)]
        publish: bool,
    },
    /// Changes `$LATEST`: the fields that are `Some`; with `publish`, then
    /// publishes it, in the same entry.
    UpdateFunction {
        name: String,
        config: Option<FunctionConfig>,
        code: Option<CodeRef>,
        expected_revision_id: Option<String>,
        revision_id: String,
        now_ms: i64,
        #[serde(default)]
        publish: bool,
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
    /// `expected_code_sha256` (hex) is Lambda's `CodeSha256` precondition,
    /// checked here so that no update can slip between check and publish.
    PublishVersion {
        name: String,
        description: String,
        expected_revision_id: Option<String>,
        now_ms: i64,
        #[serde(default)]
        expected_code_sha256: Option<String>,
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
        #[serde(with = "double_option")]
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
        /// Its node-to-node (peer) address.
        address: String,
        /// Its public gRPC address; absent from entries written before it existed.
        #[serde(default)]
        public_address: String,
        region: String,
        /// Hex SHA-256 of its certificate's public key; absent before mTLS.
        #[serde(default)]
        key_pin: String,
        /// The join token that admitted it: used up atomically with the
        /// registration, refused if expired or used up meanwhile.
        #[serde(default)]
        token: Option<TokenUse>,
    },
    /// Removes a node from the registry (its Raft membership is changed apart).
    RemoveNode {
        id: u64,
    },
    /// Several commands proposed together (one log entry, one fsync); each is
    /// applied in order and answered on its own, as if proposed alone.
    // The property tests build batches themselves (a derived strategy would recurse forever).
    #[cfg_attr(test, proptest(skip))]
    Batch(Vec<Command>),
    /// Sets how asynchronous invocations of `function:qualifier` are retried;
    /// `None` fields keep their current (or default) value.
    PutEventInvokeConfig {
        function: String,
        qualifier: String,
        max_retry_attempts: Option<u32>,
        max_event_age_s: Option<u32>,
        #[serde(with = "double_option")]
        on_success: Option<Option<String>>,
        #[serde(with = "double_option")]
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
    /// Adds an access key; an existing id is refused.
    CreateAccessKey(AccessKeyRecord),
    DeleteAccessKey {
        id: String,
    },
    /// The cluster CA, set once by the first node.
    SetClusterCa(ClusterCaRecord),
    CreateJoinToken(JoinTokenRecord),
    DeleteJoinToken {
        id: String,
    },
}

/// The result of dispatching an asynchronous event once. The dispatcher
/// picks the retry delays (apply has no clock or randomness); apply decides
/// whether a retry is left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
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
    AccessKey(AccessKeyRecord),
    /// A create or update with `publish`: `$LATEST` after it, and the version.
    Published {
        function: FunctionRecord,
        version: VersionRecord,
    },
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
    #[error("access key {id} not found")]
    AccessKeyNotFound { id: String },
    #[error("access key {id} already exists")]
    AccessKeyExists { id: String },
    /// A join token that does not admit the node (unknown, expired, used up).
    #[error("{message}")]
    JoinRefused { message: String },
}

/// The state machine's answer to one command, as carried back to the proposer.
pub type CommandResult = Result<Response, ApplyError>;

/// `Option<Option<T>>` fields ("leave as is", "clear", "set") in the Raft
/// log's JSON, where serde's default writes both `None` and `Some(None)` as
/// `null`. Clearing is written `{"clear":true}`; `null` and a bare value
/// read as before. Binary encodings (bincode) keep serde's default.
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Clear {
        clear: bool,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Change<T> {
        Clear(Clear),
        Set(T),
    }

    pub fn serialize<S: Serializer, T: Serialize>(value: &Option<Option<T>>, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return value.serialize(serializer);
        }
        match value {
            None => serializer.serialize_none(),
            Some(None) => serializer.serialize_some(&Clear { clear: true }),
            Some(Some(value)) => serializer.serialize_some(value),
        }
    }

    pub fn deserialize<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        if !deserializer.is_human_readable() {
            return Option::<Option<T>>::deserialize(deserializer);
        }
        Ok(match Option::<Change<T>>::deserialize(deserializer)? {
            None => None,
            Some(Change::Clear(marker)) => marker.clear.then_some(None),
            Some(Change::Set(value)) => Some(Some(value)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(routing: Option<Option<AliasRouting>>) -> Command {
        Command::UpdateAlias {
            function: "f".into(),
            name: "a".into(),
            version: None,
            routing,
            description: None,
            expected_revision_id: None,
            revision_id: "r".into(),
        }
    }

    #[test]
    fn leave_clear_and_set_survive_json_and_bincode() {
        let routing = AliasRouting {
            additional_version: 2,
            weight: 0.5,
        };
        for command in [update(None), update(Some(None)), update(Some(Some(routing.clone())))] {
            let json = serde_json::to_vec(&command).unwrap();
            assert_eq!(serde_json::from_slice::<Command>(&json).unwrap(), command);
            let binary = crate::codec::encode(&command).unwrap();
            assert_eq!(crate::codec::decode::<Command>(&binary).unwrap(), command);
        }
        // Entries written before: a bare value is "set", null is "leave".
        let old = r#"{"UpdateAlias":{"function":"f","name":"a","version":null,
            "routing":{"additional_version":2,"weight":0.5},"description":null,
            "expected_revision_id":null,"revision_id":"r"}}"#;
        assert_eq!(
            serde_json::from_str::<Command>(old).unwrap(),
            update(Some(Some(routing)))
        );
        let old = old.replace(r#"{"additional_version":2,"weight":0.5}"#, "null");
        assert_eq!(serde_json::from_str::<Command>(&old).unwrap(), update(None));
    }

    /// An entry proposed before commands were checked first may hold a NaN
    /// weight, which JSON wrote as `null`: it decodes (as NaN), and is
    /// refused as it was when it was first applied.
    #[test]
    fn a_null_weight_written_before_reads_back_as_a_refused_nan() {
        let old = r#"{"CreateAlias":{"function":"f","name":"live","version":"1",
            "routing":{"additional_version":2,"weight":null},"description":"","revision_id":"r"}}"#;
        let command: Command = serde_json::from_str(old).unwrap();
        let Command::CreateAlias {
            routing: Some(routing), ..
        } = &command
        else {
            panic!("{command:?}");
        };
        assert!(routing.weight.is_nan());
        let refusal = crate::validate::command(&command).unwrap_err();
        assert!(refusal.to_string().contains("routing weight"), "{refusal}");
    }
}
