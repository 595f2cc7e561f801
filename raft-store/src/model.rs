//! The replicated records: what a function, version, alias and node are.
//!
//! These are stored as JSON in the state machine (see `keys.rs`), so a field
//! may be added with `#[serde(default)]` without rewriting old data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `$LATEST` qualifier: the mutable head of a function.
pub const LATEST: &str = "$LATEST";

/// How a function runs: everything except its code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct FunctionConfig {
    /// A runtime id from [`crate::validate::RUNTIMES`].
    pub runtime: String,
    /// `module.function` for interpreted runtimes; free-form for `provided`.
    pub handler: String,
    pub memory_mb: u32,
    pub timeout_s: u32,
    pub environment: BTreeMap<String, String>,
    pub description: String,
}

/// A package, by content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct CodeRef {
    /// Lower-case hex sha256 of the zip file.
    pub sha256: String,
    pub size: u64,
}

/// A function and its mutable `$LATEST`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub name: String,
    pub config: FunctionConfig,
    pub code: CodeRef,
    /// Changes with every change of `$LATEST`; used for optimistic concurrency
    /// and to tell warm sandboxes of an older `$LATEST` apart.
    pub revision_id: String,
    pub created_at_ms: i64,
    pub last_modified_ms: i64,
    /// The highest published version, 0 when none. Deleting the function
    /// deletes this counter with it, as Lambda does.
    pub latest_version: u64,
    /// Reserved concurrency (enforced by the scheduler, stored here).
    pub reserved_concurrency: Option<u32>,
}

/// An immutable published version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub function: String,
    pub version: u64,
    pub config: FunctionConfig,
    pub code: CodeRef,
    pub description: String,
    /// The `$LATEST` revision this version froze; identifies its sandboxes.
    pub revision_id: String,
    pub created_at_ms: i64,
}

/// Weighted routing of an alias to a second version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct AliasRouting {
    pub additional_version: u64,
    /// Share of invocations sent to `additional_version`, in [0, 1].
    #[serde(deserialize_with = "weight_or_nan")]
    pub weight: f64,
}

/// JSON has no NaN or infinities (serde_json writes them as `null`), and an
/// entry proposed before commands were validated first may hold such a
/// `null`. It reads back as NaN, which apply refuses, as it refused the
/// original: the entry decodes and applies as it did when it was written.
fn weight_or_nan<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    if deserializer.is_human_readable() {
        Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
    } else {
        f64::deserialize(deserializer)
    }
}

/// A named pointer to a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub function: String,
    pub name: String,
    /// `$LATEST` or a published version number.
    pub version: String,
    pub routing: Option<AliasRouting>,
    pub description: String,
    pub revision_id: String,
}

/// A member of the cluster as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: u64,
    /// Its node-to-node address (its peer listener; its address in the Raft membership).
    pub address: String,
    /// Its public gRPC address, for clients. Empty for nodes registered
    /// before the two had listeners of their own (`address` served both).
    #[serde(default)]
    pub public_address: String,
    pub region: String,
    /// Hex SHA-256 of its certificate's public key (SubjectPublicKeyInfo):
    /// the only key the peer plane accepts for this node id. Empty for
    /// nodes registered before the peer plane had TLS.
    #[serde(default)]
    pub key_pin: String,
}

/// The cluster CA that signs node certificates (PEM). Its key is replicated
/// to every member with the rest of the state, so any member that leads can
/// admit a node; it is as secret as the cluster itself. With the operator's
/// own PKI the key is empty: the operator signs, the cluster only checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ClusterCaRecord {
    pub certificate_pem: String,
    pub key_pem: String,
}

impl ClusterCaRecord {
    /// Whether the operator's PKI signs the members' certificates.
    pub fn operator_signed(&self) -> bool {
        self.key_pem.is_empty()
    }
}

/// A join token as the cluster keeps it: never the secret, only its digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct JoinTokenRecord {
    pub id: String,
    /// Hex SHA-256 of the secret.
    pub secret_digest: String,
    pub created_ms: i64,
    /// After this, the token admits no one.
    pub expires_ms: i64,
    /// Joins it still admits; `None`: any number until it expires.
    pub uses_left: Option<u32>,
}

/// A join token used by a `RegisterNode`: apply checks and counts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct TokenUse {
    pub id: String,
    /// The leader's clock when it admitted the node (apply has none).
    pub now_ms: i64,
}

/// A region's concurrency quota when none was set.
pub const DEFAULT_REGION_QUOTA: u32 = 100;

/// The part of a region's quota that reservations can never take: a tenth,
/// at least one, so that functions without a reservation can always run
/// (Lambda keeps 100 of its default 1,000 unreserved).
pub fn min_unreserved(quota: u32) -> u32 {
    (quota / 10).max(1)
}

/// Lambda's defaults and limits for asynchronous invocations.
pub const DEFAULT_MAX_RETRY_ATTEMPTS: u32 = 2;
pub const MAX_RETRY_ATTEMPTS: u32 = 2;
pub const DEFAULT_MAX_EVENT_AGE_S: u32 = 6 * 3600;
pub const MIN_EVENT_AGE_S: u32 = 60;

/// How asynchronous invocations of a function (or one qualifier of it) are
/// retried and where their records go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventInvokeConfig {
    pub function: String,
    /// `$LATEST`, a version number or an alias.
    pub qualifier: String,
    pub max_retry_attempts: u32,
    pub max_event_age_s: u32,
    /// A function that receives a record of each successful invocation.
    pub on_success: Option<String>,
    /// A function that receives a record of each event that failed for good;
    /// without one, floe's failed-event store keeps it.
    pub on_failure: Option<String>,
    pub last_modified_ms: i64,
}

/// An accepted asynchronous invocation that has not finished yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct EventRecord {
    /// The request id the caller got with its 202.
    pub id: String,
    pub function: String,
    pub qualifier: String,
    /// The invoked function's ARN, for destination records.
    pub function_arn: String,
    /// The event (JSON text).
    pub payload: String,
    /// The region whose quota the event runs under.
    pub region: String,
    pub accepted_ms: i64,
    /// Attempts that ran (throttled dispatches do not count).
    pub attempts: u32,
    /// When the next attempt is due.
    pub due_ms: i64,
    pub max_retry_attempts: u32,
    pub max_event_age_s: u32,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    /// The last attempt's error document, if it failed.
    pub last_error: Option<String>,
}

/// Why an event failed for good (Lambda's destination `condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureCondition {
    RetriesExhausted,
    EventAgeExceeded,
}

impl FailureCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCondition::RetriesExhausted => "RetriesExhausted",
            FailureCondition::EventAgeExceeded => "EventAgeExceeded",
        }
    }
}

/// An event kept in floe's failed-event store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedEvent {
    pub event: EventRecord,
    pub condition: FailureCondition,
    pub failed_ms: i64,
}

/// An access key that signs requests (AWS Signature Version 4). The secret
/// itself is never stored: only the digest that verifying needs (see
/// `floe_proto::sigv4::secret_digest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct AccessKeyRecord {
    pub id: String,
    /// Hex SHA-256 of `"AWS4" + secret`.
    pub secret_digest: String,
    pub description: String,
    pub created_ms: i64,
}
