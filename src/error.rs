//! The one error type of the service. Each transport maps it once, through [`ErrorKind`]:
//! `grpc::status` to a `tonic::Status`, the REST gateway's `ApiError` to its JSON envelope.

/// What went wrong, in the words a client can act on.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// Malformed input: bad id, where, sort, page token, negative number, unknown field.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// A create with an id that is already in use.
    #[error("{0}")]
    AlreadyExists(String),
    /// A change the job life cycle does not allow; names the current and the attempted state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A non-empty etag that no longer matches (optimistic concurrency).
    #[error("{0}")]
    Aborted(String),
    /// No valid API key (missing, malformed, unknown or revoked).
    #[error("{0}")]
    Unauthenticated(String),
    /// The key's role may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A per-key limit was reached; retry after this many seconds.
    #[error("{message}")]
    ResourceExhausted { message: String, retry_after: u64 },
    /// The store cannot be reached right now; the call may be retried.
    #[error("{0}")]
    Unavailable(String),
    /// A fault of the server. The cause is logged, never shown to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The class of an [`Error`], which each transport turns into its own status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Aborted,
    Unauthenticated,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
    Internal,
}

impl Error {
    /// A client mistake. (In test builds, where in the code it was refused is kept for the
    /// fuzzing harness, which tells paths through the parsers apart by it.)
    #[track_caller]
    pub fn invalid(message: impl Into<String>) -> Self {
        #[cfg(test)]
        {
            let caller = std::panic::Location::caller();
            REFUSED_AT.with(|at| at.set(Some(caller)));
        }
        Error::InvalidArgument(message.into())
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Error::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Error::Aborted(_) => ErrorKind::Aborted,
            Error::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Error::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Error::ResourceExhausted { .. } => ErrorKind::ResourceExhausted,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The message a client may see: internals are replaced by a generic text.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal error; the cause is in the server log".to_string(),
            other => other.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
thread_local! {
    /// Where the last [`Error::invalid`] on this thread was made (test builds only).
    pub(crate) static REFUSED_AT: std::cell::Cell<Option<&'static std::panic::Location<'static>>> =
        const { std::cell::Cell::new(None) };
}
