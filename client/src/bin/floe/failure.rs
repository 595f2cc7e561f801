//! Failures of `floe` and their exit codes (a contract: see README.md).

use floe_client::Error;

/// A failure with its exit code.
pub struct Failure {
    pub code: u8,
    pub message: String,
}
impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        if let Some(reason) = error.throttle_reason() {
            return Failure {
                code: 8,
                message: format!("throttled ({reason}): {error}"),
            };
        }
        let code = match error.code() {
            Some(tonic::Code::InvalidArgument) | Some(tonic::Code::ResourceExhausted) => 2,
            Some(tonic::Code::NotFound) => 3,
            Some(tonic::Code::AlreadyExists) | Some(tonic::Code::FailedPrecondition) => 4,
            Some(tonic::Code::Unavailable) | Some(tonic::Code::DeadlineExceeded) => 5,
            Some(tonic::Code::Unknown) => 7,
            Some(tonic::Code::Unauthenticated) | Some(tonic::Code::PermissionDenied) => 9,
            None => 2,
            _ => 1,
        };
        let mut message = error.to_string();
        if code == 9 {
            message.push_str(
                "\nGive an access key with --credentials FILE, or FLOE_ACCESS_KEY_ID and FLOE_SECRET_ACCESS_KEY \
                 (a new cluster's first node wrote one to <data dir>/credentials; `floe auth key create` makes more).",
            );
        }
        Failure { code, message }
    }
}

pub fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}
