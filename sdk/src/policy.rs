//! Call policies, for initiators (per TCC branch, per saga step) and for
//! participants (per action, declared when they register): how the
//! coordinator retries the calls of a branch and when it stops retrying
//! them silently. Whatever a policy leaves unset follows, part by part, the
//! action's registered policy, then the coordinator's settings.
//!
//! ```
//! use std::time::Duration;
//! use concord_sdk::CallPolicy;
//!
//! let policy = CallPolicy::new()
//!     .retry(Duration::from_millis(200), Duration::from_secs(10))
//!     .max_attempts(5)
//!     .non_retryable(tonic::Code::FailedPrecondition)
//!     .non_retryable_http(422);
//! assert_eq!(policy.to_proto().max_attempts, 5);
//! ```

use std::time::Duration;

use concord_proto::v1 as pb;

/// How the calls of one branch are retried; see the module documentation.
/// The coordinator checks it (`INVALID_ARGUMENT` naming the field).
///
/// ```
/// use std::time::Duration;
/// let p = concord_sdk::CallPolicy::new().max_age(Duration::from_secs(600));
/// assert_ne!(p, concord_sdk::CallPolicy::default());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallPolicy {
    retry: Option<(Duration, Duration)>,
    factor: Option<f32>,
    jitter: Option<bool>,
    max_attempts: u32,
    max_age: Option<Duration>,
    codes: Vec<tonic::Code>,
    http: Vec<u16>,
}

impl CallPolicy {
    /// A policy that sets nothing (everything follows the coordinator).
    ///
    /// ```
    /// assert_eq!(concord_sdk::CallPolicy::new(), concord_sdk::CallPolicy::default());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Retry delays from `initial`, doubling (see [`factor`](Self::factor)),
    /// at most `max`, with jitter.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = concord_sdk::CallPolicy::new().retry(Duration::from_millis(50), Duration::from_secs(5));
    /// assert!(p.to_proto().retry_initial.is_some());
    /// ```
    pub fn retry(mut self, initial: Duration, max: Duration) -> Self {
        self.retry = Some((initial, max));
        self
    }

    /// The growth of the retry delay per round (at least 1; default 2).
    /// Needs [`retry`](Self::retry).
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = concord_sdk::CallPolicy::new()
    ///     .retry(Duration::from_millis(50), Duration::from_secs(5))
    ///     .factor(1.5);
    /// assert_eq!(p.to_proto().retry_factor, Some(1.5));
    /// ```
    pub fn factor(mut self, factor: f32) -> Self {
        self.factor = Some(factor);
        self
    }

    /// Retry delays exactly as computed, without jitter. Needs
    /// [`retry`](Self::retry).
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = concord_sdk::CallPolicy::new()
    ///     .retry(Duration::from_millis(50), Duration::from_millis(50))
    ///     .without_jitter();
    /// assert_eq!(p.to_proto().retry_jitter, Some(false));
    /// ```
    pub fn without_jitter(mut self) -> Self {
        self.jitter = Some(false);
        self
    }

    /// Calls of one phase after which its retries are exhausted: a saga
    /// action then makes the saga compensate; a Confirm, Cancel or
    /// compensation flags the transaction needs_attention (and is retried
    /// still: a decision is never abandoned).
    ///
    /// ```
    /// assert_eq!(concord_sdk::CallPolicy::new().max_attempts(3).to_proto().max_attempts, 3);
    /// ```
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Time after which the retries are exhausted (from the decision for
    /// phase 2 and compensations, from submission for a saga's action).
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = concord_sdk::CallPolicy::new().max_age(Duration::from_secs(60));
    /// assert_eq!(p.to_proto().max_age.unwrap().seconds, 60);
    /// ```
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// A gRPC answer that counts as a rejection rather than an unknown
    /// outcome (not `Ok` or `Aborted`).
    ///
    /// ```
    /// let p = concord_sdk::CallPolicy::new().non_retryable(tonic::Code::NotFound);
    /// assert_eq!(p.to_proto().non_retryable_codes, ["NOT_FOUND"]);
    /// ```
    pub fn non_retryable(mut self, code: tonic::Code) -> Self {
        self.codes.push(code);
        self
    }

    /// The same for an HTTP participant: an HTTP status (400-599, not 409)
    /// that counts as a rejection.
    ///
    /// ```
    /// let p = concord_sdk::CallPolicy::new().non_retryable_http(422);
    /// assert_eq!(p.to_proto().non_retryable_http_statuses, [422]);
    /// ```
    pub fn non_retryable_http(mut self, status: u16) -> Self {
        self.http.push(status);
        self
    }

    /// The policy as the coordinator's API carries it.
    ///
    /// ```
    /// let wire = concord_sdk::CallPolicy::new().to_proto();
    /// assert_eq!(wire, concord_sdk::proto::v1::CallPolicy::default());
    /// ```
    pub fn to_proto(&self) -> pb::CallPolicy {
        pb::CallPolicy {
            retry_initial: self.retry.map(|(i, _)| proto_duration(i)),
            retry_factor: self.factor,
            retry_max: self.retry.map(|(_, m)| proto_duration(m)),
            retry_jitter: self.jitter,
            max_attempts: self.max_attempts,
            max_age: self.max_age.map(proto_duration),
            non_retryable_codes: self
                .codes
                .iter()
                .map(|c| code_name(*c).to_owned())
                .collect(),
            non_retryable_http_statuses: self.http.iter().map(|s| u32::from(*s)).collect(),
        }
    }
}

pub(crate) fn proto_duration(d: Duration) -> prost_types::Duration {
    // Only fails past ~292 billion years; saturate rather than error.
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

/// The gRPC code's name as the coordinator's API spells it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}
