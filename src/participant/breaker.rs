//! Per-endpoint circuit breaker: after consecutive failures an endpoint is
//! refused for a cooldown (doubling while its probes fail), so that an outage
//! costs one probe per cooldown rather than a retry storm. Pure: the caller
//! passes the time.
//!
//! A probe that is let through must be answered by `on_success`,
//! `on_failure` or, when its call was dropped before any answer (the
//! caller's request was cancelled), `on_abandoned`: a probe nobody reports
//! would keep the breaker half-open and refusing every call for good.

use std::time::{Duration, Instant};

/// Longest cooldown, however often probes fail.
const MAX_COOLDOWN: Duration = Duration::from_secs(60);

/// State as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    base_cooldown: Duration,
    failures: u32,
    cooldown: Duration,
    open_until: Option<Instant>,
    probing: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            base_cooldown: cooldown,
            failures: 0,
            cooldown,
            open_until: None,
            probing: false,
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go out now; in half-open state only one probe
    /// at a time does.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if self.probing => false,
            BreakerState::HalfOpen => {
                self.probing = true;
                true
            }
        }
    }

    /// The endpoint answered (whatever the business outcome). Returns
    /// whether this closed a breaker that was open or half-open, that is
    /// whether the endpoint is back.
    pub fn on_success(&mut self) -> bool {
        let was_open = self.open_until.is_some();
        self.failures = 0;
        self.cooldown = self.base_cooldown;
        self.open_until = None;
        self.probing = false;
        was_open
    }

    /// A call let through by `try_acquire` ended without telling anything
    /// about the endpoint (it was cancelled): if it was the probe, the next
    /// call may probe instead.
    pub fn on_abandoned(&mut self) {
        self.probing = false;
    }

    /// Outside evidence that the endpoint is up (it registered again):
    /// closed at once, as after a successful probe.
    pub fn reset(&mut self) -> bool {
        self.on_success()
    }

    /// The endpoint did not answer (unreachable, timed out).
    pub fn on_failure(&mut self, now: Instant) {
        if self.probing {
            self.probing = false;
            self.cooldown = (self.cooldown * 2).min(MAX_COOLDOWN);
            self.open_until = Some(now + self.cooldown);
            return;
        }
        self.failures += 1;
        if self.failures >= self.threshold {
            self.open_until = Some(now + self.cooldown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_after_cooldown() {
        let t = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(2));
        for _ in 0..2 {
            assert!(b.try_acquire(t));
            b.on_failure(t);
        }
        assert_eq!(b.state(t), BreakerState::Closed);
        assert!(b.try_acquire(t));
        b.on_failure(t);
        assert_eq!(b.state(t), BreakerState::Open);
        assert!(!b.try_acquire(t + Duration::from_secs(1)));
        let later = t + Duration::from_secs(2);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.try_acquire(later), "one probe");
        assert!(!b.try_acquire(later), "only one probe at a time");
        assert!(b.on_success(), "the probe's success closes an open breaker");
        assert_eq!(b.state(later), BreakerState::Closed);
        assert!(b.try_acquire(later));
        assert!(!b.on_success(), "already closed: nothing came back");
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        // The bug behind "circuit open for every endpoint" that never
        // cleared: a probe whose call was cancelled was never reported, and
        // the breaker stayed half-open with its one probe taken.
        let t = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(2));
        b.on_failure(t);
        let later = t + Duration::from_secs(2);
        assert!(b.try_acquire(later));
        assert!(!b.try_acquire(later));
        b.on_abandoned();
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.try_acquire(later), "a new probe after the abandoned one");
        assert!(b.on_success());
        assert_eq!(b.state(later), BreakerState::Closed);
    }

    #[test]
    fn reset_closes_an_open_breaker_at_once() {
        let t = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(60));
        b.on_failure(t);
        assert_eq!(b.state(t), BreakerState::Open);
        assert!(b.reset());
        assert!(b.try_acquire(t));
    }

    #[test]
    fn failed_probe_doubles_cooldown_up_to_cap() {
        let t = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(2));
        b.on_failure(t);
        let mut now = t + Duration::from_secs(2);
        let mut expected = Duration::from_secs(4);
        for _ in 0..10 {
            assert!(b.try_acquire(now));
            b.on_failure(now);
            assert_eq!(
                b.state(now + expected - Duration::from_millis(1)),
                BreakerState::Open
            );
            now += expected;
            expected = (expected * 2).min(MAX_COOLDOWN);
        }
    }

    #[test]
    fn success_resets_failure_count() {
        let t = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(1));
        b.on_failure(t);
        b.on_success();
        b.on_failure(t);
        assert_eq!(b.state(t), BreakerState::Closed);
    }
}
