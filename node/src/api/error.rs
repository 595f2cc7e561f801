//! The one mapping from [`ServiceError`] to gRPC status codes.

use crate::service::ServiceError;

pub fn into_status(error: ServiceError) -> tonic::Status {
    let message = error.to_string();
    match error {
        ServiceError::InvalidArgument(_) => tonic::Status::invalid_argument(message),
        ServiceError::NotFound(_) => tonic::Status::not_found(message),
        ServiceError::AlreadyExists(_) => tonic::Status::already_exists(message),
        ServiceError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
        ServiceError::PayloadTooLarge(_) | ServiceError::Throttled(_) => tonic::Status::resource_exhausted(message),
        ServiceError::Unavailable(_) => tonic::Status::unavailable(message),
        ServiceError::OutcomeUnknown(_) => tonic::Status::unknown(message),
        ServiceError::Internal(_) => tonic::Status::internal(message),
    }
}
