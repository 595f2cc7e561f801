//! floe's gRPC contracts, generated from `proto/` at build time.
//!
//! - [`v1`]: the public API (`floe.v1`) for the CLI and SDK.
//! - [`internal`]: node-to-node services (Raft RPCs, forwarding, packages).

/// The public API: functions, versions, aliases, invocation, cluster.
pub mod v1 {
    tonic::include_proto!("floe.v1");
}

/// Node-to-node services; not a public contract.
pub mod internal {
    tonic::include_proto!("floe.internal.v1");
}

/// The largest gRPC message a node or client accepts: a 50 MB zip package
/// plus its envelope, or a 6 MB payload.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
