//! Per-identity abuse limits: requests in flight at once and requests per
//! second, so that one misbehaving client cannot starve the others. Each
//! identity has its own semaphore and token bucket; an identity's
//! `max_concurrent`/`max_rate` override the configured defaults. With
//! authentication off there is no identity to tell clients apart, and no
//! limit applies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Identity;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Concurrency(u32),
    Rate(u32),
}

impl Limited {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Limited::Concurrency(_) => "concurrency",
            Limited::Rate(_) => "rate",
        }
    }

    pub fn message(self, identity: &str) -> String {
        match self {
            Limited::Concurrency(n) => format!(
                "identity {identity} has {n} requests in flight, its limit; retry when one has finished"
            ),
            Limited::Rate(n) => {
                format!(
                    "identity {identity} exceeds its rate of {n} requests per second; retry later"
                )
            }
        }
    }
}

/// A token bucket: `rate` tokens a second, holding at most `rate`.
#[derive(Debug)]
struct Bucket {
    rate: u32,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, now: Instant) -> Self {
        Self {
            rate,
            tokens: f64::from(rate),
            at: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * f64::from(self.rate)).min(f64::from(self.rate));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Slot {
    concurrent: Option<(u32, Arc<Semaphore>)>,
    rate: Option<Mutex<Bucket>>,
}

/// The limits of every identity seen so far.
#[derive(Debug)]
pub struct Limiter {
    max_concurrent: Option<u32>,
    max_rate: Option<u32>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// A request let in; its concurrency slot is freed when this is dropped.
#[derive(Debug)]
pub struct Admitted(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Limiter {
    /// With the defaults for identities that set none (`None`: no limit).
    pub fn new(max_concurrent: Option<u32>, max_rate: Option<u32>) -> Self {
        Self {
            max_concurrent,
            max_rate,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, who: &Identity, now: Instant) -> Arc<Slot> {
        let concurrent = who.max_concurrent.or(self.max_concurrent);
        let rate = who.max_rate.or(self.max_rate);
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get(&who.name) {
            // The same limits (a reload may have changed them).
            let same_concurrent = slot.concurrent.as_ref().map(|c| c.0) == concurrent;
            let same_rate = slot
                .rate
                .as_ref()
                .map(|b| b.lock().unwrap_or_else(|e| e.into_inner()).rate)
                == rate;
            if same_concurrent && same_rate {
                return Arc::clone(slot);
            }
        }
        let slot = Arc::new(Slot {
            concurrent: concurrent.map(|n| (n, Arc::new(Semaphore::new(n as usize)))),
            rate: rate.map(|r| Mutex::new(Bucket::new(r, now))),
        });
        slots.insert(who.name.clone(), Arc::clone(&slot));
        slot
    }

    /// Lets a request of `who` in, or says which limit refuses it.
    pub fn admit(&self, who: &Identity, now: Instant) -> Result<Admitted, Limited> {
        if who.anonymous {
            return Ok(Admitted(None));
        }
        let slot = self.slot(who, now);
        if let Some(bucket) = &slot.rate {
            let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
            if !b.take(now) {
                return Err(Limited::Rate(b.rate));
            }
        }
        match &slot.concurrent {
            None => Ok(Admitted(None)),
            Some((n, sem)) => Arc::clone(sem)
                .try_acquire_owned()
                .map(|p| Admitted(Some(p)))
                .map_err(|_| Limited::Concurrency(*n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn who(name: &str) -> Identity {
        Identity {
            name: name.into(),
            anonymous: false,
            ..Identity::anonymous()
        }
    }

    #[test]
    fn rate_refills_per_second_and_identities_are_apart() {
        let limiter = Limiter::new(None, Some(2));
        let t0 = Instant::now();
        let a = who("a");
        assert!(limiter.admit(&a, t0).is_ok());
        assert!(limiter.admit(&a, t0).is_ok());
        assert_eq!(limiter.admit(&a, t0).unwrap_err(), Limited::Rate(2));
        // Another identity is not affected.
        assert!(limiter.admit(&who("b"), t0).is_ok());
        assert!(limiter.admit(&a, t0 + Duration::from_millis(500)).is_ok());
        assert!(limiter.admit(&a, t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn concurrency_is_freed_when_a_request_ends() {
        let limiter = Limiter::new(Some(1), None);
        let now = Instant::now();
        let mut a = who("a");
        let first = limiter.admit(&a, now).unwrap();
        assert_eq!(limiter.admit(&a, now).unwrap_err(), Limited::Concurrency(1));
        drop(first);
        assert!(limiter.admit(&a, now).is_ok());
        // An identity's own limit wins over the default.
        a.max_concurrent = Some(2);
        let _one = limiter.admit(&a, now).unwrap();
        assert!(limiter.admit(&a, now).is_ok());
        // Without authentication, no limit.
        let anonymous = Identity::anonymous();
        let _held: Vec<_> = (0..5)
            .map(|_| limiter.admit(&anonymous, now).unwrap())
            .collect();
    }
}
