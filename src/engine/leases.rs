//! Leases this instance holds while it drives transactions, and the keeper
//! that renews them. A lease that fails to renew is reported lost: its
//! driver stops before the lease expires, so that no branch is called by two
//! instances at once, and fencing makes any write it still attempts a no-op.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::Gid;
use crate::store::{Lease, Store};

/// The set of leases held by this instance.
#[derive(Default)]
pub struct Leases {
    held: Mutex<HashMap<Gid, (i64, CancellationToken, std::time::Instant)>>,
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
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let mut held = self.leases.held.lock().unwrap_or_else(|e| e.into_inner());
        if held
            .get(&self.gid)
            .is_some_and(|(f, _, _)| *f == self.fence)
        {
            held.remove(&self.gid);
        }
    }
}

impl Leases {
    pub fn hold(self: &Arc<Self>, lease: &Lease) -> LeaseGuard {
        let token = CancellationToken::new();
        self.held.lock().unwrap_or_else(|e| e.into_inner()).insert(
            lease.gid.clone(),
            (lease.fence, token.clone(), std::time::Instant::now()),
        );
        LeaseGuard {
            leases: Arc::clone(self),
            gid: lease.gid.clone(),
            fence: lease.fence,
            lost: token,
        }
    }

    /// Leases held for at least `age`: younger ones were granted (or
    /// renewed by the claim) recently enough not to need it yet.
    pub fn snapshot_older_than(&self, age: Duration) -> Vec<Lease> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, (_, _, since))| since.elapsed() >= age)
            .map(|(gid, (fence, _, _))| Lease {
                gid: gid.clone(),
                fence: *fence,
            })
            .collect()
    }

    /// Every lease held.
    pub fn snapshot(&self) -> Vec<Lease> {
        self.snapshot_older_than(Duration::ZERO)
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
            if let Some((fence, token, _)) = held.get(&l.gid)
                && *fence == l.fence
            {
                tracing::warn!(gid = %l.gid, fence = l.fence, "lease lost; stopping its driver");
                crate::telemetry::metrics::leases_lost(1);
                token.cancel();
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
            // the older ones are renewed (a tick later they still have at
            // least a third of the lease left).
            let held = self.snapshot_older_than(lease / 3);
            if held.is_empty() {
                continue;
            }
            match store.renew(&owner, &held, lease).await {
                Ok(renewed) => {
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
