//! The participant side: what a service implements to take part in Concord
//! transactions, and the gRPC server that exposes it to the coordinator.
//!
//! Business code implements [`TccAction`] or [`SagaAction`] (or passes
//! closures), registers them by name on a [`ParticipantService`], and serves
//! that with [`ParticipantServer`]. The outcome contract of the wire protocol
//! is encoded once, in [`ActionError`]: `Ok` is success, [`ActionError::Rejected`]
//! is a final business refusal, [`ActionError::Failed`] asks the coordinator to
//! retry.
//!
//! ```no_run
//! use concord_sdk::{ActionError, ParticipantServer, ParticipantService};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let service = ParticipantService::builder("payment")
//!     .saga_fn_pair(
//!         "charge",
//!         "refund",
//!         |ctx| async move {
//!             let amount: i64 = ctx.json()?;
//!             if amount > 100 {
//!                 return Err(ActionError::rejected("insufficient funds"));
//!             }
//!             Ok(Vec::new())
//!         },
//!         |_ctx| async { Ok(Vec::new()) },
//!     )
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:50063").await?;
//! ParticipantServer::new(service)
//!     .register_with("http://127.0.0.1:50051") // advertised as http://127.0.0.1:50063
//!     .serve(listener, async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod action;
mod builder;
mod server;
mod service;

use std::collections::HashMap;
use std::fmt;

use concord_proto::participant::v1::BranchRequest;

pub use action::{ActionError, ActionResult, BoxError, IntoReply, Json, SagaAction, TccAction};
pub use builder::{BuildError, ParticipantServiceBuilder};
pub use server::{ParticipantServer, RunningParticipant, ServeError};
pub use service::ParticipantService;

/// One call of the coordinator to a branch of a global transaction.
///
/// Built from the wire [`BranchRequest`]; handlers receive it by value so
/// they can move the payload out without copying.
///
/// ```
/// use concord_sdk::BranchContext;
///
/// let ctx = BranchContext {
///     gid: "order-42".into(),
///     branch_id: "1".into(),
///     action: "transfer_out".into(),
///     payload: br#"{"amount":30}"#.to_vec(),
///     ..Default::default()
/// };
/// #[derive(serde::Deserialize)]
/// struct Transfer { amount: i64 }
/// let t: Transfer = ctx.json().unwrap();
/// assert_eq!(t.amount, 30);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BranchContext {
    /// Global transaction id; together with `branch_id` it identifies the
    /// branch, which is what idempotency (see [`crate::Barrier`]) is keyed on.
    pub gid: String,
    /// Branch id, unique within the global transaction.
    pub branch_id: String,
    /// Action name the branch was registered with.
    pub action: String,
    /// Opaque business payload given by the initiator.
    pub payload: Vec<u8>,
    /// 1 on the first delivery of this phase, incremented on every retry; a
    /// value above 1 means an earlier delivery may already have had effects.
    pub attempt: u32,
    /// Transaction metadata set at begin (for example a W3C `traceparent`).
    pub metadata: HashMap<String, String>,
}

impl BranchContext {
    /// Decodes the payload as JSON.
    ///
    /// A payload that does not decode will not decode on a retry either, so
    /// the error is a [`ActionError::Rejected`].
    ///
    /// ```
    /// use concord_sdk::BranchContext;
    ///
    /// let ctx = BranchContext { payload: b"42".to_vec(), ..Default::default() };
    /// assert_eq!(ctx.json::<i64>().unwrap(), 42);
    /// let bad = BranchContext { payload: b"{".to_vec(), ..Default::default() };
    /// assert!(bad.json::<i64>().unwrap_err().is_rejected());
    /// ```
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ActionError> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| ActionError::Rejected(format!("invalid payload: {e}")))
    }

    /// The W3C `traceparent` propagated from the initiator, if any.
    ///
    /// ```
    /// use concord_sdk::BranchContext;
    ///
    /// let mut ctx = BranchContext::default();
    /// assert_eq!(ctx.traceparent(), None);
    /// ctx.metadata.insert("traceparent".into(), "00-abc-def-01".into());
    /// assert_eq!(ctx.traceparent(), Some("00-abc-def-01"));
    /// ```
    pub fn traceparent(&self) -> Option<&str> {
        self.metadata.get("traceparent").map(String::as_str)
    }
}

impl From<BranchRequest> for BranchContext {
    fn from(r: BranchRequest) -> Self {
        Self {
            gid: r.gid,
            branch_id: r.branch_id,
            action: r.action,
            payload: r.payload,
            attempt: r.attempt,
            metadata: r.metadata,
        }
    }
}

// Payloads may hold business data: keep them out of debug output (and thus
// out of logs), show only their size.
impl fmt::Debug for BranchContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BranchContext")
            .field("gid", &self.gid)
            .field("branch_id", &self.branch_id)
            .field("action", &self.action)
            .field("payload_len", &self.payload.len())
            .field("attempt", &self.attempt)
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// The phase of a branch a call belongs to.
///
/// Also the `op` column of the [`crate::Barrier`] table.
///
/// ```
/// use concord_sdk::Op;
///
/// assert_eq!(Op::Cancel.to_string(), "cancel");
/// assert_eq!(Op::Compensate.undoes(), Some(Op::Execute));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// TCC phase 1: reserve resources.
    Try,
    /// TCC phase 2 after a commit decision.
    Confirm,
    /// TCC phase 2 after a rollback decision.
    Cancel,
    /// Saga forward action.
    Execute,
    /// Saga compensation of an `Execute`.
    Compensate,
}

impl Op {
    /// The lowercase name used on the wire, in logs and in the barrier table.
    ///
    /// ```
    /// assert_eq!(concord_sdk::Op::Try.as_str(), "try");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Try => "try",
            Op::Confirm => "confirm",
            Op::Cancel => "cancel",
            Op::Execute => "execute",
            Op::Compensate => "compensate",
        }
    }

    /// For an undoing op (`Cancel`, `Compensate`), the forward op it undoes.
    ///
    /// ```
    /// use concord_sdk::Op;
    ///
    /// assert_eq!(Op::Cancel.undoes(), Some(Op::Try));
    /// assert_eq!(Op::Confirm.undoes(), None);
    /// ```
    pub const fn undoes(self) -> Option<Op> {
        match self {
            Op::Cancel => Some(Op::Try),
            Op::Compensate => Some(Op::Execute),
            _ => None,
        }
    }

    /// Whether this is a first-phase op (`Try`, `Execute`), the only ones for
    /// which a rejection is a meaningful business outcome.
    ///
    /// ```
    /// use concord_sdk::Op;
    ///
    /// assert!(Op::Execute.is_forward());
    /// assert!(!Op::Confirm.is_forward());
    /// ```
    pub const fn is_forward(self) -> bool {
        matches!(self, Op::Try | Op::Execute)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Op {
    type Err = ParseOpError;

    fn from_str(s: &str) -> Result<Self, ParseOpError> {
        [
            Op::Try,
            Op::Confirm,
            Op::Cancel,
            Op::Execute,
            Op::Compensate,
        ]
        .into_iter()
        .find(|op| op.as_str() == s)
        .ok_or_else(|| ParseOpError(s.to_owned()))
    }
}

/// A string that names no [`Op`] (read back from a barrier table, say).
///
/// ```
/// use concord_sdk::Op;
///
/// assert_eq!("cancel".parse::<Op>().unwrap(), Op::Cancel);
/// let err = "undo".parse::<Op>().unwrap_err();
/// assert_eq!(err.to_string(), "unknown op \"undo\"");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown op {0:?}")]
pub struct ParseOpError(pub String);

/// Whether `s` is a valid participant or action name: 1-128 characters of
/// `[A-Za-z0-9._:-]`, the coordinator's rule.
pub(crate) fn is_valid_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}
