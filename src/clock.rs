//! Time as a dependency, so that the state machine and the engine can be
//! tested at chosen instants.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// What a lease (or a Try's `call_until`) covers beyond a call's deadline,
/// and the least time between a call that timed out here and the next call
/// of that branch: the time the request takes to reach the participant,
/// which counts its deadline from when the request arrived, and the
/// difference in clock *rates* over a call (durations are measured locally;
/// expiries are decided by the database's clock). README, "Clocks", says
/// the same. Defined here, below every layer, because the store keeps it
/// too: work made due early (a re-drive, an operator's retry) is due no
/// sooner than this after the write that scheduled it.
pub const CALL_MARGIN: Duration = Duration::from_millis(250);

/// What a lease (or a Try's `call_until`) granted for a call adds, beyond
/// the call's deadline and [`CALL_MARGIN`], for the time between the write
/// that grants it and the call: the engine counts the cover from before
/// that write, and a call sent later than this after it gets a deadline
/// cut by the difference (or an extension first), never a cover that ends
/// before its deadline. Short, because after a crash a takeover waits for
/// the whole lease: the dead owner's call deadline + margin + this.
pub const GRANT_SLACK: Duration = Duration::from_millis(100);

/// A length of time counted from a moment on this process's monotonic
/// clock: a lease (or a Try's cover) as the engine asks for it, counted
/// from before the write that grants it, which is where the engine's
/// conservative reading of its expiry starts. A store grants what is
/// [`Countdown::left`] when its statement goes out, not the whole length
/// from then: time the write spent queued for its batch would otherwise
/// make the lease outlast what the engine counts, and after a crash a
/// takeover waits for the whole lease. The database's now at the statement
/// comes after that reading, so the lease still ends no earlier than
/// `from + length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Countdown {
    pub from: Instant,
    pub length: Duration,
}

impl Countdown {
    /// `length` counted from now.
    pub fn start(length: Duration) -> Self {
        Self {
            from: Instant::now(),
            length,
        }
    }

    /// What is left of it now (zero once it has run out), rounded up to
    /// whole milliseconds, the stores' unit: never shorter than counted.
    pub fn left(&self) -> Duration {
        self.left_at(Instant::now())
    }

    /// What is left of it at `at`, as [`Countdown::left`]: for a store that
    /// reads its clock once for a batch of writes, at that reading.
    pub fn left_at(&self, at: Instant) -> Duration {
        let left = self.end().saturating_duration_since(at);
        let ms = left.as_micros().div_ceil(1000);
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// When it runs out.
    pub fn end(&self) -> Instant {
        self.from + self.length
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }

    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
