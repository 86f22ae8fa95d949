//! The call policy of one branch or saga step: how its calls are retried
//! and when its retries are exhausted. Given in the request (per TCC branch
//! on Try, per saga step on SubmitSaga) and stored with the branch, so that
//! every instance applies the same one after a restart. Each unset part
//! falls back to the coordinator's settings.
//!
//! What exhaustion means is decided here and by the transitions that ask
//! [`CallPolicy::exhausted`]: a saga's forward action that exhausts its
//! policy makes the saga compensate (with the reason); a phase-2 call of TCC
//! or a compensation can only be flagged needs_attention — the decision is
//! final, so it is never abandoned and goes on being retried.

use std::time::Duration;

/// Retry delays of one branch: exponential from `initial` by `factor`, at
/// most `max`, with or without jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySpec {
    pub initial: Duration,
    pub factor: f32,
    pub max: Duration,
    pub jitter: bool,
}

// `factor` is an f32 but never NaN (requests are checked: finite, >= 1),
// so equality is an equivalence and the state machine's states stay `Eq`.
impl Eq for RetrySpec {}

/// A branch's or step's own policy; `None` parts follow the coordinator's
/// settings (and its call timeout is the branch's `call_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallPolicy {
    pub retry: Option<RetrySpec>,
    /// Calls of the current phase after which it is exhausted.
    pub max_attempts: Option<u32>,
    /// Time after which it is exhausted: since the decision for phase 2 and
    /// compensations, since submission for a saga's forward action.
    pub max_age: Option<Duration>,
}

impl CallPolicy {
    pub fn is_default(&self) -> bool {
        *self == CallPolicy::default()
    }

    /// Whether a phase that has made `attempts` calls and has been owed
    /// for `age` has run out of retries.
    pub fn exhausted(&self, attempts: u32, age: chrono::Duration) -> bool {
        let by_attempts = self.max_attempts.is_some_and(|max| attempts >= max);
        let by_age = self
            .max_age
            .and_then(|max| chrono::Duration::from_std(max).ok())
            .is_some_and(|max| age >= max);
        by_attempts || by_age
    }

    /// Why it is exhausted, for the transaction's reason.
    pub fn describe_limit(&self, attempts: u32, age: chrono::Duration) -> String {
        match self.max_attempts {
            Some(max) if attempts >= max => format!("after {attempts} of {max} attempts"),
            _ => format!(
                "after {}s (max_age {}s)",
                age.num_seconds(),
                self.max_age.map(|a| a.as_secs()).unwrap_or_default()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausted_by_attempts_or_age_and_never_without_a_limit() {
        let none = CallPolicy::default();
        assert!(!none.exhausted(u32::MAX, chrono::Duration::days(365)));
        let attempts = CallPolicy {
            max_attempts: Some(3),
            ..CallPolicy::default()
        };
        assert!(!attempts.exhausted(2, chrono::Duration::days(1)));
        assert!(attempts.exhausted(3, chrono::Duration::zero()));
        assert_eq!(
            attempts.describe_limit(3, chrono::Duration::zero()),
            "after 3 of 3 attempts"
        );
        let age = CallPolicy {
            max_age: Some(Duration::from_secs(60)),
            ..CallPolicy::default()
        };
        assert!(!age.exhausted(100, chrono::Duration::seconds(59)));
        assert!(age.exhausted(1, chrono::Duration::seconds(60)));
        assert_eq!(
            age.describe_limit(1, chrono::Duration::seconds(61)),
            "after 61s (max_age 60s)"
        );
    }
}
