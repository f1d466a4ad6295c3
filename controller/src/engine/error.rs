//! The engine's one error type: what went wrong in words a person can act on, and of which kind, so each edge (gRPC, web) can answer in its own terms.

use crate::sessions::DeliveryError;
use crate::store::StoreError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum FleetError {
    /// Input breaks a rule; nothing was changed. Shown as `field: rule`.
    #[error("{field}: {rule}")]
    Invalid { field: String, rule: String },
    #[error("{0}")]
    NotFound(String),
    /// What was to be made exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The fleet's state forbids it now (a task is running, a system is in use).
    #[error("{0}")]
    Conflict(String),
    /// A system or its agent cannot be reached or is not answering.
    #[error("{0}")]
    Unavailable(String),
    /// An agent did not answer in time.
    #[error("{0}")]
    TimedOut(String),
    /// The caller is known but may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller's credentials are refused.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("controller store failure: {0}")]
    Store(#[from] StoreError),
    /// A broken invariant inside the controller (e.g. a stored record that
    /// does not decode).
    #[error("{0}")]
    Internal(String),
}

impl FleetError {
    /// `field: rule`.
    pub fn invalid(field: &str, rule: impl std::fmt::Display) -> Self {
        FleetError::Invalid {
            field: field.to_owned(),
            rule: rule.to_string(),
        }
    }

    /// A rule's own message, already worded `field: rule` (the shared rules
    /// and the agent's checks word them so).
    pub fn invalid_message(message: &str) -> Self {
        match message.split_once(": ") {
            Some((field, rule)) if !field.is_empty() && !field.contains(' ') => {
                FleetError::invalid(field, rule)
            }
            _ => FleetError::invalid("input", message),
        }
    }

    /// The same error with `more` appended to its message, e.g. what was
    /// left as it was because of it.
    pub fn adding(self, more: &str) -> Self {
        match self {
            FleetError::Invalid { field, rule } => FleetError::Invalid {
                field,
                rule: format!("{rule}{more}"),
            },
            FleetError::NotFound(m) => FleetError::NotFound(m + more),
            FleetError::AlreadyExists(m) => FleetError::AlreadyExists(m + more),
            FleetError::Conflict(m) => FleetError::Conflict(m + more),
            FleetError::Unavailable(m) => FleetError::Unavailable(m + more),
            FleetError::TimedOut(m) => FleetError::TimedOut(m + more),
            FleetError::PermissionDenied(m) => FleetError::PermissionDenied(m + more),
            FleetError::Unauthenticated(m) => FleetError::Unauthenticated(m + more),
            FleetError::Store(e) => FleetError::Internal(format!("{}{more}", FleetError::Store(e))),
            FleetError::Internal(m) => FleetError::Internal(m + more),
        }
    }
}

impl From<DeliveryError> for FleetError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::NoAnswer { .. } => FleetError::TimedOut(e.to_string()),
            DeliveryError::Offline(_) | DeliveryError::Busy(_) => {
                FleetError::Unavailable(e.to_string())
            }
        }
    }
}

/// A stored record that does not decode.
pub fn corrupt(what: &str, e: impl std::fmt::Display) -> FleetError {
    FleetError::Internal(format!("controller store failure: {what}: {e}"))
}
