//! Every size limit a request meets, for every adapter: each is defined once,
//! in the module that enforces it, and named here, so that the gRPC and REST
//! adapters and the service check the same numbers.

/// A synchronous invocation's payload and response (Lambda's 6 MB).
pub use crate::executor::MAX_PAYLOAD_BYTES as MAX_INVOKE_PAYLOAD_BYTES;
/// A deployment package: zipped, unzipped, and how many entries it may hold.
pub use crate::packages::{MAX_ENTRIES as MAX_PACKAGE_ENTRIES, MAX_UNZIPPED_BYTES, MAX_ZIPPED_BYTES};
/// A client context (decoded JSON), checked by the service for every adapter.
pub use crate::service::invoke::MAX_CLIENT_CONTEXT_BYTES;
/// An asynchronous invocation's payload (it is stored in the Raft log).
pub use crate::service::invoke::MAX_EVENT_PAYLOAD_BYTES;
/// The body of any other public operation (configuration, aliases, keys…),
/// over gRPC as over REST.
pub const MAX_OTHER_REQUEST_BYTES: usize = 1024 * 1024;
