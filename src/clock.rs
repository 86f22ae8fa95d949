//! Time as a dependency, so that the state machine and the engine can be
//! tested at chosen instants.

use std::sync::Mutex;
use std::time::Duration;

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
