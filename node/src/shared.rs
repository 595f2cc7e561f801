//! Node-wide values that every layer may use: the wall clock as floe
//! records it, and which sandboxes can serve an invocation.

/// Milliseconds since the Unix epoch: the timestamps floe stores and shows.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Which sandboxes can serve an invocation: same function, version and
/// revision (so a changed `$LATEST` never reuses an old sandbox).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SandboxKey {
    pub function: String,
    pub version: String,
    pub revision_id: String,
}
