//! The engine's errors as gRPC statuses: the one place a `FleetError` becomes a transport answer.

use crate::engine::error::FleetError;
use tonic::Status;

impl From<FleetError> for Status {
    fn from(e: FleetError) -> Status {
        let message = e.to_string();
        match e {
            FleetError::Invalid { .. } => Status::invalid_argument(message),
            FleetError::NotFound(_) => Status::not_found(message),
            FleetError::AlreadyExists(_) => Status::already_exists(message),
            FleetError::Conflict(_) => Status::failed_precondition(message),
            FleetError::Unavailable(_) => Status::unavailable(message),
            FleetError::TimedOut(_) => Status::deadline_exceeded(message),
            FleetError::PermissionDenied(_) => Status::permission_denied(message),
            FleetError::Unauthenticated(_) => Status::unauthenticated(message),
            FleetError::Store(_) | FleetError::Internal(_) => {
                tracing::error!(error = %message, "internal failure answered to a caller");
                Status::internal(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn each_kind_has_its_code_and_the_message_is_kept() {
        let cases = [
            (
                FleetError::invalid("dataset", "Dataset is required"),
                Code::InvalidArgument,
            ),
            (
                FleetError::NotFound("run 9 does not exist".into()),
                Code::NotFound,
            ),
            (FleetError::AlreadyExists("x".into()), Code::AlreadyExists),
            (FleetError::Conflict("x".into()), Code::FailedPrecondition),
            (FleetError::Unavailable("x".into()), Code::Unavailable),
            (FleetError::TimedOut("x".into()), Code::DeadlineExceeded),
            (
                FleetError::PermissionDenied("x".into()),
                Code::PermissionDenied,
            ),
            (
                FleetError::Unauthenticated("x".into()),
                Code::Unauthenticated,
            ),
            (FleetError::Internal("x".into()), Code::Internal),
        ];
        for (error, code) in cases {
            let text = error.to_string();
            let status = Status::from(error);
            assert_eq!((status.code(), status.message()), (code, text.as_str()));
        }
        assert_eq!(
            Status::from(FleetError::invalid("dataset", "Dataset is required")).message(),
            "dataset: Dataset is required"
        );
    }
}
