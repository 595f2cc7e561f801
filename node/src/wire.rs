//! The messages nodes send each other through the internal `Scheduler`
//! gRPC service, bincode-encoded in a `Payload` as openraft's are: load
//! reports and their answers, grant requests and grants, shadows, releases,
//! the leader's load view. Every layer may name them: the scheduler decides
//! with them, the peer client sends them, the internal API receives them.

use floe_raft_store::NodeId;
use serde::{Deserialize, Serialize};

use crate::error::ThrottleReason;
use crate::shared::SandboxKey;

/// A node's load, sent to the leader every `scheduler.heartbeat_interval`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    pub node: NodeId,
    pub region: String,
    pub sandbox_mode: String,
    pub capacity_mb: u64,
    /// Memory not held by any sandbox, busy or idle.
    pub free_mb: u64,
    pub idle: Vec<(SandboxKey, u32)>,
    /// The grants this node is running (a new leader rebuilds its counts from these).
    pub running: Vec<RunningGrant>,
    /// The grants leaders recorded on this node (see `shadow.rs`).
    pub shadows: Vec<ShadowGrant>,
    /// Grants this node gave back in the last few seconds: a new leader
    /// drops their shadows at once instead of waiting out their lease.
    pub finished: Vec<u64>,
    /// `(term, leader clock)` of the newest heartbeat answer this node had
    /// when it built the report: the report is no older than that, so the
    /// leader of that term may conclude from it that a grant which could no
    /// longer start by then never will.
    pub seen: Option<(u64, u64)>,
}

/// A grant as a leader records it on the other voters before anyone may use
/// it: any later leader is elected by a majority, so one of its voters
/// knows of it, even when the node running it is cut off.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShadowGrant {
    /// The term of the leader that granted it.
    pub term: u64,
    /// [`Grant::seq`].
    pub seq: u64,
    /// Where it runs.
    pub node: NodeId,
    /// `remaining_ms`: how much longer it may exist (lease + timeout).
    pub grant: RunningGrant,
}

/// A grant whose invocation is running on the reporting node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningGrant {
    pub id: u64,
    pub region: String,
    pub function: String,
    pub reserved: bool,
    pub memory_mb: u64,
    /// How much longer it can run at most (its timeout minus its age).
    pub remaining_ms: u64,
}

/// The leader's answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub term: u64,
    /// The grants the leader holds: shadows of grants made before this
    /// answer (of an earlier term, or of this one up to `issued`) that are
    /// not among them are over.
    pub live_grants: Vec<u64>,
    /// How many grants the leader had made in `term` when it answered.
    pub issued: u64,
    /// The leader's clock when it answered (the scheduler's `clock`).
    pub now_ms: u64,
}

/// A request to start one invocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantAsk {
    /// The region of the node the call arrived at.
    pub entry_region: String,
    /// The region the caller named, if any.
    pub region: Option<String>,
    pub key: SandboxKey,
    pub memory_mb: u64,
    pub timeout_s: u64,
}

impl GrantAsk {
    /// The region whose quota it counts against.
    pub fn region(&self) -> &str {
        self.region.as_deref().unwrap_or(&self.entry_region)
    }
}

/// Permission to start one invocation on one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub id: u64,
    /// The term of the leader that granted it; releases go to that term only.
    pub term: u64,
    pub node: NodeId,
    pub address: String,
    pub region: String,
    pub function: String,
    /// Whether it counts against the function's reservation.
    pub reserved: bool,
    pub memory_mb: u64,
    /// The invocation must start within this long of the grant request.
    pub lease_ms: u64,
    /// The leader's clock when it granted: the lease ends at `granted_at_ms +
    /// lease_ms` of that clock, wherever the grant is by then (the scheduler's `clock`).
    pub granted_at_ms: u64,
    /// Its place in the order the leader granted in this term.
    pub seq: u64,
    /// True when the chosen node had an idle warm sandbox of the version.
    pub warm: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum GrantReply {
    Granted(Grant),
    /// Over a quota: Lambda's 429.
    Throttled {
        reason: ThrottleReason,
        message: String,
    },
    /// No live node of the region has room for the function's memory.
    NoCapacity(String),
    /// This node is not the leader, or is still rebuilding its view: ask again.
    NotReady(String),
}

/// A grant given back after its invocation ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Release {
    pub grant: u64,
    pub term: u64,
    pub node: NodeId,
    pub key: SandboxKey,
    /// Whether the sandbox went back to the pool, idle and warm.
    pub warm: bool,
}

/// The leader's view, for `floe cluster status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadView {
    pub term: u64,
    pub nodes: Vec<NodeView>,
    /// `(region, running)` for every region with running invocations.
    pub running: Vec<(String, u32)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    pub node: NodeId,
    pub running: u32,
    pub idle: u32,
    pub free_mb: u64,
    pub capacity_mb: u64,
    pub last_heartbeat_ms: u64,
    pub live: bool,
    pub sandbox_mode: String,
}
