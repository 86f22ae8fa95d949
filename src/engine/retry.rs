//! Where retry delays are decided: exponential backoff with jitter (backon),
//! indexed by the attempt number stored with the transaction, so that any
//! instance computes the next delay after a restart. A branch with its own
//! retry policy (see [`crate::machine::policy`]) uses its own delays.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use super::leases::CALL_MARGIN;
use crate::config::RetryConfig;
use crate::machine::policy::{CallPolicy, RetrySpec};

/// Delay before phase-2 round `attempt + 1`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    config: RetryConfig,
}

impl RetryPolicy {
    pub fn new(config: RetryConfig) -> Self {
        Self { config }
    }

    /// The delay after `attempt` failed rounds (1-based), jittered and never
    /// above the configured cap, nor below [`CALL_MARGIN`]: a call that
    /// timed out here may run at its participant until its own deadline,
    /// counted from when the request arrived; the next attempt waits that
    /// out.
    pub fn delay(&self, attempt: u32) -> Duration {
        spec_delay(
            RetrySpec {
                initial: self.config.initial,
                factor: self.config.factor,
                max: self.config.max,
                jitter: true,
            },
            attempt,
        )
        .max(CALL_MARGIN)
    }

    /// The delay after `attempt` failed rounds of a transaction whose
    /// unfinished branches have `policies`: the shortest of their delays
    /// (the coordinator's for a branch without its own), so that no branch
    /// waits longer than its policy says.
    pub fn delay_for<'a>(
        &self,
        attempt: u32,
        policies: impl IntoIterator<Item = &'a CallPolicy>,
    ) -> Duration {
        policies
            .into_iter()
            .map(|p| match p.retry {
                // Never below the margin either, for the same reason.
                Some(spec) => spec_delay(spec, attempt).max(CALL_MARGIN),
                None => self.delay(attempt),
            })
            .min()
            .unwrap_or_else(|| self.delay(attempt))
    }
}

fn spec_delay(spec: RetrySpec, attempt: u32) -> Duration {
    let builder = ExponentialBuilder::default()
        .with_min_delay(spec.initial)
        .with_factor(spec.factor)
        .with_max_delay(spec.max)
        .without_max_times();
    let mut backoff = if spec.jitter {
        builder.with_jitter().build()
    } else {
        builder.build()
    };
    let index = attempt.saturating_sub(1).min(64) as usize;
    let d = backoff.nth(index).unwrap_or(spec.max).min(spec.max);
    // Whole milliseconds: an f32 factor leaves a few nanoseconds of noise.
    Duration::from_millis((d.as_secs_f64() * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(RetryConfig {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(60),
        })
    }

    #[test]
    fn grows_exponentially_with_bounded_jitter() {
        let p = policy();
        // Jitter adds less than the delay itself; rounding to whole
        // milliseconds can reach the upper bound (1999.6 ms -> 2 s).
        for _ in 0..50 {
            let d1 = p.delay(1);
            assert!(
                d1 >= Duration::from_secs(1) && d1 <= Duration::from_secs(2),
                "{d1:?}"
            );
            let d3 = p.delay(3);
            assert!(
                d3 >= Duration::from_secs(4) && d3 <= Duration::from_secs(8),
                "{d3:?}"
            );
        }
    }

    #[test]
    fn never_exceeds_the_cap() {
        let p = policy();
        for attempt in [7, 10, 100, u32::MAX] {
            assert!(p.delay(attempt) <= Duration::from_secs(60));
        }
    }

    #[test]
    fn a_branch_policy_sets_its_own_delays_and_the_shortest_wins() {
        let p = policy();
        let fixed = CallPolicy {
            retry: Some(RetrySpec {
                initial: Duration::from_millis(400),
                factor: 3.0,
                max: Duration::from_secs(2),
                jitter: false,
            }),
            ..CallPolicy::default()
        };
        let none = CallPolicy::default();
        assert_eq!(p.delay_for(1, [&fixed]), Duration::from_millis(400));
        assert_eq!(p.delay_for(2, [&fixed]), Duration::from_millis(1200));
        assert_eq!(p.delay_for(9, [&fixed]), Duration::from_secs(2));
        assert_eq!(p.delay_for(2, [&none, &fixed]), Duration::from_millis(1200));
        let tiny = CallPolicy {
            retry: Some(RetrySpec {
                initial: Duration::from_millis(10),
                factor: 1.0,
                max: Duration::from_millis(10),
                jitter: false,
            }),
            ..CallPolicy::default()
        };
        assert_eq!(
            p.delay_for(1, [&tiny]),
            CALL_MARGIN,
            "never below the margin"
        );
        let d = p.delay_for(3, [&none]);
        assert!(
            d >= Duration::from_secs(4) && d < Duration::from_secs(8),
            "{d:?}"
        );
    }

    #[test]
    fn jitter_spreads_delays() {
        let p = policy();
        let delays: std::collections::HashSet<_> = (0..20).map(|_| p.delay(4)).collect();
        assert!(delays.len() > 1, "jitter should vary delays");
    }

    #[test]
    fn never_below_the_call_margin() {
        let p = RetryPolicy::new(RetryConfig {
            initial: Duration::from_millis(1),
            factor: 2.0,
            max: Duration::from_millis(5),
        });
        for attempt in [1, 2, 10] {
            assert_eq!(p.delay(attempt), CALL_MARGIN);
        }
    }
}
