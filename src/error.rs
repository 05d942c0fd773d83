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
    /// `kind` names the failed precondition for clients, and each violation
    /// a subject that fails it (e.g. an organization) with what to do about it.
    #[error("{message}")]
    FailedPrecondition {
        kind: &'static str,
        violations: Vec<(String, String)>,
        message: String,
    },
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// An API token whose creator is no longer a member of its organization.
    #[error("{0}")]
    TokenDeactivated(String),
    /// A concurrent change won (stale etag, serialization conflict): retry.
    #[error("{0}")]
    Aborted(String),
    /// A change-feed cursor older than the events kept; `oldest` is the
    /// oldest cursor that can be read from.
    #[error("{message}")]
    CursorExpired { oldest: String, message: String },
    /// The request exceeds a size limit (the code tonic itself uses for this).
    #[error("{0}")]
    TooLarge(String),
    /// PostgreSQL refused to serialize concurrent transactions; the store retries.
    #[error("a concurrent change conflicted with this request; retry it")]
    SerializationConflict,
    #[error("{0}")]
    Unavailable(String),
    /// The connection to PostgreSQL was lost while committing: the change may
    /// have been made or not, so a blind retry could make it twice.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// The called method does not exist on this server.
    #[error("{0}")]
    UnknownMethod(String),
    /// The request is compressed in a way this server does not read.
    #[error("{0}")]
    UnsupportedEncoding(String),
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
        let message = message.into();
        Error::FailedPrecondition {
            kind,
            violations: vec![(subject.into(), message.clone())],
            message,
        }
    }

    /// A precondition that several subjects fail, each `(subject, description)`.
    pub fn preconditions(
        kind: &'static str,
        violations: Vec<(String, String)>,
        message: impl Into<String>,
    ) -> Self {
        Error::FailedPrecondition {
            kind,
            violations,
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
            // SQLSTATE 55P03 and 57014: the session's lock_timeout and
            // statement_timeout, which diesel reports only by message.
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, info)
                if info.message().contains("due to lock timeout") =>
            {
                Error::Aborted(
                    "another change to the same data held it longer than the database lock timeout; retry".into(),
                )
            }
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, info)
                if info.message().contains("due to statement timeout") =>
            {
                Error::Unavailable(
                    "the database did not answer within the statement timeout; retry later".into(),
                )
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
                if info.constraint_name() == Some("organization_restored_with_owner") =>
            {
                Error::precondition(
                    "NO_OWNER",
                    "organization",
                    "an organization without an owner cannot be restored",
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
            lost if lost_connection(&lost).is_some() => {
                tracing::warn!(error = %lost, "the database connection was lost");
                Error::Unavailable("the database connection was lost; retry".into())
            }
            other => Error::Internal(other.into()),
        }
    }
}

/// How PostgreSQL says it ends a session for an outage (SQLSTATE 57P01,
/// 57P02, 57P05 and the postmaster's death), which diesel reports only by
/// message. Other "terminating connection" messages (a protocol error, an idle
/// transaction's timeout) are orgd's own faults and stay INTERNAL.
const OUTAGE_MESSAGES: [&str; 5] = [
    "terminating connection due to administrator command",
    "terminating connection due to immediate shutdown command",
    "terminating connection because of crash of another server process",
    "terminating connection due to idle-session timeout",
    "terminating connection due to unexpected postmaster exit",
];

/// What says that `err` lost the session, if it did: PostgreSQL stopped,
/// crashed or ended it, or the socket closed without a word (tokio-postgres's
/// errors without a SQLSTATE, which diesel-async reports as
/// UnableToSendCommand). The input was fine: on a new connection the call may
/// succeed.
pub(crate) fn lost_connection(err: &DieselError) -> Option<&str> {
    let DieselError::DatabaseError(kind, info) = err else {
        return None;
    };
    let message = info.message();
    let lost = match kind {
        DatabaseErrorKind::ClosedConnection => true,
        DatabaseErrorKind::Unknown => OUTAGE_MESSAGES.iter().any(|m| message.starts_with(m)),
        DatabaseErrorKind::UnableToSendCommand => {
            ["connection closed", "error communicating with the server"]
                .iter()
                .any(|m| message.starts_with(m))
        }
        _ => false,
    };
    lost.then_some(message)
}

/// Longest status message sent. Values callers sent are echoed `quoted` (cut
/// short); this bounds the rest, so a reply's headers stay far below the 16 KiB
/// that gRPC clients accept.
const MAX_MESSAGE_BYTES: usize = 1024;

fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// The `google.rpc.ErrorInfo` domain of orgd's reasons.
pub const ERROR_DOMAIN: &str = "orgd";

impl Error {
    /// The stable, machine-readable cause (AIP-193 `ErrorInfo.reason`).
    fn reason(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "INVALID_FIELD",
            Error::NotFound(_) => "NOT_FOUND",
            Error::AlreadyExists(_) => "ALREADY_EXISTS",
            Error::FailedPrecondition { kind, .. } => kind,
            Error::PermissionDenied(_) => "PERMISSION_DENIED",
            Error::Unauthenticated(_) => "UNAUTHENTICATED",
            Error::TokenDeactivated(_) => "TOKEN_DEACTIVATED",
            Error::Aborted(_) | Error::SerializationConflict => "CONCURRENT_CHANGE",
            Error::TooLarge(_) => "REQUEST_TOO_LARGE",
            Error::CursorExpired { .. } => "CURSOR_EXPIRED",
            Error::Unavailable(_) => "UNAVAILABLE",
            Error::OutcomeUnknown(_) => "COMMIT_OUTCOME_UNKNOWN",
            Error::UnknownMethod(_) => "UNKNOWN_METHOD",
            Error::UnsupportedEncoding(_) => "UNSUPPORTED_ENCODING",
            Error::Internal(_) => "INTERNAL",
        }
    }
}

impl From<Error> for Status {
    /// Every status carries an `ErrorInfo` (AIP-193), plus a `BadRequest` naming
    /// the field or a `PreconditionFailure` naming the failed condition.
    fn from(err: Error) -> Self {
        // Values callers sent are echoed `quoted`, which masks card numbers; one
        // echoed otherwise (a slug in a resource name) is masked here, on its
        // way to the caller and the log.
        let masked = |text: &str| crate::domain::mask_card_numbers(text).into_owned();
        let mut details = ErrorDetails::new();
        let mut metadata = std::collections::HashMap::new();
        let code = match &err {
            Error::InvalidArgument { field, message } => {
                metadata.insert("field".to_owned(), field.clone());
                details.add_bad_request_violation(field, masked(message));
                Code::InvalidArgument
            }
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition {
                kind, violations, ..
            } => {
                let subjects: Vec<String> = violations.iter().map(|(s, _)| masked(s)).collect();
                metadata.insert("subject".to_owned(), subjects.join(","));
                for (subject, description) in violations {
                    details.add_precondition_failure_violation(
                        *kind,
                        masked(subject),
                        masked(description),
                    );
                }
                Code::FailedPrecondition
            }
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unauthenticated(_) | Error::TokenDeactivated(_) => Code::Unauthenticated,
            Error::Aborted(_) | Error::SerializationConflict => Code::Aborted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::OutcomeUnknown(_) => Code::Unknown,
            Error::UnknownMethod(_) | Error::UnsupportedEncoding(_) => Code::Unimplemented,
            Error::TooLarge(_) => Code::OutOfRange,
            Error::CursorExpired { oldest, .. } => {
                metadata.insert("oldest_cursor".to_owned(), oldest.clone());
                Code::OutOfRange
            }
            Error::Internal(_) => Code::Internal,
        };
        details.set_error_info(err.reason(), ERROR_DOMAIN, metadata);
        let message = match err {
            Error::InvalidArgument { field, message } => masked(&format!("{field}: {message}")),
            Error::Internal(err) => {
                // The cause stays in the logs; callers get a stable message.
                tracing::error!(error = ?err, "internal error");
                "internal error; the server log has the details".to_owned()
            }
            // Its maker masked the caller's cursor; orgd's own oldest cursor is
            // shown whole, even when its hex digits look like a card number.
            Error::CursorExpired { message, .. } => message,
            other => masked(&other.to_string()),
        };
        Status::with_error_details(code, bounded(message), details)
    }
}

impl From<Error> for tonic_types::Status {
    /// The `google.rpc.Status` a call failing with `err` would carry: for the
    /// error of one item among the answers of a batch.
    fn from(err: Error) -> Self {
        prost::Message::decode(Status::from(err).details())
            .expect("the details of orgd's statuses are an encoded google.rpc.Status")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_cursor_is_shown_whole_even_when_it_looks_like_a_card_number() {
        // Hex cursors are sometimes all decimal digits, and some of those
        // contain a Luhn-valid run in an issuer's range.
        let oldest = "00000000000000004111111111111111";
        assert!(crate::domain::contains_card_number(oldest));
        let status = Status::from(Error::CursorExpired {
            oldest: oldest.to_owned(),
            message: format!("cursor 1 is older …; the oldest cursor to read from is {oldest}"),
        });
        assert!(status.message().ends_with(oldest), "{}", status.message());
        // Other messages are still masked.
        let status = Status::from(Error::NotFound(format!("resource {oldest} not found")));
        assert!(!status.message().contains(oldest), "{}", status.message());
    }

    #[test]
    fn only_an_outage_counts_as_a_lost_connection() {
        let db =
            |kind, message: &str| DieselError::DatabaseError(kind, Box::new(message.to_owned()));
        for lost in [
            db(
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command",
            ),
            db(
                DatabaseErrorKind::Unknown,
                "terminating connection due to unexpected postmaster exit",
            ),
            db(DatabaseErrorKind::UnableToSendCommand, "connection closed"),
            db(
                DatabaseErrorKind::ClosedConnection,
                "server closed the connection",
            ),
        ] {
            assert!(lost_connection(&lost).is_some(), "{lost:?}");
            assert!(matches!(Error::from(lost), Error::Unavailable(_)));
        }
        for fault in [
            db(
                DatabaseErrorKind::Unknown,
                "terminating connection because protocol synchronization was lost",
            ),
            db(
                DatabaseErrorKind::Unknown,
                "terminating connection due to idle-in-transaction timeout",
            ),
            db(
                DatabaseErrorKind::UnableToSendCommand,
                "error serializing parameter 1",
            ),
        ] {
            assert!(lost_connection(&fault).is_none(), "{fault:?}");
            assert!(matches!(Error::from(fault), Error::Internal(_)));
        }
    }

    #[test]
    fn card_numbers_echoed_unquoted_are_masked() {
        let status = Status::from(Error::NotFound(
            "organization organizations/4111111111111111 not found".into(),
        ));
        assert_eq!(
            status.message(),
            "organization organizations/•••• 1111 not found"
        );
        let status = Status::from(Error::precondition(
            "LAST_OWNER",
            "organizations/4111111111111111",
            "organizations/4111111111111111 needs an owner",
        ));
        let shown = format!("{:?}", status.get_error_details());
        assert!(!shown.contains("41111111"), "{shown}");
    }
}
