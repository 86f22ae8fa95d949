//! The initiator side: opening a TCC global transaction on the coordinator,
//! trying branches in it and deciding its outcome; or describing a saga and
//! submitting it whole (see [`SagaBuilder`]).
//!
//! ```no_run
//! use concord_sdk::{BeginOptions, Coordinator};
//!
//! # async fn run() -> Result<(), concord_sdk::initiator::Error> {
//! let coordinator = Coordinator::connect("http://127.0.0.1:50051").await?;
//! // TCC: the initiator tries branches and decides.
//! let tx = coordinator.begin(BeginOptions::default()).await?;
//! tx.try_branch("bank", "transfer_out", b"30".to_vec()).await?;
//! tx.commit(false).await?;
//! // Saga: the coordinator runs the steps by itself.
//! let outcome = coordinator
//!     .saga(None)
//!     .step("inventory", "reserve", "release", b"tea".to_vec())
//!     .submit(true)
//!     .await?;
//! # let _ = outcome;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use concord_proto::v1::coordinator_client::CoordinatorClient;
use concord_proto::v1::{
    BeginRequest, CommitRequest, GetTransactionRequest, RollbackRequest, Transaction,
    TransactionStatus, TryRequest,
};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
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

/// A connection to the coordinator's `concord.v1.Coordinator` service.
///
/// Cheap to clone: clones share one HTTP/2 connection.
///
/// ```no_run
/// use concord_sdk::{BeginOptions, Coordinator};
///
/// # async fn run() -> Result<(), concord_sdk::initiator::Error> {
/// let coordinator = Coordinator::connect("http://127.0.0.1:50051").await?;
/// let reply = coordinator
///     .tcc(BeginOptions::default(), |tx| async move {
///         tx.try_branch("bank", "transfer_out", br#"{"amount":30}"#.to_vec()).await?;
///         let r = tx.try_branch("bank", "transfer_in", br#"{"amount":30}"#.to_vec()).await?;
///         Ok(r.payload)
///     })
///     .await?;
/// # let _ = reply;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Coordinator {
    client: CoordinatorClient<Channel>,
}

impl Coordinator {
    /// Connects to the coordinator at `url` (`http://host:port`), failing if
    /// it cannot be reached now.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), concord_sdk::initiator::Error> {
    /// let coordinator = concord_sdk::Coordinator::connect("http://127.0.0.1:50051").await?;
    /// # let _ = coordinator;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: impl Into<String>) -> Result<Self> {
        let channel = endpoint(url.into())?
            .connect()
            .await
            .map_err(Error::Connect)?;
        Ok(Self::from_channel(channel))
    }

    /// Like [`connect`](Self::connect), but connects on first use, so the
    /// coordinator need not be up yet.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let coordinator = concord_sdk::Coordinator::connect_lazy("http://127.0.0.1:50051").unwrap();
    /// # let _ = coordinator;
    /// # }
    /// ```
    pub fn connect_lazy(url: impl Into<String>) -> Result<Self> {
        Ok(Self::from_channel(endpoint(url.into())?.connect_lazy()))
    }

    /// Wraps an existing channel (for custom TLS, timeouts, interceptors...).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tonic::transport::Endpoint;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let channel = Endpoint::from_static("http://127.0.0.1:50051")
    ///     .connect_timeout(Duration::from_secs(1))
    ///     .timeout(Duration::from_secs(10))
    ///     .connect()
    ///     .await?;
    /// let coordinator = concord_sdk::Coordinator::from_channel(channel);
    /// # let _ = coordinator;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            client: CoordinatorClient::new(channel),
        }
    }

    /// Opens a TCC global transaction; drive it with the returned handle,
    /// or let [`tcc`](Self::tcc) do it.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use concord_sdk::{BeginOptions, Coordinator};
    ///
    /// # async fn run(coordinator: Coordinator) -> Result<(), concord_sdk::initiator::Error> {
    /// let tx = coordinator
    ///     .begin(BeginOptions::default().timeout(Duration::from_secs(10)))
    ///     .await?;
    /// tx.try_branch("bank", "transfer_out", br#"{"amount":30}"#.to_vec()).await?;
    /// tx.commit(true).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn begin(&self, opts: BeginOptions) -> Result<TccTransaction> {
        let traceparent = opts.metadata.get(TRACEPARENT).cloned();
        let timeout = opts.timeout.map(proto_duration);
        let request = BeginRequest {
            gid: opts.gid.unwrap_or_default(),
            timeout,
            metadata: opts.metadata,
        };
        let reply = self
            .client
            .clone()
            .begin(with_trace(request, traceparent.as_deref()))
            .await?
            .into_inner();
        tracing::debug!(gid = %reply.gid, "transaction begun");
        Ok(TccTransaction {
            client: self.client.clone(),
            gid: reply.gid,
            deadline: reply.deadline.and_then(|t| SystemTime::try_from(t).ok()),
            traceparent,
        })
    }

    /// Runs `body` in a new TCC transaction: begins it, runs `body` with its
    /// handle, then commits if `body` returns `Ok` and rolls back (with the
    /// error's text as reason) if it returns `Err`.
    ///
    /// Returns the commit's outcome with `body`'s value, or `body`'s error
    /// as it was (so [`Error::is_rejected`] still tells a business refusal
    /// from an unknown outcome), or the commit's error. `body` returns this
    /// module's [`Result`], so `?` needs no annotation; the initiator's own
    /// errors go in with [`Error::rejected`] (roll back, business refusal)
    /// or [`Error::other`] (and come back out with
    /// [`Error::downcast_ref`]).
    ///
    /// With [`BeginOptions::wait`], the commit waits for every Confirm
    /// (bounded by [`BeginOptions::wait_timeout`]); the rollback after an
    /// error never waits: it returns once the decision is durable, and the
    /// coordinator cancels the branches in the background, so an initiator
    /// whose participant is down gets the original error at once. A failed
    /// rollback is only logged: the coordinator rolls back by itself when
    /// the transaction's timeout passes. For the same reason a `body` that
    /// panics leaves nothing behind for long.
    ///
    /// ```no_run
    /// use concord_sdk::{BeginOptions, Coordinator};
    /// use concord_sdk::initiator::Error;
    ///
    /// # async fn run(coordinator: Coordinator) -> Result<(), Error> {
    /// let done = coordinator
    ///     .tcc(BeginOptions::default().gid("transfer-17").wait(true), |tx| async move {
    ///         let (out, into) = tokio::join!(
    ///             tx.try_branch_json("bank-a", "transfer_out", &(1, 30)),
    ///             tx.try_branch_json("bank-b", "transfer_in", &(2, 30)),
    ///         );
    ///         out?;
    ///         into?;
    ///         Ok(())
    ///     })
    ///     .await?;
    /// println!("{} is {:?}", done.gid, done.status);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn tcc<T, F, Fut>(&self, opts: BeginOptions, body: F) -> Result<TccOutcome<T>>
    where
        F: FnOnce(TccTransaction) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let (wait, wait_timeout) = (opts.wait, opts.wait_timeout);
        let tx = self.begin(opts).await?;
        match body(tx.clone()).await {
            Ok(value) => {
                let status = tx.commit_within(wait, wait_timeout).await?;
                Ok(TccOutcome {
                    gid: tx.gid,
                    status,
                    value,
                })
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback(e.to_string(), false).await {
                    tracing::warn!(
                        gid = tx.gid(),
                        error = %rollback,
                        "rollback failed, the coordinator will roll back at the deadline"
                    );
                }
                Err(e)
            }
        }
    }

    /// Reads a transaction and its branches, with its event history if
    /// `include_events`.
    ///
    /// ```no_run
    /// # async fn run(coordinator: concord_sdk::Coordinator) -> Result<(), concord_sdk::initiator::Error> {
    /// let tx = coordinator.get_transaction("transfer-17", false).await?;
    /// println!("{:?} with {} branches", tx.status(), tx.branches.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_transaction(
        &self,
        gid: impl Into<String>,
        include_events: bool,
    ) -> Result<Transaction> {
        let request = GetTransactionRequest {
            gid: gid.into(),
            include_events,
        };
        Ok(self
            .client
            .clone()
            .get_transaction(request)
            .await?
            .into_inner())
    }
}

/// A payload that does not serialise is the caller's mistake, reported
/// without a call.
fn to_json<P: serde::Serialize + ?Sized>(payload: &P) -> Result<Vec<u8>> {
    serde_json::to_vec(payload).map_err(|e| Error::InvalidArgument {
        message: format!("payload does not serialise as JSON: {e}"),
    })
}

fn endpoint(url: String) -> Result<Endpoint> {
    Endpoint::from_shared(url.clone()).map_err(|source| Error::InvalidUrl { url, source })
}

const TRACEPARENT: &str = "traceparent";

/// Also sends the initiator's `traceparent` as a gRPC header, so a tracing
/// layer on the coordinator can join the trace without reading the body.
fn with_trace<T>(message: T, traceparent: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = traceparent.and_then(|v| MetadataValue::try_from(v).ok()) {
        request.metadata_mut().insert(TRACEPARENT, value);
    }
    request
}

fn proto_duration(d: Duration) -> prost_types::Duration {
    // Only fails past ~292 billion years; saturate rather than error.
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

/// Options of [`Coordinator::begin`] and [`Coordinator::tcc`].
///
/// ```
/// use std::time::Duration;
/// use concord_sdk::BeginOptions;
///
/// let opts = BeginOptions::default()
///     .gid("order-42")
///     .timeout(Duration::from_secs(10))
///     .metadata("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// assert_eq!(opts.gid.as_deref(), Some("order-42"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BeginOptions {
    /// The transaction id; the coordinator generates one when `None`. Setting
    /// it (from an order id, say) makes a retried `begin` land on the same
    /// transaction.
    pub gid: Option<String>,
    /// How long the transaction may stay open before the coordinator rolls
    /// it back; the coordinator's default (30 s) when `None`.
    pub timeout: Option<Duration>,
    /// Forwarded to every participant call (for example `traceparent`).
    pub metadata: HashMap<String, String>,
    /// Whether [`Coordinator::tcc`] waits for every branch to be confirmed
    /// (or cancelled) before returning, rather than only for the decision to
    /// be durable.
    pub wait: bool,
    /// How long that waiting commit may last before returning
    /// [`Error::DeadlineExceeded`] (the coordinator goes on confirming in
    /// the background); the coordinator's maximum wait when `None`.
    pub wait_timeout: Option<Duration>,
}

impl BeginOptions {
    /// Sets the transaction id.
    ///
    /// ```
    /// let opts = concord_sdk::BeginOptions::default().gid("order-42");
    /// assert_eq!(opts.gid.as_deref(), Some("order-42"));
    /// ```
    pub fn gid(mut self, gid: impl Into<String>) -> Self {
        self.gid = Some(gid.into());
        self
    }

    /// Sets the transaction timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = concord_sdk::BeginOptions::default().timeout(Duration::from_secs(5));
    /// assert_eq!(opts.timeout, Some(Duration::from_secs(5)));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Adds one metadata entry.
    ///
    /// ```
    /// let opts = concord_sdk::BeginOptions::default().metadata("tenant", "acme");
    /// assert_eq!(opts.metadata["tenant"], "acme");
    /// ```
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets [`wait`](Self::wait).
    ///
    /// ```
    /// assert!(concord_sdk::BeginOptions::default().wait(true).wait);
    /// ```
    pub fn wait(mut self, wait: bool) -> Self {
        self.wait = wait;
        self
    }

    /// Sets [`wait`](Self::wait) and bounds it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = concord_sdk::BeginOptions::default().wait_timeout(Duration::from_secs(5));
    /// assert!(opts.wait);
    /// assert_eq!(opts.wait_timeout, Some(Duration::from_secs(5)));
    /// ```
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait = true;
        self.wait_timeout = Some(timeout);
        self
    }
}

/// What a successful Try returned.
///
/// ```no_run
/// # async fn run(tx: concord_sdk::TccTransaction) -> Result<(), concord_sdk::initiator::Error> {
/// let outcome = tx.try_branch("inventory", "reserve", b"tea".to_vec()).await?;
/// println!("branch {} replied {} bytes", outcome.branch_id, outcome.payload.len());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TryOutcome {
    /// The branch id, as given or as assigned by the coordinator.
    pub branch_id: String,
    /// The participant's reply payload.
    pub payload: Vec<u8>,
}

impl TryOutcome {
    /// Decodes the participant's reply payload as JSON.
    ///
    /// ```
    /// let outcome = concord_sdk::TryOutcome { branch_id: "1".into(), payload: b"[1,2]".to_vec() };
    /// assert_eq!(outcome.json::<Vec<u8>>().unwrap(), [1, 2]);
    /// ```
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.payload)?)
    }
}

/// What [`Coordinator::tcc`] returns once the commit is decided.
///
/// ```no_run
/// use concord_sdk::proto::v1::TransactionStatus;
///
/// # async fn run(coordinator: concord_sdk::Coordinator) -> Result<(), concord_sdk::initiator::Error> {
/// let done = coordinator
///     .tcc(Default::default(), |tx| async move {
///         tx.try_branch("bank", "transfer_out", b"30".to_vec()).await
///     })
///     .await?;
/// assert_eq!(done.status, TransactionStatus::Confirming);
/// println!("{} replied {:?}", done.gid, done.value.payload);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TccOutcome<T> {
    /// The transaction id.
    pub gid: String,
    /// `Confirming` (decided; the coordinator confirms in the background)
    /// or, with [`BeginOptions::wait`], `Confirmed`.
    pub status: TransactionStatus,
    /// What the body returned.
    pub value: T,
}

/// Options of [`TccTransaction::try_branch_with`].
///
/// ```
/// use std::time::Duration;
/// use concord_sdk::TryOptions;
///
/// let opts = TryOptions {
///     branch_id: Some("debit".into()),
///     call_timeout: Some(Duration::from_secs(2)),
/// };
/// # let _ = opts;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TryOptions {
    /// An explicit branch id. Retrying a Try with the same id never creates
    /// a second branch, which makes the call safe to retry after
    /// [`Error::Unavailable`]; the coordinator assigns `"1"`, `"2"`, ... when
    /// `None`.
    pub branch_id: Option<String>,
    /// Deadline of the participant's Try; the coordinator's default when
    /// `None`.
    pub call_timeout: Option<Duration>,
}

/// Handle on an open TCC transaction. Cheap to clone, so branches can be
/// tried concurrently.
///
/// ```no_run
/// use concord_sdk::{BeginOptions, Coordinator};
///
/// # async fn run(coordinator: Coordinator) -> Result<(), concord_sdk::initiator::Error> {
/// let tx = coordinator.begin(BeginOptions::default()).await?;
/// let other = tx.clone();
/// let (a, b) = tokio::join!(
///     tx.try_branch("bank-a", "transfer_out", b"30".to_vec()),
///     other.try_branch("bank-b", "transfer_in", b"30".to_vec()),
/// );
/// if a.is_ok() && b.is_ok() {
///     tx.commit(false).await?;
/// } else {
///     tx.rollback("a try failed", false).await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TccTransaction {
    client: CoordinatorClient<Channel>,
    gid: String,
    deadline: Option<SystemTime>,
    traceparent: Option<String>,
}

impl TccTransaction {
    /// The global transaction id.
    ///
    /// ```no_run
    /// # async fn run(coordinator: concord_sdk::Coordinator) -> Result<(), concord_sdk::initiator::Error> {
    /// let tx = coordinator.begin(concord_sdk::BeginOptions::default()).await?;
    /// println!("began {}", tx.gid());
    /// # Ok(())
    /// # }
    /// ```
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// When the coordinator will roll the transaction back if it is still
    /// open.
    ///
    /// ```no_run
    /// # async fn run(tx: concord_sdk::TccTransaction) {
    /// if let Some(deadline) = tx.deadline() {
    ///     let left = deadline.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    ///     println!("{left:?} left to try branches");
    /// }
    /// # }
    /// ```
    pub fn deadline(&self) -> Option<SystemTime> {
        self.deadline
    }

    /// Registers a branch on `participant`'s `action` and runs its Try with
    /// `payload`. [`Error::Rejected`] means the participant refused.
    ///
    /// ```no_run
    /// # async fn run(tx: concord_sdk::TccTransaction) -> Result<(), concord_sdk::initiator::Error> {
    /// match tx.try_branch("bank", "transfer_out", br#"{"amount":30}"#.to_vec()).await {
    ///     Ok(_) => println!("reserved"),
    ///     Err(e) if e.is_rejected() => println!("refused: {e}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_branch(
        &self,
        participant: &str,
        action: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<TryOutcome> {
        self.try_branch_with(participant, action, payload, TryOptions::default())
            .await
    }

    /// [`try_branch`](Self::try_branch) with `payload` sent as JSON; decode
    /// the reply with [`TryOutcome::json`].
    ///
    /// ```no_run
    /// #[derive(serde::Serialize)]
    /// struct Leg { account: i64, amount: i64 }
    ///
    /// # async fn run(tx: concord_sdk::TccTransaction) -> Result<(), concord_sdk::initiator::Error> {
    /// let reply = tx.try_branch_json("bank", "transfer_out", &Leg { account: 1, amount: 30 }).await?;
    /// let balance: i64 = reply.json()?;
    /// # let _ = balance;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_branch_json<P: serde::Serialize + ?Sized>(
        &self,
        participant: &str,
        action: &str,
        payload: &P,
    ) -> Result<TryOutcome> {
        self.try_branch(participant, action, to_json(payload)?)
            .await
    }

    /// [`try_branch`](Self::try_branch) with an explicit branch id or call
    /// timeout.
    ///
    /// ```no_run
    /// use concord_sdk::TryOptions;
    ///
    /// # async fn run(tx: concord_sdk::TccTransaction) -> Result<(), concord_sdk::initiator::Error> {
    /// let opts = TryOptions { branch_id: Some("debit".into()), ..Default::default() };
    /// // Safe to repeat after `Unavailable`: the same branch is tried again.
    /// let first = tx.try_branch_with("bank", "transfer_out", b"30".to_vec(), opts.clone()).await;
    /// if first.is_err() {
    ///     tx.try_branch_with("bank", "transfer_out", b"30".to_vec(), opts).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_branch_with(
        &self,
        participant: &str,
        action: &str,
        payload: impl Into<Vec<u8>>,
        opts: TryOptions,
    ) -> Result<TryOutcome> {
        let request = TryRequest {
            gid: self.gid.clone(),
            participant: participant.to_owned(),
            action: action.to_owned(),
            payload: payload.into(),
            branch_id: opts.branch_id.unwrap_or_default(),
            call_timeout: opts.call_timeout.map(proto_duration),
        };
        let reply = self
            .client
            .clone()
            .r#try(with_trace(request, self.traceparent.as_deref()))
            .await?
            .into_inner();
        Ok(TryOutcome {
            branch_id: reply.branch_id,
            payload: reply.payload,
        })
    }

    /// Decides commit. With `wait`, returns only once every branch is
    /// confirmed (or [`Error::DeadlineExceeded`] while the coordinator goes
    /// on in the background).
    ///
    /// ```no_run
    /// use concord_sdk::proto::v1::TransactionStatus;
    ///
    /// # async fn run(tx: concord_sdk::TccTransaction) -> Result<(), concord_sdk::initiator::Error> {
    /// assert_eq!(tx.commit(true).await?, TransactionStatus::Confirmed);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn commit(&self, wait: bool) -> Result<TransactionStatus> {
        self.commit_within(wait, None).await
    }

    async fn commit_within(
        &self,
        wait: bool,
        wait_timeout: Option<Duration>,
    ) -> Result<TransactionStatus> {
        let request = CommitRequest {
            gid: self.gid.clone(),
            wait,
        };
        let mut request = with_trace(request, self.traceparent.as_deref());
        if let (true, Some(timeout)) = (wait, wait_timeout) {
            request.set_timeout(timeout);
        }
        let reply = self.client.clone().commit(request).await?.into_inner();
        tracing::debug!(gid = %self.gid, status = ?reply.status(), "transaction committed");
        Ok(reply.status())
    }

    /// Decides rollback, recording `reason`. With `wait`, returns only once
    /// every branch is cancelled.
    ///
    /// ```no_run
    /// # async fn run(tx: concord_sdk::TccTransaction) -> Result<(), concord_sdk::initiator::Error> {
    /// tx.rollback("customer cancelled", false).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn rollback(
        &self,
        reason: impl Into<String>,
        wait: bool,
    ) -> Result<TransactionStatus> {
        let request = RollbackRequest {
            gid: self.gid.clone(),
            reason: reason.into(),
            wait,
        };
        let reply = self
            .client
            .clone()
            .rollback(with_trace(request, self.traceparent.as_deref()))
            .await?
            .into_inner();
        tracing::debug!(gid = %self.gid, status = ?reply.status(), "transaction rolled back");
        Ok(reply.status())
    }
}

mod saga;
mod sub;

pub use saga::{SagaBuilder, SagaOutcome};
pub use sub::SubTransaction;

#[cfg(test)]
mod tests;
