//! Every key of the state machine, in one place.
//!
//! Keys are `table/part/part` byte strings; numbers are zero-padded decimal so
//! that RocksDB's byte order is numeric order. Names never contain `/` (see
//! `validate.rs`), so a prefix scan of `table/name/` sees one function only.

pub fn function(name: &str) -> Vec<u8> {
    format!("function/{name}").into_bytes()
}

pub const FUNCTIONS: &[u8] = b"function/";

pub fn version(function: &str, version: u64) -> Vec<u8> {
    format!("version/{function}/{version:020}").into_bytes()
}

pub fn versions_of(function: &str) -> Vec<u8> {
    format!("version/{function}/").into_bytes()
}

pub fn alias(function: &str, name: &str) -> Vec<u8> {
    format!("alias/{function}/{name}").into_bytes()
}

pub fn aliases_of(function: &str) -> Vec<u8> {
    format!("alias/{function}/").into_bytes()
}

pub fn region_quota(region: &str) -> Vec<u8> {
    format!("quota/{region}").into_bytes()
}

pub const REGION_QUOTAS: &[u8] = b"quota/";

pub fn node(id: u64) -> Vec<u8> {
    format!("node/{id:020}").into_bytes()
}

pub const NODES: &[u8] = b"node/";

/// An accepted asynchronous event that has not finished.
pub fn event(id: &str) -> Vec<u8> {
    format!("event/{id}").into_bytes()
}

pub const EVENTS: &[u8] = b"event/";

/// The queue of events by due time: `eventdue/{due_ms}/{id}`, empty values.
pub fn event_due(due_ms: i64, id: &str) -> Vec<u8> {
    format!("eventdue/{:020}/{id}", due_ms.max(0)).into_bytes()
}

pub const EVENTS_DUE: &[u8] = b"eventdue/";

/// The event id in an `eventdue/` key.
pub fn parse_event_due(key: &[u8]) -> Option<(i64, String)> {
    let rest = std::str::from_utf8(key.strip_prefix(EVENTS_DUE)?).ok()?;
    let (due, id) = rest.split_once('/')?;
    Some((due.parse().ok()?, id.to_string()))
}

pub fn event_invoke_config(function: &str, qualifier: &str) -> Vec<u8> {
    format!("eventconfig/{function}/{qualifier}").into_bytes()
}

pub fn event_invoke_configs_of(function: &str) -> Vec<u8> {
    format!("eventconfig/{function}/").into_bytes()
}

/// floe's failed-event store.
pub fn failed_event(function: &str, id: &str) -> Vec<u8> {
    format!("failed/{function}/{id}").into_bytes()
}

pub fn failed_events_of(function: &str) -> Vec<u8> {
    format!("failed/{function}/").into_bytes()
}

pub fn access_key(id: &str) -> Vec<u8> {
    format!("accesskey/{id}").into_bytes()
}

pub const ACCESS_KEYS: &[u8] = b"accesskey/";

/// The cluster CA (one record).
pub const CLUSTER_CA: &[u8] = b"cluster/ca";

pub fn join_token(id: &str) -> Vec<u8> {
    format!("jointoken/{id}").into_bytes()
}

pub const JOIN_TOKENS: &[u8] = b"jointoken/";

/// The sum of all functions' reserved concurrency.
pub const RESERVED_TOTAL: &[u8] = b"meta/reserved_total";

/// The next node id to allocate.
pub const NEXT_NODE_ID: &[u8] = b"meta/next_node_id";

/// Raft's own bookkeeping inside the state machine column family, written in
/// the same batch as the data it describes.
pub const LAST_APPLIED: &[u8] = b"raft/last_applied";
pub const LAST_MEMBERSHIP: &[u8] = b"raft/last_membership";

/// Log entries are keyed by big-endian index, so byte order is log order.
pub fn log_index(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn parse_log_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// Keys of the `meta` column family (log store).
pub const VOTE: &[u8] = b"vote";
pub const COMMITTED: &[u8] = b"committed";
pub const LAST_PURGED: &[u8] = b"last_purged";
/// The current snapshot (state machine column family is rebuilt from it on install).
pub const SNAPSHOT: &[u8] = b"snapshot";
