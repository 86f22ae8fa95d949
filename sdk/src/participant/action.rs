//! The traits business code implements, and the error that carries a
//! branch's outcome back to the coordinator.

use std::future::Future;

use tonic::Status;

use super::BranchContext;

/// Any error, boxed; what [`ActionError::Failed`] wraps.
///
/// ```
/// let e: concord_sdk::BoxError = "connection reset".into();
/// assert_eq!(e.to_string(), "connection reset");
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What every action method returns: the reply payload, or why not.
///
/// ```
/// use concord_sdk::{ActionError, ActionResult};
///
/// fn reserve(available: i32, qty: i32) -> ActionResult {
///     if available < qty {
///         return Err(ActionError::rejected("out of stock"));
///     }
///     Ok(format!("{} left", available - qty).into_bytes())
/// }
/// assert_eq!(reserve(5, 2).unwrap(), b"3 left");
/// ```
pub type ActionResult = Result<Vec<u8>, ActionError>;

/// Why a branch call did not succeed.
///
/// The split matters to the coordinator: a rejection is final and rolls the
/// transaction back, a failure leaves the outcome unknown and is retried.
///
/// ```
/// use concord_sdk::ActionError;
///
/// fn debit(balance: i64, amount: i64) -> Result<i64, ActionError> {
///     if balance < amount {
///         return Err(ActionError::rejected("insufficient funds"));
///     }
///     Ok(balance - amount)
/// }
/// assert!(debit(10, 30).unwrap_err().is_rejected());
///
/// // Infrastructure errors convert with `?` and are retried.
/// let io = std::io::Error::other("disk full");
/// assert!(!ActionError::from(io).is_rejected());
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// A business refusal (insufficient funds, unknown account...). Sent as
    /// `ABORTED`; never retried.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Anything else (database down, timeout, bug). Sent as `UNAVAILABLE`;
    /// the coordinator retries, so the action must be idempotent.
    #[error("failed: {0}")]
    Failed(#[source] BoxError),
}

impl ActionError {
    /// A business refusal with a human-readable reason.
    ///
    /// ```
    /// let e = concord_sdk::ActionError::rejected("insufficient funds");
    /// assert_eq!(e.to_string(), "rejected: insufficient funds");
    /// ```
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::Rejected(reason.into())
    }

    /// A retryable failure from any error (or a plain message).
    ///
    /// ```
    /// let e = concord_sdk::ActionError::failed("upstream timed out");
    /// assert!(!e.is_rejected());
    /// ```
    pub fn failed(error: impl Into<BoxError>) -> Self {
        Self::Failed(error.into())
    }

    /// Whether this is a final business refusal.
    ///
    /// ```
    /// use concord_sdk::ActionError;
    ///
    /// assert!(ActionError::rejected("no").is_rejected());
    /// assert!(!ActionError::failed("down").is_rejected());
    /// ```
    pub fn is_rejected(&self) -> bool {
        matches!(self, Self::Rejected(_))
    }

    /// The gRPC status this error is sent as; the single place where the
    /// outcome contract is encoded on the participant side.
    ///
    /// ```
    /// use concord_sdk::ActionError;
    /// use tonic::Code;
    ///
    /// assert_eq!(ActionError::rejected("no").to_status().code(), Code::Aborted);
    /// assert_eq!(ActionError::failed("down").to_status().code(), Code::Unavailable);
    /// ```
    pub fn to_status(&self) -> Status {
        match self {
            Self::Rejected(reason) => Status::aborted(reason.clone()),
            // UNAVAILABLE rather than INTERNAL: both are retried, but
            // UNAVAILABLE tells a human reading the coordinator's history
            // that a retry is expected to help.
            Self::Failed(e) => Status::unavailable(e.to_string()),
        }
    }
}

impl From<ActionError> for Status {
    fn from(e: ActionError) -> Self {
        e.to_status()
    }
}

// `ActionError` is itself an `Error`, so a blanket `From<E: Error>` would
// overlap with the reflexive `From<T> for T`; the common error types get an
// explicit conversion instead and anything else goes through `failed`.
macro_rules! failed_from {
    ($($ty:ty),* $(,)?) => {$(
        impl From<$ty> for ActionError {
            fn from(e: $ty) -> Self {
                Self::Failed(e.into())
            }
        }
    )*};
}

failed_from!(
    BoxError,
    std::io::Error,
    serde_json::Error,
    tonic::transport::Error,
);

#[cfg(feature = "postgres")]
failed_from!(sqlx::Error);

// A call to the coordinator from inside an action (a sub-transaction, see
// `Coordinator::continue_tcc`): a rejection of the sub-branch is a business
// refusal of this branch too; anything else leaves the outcome unknown.
impl From<crate::initiator::Error> for ActionError {
    fn from(e: crate::initiator::Error) -> Self {
        match e {
            crate::initiator::Error::Rejected { message } => Self::Rejected(message),
            other => Self::Failed(Box::new(other)),
        }
    }
}

// A downstream gRPC error is never a rejection of *this* branch: even an
// `ABORTED` from a service we called is retried, the action decides
// explicitly when to reject.
impl From<Status> for ActionError {
    fn from(s: Status) -> Self {
        Self::Failed(Box::new(s))
    }
}

/// What an action's handler may answer with: the reply payload the
/// coordinator passes back to the initiator.
///
/// `Vec<u8>` is sent as is, `()` as an empty payload, [`Json`] serialised,
/// and a [`BarrierOutcome`](crate::BarrierOutcome) as its value when the
/// body ran, or empty for a duplicate or a null compensation (an action
/// whose reply must survive retries stores it with its change).
///
/// ```
/// use concord_sdk::{BarrierOutcome, IntoReply, Json};
///
/// assert_eq!(().into_reply().unwrap(), b"");
/// assert_eq!(Json(42).into_reply().unwrap(), b"42");
/// assert_eq!(BarrierOutcome::Ran(Json("ok")).into_reply().unwrap(), br#""ok""#);
/// assert_eq!(BarrierOutcome::<Json<i32>>::Duplicate.into_reply().unwrap(), b"");
/// ```
pub trait IntoReply {
    /// The payload.
    fn into_reply(self) -> ActionResult;
}

impl IntoReply for Vec<u8> {
    fn into_reply(self) -> ActionResult {
        Ok(self)
    }
}

impl IntoReply for () {
    fn into_reply(self) -> ActionResult {
        Ok(Vec::new())
    }
}

impl<T: IntoReply> IntoReply for crate::BarrierOutcome<T> {
    fn into_reply(self) -> ActionResult {
        match self {
            crate::BarrierOutcome::Ran(value) => value.into_reply(),
            _ => Ok(Vec::new()),
        }
    }
}

/// A value sent as JSON: a reply payload of an action (see [`IntoReply`]).
///
/// ```
/// use concord_sdk::{ActionError, BranchContext, IntoReply, Json};
///
/// async fn quote(ctx: BranchContext) -> Result<Json<u32>, ActionError> {
///     let qty: u32 = ctx.json()?;
///     Ok(Json(qty * 3))
/// }
/// # let _ = quote;
/// assert_eq!(Json(vec![1, 2]).into_reply().unwrap(), b"[1,2]");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoReply for Json<T> {
    fn into_reply(self) -> ActionResult {
        // A bug of the participant: retried, and so visible to an operator,
        // rather than passed off as a business refusal.
        serde_json::to_vec(&self.0)
            .map_err(|e| ActionError::Failed(format!("reply does not serialise: {e}").into()))
    }
}

/// A TCC action: reserve in [`try_`](TccAction::try_), then make it final in
/// [`confirm`](TccAction::confirm) or release it in
/// [`cancel`](TccAction::cancel).
///
/// Every method may be called more than once for the same branch and
/// `cancel` may arrive without (or before) `try_`; wrapping the bodies in
/// [`crate::Barrier::run`] handles both.
///
/// ```
/// use concord_sdk::{ActionResult, BranchContext, TccAction};
///
/// struct TransferOut;
///
/// #[concord_sdk::async_trait]
/// impl TccAction for TransferOut {
///     async fn try_(&self, ctx: BranchContext) -> ActionResult {
///         // freeze the amount on the account
///         Ok(Vec::new())
///     }
///     async fn confirm(&self, ctx: BranchContext) -> ActionResult {
///         // debit the frozen amount
///         Ok(Vec::new())
///     }
///     async fn cancel(&self, ctx: BranchContext) -> ActionResult {
///         // unfreeze the amount
///         Ok(Vec::new())
///     }
/// }
/// ```
#[tonic::async_trait]
pub trait TccAction: Send + Sync + 'static {
    /// Phase 1. Its reply payload is returned to the initiator.
    async fn try_(&self, ctx: BranchContext) -> ActionResult;
    /// Phase 2 after a commit decision. Must not reject: a rejection here is
    /// retried and escalated to an operator.
    async fn confirm(&self, ctx: BranchContext) -> ActionResult;
    /// Phase 2 after a rollback decision, also when `try_` never ran.
    async fn cancel(&self, ctx: BranchContext) -> ActionResult;
}

/// A saga step: [`execute`](SagaAction::execute) forward, and
/// [`compensate`](SagaAction::compensate) to undo it if a later step fails.
///
/// ```
/// use concord_sdk::{ActionResult, BranchContext, SagaAction};
///
/// struct Reserve;
///
/// #[concord_sdk::async_trait]
/// impl SagaAction for Reserve {
///     async fn execute(&self, ctx: BranchContext) -> ActionResult {
///         Ok(b"seat 12A".to_vec())
///     }
///     async fn compensate(&self, ctx: BranchContext) -> ActionResult {
///         Ok(Vec::new())
///     }
/// }
/// ```
#[tonic::async_trait]
pub trait SagaAction: Send + Sync + 'static {
    /// The forward step.
    async fn execute(&self, ctx: BranchContext) -> ActionResult;
    /// Undoes `execute`; may arrive when `execute` never ran.
    async fn compensate(&self, ctx: BranchContext) -> ActionResult;
}

/// A [`TccAction`] made of three closures; see
/// [`ParticipantServiceBuilder::tcc_fn`](crate::ParticipantServiceBuilder::tcc_fn).
pub(crate) struct TccFn<T, C, X> {
    pub(crate) try_: T,
    pub(crate) confirm: C,
    pub(crate) cancel: X,
}

#[tonic::async_trait]
impl<T, TF, TR, C, CF, CR, X, XF, XR> TccAction for TccFn<T, C, X>
where
    T: Fn(BranchContext) -> TF + Send + Sync + 'static,
    TF: Future<Output = Result<TR, ActionError>> + Send + 'static,
    TR: IntoReply,
    C: Fn(BranchContext) -> CF + Send + Sync + 'static,
    CF: Future<Output = Result<CR, ActionError>> + Send + 'static,
    CR: IntoReply,
    X: Fn(BranchContext) -> XF + Send + Sync + 'static,
    XF: Future<Output = Result<XR, ActionError>> + Send + 'static,
    XR: IntoReply,
{
    async fn try_(&self, ctx: BranchContext) -> ActionResult {
        (self.try_)(ctx).await?.into_reply()
    }
    async fn confirm(&self, ctx: BranchContext) -> ActionResult {
        (self.confirm)(ctx).await?.into_reply()
    }
    async fn cancel(&self, ctx: BranchContext) -> ActionResult {
        (self.cancel)(ctx).await?.into_reply()
    }
}

/// A [`SagaAction`] made of two closures; see
/// [`ParticipantServiceBuilder::saga_fn`](crate::ParticipantServiceBuilder::saga_fn).
pub(crate) struct SagaFn<E, C> {
    pub(crate) execute: E,
    pub(crate) compensate: C,
}

#[tonic::async_trait]
impl<E, EF, ER, C, CF, CR> SagaAction for SagaFn<E, C>
where
    E: Fn(BranchContext) -> EF + Send + Sync + 'static,
    EF: Future<Output = Result<ER, ActionError>> + Send + 'static,
    ER: IntoReply,
    C: Fn(BranchContext) -> CF + Send + Sync + 'static,
    CF: Future<Output = Result<CR, ActionError>> + Send + 'static,
    CR: IntoReply,
{
    async fn execute(&self, ctx: BranchContext) -> ActionResult {
        (self.execute)(ctx).await?.into_reply()
    }
    async fn compensate(&self, ctx: BranchContext) -> ActionResult {
        (self.compensate)(ctx).await?.into_reply()
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn rejection_is_sent_as_aborted_with_its_reason() {
        let s = ActionError::rejected("insufficient funds").to_status();
        assert_eq!(s.code(), Code::Aborted);
        assert_eq!(s.message(), "insufficient funds");
    }

    #[test]
    fn failure_is_sent_as_a_retryable_code() {
        let s = ActionError::failed("connection reset").to_status();
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "connection reset");
    }

    #[test]
    fn downstream_aborted_is_not_a_rejection() {
        let e: ActionError = Status::aborted("someone else said no").into();
        assert!(!e.is_rejected());
        assert_eq!(Status::from(e).code(), Code::Unavailable);
    }

    #[test]
    fn common_errors_convert_to_failures() {
        fn io() -> Result<(), ActionError> {
            let r: Result<(), std::io::Error> = Err(std::io::Error::other("disk full"));
            r?;
            Ok(())
        }
        assert!(matches!(io(), Err(ActionError::Failed(_))));
        let bad: Result<u8, _> = serde_json::from_slice(b"{");
        assert!(!ActionError::from(bad.unwrap_err()).is_rejected());
    }

    #[test]
    fn undecodable_payload_is_rejected() {
        let ctx = BranchContext {
            payload: b"not json".to_vec(),
            ..Default::default()
        };
        let e = ctx.json::<u32>().unwrap_err();
        assert!(e.is_rejected());
    }
}
