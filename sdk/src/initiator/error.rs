//! [`Error`]: why a call to the coordinator failed, keeping the gRPC code
//! so that a final answer can be told from one worth retrying.

use tonic::{Code, Status};

use crate::BoxError;

/// The `Result` of every initiator call.
///
/// ```
/// use concord_sdk::initiator::{Error, Result};
///
/// fn parse(raw: &str) -> Result<u32> {
///     raw.parse().map_err(|_| Error::InvalidArgument { message: format!("bad number {raw}") })
/// }
/// assert!(parse("x").is_err());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call to the coordinator failed.
///
/// The gRPC code is kept (see [`Error::code`]) so callers can tell a final
/// answer ([`Error::Rejected`]) from one worth retrying
/// ([`Error::Unavailable`], [`Error::DeadlineExceeded`]).
///
/// ```no_run
/// use concord_sdk::initiator::Error;
/// use concord_sdk::{BeginOptions, Coordinator};
///
/// # async fn run(coordinator: Coordinator) -> Result<(), Error> {
/// let tx = coordinator.begin(BeginOptions::default()).await?;
/// match tx.try_branch("bank", "transfer_out", b"30".to_vec()).await {
///     Ok(_) => tx.commit(false).await.map(drop)?,
///     Err(e) if e.is_rejected() => tx.rollback(e.to_string(), false).await.map(drop)?,
///     // The outcome is unknown: roll back, or let the timeout do it.
///     Err(e) => tx.rollback(e.to_string(), false).await.map(drop)?,
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The coordinator URL does not parse.
    #[error("invalid coordinator url {url:?}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        #[source]
        source: tonic::transport::Error,
    },
    /// No connection to the coordinator could be opened.
    #[error("cannot connect to the coordinator")]
    Connect(#[source] tonic::transport::Error),
    /// `ABORTED`: for `try_branch`, the participant rejected the branch (the
    /// transaction should be rolled back); for commit, the transaction is
    /// already rolling back.
    #[error("rejected: {message}")]
    Rejected {
        /// The reason given.
        message: String,
    },
    /// `UNAVAILABLE`: the coordinator, or a participant behind it, could not
    /// be reached; the outcome is unknown and a retry may help.
    #[error("unavailable: {message}")]
    Unavailable {
        /// The reason given.
        message: String,
    },
    /// `DEADLINE_EXCEEDED`: the call took too long; for a waiting commit or
    /// rollback, the coordinator goes on in the background.
    #[error("deadline exceeded: {message}")]
    DeadlineExceeded {
        /// The reason given.
        message: String,
    },
    /// `NOT_FOUND`: no such transaction, participant or action.
    #[error("not found: {message}")]
    NotFound {
        /// The reason given.
        message: String,
    },
    /// `INVALID_ARGUMENT`: the request itself is wrong (a malformed gid...).
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// The reason given.
        message: String,
    },
    /// `FAILED_PRECONDITION`: the transaction is not in a state that allows
    /// the call (for example a try after the commit decision, or after the
    /// transaction timed out).
    #[error("failed precondition: {message}")]
    FailedPrecondition {
        /// The reason given.
        message: String,
    },
    /// Any other gRPC code.
    #[error("coordinator call failed with {code:?}: {message}")]
    Rpc {
        /// The gRPC code.
        code: Code,
        /// The reason given.
        message: String,
    },
    /// An error of the initiator's own code (see [`Error::other`]), for
    /// example from inside a [`Coordinator::tcc`] body; find it again with
    /// [`downcast_ref`](Self::downcast_ref).
    #[error("{0}")]
    Other(#[source] BoxError),
}

impl Error {
    /// The gRPC code of the coordinator's answer, or `None` if the call
    /// never reached it (or the error is the initiator's own).
    ///
    /// ```
    /// use concord_sdk::initiator::Error;
    /// use tonic::{Code, Status};
    ///
    /// let e = Error::from(Status::resource_exhausted("too many open transactions"));
    /// assert_eq!(e.code(), Some(Code::ResourceExhausted));
    /// ```
    pub fn code(&self) -> Option<Code> {
        Some(match self {
            Error::InvalidUrl { .. } | Error::Connect(_) | Error::Other(_) => return None,
            Error::Rejected { .. } => Code::Aborted,
            Error::Unavailable { .. } => Code::Unavailable,
            Error::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Error::NotFound { .. } => Code::NotFound,
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::FailedPrecondition { .. } => Code::FailedPrecondition,
            Error::Rpc { code, .. } => *code,
        })
    }

    /// The reason alone, without the kind this error's text starts with:
    /// what a rollback after this error records, so that `tx show` words it
    /// once ("participant bank-a rejected transfer_out: insufficient funds",
    /// not "rejected: participant bank-a rejected ...").
    ///
    /// ```
    /// use concord_sdk::initiator::Error;
    ///
    /// let e = Error::from(tonic::Status::aborted("participant p rejected a: no stock"));
    /// assert_eq!(e.reason(), "participant p rejected a: no stock");
    /// assert_eq!(Error::rejected("price changed").reason(), "price changed");
    /// ```
    pub fn reason(&self) -> String {
        match self {
            Error::Rejected { message }
            | Error::Unavailable { message }
            | Error::DeadlineExceeded { message }
            | Error::NotFound { message }
            | Error::InvalidArgument { message }
            | Error::FailedPrecondition { message } => message.clone(),
            other => other.to_string(),
        }
    }

    /// Whether this is a final business rejection (`ABORTED`).
    ///
    /// ```
    /// use concord_sdk::initiator::Error;
    ///
    /// assert!(Error::from(tonic::Status::aborted("insufficient funds")).is_rejected());
    /// assert!(!Error::from(tonic::Status::unavailable("down")).is_rejected());
    /// ```
    pub fn is_rejected(&self) -> bool {
        matches!(self, Error::Rejected { .. })
    }

    /// A business rejection decided by the initiator's own code (a price
    /// too high...): [`is_rejected`](Self::is_rejected) holds, and a
    /// [`Coordinator::tcc`] body returning it rolls back.
    ///
    /// ```
    /// let e = concord_sdk::initiator::Error::rejected("price changed");
    /// assert!(e.is_rejected());
    /// assert_eq!(e.to_string(), "rejected: price changed");
    /// ```
    pub fn rejected(reason: impl Into<String>) -> Self {
        Error::Rejected {
            message: reason.into(),
        }
    }

    /// Wraps any other error (the initiator's own), kept whole for
    /// [`downcast_ref`](Self::downcast_ref).
    ///
    /// ```
    /// let e = concord_sdk::initiator::Error::other("cache unreachable");
    /// assert!(!e.is_rejected());
    /// assert_eq!(e.code(), None);
    /// ```
    pub fn other(error: impl Into<BoxError>) -> Self {
        Error::Other(error.into())
    }

    /// The wrapped error of [`Error::Other`], if it is an `E`.
    ///
    /// ```
    /// use concord_sdk::initiator::Error;
    ///
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("out of stock: {0}")]
    /// struct OutOfStock(String);
    ///
    /// let e = Error::other(OutOfStock("tea".into()));
    /// assert_eq!(e.downcast_ref::<OutOfStock>().unwrap().0, "tea");
    /// ```
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            Error::Other(e) => e.downcast_ref(),
            _ => None,
        }
    }
}

// `?` on the common errors of an initiator's own code inside a `tcc` body.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Other(e.into())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Other(e.into())
    }
}

impl From<BoxError> for Error {
    fn from(e: BoxError) -> Self {
        Error::Other(e)
    }
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        let message = s.message().to_owned();
        match s.code() {
            Code::Aborted => Error::Rejected { message },
            Code::Unavailable => Error::Unavailable { message },
            Code::DeadlineExceeded => Error::DeadlineExceeded { message },
            Code::NotFound => Error::NotFound { message },
            Code::InvalidArgument => Error::InvalidArgument { message },
            Code::FailedPrecondition => Error::FailedPrecondition { message },
            code => Error::Rpc { code, message },
        }
    }
}
