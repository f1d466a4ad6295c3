//! What a page answers when something goes wrong: a sign-in redirect for a missing or ended session, else the engine's error as an HTTP status and a page that shows its words.

use super::frame;
use crate::engine::error::FleetError;
use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

#[derive(Debug)]
pub enum PageError {
    /// No session, or it ended: sign in first.
    SignIn,
    TooLarge,
    Fleet(FleetError),
}

impl From<FleetError> for PageError {
    fn from(e: FleetError) -> Self {
        PageError::Fleet(e)
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        PageError::Fleet(e.into())
    }
}

/// The HTTP status that says what kind of failure it is.
pub fn status_of(e: &FleetError) -> StatusCode {
    match e {
        FleetError::Invalid { .. } => StatusCode::BAD_REQUEST,
        FleetError::NotFound(_) => StatusCode::NOT_FOUND,
        FleetError::AlreadyExists(_) | FleetError::Conflict(_) => StatusCode::CONFLICT,
        FleetError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        FleetError::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
        FleetError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        FleetError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        FleetError::Store(_) | FleetError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::SignIn => Redirect::to("/signin").into_response(),
            PageError::TooLarge => frame::problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request is larger than the console accepts",
            ),
            PageError::Fleet(e) => {
                if matches!(e, FleetError::Store(_) | FleetError::Internal(_)) {
                    tracing::error!(error = %e, "console request failed");
                }
                frame::problem(status_of(&e), &e.to_string())
            }
        }
    }
}

pub type PageResult<T = Response> = Result<T, PageError>;
