//! How a [`CallPolicy`] is stored: a JSON document in `branches.policy`
//! (NULL when the branch has none of its own), durations in milliseconds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::machine::policy::{ActionPolicy, CallPolicy, CodeSet, HttpStatusSet, RetrySpec};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry: Option<StoredRetry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_age_ms: Option<u64>,
    /// gRPC code names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    non_retryable: Vec<String>,
    /// HTTP statuses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    non_retryable_http: Vec<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredRetry {
    initial_ms: u64,
    factor: f32,
    max_ms: u64,
    jitter: bool,
}

/// An action's declared call timeout in milliseconds and policy as JSON,
/// as `participant_actions` stores them (NULL, NULL when none).
pub(crate) fn action_columns(a: &ActionPolicy) -> (Option<i64>, Option<String>) {
    (
        a.call_timeout.map(|t| ms(t).min(i64::MAX as u64) as i64),
        StoredPolicy::of(&a.policy),
    )
}

/// The other way; an unreadable policy is dropped (it was checked when it
/// was registered, so only a newer version could have written it).
pub(crate) fn action_policy(timeout_ms: Option<i64>, policy: Option<&str>) -> ActionPolicy {
    ActionPolicy {
        call_timeout: timeout_ms.map(|t| Duration::from_millis(t.max(0) as u64)),
        policy: policy
            .and_then(|p| serde_json::from_str::<StoredPolicy>(p).ok())
            .map(|p| p.policy())
            .unwrap_or_default(),
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl StoredPolicy {
    /// `None` for the default policy, stored as NULL.
    pub(crate) fn of(p: &CallPolicy) -> Option<String> {
        if p.is_default() {
            return None;
        }
        let stored = StoredPolicy {
            retry: p.retry.map(|r| StoredRetry {
                initial_ms: ms(r.initial),
                factor: r.factor,
                max_ms: ms(r.max),
                jitter: r.jitter,
            }),
            max_attempts: p.max_attempts,
            max_age_ms: p.max_age.map(ms),
            non_retryable: p
                .non_retryable
                .names()
                .into_iter()
                .map(String::from)
                .collect(),
            non_retryable_http: p.non_retryable_http.statuses(),
        };
        serde_json::to_string(&stored).ok()
    }

    pub(crate) fn policy(&self) -> CallPolicy {
        CallPolicy {
            retry: self.retry.as_ref().map(|r| RetrySpec {
                initial: Duration::from_millis(r.initial_ms),
                factor: r.factor,
                max: Duration::from_millis(r.max_ms),
                jitter: r.jitter,
            }),
            max_attempts: self.max_attempts,
            max_age: self.max_age_ms.map(Duration::from_millis),
            // Names were checked when the request came in; one this version
            // does not know is dropped rather than failing the read.
            non_retryable: CodeSet::parse(
                self.non_retryable
                    .iter()
                    .map(String::as_str)
                    .filter(|n| CodeSet::parse([*n]).is_ok()),
            )
            .unwrap_or_default(),
            non_retryable_http: HttpStatusSet::parse(
                self.non_retryable_http
                    .iter()
                    .map(|s| u32::from(*s))
                    .filter(|s| HttpStatusSet::parse([*s]).is_ok()),
            )
            .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_millisecond_precision_and_default_is_null() {
        assert_eq!(StoredPolicy::of(&CallPolicy::default()), None);
        let p = CallPolicy {
            retry: Some(RetrySpec {
                initial: Duration::from_millis(250),
                factor: 1.5,
                max: Duration::from_secs(30),
                jitter: false,
            }),
            max_attempts: Some(4),
            max_age: Some(Duration::from_secs(600)),
            non_retryable: CodeSet::parse(["NOT_FOUND", "DATA_LOSS"]).unwrap(),
            non_retryable_http: HttpStatusSet::parse([422, 501]).unwrap(),
        };
        let json = StoredPolicy::of(&p).unwrap();
        let back: StoredPolicy = serde_json::from_str(&json).unwrap();
        assert_eq!(back.policy(), p);
    }
}
