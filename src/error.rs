//! Errors of the engine, the layer the gRPC API calls. Each variant maps to
//! one gRPC code in `api::status`, the only place that does that mapping.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; nothing was changed.
    #[error("{0}")]
    InvalidArgument(String),
    /// An unknown gid, participant or action.
    #[error("{0}")]
    NotFound(String),
    /// The id exists with different content.
    #[error("{0}")]
    AlreadyExists(String),
    /// Legal request, illegal in the transaction's current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A participant rejected the call (its ABORTED, passed on).
    #[error("{0}")]
    Rejected(String),
    /// A participant's outcome is unknown, or a dependency is down.
    #[error("{0}")]
    Unavailable(String),
    /// A wait ran out; the work goes on in the background.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// No valid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid identity without the scope the request needs.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller's identity is over one of its limits (requests in
    /// flight, requests per second); retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The same error with `what: ` in front of its message, to say which
    /// part of a request it is about (a saga's step).
    pub fn context(self, what: &str) -> Self {
        let prefixed = |m: String| format!("{what}: {m}");
        match self {
            Error::InvalidArgument(m) => Error::InvalidArgument(prefixed(m)),
            Error::NotFound(m) => Error::NotFound(prefixed(m)),
            Error::AlreadyExists(m) => Error::AlreadyExists(prefixed(m)),
            Error::FailedPrecondition(m) => Error::FailedPrecondition(prefixed(m)),
            other => other,
        }
    }
}
