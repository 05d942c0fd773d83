//! The one error type of orgd and its mapping to gRPC statuses with
//! `google.rpc` error details. Messages are meant for the person calling.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed; `field` is its path in the request.
    #[error("{message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the system is not in a state that allows it;
    /// `kind` and `subject` name the failed precondition for clients.
    #[error("{message}")]
    FailedPrecondition {
        kind: &'static str,
        subject: String,
        message: String,
    },
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// A concurrent change won (stale etag, serialization conflict): retry.
    #[error("{0}")]
    Aborted(String),
    /// The request exceeds a size limit (the code tonic itself uses for this).
    #[error("{0}")]
    TooLarge(String),
    /// PostgreSQL refused to serialize concurrent transactions; the store retries.
    #[error("a concurrent change conflicted with this request; retry it")]
    SerializationConflict,
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn precondition(
        kind: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::FailedPrecondition {
            kind,
            subject: subject.into(),
            message: message.into(),
        }
    }
}

impl From<DieselError> for Error {
    fn from(err: DieselError) -> Self {
        match err {
            DieselError::NotFound => Error::NotFound("not found".into()),
            DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
                Error::SerializationConflict
            }
            // diesel has no kind for SQLSTATE 40P01; like a serialization failure,
            // a deadlock victim succeeds when retried.
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, info)
                if info.message().starts_with("deadlock detected") =>
            {
                Error::SerializationConflict
            }
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                Error::AlreadyExists(format!(
                    "already exists ({})",
                    info.constraint_name().unwrap_or("unique")
                ))
            }
            // The database's own backstops for invariants orgd also checks first.
            DieselError::DatabaseError(DatabaseErrorKind::CheckViolation, info)
                if info.constraint_name() == Some("organization_has_owner") =>
            {
                Error::precondition(
                    "LAST_OWNER",
                    "organization",
                    "an organization must keep at least one owner; make another member an owner first",
                )
            }
            DieselError::DatabaseError(DatabaseErrorKind::CheckViolation, info)
                if info.constraint_name() == Some("personal_org_single_member") =>
            {
                Error::precondition(
                    "PERSONAL_ORGANIZATION",
                    "organization",
                    "a personal organization has only its owner as member",
                )
            }
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
                Error::Unavailable("the database connection was lost; retry".into())
            }
            other => Error::Internal(other.into()),
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::InvalidArgument { field, message } => Status::with_error_details(
                Code::InvalidArgument,
                format!("{field}: {message}"),
                ErrorDetails::with_bad_request_violation(field, message),
            ),
            Error::NotFound(_) => Status::not_found(message),
            Error::AlreadyExists(_) => Status::already_exists(message),
            Error::FailedPrecondition {
                kind,
                subject,
                message,
            } => Status::with_error_details(
                Code::FailedPrecondition,
                message.clone(),
                ErrorDetails::with_precondition_failure_violation(kind, subject, message),
            ),
            Error::PermissionDenied(_) => Status::permission_denied(message),
            Error::Unauthenticated(_) => Status::unauthenticated(message),
            Error::Aborted(_) | Error::SerializationConflict => Status::aborted(message),
            Error::Unavailable(_) => Status::unavailable(message),
            Error::TooLarge(_) => Status::out_of_range(message),
            Error::Internal(err) => {
                // The cause stays in the logs; callers get a stable message.
                tracing::error!(error = ?err, "internal error");
                Status::internal("internal error; the server log has the details")
            }
        }
    }
}
