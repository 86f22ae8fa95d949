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

use std::future::Future;
use std::time::{Duration, SystemTime};

use crate::credential::Credential;
use concord_proto::v1::coordinator_client::CoordinatorClient;
use concord_proto::v1::{
    BeginRequest, CommitRequest, GetTransactionRequest, RollbackRequest, Transaction,
    TransactionStatus, TryRequest,
};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

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
    client: Client,
    /// Kept to build a client with another credential.
    channel: Channel,
}

/// A Coordinator client presenting this initiator's credential.
pub(crate) type Client = CoordinatorClient<InterceptedService<Channel, Credential>>;

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
            client: CoordinatorClient::with_interceptor(channel.clone(), Credential::none()),
            channel,
        }
    }

    /// Presents `token` (`authorization: Bearer <token>`) on every call: a
    /// coordinator with identities needs one whose identity has the
    /// initiator scope, and lets only that identity (and admins) act on the
    /// transactions it began. Instances of one service share an identity by
    /// each holding one of its tokens.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), concord_sdk::initiator::Error> {
    /// let coordinator = concord_sdk::Coordinator::connect("http://127.0.0.1:50051")
    ///     .await?
    ///     .with_token("checkout-secret")?;
    /// # let _ = coordinator;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_token(self, token: &str) -> Result<Self> {
        let credential = Credential::bearer(token).ok_or_else(|| Error::InvalidArgument {
            message: "the token contains characters a header cannot carry".into(),
        })?;
        Ok(Self {
            client: CoordinatorClient::with_interceptor(self.channel.clone(), credential),
            channel: self.channel,
        })
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
                if let Err(rollback) = tx.rollback(e.reason(), false).await {
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
    client: Client,
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
            policy: opts.policy.as_ref().map(crate::CallPolicy::to_proto),
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

mod error;
#[cfg(feature = "postgres")]
mod msg;
mod options;
mod saga;
mod sub;

pub use error::{Error, Result};
#[cfg(feature = "postgres")]
pub use msg::{MessageBuilder, MessageOutcome, MessageQuery};
pub use options::{BeginOptions, TryOptions};
pub use saga::{SagaBuilder, SagaOutcome};
pub use sub::SubTransaction;

#[cfg(test)]
mod tests;
