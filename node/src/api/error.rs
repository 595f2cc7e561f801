//! The one mapping from [`ServiceError`] to gRPC status codes.

use crate::service::ServiceError;

/// The gRPC metadata key that carries a 429's reason (Lambda's `Reason`).
pub const REASON_HEADER: &str = "floe-reason";
/// The reason given when no node has room for a function (not a quota).
pub const NO_CAPACITY: &str = "InsufficientCapacity";

/// Lambda's 429: RESOURCE_EXHAUSTED with the reason in the metadata.
fn throttled(message: String, reason: &'static str) -> tonic::Status {
    let mut status = tonic::Status::resource_exhausted(message);
    status
        .metadata_mut()
        .insert(REASON_HEADER, tonic::metadata::MetadataValue::from_static(reason));
    status
}

pub fn into_status(error: ServiceError) -> tonic::Status {
    let message = error.to_string();
    match error {
        ServiceError::InvalidArgument(_) => tonic::Status::invalid_argument(message),
        ServiceError::NotFound(_) => tonic::Status::not_found(message),
        ServiceError::AlreadyExists(_) => tonic::Status::already_exists(message),
        ServiceError::FailedPrecondition(_) | ServiceError::RevisionMismatch(_) => {
            tonic::Status::failed_precondition(message)
        }
        ServiceError::Unauthenticated { .. } => tonic::Status::unauthenticated(message),
        ServiceError::PayloadTooLarge(_) => tonic::Status::resource_exhausted(message),
        ServiceError::Throttled(_) => throttled(message, NO_CAPACITY),
        ServiceError::TooManyRequests { reason, .. } => throttled(message, reason.as_str()),
        ServiceError::Unavailable(_) => tonic::Status::unavailable(message),
        ServiceError::OutcomeUnknown(_) => tonic::Status::unknown(message),
        ServiceError::Internal(_) => tonic::Status::internal(message),
    }
}
