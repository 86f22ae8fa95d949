//! The options of a TCC transaction ([`BeginOptions`]) and of one Try
//! ([`TryOptions`]).

use std::collections::HashMap;
use std::time::Duration;

#[cfg(doc)]
use super::{Coordinator, Error, TccTransaction};

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

/// Options of [`TccTransaction::try_branch_with`].
///
/// ```
/// use std::time::Duration;
/// use concord_sdk::TryOptions;
///
/// let opts = TryOptions {
///     branch_id: Some("debit".into()),
///     call_timeout: Some(Duration::from_secs(2)),
///     policy: Some(concord_sdk::CallPolicy::new().max_attempts(5)),
/// };
/// # let _ = opts;
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TryOptions {
    /// An explicit branch id. Retrying a Try with the same id never creates
    /// a second branch, which makes the call safe to retry after
    /// [`Error::Unavailable`]; the coordinator assigns `"1"`, `"2"`, ... when
    /// `None`.
    pub branch_id: Option<String>,
    /// Deadline of the participant's Try; the coordinator's default when
    /// `None`.
    pub call_timeout: Option<Duration>,
    /// The retry policy of this branch's Confirm or Cancel (and its
    /// non-retryable answers, which apply to the Try too); unset parts
    /// follow the action's registered policy, then the coordinator's.
    pub policy: Option<crate::CallPolicy>,
}
