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
pub struct AliasRouting {
    pub additional_version: u64,
    /// Share of invocations sent to `additional_version`, in [0, 1].
    pub weight: f64,
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
    /// gRPC address (public API and node-to-node services).
    pub address: String,
    pub region: String,
}
