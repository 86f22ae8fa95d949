//! Leases this instance holds while it drives transactions, and the keeper
//! that renews them.
//!
//! A lease is what keeps every other instance away from a transaction, so
//! a participant call is sent only while the lease covers that call's whole
//! deadline plus [`CALL_MARGIN`]: [`LeaseGuard::covered_until`] is a
//! conservative local reading of the lease's expiry (counted from before
//! the write that granted it), and the engine extends the lease durably
//! before a call that would outlive it (`Engine::cover`). When this instance
//! dies or loses the database, the lease it leaves behind therefore
//! outlives every call it may have sent, and a new owner takes over only
//! after those calls passed their deadline.
//!
//! A lease that fails to renew is reported lost: its driver stops, and
//! fencing makes any write it still attempts a no-op.
//!
//! While a call sent under a lease is out ([`CallsOut`]), the keeper does not
//! renew that lease: the cover granted for the call already lasts until the
//! call's deadline plus the margin, and a renewal then would only push the
//! lease (and so a takeover after a crash) past the call by up to a whole
//! lease. Once the calls are back the driver writes its round at once, a
//! fenced write that needs no unexpired lease, or the keeper renews as usual.
//! The same holds while phase 2 waits for a Try still out
//! ([`Engine::hold_through`]): the lease then lasts as long as the wait, so
//! that a crash during it does not keep other instances away any longer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::domain::Gid;
use crate::store::{BranchRecord, Lease, Store};

pub use crate::clock::{CALL_MARGIN, Countdown, GRANT_SLACK};

/// One held lease: its fence, the token that stops its driver, and until
/// when it surely lasts (local clock).
struct Held {
    fence: i64,
    lost: CancellationToken,
    covered_until: Instant,
    /// Calls sent under this lease and not back yet.
    calls_out: u32,
}

/// A lease as this instance was granted it: for `cover`, counted from
/// before the write that granted it.
#[derive(Debug, Clone)]
pub struct Granted {
    pub lease: Lease,
    pub cover: Countdown,
}

/// The set of leases held by this instance.
#[derive(Default)]
pub struct Leases {
    held: Mutex<HashMap<Gid, Held>>,
}

/// Held while a driver works; dropping it forgets the lease (the driver has
/// written or abandoned its round).
pub struct LeaseGuard {
    leases: Arc<Leases>,
    gid: Gid,
    fence: i64,
    lost: CancellationToken,
}

impl LeaseGuard {
    /// Cancelled when the lease could not be renewed.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    pub fn lease(&self) -> Lease {
        Lease {
            gid: self.gid.clone(),
            fence: self.fence,
        }
    }

    /// Until when the lease surely lasts (local clock); a call may be sent
    /// only if it ends, margin included, before this.
    pub fn covered_until(&self) -> Instant {
        self.leases
            .with(&self.gid, self.fence, |h| h.covered_until)
            .unwrap_or_else(Instant::now)
    }

    /// Records that the lease was extended for `cover` (never shortens
    /// what is known).
    pub fn covered(&self, cover: Countdown) {
        self.leases.with(&self.gid, self.fence, |h| {
            h.covered_until = h.covered_until.max(cover.end());
        });
    }
}

/// Calls out under a lease, until dropped; `until` is what a branch call's
/// `until` carries (engine/calls.rs).
pub struct CallsOut {
    leases: Arc<Leases>,
    gid: Gid,
    fence: i64,
    pub until: Instant,
}

impl LeaseGuard {
    /// Marks calls as out under this lease until the returned value is
    /// dropped.
    fn calls_out(&self, until: Instant) -> CallsOut {
        self.leases
            .with(&self.gid, self.fence, |h| h.calls_out += 1);
        CallsOut {
            leases: Arc::clone(&self.leases),
            gid: self.gid.clone(),
            fence: self.fence,
            until,
        }
    }
}

impl Drop for CallsOut {
    fn drop(&mut self) {
        self.leases.with(&self.gid, self.fence, |h| {
            h.calls_out = h.calls_out.saturating_sub(1);
        });
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let mut held = self.leases.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.get(&self.gid).is_some_and(|h| h.fence == self.fence) {
            held.remove(&self.gid);
        }
    }
}

impl Leases {
    /// Holds a granted lease until the guard is dropped.
    pub fn hold(self: &Arc<Self>, grant: &Granted) -> LeaseGuard {
        let lease = &grant.lease;
        let token = CancellationToken::new();
        self.held.lock().unwrap_or_else(|e| e.into_inner()).insert(
            lease.gid.clone(),
            Held {
                fence: lease.fence,
                lost: token.clone(),
                covered_until: grant.cover.end(),
                calls_out: 0,
            },
        );
        LeaseGuard {
            leases: Arc::clone(self),
            gid: lease.gid.clone(),
            fence: lease.fence,
            lost: token,
        }
    }

    fn with<T>(&self, gid: &Gid, fence: i64, f: impl FnOnce(&mut Held) -> T) -> Option<T> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get_mut(gid).filter(|h| h.fence == fence).map(f)
    }

    /// Leases that surely last less than `left` more and have no call out.
    fn expiring_within(&self, left: Duration) -> Vec<Lease> {
        let horizon = Instant::now() + left;
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, h)| h.covered_until < horizon && h.calls_out == 0)
            .map(|(gid, h)| Lease {
                gid: gid.clone(),
                fence: h.fence,
            })
            .collect()
    }

    /// Every lease held.
    pub fn snapshot(&self) -> Vec<Lease> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(gid, h)| Lease {
                gid: gid.clone(),
                fence: h.fence,
            })
            .collect()
    }

    /// Records a renewal sent at `sent` for `lease` of the ones renewed.
    fn renewed(&self, renewed: &[Gid], sent: Instant, lease: Duration) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for gid in renewed {
            if let Some(h) = held.get_mut(gid) {
                h.covered_until = h.covered_until.max(sent + lease);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cancels the drivers of leases that were not renewed and are still
    /// held (one that finished between snapshot and renewal is not lost).
    fn mark_lost(&self, lost: &[Lease]) {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for l in lost {
            if let Some(h) = held.get(&l.gid)
                && h.fence == l.fence
            {
                tracing::warn!(gid = %l.gid, fence = l.fence, "lease lost; stopping its driver");
                crate::telemetry::metrics::leases_lost(1);
                h.lost.cancel();
            }
        }
    }

    /// Renews every held lease every `lease / 3` until `stop`.
    pub async fn keep(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        owner: String,
        lease: Duration,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Most rounds finish long before their lease would need it; only
            // the ones with less than two thirds left are renewed (a tick
            // later they still have at least a third of the lease left).
            let held = self.expiring_within(lease * 2 / 3);
            if held.is_empty() {
                continue;
            }
            let sent = Instant::now();
            match store.renew(&owner, &held, lease).await {
                Ok(renewed) => {
                    self.renewed(&renewed, sent, lease);
                    let lost: Vec<Lease> = held
                        .into_iter()
                        .filter(|l| !renewed.contains(&l.gid))
                        .collect();
                    self.mark_lost(&lost);
                }
                // A failed renewal is not a lost lease: it may still be ours.
                // Fencing protects the writes if it is not.
                Err(e) => tracing::warn!(error = %e, leases = held.len(), "lease renewal failed"),
            }
        }
    }
}

impl Engine {
    /// How long a lease must be granted for calls with these call
    /// timeouts (`None`: the configured one): their longest deadline plus
    /// the margin and the slack for the time between the grant and the
    /// call, and never less than the configured lease.
    /// Granted with the decision (or the saga's submission) itself, so that
    /// the hot path needs no extra write to cover its calls.
    pub(crate) fn lease_for(
        &self,
        call_timeouts: impl IntoIterator<Item = Option<Duration>>,
    ) -> Duration {
        let longest = call_timeouts
            .into_iter()
            .map(|t| t.unwrap_or(self.settings.call_timeout))
            .max()
            .unwrap_or_default();
        self.settings.lease.max(longest + CALL_MARGIN + GRANT_SLACK)
    }

    /// The deadline of a call of `branch`.
    pub(crate) fn call_timeout_of(&self, branch: &BranchRecord) -> Duration {
        branch.call_timeout.unwrap_or(self.settings.call_timeout)
    }

    /// Makes sure the lease of `guard` covers a call of `timeout` sent now,
    /// extending it durably first when it does not; returns until when the
    /// call may run (what `BranchCall::until` carries), marked as out until
    /// the returned value is dropped: hold it while the call runs.
    /// `None` when the lease could not be extended: the call must not be
    /// sent (a lost lease is also reported to the driver).
    pub(crate) async fn cover(&self, guard: &LeaseGuard, timeout: Duration) -> Option<CallsOut> {
        let need = timeout + CALL_MARGIN;
        self.hold_for(guard, need, self.settings.lease.max(need + GRANT_SLACK))
            .await
    }

    /// Holds the lease of `guard` through a wait of `wait` in which this
    /// instance sends nothing (phase 2 waiting for a Try still out),
    /// extending it only as far as the wait needs; the keeper does not renew
    /// it while the returned value is held. If this instance dies during the
    /// wait, its lease then ends with the wait rather than a whole lease (or
    /// a call's deadline) later, and whoever takes over waits for the Try
    /// as this instance would have. `None` as for [`Engine::cover`].
    pub(crate) async fn hold_through(
        &self,
        guard: &LeaseGuard,
        wait: Duration,
    ) -> Option<CallsOut> {
        self.hold_for(guard, wait, wait + GRANT_SLACK).await
    }

    /// Makes sure the lease of `guard` lasts `need` more, extending it by
    /// `extend` from now when it does not; marked as out until the returned
    /// value is dropped.
    async fn hold_for(
        &self,
        guard: &LeaseGuard,
        need: Duration,
        extend: Duration,
    ) -> Option<CallsOut> {
        let covered = guard.covered_until();
        if covered >= Instant::now() + need {
            return Some(guard.calls_out(covered));
        }
        let extend = Countdown::start(extend);
        let lease = guard.lease();
        match self
            .store
            .extend_lease(&self.settings.instance_id, &lease, extend)
            .await
        {
            Ok(true) => {
                guard.covered(extend);
                crate::telemetry::metrics::lease_extended();
                Some(guard.calls_out(guard.covered_until()))
            }
            Ok(false) => {
                tracing::warn!(gid = %lease.gid, "lease lost before a call; stopping its driver");
                guard.lost().cancel();
                None
            }
            Err(e) => {
                tracing::warn!(gid = %lease.gid, error = %e, "lease not extended; the call is not sent");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(gid: &str, granted: Duration) -> Granted {
        Granted {
            lease: Lease {
                gid: Gid::parse(gid).unwrap(),
                fence: 1,
            },
            cover: Countdown::start(granted),
        }
    }

    #[test]
    fn a_lease_with_a_call_out_is_not_renewed_until_the_call_is_back() {
        let leases = Arc::new(Leases::default());
        let guard = leases.hold(&grant("g-1", Duration::from_millis(100)));
        assert_eq!(leases.expiring_within(Duration::from_secs(1)).len(), 1);
        let out = guard.calls_out(guard.covered_until());
        let second = guard.calls_out(guard.covered_until());
        assert!(
            leases.expiring_within(Duration::from_secs(1)).is_empty(),
            "renewing now would hold the lease past the call"
        );
        drop(out);
        assert!(leases.expiring_within(Duration::from_secs(1)).is_empty());
        drop(second);
        assert_eq!(leases.expiring_within(Duration::from_secs(1)).len(), 1);
        drop(guard);
        assert!(leases.is_empty());
    }
}
