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
//!
//! A participant may also declare a policy per action when it registers
//! ([`ActionPolicy`]); a branch then carries the one in force, resolved
//! once when the branch is created ([`ActionPolicy::resolve`]): the
//! request's, else the action's, else the coordinator's, part by part.

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

/// HTTP statuses (400-599) an HTTP participant's action declares final:
/// answered so, a call counts as rejected, like a gRPC code of [`CodeSet`].
/// 409 cannot be declared (it already is the rejection). A bit set, so
/// that a policy stays `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HttpStatusSet([u64; 4]);

/// The lowest HTTP status a set may hold; the set covers 200 statuses.
const HTTP_FIRST: u16 = 400;
const HTTP_LAST: u16 = 599;

impl HttpStatusSet {
    /// The set of `statuses`; the error names the first that cannot be
    /// declared.
    pub fn parse(statuses: impl IntoIterator<Item = u32>) -> Result<Self, String> {
        let mut set = [0u64; 4];
        for status in statuses {
            if status == 409 {
                return Err(
                    "409 cannot be declared non-retryable: it is a rejection already".into(),
                );
            }
            if !(u32::from(HTTP_FIRST)..=u32::from(HTTP_LAST)).contains(&status) {
                return Err(format!("{status} is not an HTTP error status (400-599)"));
            }
            let i = (status - u32::from(HTTP_FIRST)) as usize;
            set[i / 64] |= 1 << (i % 64);
        }
        Ok(HttpStatusSet(set))
    }

    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    pub fn contains(&self, status: u16) -> bool {
        if !(HTTP_FIRST..=HTTP_LAST).contains(&status) {
            return false;
        }
        let i = usize::from(status - HTTP_FIRST);
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// The statuses in the set, ascending.
    pub fn statuses(&self) -> Vec<u16> {
        (HTTP_FIRST..=HTTP_LAST)
            .filter(|s| self.contains(*s))
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
    /// The same for HTTP participants: statuses recorded as `HTTP_<n>`.
    pub non_retryable_http: HttpStatusSet,
}

/// What a participant declares for one of its actions when it registers:
/// its call timeout and its call policy, used by every branch or step that
/// calls the action and gives none of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActionPolicy {
    pub call_timeout: Option<Duration>,
    pub policy: CallPolicy,
}

impl ActionPolicy {
    pub fn is_default(&self) -> bool {
        *self == ActionPolicy::default()
    }

    /// The call timeout and policy in force for a branch whose request
    /// gave `call_timeout` and `policy`: part by part, the request's, else
    /// this action's; what neither sets stays unset and follows the
    /// coordinator's settings.
    pub fn resolve(
        &self,
        call_timeout: Option<Duration>,
        policy: CallPolicy,
    ) -> (Option<Duration>, CallPolicy) {
        (call_timeout.or(self.call_timeout), policy.or(&self.policy))
    }
}

impl CallPolicy {
    pub fn is_default(&self) -> bool {
        *self == CallPolicy::default()
    }

    /// This policy, with each part it leaves unset taken from `fallback`.
    pub fn or(&self, fallback: &CallPolicy) -> CallPolicy {
        CallPolicy {
            retry: self.retry.or(fallback.retry),
            max_attempts: self.max_attempts.or(fallback.max_attempts),
            max_age: self.max_age.or(fallback.max_age),
            non_retryable: if self.non_retryable.is_empty() {
                fallback.non_retryable
            } else {
                self.non_retryable
            },
            non_retryable_http: if self.non_retryable_http.is_empty() {
                fallback.non_retryable_http
            } else {
                self.non_retryable_http
            },
        }
    }

    /// Whether an answer recorded with `code` (a gRPC code name, or
    /// `HTTP_<status>` from an HTTP participant) is declared final.
    pub fn is_non_retryable(&self, code: &str) -> bool {
        if let Some(status) = code.strip_prefix("HTTP_") {
            return status
                .parse()
                .is_ok_and(|s| self.non_retryable_http.contains(s));
        }
        self.non_retryable.contains(code)
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
            Outcome::Unknown { code, message } if self.is_non_retryable(&code) => {
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
        if let Some(code) = last_code.filter(|c| self.is_non_retryable(c)) {
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
    fn non_retryable_http_statuses_turn_unknown_into_rejected() {
        assert!(
            HttpStatusSet::parse([409])
                .unwrap_err()
                .contains("rejection already")
        );
        assert_eq!(
            HttpStatusSet::parse([200]).unwrap_err(),
            "200 is not an HTTP error status (400-599)"
        );
        assert!(HttpStatusSet::parse([600]).is_err());
        let set = HttpStatusSet::parse([599, 400, 422]).unwrap();
        assert_eq!(set.statuses(), vec![400, 422, 599]);
        let p = CallPolicy {
            non_retryable_http: set,
            ..CallPolicy::default()
        };
        let unknown = |code: &str| Outcome::Unknown {
            code: code.into(),
            message: "m".into(),
        };
        assert_eq!(
            p.classify(unknown("HTTP_422")),
            Outcome::Rejected {
                message: "HTTP_422 m".into()
            }
        );
        assert_eq!(p.classify(unknown("HTTP_503")), unknown("HTTP_503"));
        assert_eq!(p.classify(unknown("HTTP_x")), unknown("HTTP_x"));
        // A gRPC code set does not reach HTTP statuses, nor the reverse.
        assert_eq!(
            p.classify(unknown("INVALID_ARGUMENT")),
            unknown("INVALID_ARGUMENT")
        );
        assert!(
            p.stop_reason(1, chrono::Duration::zero(), Some("HTTP_400"))
                .is_some()
        );
    }

    #[test]
    fn the_request_wins_over_the_action_part_by_part() {
        let action = ActionPolicy {
            call_timeout: Some(Duration::from_secs(2)),
            policy: CallPolicy {
                max_attempts: Some(5),
                max_age: Some(Duration::from_secs(60)),
                non_retryable: CodeSet::parse(["NOT_FOUND"]).unwrap(),
                non_retryable_http: HttpStatusSet::parse([422]).unwrap(),
                ..CallPolicy::default()
            },
        };
        // Nothing in the request: the action's policy as is.
        assert_eq!(
            action.resolve(None, CallPolicy::default()),
            (action.call_timeout, action.policy)
        );
        let request = CallPolicy {
            max_attempts: Some(2),
            non_retryable: CodeSet::parse(["DATA_LOSS"]).unwrap(),
            ..CallPolicy::default()
        };
        let (timeout, policy) = action.resolve(Some(Duration::from_millis(300)), request);
        assert_eq!(timeout, Some(Duration::from_millis(300)));
        assert_eq!(policy.max_attempts, Some(2));
        assert_eq!(policy.max_age, Some(Duration::from_secs(60)));
        assert_eq!(policy.non_retryable.names(), vec!["DATA_LOSS"]);
        assert_eq!(policy.non_retryable_http.statuses(), vec![422]);
        // No action policy: the request's alone (the coordinator's otherwise).
        assert_eq!(
            ActionPolicy::default().resolve(None, request),
            (None, request)
        );
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
