//! The node's one error type, its stable codes, and its one mapping to gRPC
//! statuses — both ways, because clients and other nodes read the same
//! statuses: what a peer reported keeps its meaning when it is relayed (an
//! outcome unknown stays unknown, a 429 keeps its reason).
//!
//! Every layer may use this module; it uses none of them. The Lambda REST
//! adapter maps the same errors to HTTP (`api/rest`).

use serde::{Deserialize, Serialize};

use floe_raft_store::{ApplyError, StoreError};

/// The gRPC metadata key that carries an error's stable code ([`NodeError::code`]).
pub const CODE_HEADER: &str = "floe-code";
/// The gRPC metadata key that carries a 429's reason (Lambda's `Reason`),
/// or an authentication failure's AWS error code.
pub const REASON_HEADER: &str = "floe-reason";
/// The reason given when no node has room for a function (not a quota).
pub const NO_CAPACITY: &str = "InsufficientCapacity";
/// The code of an `Unauthenticated` join: no join token, or one that is
/// wrong, expired or used up.
pub const JOIN_REFUSED: &str = "InvalidJoinToken";

/// Why an invocation was refused: Lambda's `Reason` of a 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ThrottleReason {
    ConcurrentInvocationLimitExceeded,
    ReservedFunctionConcurrentInvocationLimitExceeded,
}

impl ThrottleReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ThrottleReason::ConcurrentInvocationLimitExceeded => "ConcurrentInvocationLimitExceeded",
            ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded => {
                "ReservedFunctionConcurrentInvocationLimitExceeded"
            }
        }
    }

    fn parse(text: &str) -> Option<ThrottleReason> {
        [
            ThrottleReason::ConcurrentInvocationLimitExceeded,
            ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == text)
    }
}

/// Why an operation failed. Serializable: a node that ran a forwarded
/// invocation sends it back as is. Variants are only ever appended.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum NodeError {
    /// The request is malformed or names something invalid.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The cluster's state does not allow it now.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// No node has room for the function: retry later.
    #[error("{0}")]
    Throttled(String),
    /// Over a region's quota or a function's reserved concurrency: Lambda's
    /// 429 `TooManyRequestsException` with its reason.
    #[error("{message}")]
    TooManyRequests { reason: ThrottleReason, message: String },
    /// Nothing was done (no leader, a node unreachable): safe to retry.
    #[error("{0}")]
    Unavailable(String),
    /// The request reached a node that failed before answering: it may or
    /// may not have been done. Never retried blindly.
    #[error("{0}")]
    OutcomeUnknown(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// The caller's expected revision id is not the current one.
    #[error("{0}")]
    RevisionMismatch(String),
    /// A request without a valid signature; `code` is AWS's error code
    /// (`InvalidSignatureException`, `UnrecognizedClientException`…).
    #[error("{message}")]
    Unauthenticated { code: String, message: String },
}

impl NodeError {
    /// The stable code of this kind of error, the same in every adapter
    /// (gRPC metadata `floe-code`, the CLI's exit codes, logs).
    pub fn code(&self) -> &'static str {
        match self {
            NodeError::InvalidArgument(_) => "InvalidArgument",
            NodeError::NotFound(_) => "NotFound",
            NodeError::AlreadyExists(_) => "AlreadyExists",
            NodeError::FailedPrecondition(_) => "FailedPrecondition",
            NodeError::PayloadTooLarge(_) => "PayloadTooLarge",
            NodeError::Throttled(_) => "Throttled",
            NodeError::TooManyRequests { .. } => "TooManyRequests",
            NodeError::Unavailable(_) => "Unavailable",
            NodeError::OutcomeUnknown(_) => "OutcomeUnknown",
            NodeError::Internal(_) => "Internal",
            NodeError::RevisionMismatch(_) => "RevisionMismatch",
            NodeError::Unauthenticated { .. } => "Unauthenticated",
        }
    }

    /// The message alone (no prefix): what a status carries.
    pub fn message(&self) -> &str {
        match self {
            NodeError::InvalidArgument(m)
            | NodeError::NotFound(m)
            | NodeError::AlreadyExists(m)
            | NodeError::FailedPrecondition(m)
            | NodeError::PayloadTooLarge(m)
            | NodeError::Throttled(m)
            | NodeError::Unavailable(m)
            | NodeError::OutcomeUnknown(m)
            | NodeError::Internal(m)
            | NodeError::RevisionMismatch(m) => m,
            NodeError::TooManyRequests { message, .. } | NodeError::Unauthenticated { message, .. } => message,
        }
    }

    /// The error of `code` with `message` and, for 429s and authentication
    /// failures, `reason`; `None` for a code this version does not know.
    fn from_code(code: &str, message: String, reason: Option<&str>) -> Option<NodeError> {
        Some(match code {
            "InvalidArgument" => NodeError::InvalidArgument(message),
            "NotFound" => NodeError::NotFound(message),
            "AlreadyExists" => NodeError::AlreadyExists(message),
            "FailedPrecondition" => NodeError::FailedPrecondition(message),
            "PayloadTooLarge" => NodeError::PayloadTooLarge(message),
            "Throttled" => NodeError::Throttled(message),
            "TooManyRequests" => NodeError::TooManyRequests {
                reason: ThrottleReason::parse(reason?)?,
                message,
            },
            "Unavailable" => NodeError::Unavailable(message),
            "OutcomeUnknown" => NodeError::OutcomeUnknown(message),
            "Internal" => NodeError::Internal(message),
            "RevisionMismatch" => NodeError::RevisionMismatch(message),
            "Unauthenticated" => NodeError::Unauthenticated {
                code: reason.unwrap_or("UnrecognizedClientException").to_string(),
                message,
            },
            _ => return None,
        })
    }
}

impl From<ApplyError> for NodeError {
    fn from(error: ApplyError) -> Self {
        let message = error.to_string();
        match error {
            ApplyError::InvalidArgument { .. } => NodeError::InvalidArgument(message),
            ApplyError::FunctionNotFound { .. }
            | ApplyError::VersionNotFound { .. }
            | ApplyError::AliasNotFound { .. }
            | ApplyError::NodeNotFound { .. }
            | ApplyError::AccessKeyNotFound { .. } => NodeError::NotFound(message),
            ApplyError::JoinRefused { .. } => NodeError::Unauthenticated {
                code: JOIN_REFUSED.to_string(),
                message,
            },
            ApplyError::FunctionExists { .. } | ApplyError::AliasExists { .. } | ApplyError::AccessKeyExists { .. } => {
                NodeError::AlreadyExists(message)
            }
            ApplyError::RevisionMismatch { .. } => NodeError::RevisionMismatch(message),
            ApplyError::FailedPrecondition { .. } => NodeError::FailedPrecondition(message),
        }
    }
}

impl From<StoreError> for NodeError {
    fn from(error: StoreError) -> Self {
        NodeError::Internal(error.to_string())
    }
}

fn metadata(value: &str) -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    value.parse().ok()
}

/// The gRPC status of an error: its code, its message, and in the metadata
/// its stable code and, for a 429 or an authentication failure, its reason.
pub fn into_status(error: NodeError) -> tonic::Status {
    use tonic::Status;
    let code = error.code();
    let reason = match &error {
        NodeError::Throttled(_) => Some(NO_CAPACITY.to_string()),
        NodeError::TooManyRequests { reason, .. } => Some(reason.as_str().to_string()),
        NodeError::Unauthenticated { code, .. } => Some(code.clone()),
        _ => None,
    };
    let message = error.message().to_string();
    let mut status = match error {
        NodeError::InvalidArgument(_) => Status::invalid_argument(message),
        NodeError::NotFound(_) => Status::not_found(message),
        NodeError::AlreadyExists(_) => Status::already_exists(message),
        NodeError::FailedPrecondition(_) | NodeError::RevisionMismatch(_) => Status::failed_precondition(message),
        NodeError::Unauthenticated { .. } => Status::unauthenticated(message),
        NodeError::PayloadTooLarge(_) | NodeError::Throttled(_) | NodeError::TooManyRequests { .. } => {
            Status::resource_exhausted(message)
        }
        NodeError::Unavailable(_) => Status::unavailable(message),
        NodeError::OutcomeUnknown(_) => Status::unknown(message),
        NodeError::Internal(_) => Status::internal(message),
    };
    if let Some(value) = metadata(code) {
        status.metadata_mut().insert(CODE_HEADER, value);
    }
    if let Some(value) = reason.as_deref().and_then(metadata) {
        status.metadata_mut().insert(REASON_HEADER, value);
    }
    status
}

/// The inverse of [`into_status`]: a status that carries a stable code
/// becomes that error again; one that does not (from tonic itself, or a
/// transport) is read from its gRPC code.
impl From<tonic::Status> for NodeError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_string();
        let header = |name: &str| status.metadata().get(name).and_then(|v| v.to_str().ok());
        if let Some(error) =
            header(CODE_HEADER).and_then(|code| NodeError::from_code(code, message.clone(), header(REASON_HEADER)))
        {
            return error;
        }
        match status.code() {
            tonic::Code::InvalidArgument => NodeError::InvalidArgument(message),
            tonic::Code::NotFound => NodeError::NotFound(message),
            tonic::Code::AlreadyExists => NodeError::AlreadyExists(message),
            tonic::Code::FailedPrecondition => NodeError::FailedPrecondition(message),
            tonic::Code::ResourceExhausted => NodeError::PayloadTooLarge(message),
            tonic::Code::Unauthenticated => NodeError::Unauthenticated {
                code: "UnrecognizedClientException".into(),
                message,
            },
            tonic::Code::Unknown => NodeError::OutcomeUnknown(message),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => NodeError::Unavailable(message),
            _ => NodeError::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<NodeError> {
        vec![
            NodeError::InvalidArgument("bad name".into()),
            NodeError::NotFound("no function f".into()),
            NodeError::AlreadyExists("function f exists".into()),
            NodeError::FailedPrecondition("not now".into()),
            NodeError::PayloadTooLarge("too big".into()),
            NodeError::Throttled("no node has room".into()),
            NodeError::TooManyRequests {
                reason: ThrottleReason::ConcurrentInvocationLimitExceeded,
                message: "Rate Exceeded".into(),
            },
            NodeError::TooManyRequests {
                reason: ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded,
                message: "Rate Exceeded".into(),
            },
            NodeError::Unavailable("no leader".into()),
            NodeError::OutcomeUnknown("node 2 failed while running the invocation".into()),
            NodeError::Internal("disk on fire".into()),
            NodeError::RevisionMismatch("revision r1 is not r2".into()),
            NodeError::Unauthenticated {
                code: "InvalidSignatureException".into(),
                message: "The request signature we calculated does not match".into(),
            },
        ]
    }

    #[test]
    fn an_error_survives_its_trip_through_a_status() {
        for error in every_variant() {
            let status = into_status(error.clone());
            assert_eq!(NodeError::from(status), error);
        }
    }

    #[test]
    fn codes_are_distinct_and_statuses_keep_grpc_semantics() {
        let codes: std::collections::BTreeSet<&str> = every_variant().iter().map(NodeError::code).collect();
        assert_eq!(codes.len(), 12);
        let status = into_status(NodeError::OutcomeUnknown("x".into()));
        assert_eq!(status.code(), tonic::Code::Unknown);
        let status = into_status(NodeError::TooManyRequests {
            reason: ThrottleReason::ConcurrentInvocationLimitExceeded,
            message: "x".into(),
        });
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.metadata().get(REASON_HEADER).unwrap(),
            "ConcurrentInvocationLimitExceeded"
        );
    }

    #[test]
    fn statuses_without_a_code_are_read_from_their_grpc_code() {
        assert_eq!(
            NodeError::from(tonic::Status::unknown("transport error")),
            NodeError::OutcomeUnknown("transport error".into())
        );
        assert_eq!(
            NodeError::from(tonic::Status::unavailable("tcp connect error")),
            NodeError::Unavailable("tcp connect error".into())
        );
        assert_eq!(
            NodeError::from(tonic::Status::cancelled("operation was canceled")),
            NodeError::Internal("operation was canceled".into())
        );
    }
}
