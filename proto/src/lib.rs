//! floe's gRPC contracts, generated from `proto/` at build time.
//!
//! - [`v1`]: the public API (`floe.v1`) for the CLI and SDK.
//! - [`internal`]: node-to-node services (Raft RPCs, forwarding, packages).
//! - [`sigv4`]: the request signature both public APIs (gRPC and Lambda REST) use.
//! - [`transport`]: what a failed call's transport error says about the call.

/// Modules nested as the proto packages are, so generated cross-package paths resolve.
pub mod floe {
    /// The public API: functions, versions, aliases, invocation, logs, cluster.
    pub mod v1 {
        tonic::include_proto!("floe.v1");
    }

    pub mod internal {
        /// Node-to-node services; not a public contract.
        pub mod v1 {
            tonic::include_proto!("floe.internal.v1");
        }
    }
}

pub mod sigv4;
pub mod transport;

pub use floe::internal::v1 as internal;
pub use floe::v1;

/// The largest gRPC message a node or client accepts: a 50 MB zip package
/// plus its envelope, or a 6 MB payload.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
