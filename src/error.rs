//! The crate's one error type and its single mapping to gRPC status codes.

use std::time::Duration;

/// Errors of every coord operation. `From<Error> for tonic::Status` below is
/// the only place where gRPC codes are chosen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request broke a documented bound; `field` names the request field.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The named resource (lease, board, …) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Creating something that exists with other settings.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but its result would leave a value's range in
    /// the resource's current state (e.g. an increment past int64).
    #[error("{field}: {reason}")]
    OutOfRange { field: String, reason: String },
    /// The caller is not allowed to do this in the resource's current state
    /// (e.g. releasing a lock it does not own).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Redis could not be reached or did not answer in time.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redlock mode: a majority of nodes could not be reached.
    #[error("quorum lost: {0}")]
    QuorumLost(String),
    /// Missing, unknown, invalid or expired credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// A known caller without the namespace or permission a call needs.
    #[error("{0}")]
    PermissionDenied(String),
    /// A per-caller resource ran out (e.g. a subscriber's buffer).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The server is draining for shutdown.
    #[error("server shutting down")]
    ShuttingDown,
    /// The caller's deadline passed before the operation finished.
    #[error("deadline exceeded after {0:?}")]
    DeadlineExceeded(Duration),
    /// A bug or an unexpected reply from Redis; never caused by input.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { field: field.into(), reason: reason.into() }
    }

    /// True when the failure came from the backend rather than the request.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::QuorumLost(_))
    }
}

impl From<redis::RedisError> for Error {
    fn from(err: redis::RedisError) -> Self {
        use redis::{ErrorKind, ServerErrorKind};
        // Classify by kind, never by message text: anything that says "the
        // backend is not answering" is UNAVAILABLE so clients retry elsewhere.
        let unavailable = err.is_io_error()
            || err.is_timeout()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_cluster_error()
            || matches!(
                err.kind(),
                ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                )
            )
            // BUSY: a script is running past lua-time-limit; OOM: maxmemory hit.
            || matches!(err.code(), Some("BUSY" | "OOM"));
        if unavailable { Error::Unavailable(err.to_string()) } else { Error::Internal(err.to_string()) }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let msg = err.to_string();
        match err {
            Error::InvalidArgument { .. } => tonic::Status::invalid_argument(msg),
            Error::NotFound(_) => tonic::Status::not_found(msg),
            Error::AlreadyExists(_) => tonic::Status::already_exists(msg),
            Error::OutOfRange { .. } => tonic::Status::out_of_range(msg),
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
            Error::Unavailable(_) | Error::QuorumLost(_) | Error::ShuttingDown => tonic::Status::unavailable(msg),
            Error::ResourceExhausted(_) => tonic::Status::resource_exhausted(msg),
            Error::Unauthenticated(_) => tonic::Status::unauthenticated(msg),
            Error::PermissionDenied(_) => tonic::Status::permission_denied(msg),
            Error::DeadlineExceeded(_) => tonic::Status::deadline_exceeded(msg),
            Error::Internal(_) => tonic::Status::internal(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_the_field_and_bound() {
        let status = tonic::Status::from(Error::invalid("ttl_ms", "must be > 0"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "ttl_ms: must be > 0");
    }

    #[test]
    fn io_errors_map_to_unavailable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Error::from(redis::RedisError::from(io));
        assert!(err.is_unavailable());
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::Unavailable);
    }
}
