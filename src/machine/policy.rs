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

use super::Outcome;

/// gRPC code names a call is never retried on, for example
/// `FAILED_PRECONDITION`: the action declares that such an answer is as
/// final as ABORTED. A set of the 17 gRPC codes, by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CodeSet(u32);

/// gRPC code names by number (`tonic::Code as i32`).
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

impl CodeSet {
    /// The set of `names`; the error names the first that is not a gRPC
    /// code that can be declared (OK and ABORTED cannot: one is a success,
    /// the other a rejection already).
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut set = 0u32;
        for name in names {
            match CODES.iter().position(|c| *c == name) {
                Some(0) | Some(10) => {
                    return Err(format!("{name} cannot be declared non-retryable"));
                }
                Some(i) => set |= 1 << i,
                None => return Err(format!("{name:?} is not a gRPC code name")),
            }
        }
        Ok(CodeSet(set))
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    pub fn contains(&self, name: &str) -> bool {
        CODES
            .iter()
            .position(|c| *c == name)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }

    /// The names in the set, in code order.
    pub fn names(&self) -> Vec<&'static str> {
        CODES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, c)| *c)
            .collect()
    }
}

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
    /// Answers that count as a rejection rather than an unknown outcome.
    pub non_retryable: CodeSet,
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

    /// The outcome by this policy: an unknown outcome whose code the
    /// action declared non-retryable is a rejection (its message keeps the
    /// code), anything else is unchanged.
    pub fn classify(&self, outcome: Outcome) -> Outcome {
        match outcome {
            Outcome::Unknown { code, message } if self.non_retryable.contains(&code) => {
                Outcome::Rejected {
                    message: format!("{code} {message}").trim_end().to_string(),
                }
            }
            other => other,
        }
    }

    /// Why a phase that must not be refused (phase 2, a compensation)
    /// should stop being retried silently: its limits are reached, or its
    /// last answer is one its action declared non-retryable. `None` while
    /// neither holds.
    pub fn stop_reason(
        &self,
        attempts: u32,
        age: chrono::Duration,
        last_code: Option<&str>,
    ) -> Option<String> {
        if let Some(code) = last_code.filter(|c| self.non_retryable.contains(c)) {
            return Some(format!(
                "answered {code}, which its policy declares non-retryable"
            ));
        }
        self.exhausted(attempts, age).then(|| {
            format!(
                "exhausted its policy {}",
                self.describe_limit(attempts, age)
            )
        })
    }

    /// How it is exhausted: "after 3 of 3 attempts" or "after 61s (max_age 60s)".
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
    fn non_retryable_codes_turn_unknown_into_rejected() {
        assert!(CodeSet::parse(["ABORTED"]).is_err());
        assert!(CodeSet::parse(["OK"]).is_err());
        assert_eq!(
            CodeSet::parse(["NOPE"]).unwrap_err(),
            "\"NOPE\" is not a gRPC code name"
        );
        let set = CodeSet::parse(["UNAUTHENTICATED", "FAILED_PRECONDITION"]).unwrap();
        assert_eq!(set.names(), vec!["FAILED_PRECONDITION", "UNAUTHENTICATED"]);
        let p = CallPolicy {
            non_retryable: set,
            ..CallPolicy::default()
        };
        let unknown = |code: &str| Outcome::Unknown {
            code: code.into(),
            message: "m".into(),
        };
        assert_eq!(
            p.classify(unknown("FAILED_PRECONDITION")),
            Outcome::Rejected {
                message: "FAILED_PRECONDITION m".into()
            }
        );
        assert_eq!(p.classify(unknown("UNAVAILABLE")), unknown("UNAVAILABLE"));
        assert_eq!(p.classify(Outcome::Succeeded), Outcome::Succeeded);
        assert_eq!(
            p.stop_reason(1, chrono::Duration::zero(), Some("UNAUTHENTICATED"))
                .as_deref(),
            Some("answered UNAUTHENTICATED, which its policy declares non-retryable")
        );
        assert_eq!(
            p.stop_reason(9, chrono::Duration::days(9), Some("UNAVAILABLE")),
            None
        );
        assert_eq!(p.stop_reason(9, chrono::Duration::days(9), None), None);
    }

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
