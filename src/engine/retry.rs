//! Where retry delays are decided: exponential backoff with jitter (backon),
//! indexed by the attempt number stored with the transaction, so that any
//! instance computes the next delay after a restart.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use super::leases::CALL_MARGIN;
use crate::config::RetryConfig;

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
        self.backoff(attempt).max(CALL_MARGIN)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.config.initial)
            .with_factor(self.config.factor)
            .with_max_delay(self.config.max)
            .with_jitter()
            .without_max_times()
            .build();
        let index = attempt.saturating_sub(1).min(64) as usize;
        backoff
            .nth(index)
            .unwrap_or(self.config.max)
            .min(self.config.max)
    }
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
        for _ in 0..50 {
            let d1 = p.delay(1);
            assert!(
                d1 >= Duration::from_secs(1) && d1 < Duration::from_secs(2),
                "{d1:?}"
            );
            let d3 = p.delay(3);
            assert!(
                d3 >= Duration::from_secs(4) && d3 < Duration::from_secs(8),
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
