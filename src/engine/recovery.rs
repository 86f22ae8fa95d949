//! The recovery loop: when work falls due (a lease expires, a retry time
//! comes), at the latest every poll interval, or when woken, it claims due work
//! with `FOR UPDATE SKIP LOCKED` and a lease, and drives it: phase-2 rounds
//! whose retry time came, transactions whose owner died (expired lease), and
//! trying transactions past their deadline (rolled back). Several instances
//! run it on one database without driving a transaction twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::Engine;
use super::leases::{Countdown, Granted};
use crate::machine::Status;
use crate::machine::tcc::{self, Command, Verdict};
use crate::store::Claimed;

/// Handle to wake the loop early (for example after an operator's retry).
#[derive(Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// Runs until `stop` is cancelled.
pub async fn run(
    engine: Arc<Engine>,
    poll_interval: Duration,
    concurrency: u32,
    wake: Wake,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(concurrency as usize));
    // A first claim at once: an instance that starts after a crash takes
    // over what is due without waiting a poll interval.
    let mut pause = Duration::ZERO;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
            _ = wake.0.notified() => {}
        }
        pause = poll_interval;
        // Claim only what can be driven now: a claimed row waits for nobody
        // else while it sits in a queue here.
        let free = permits.available_permits();
        if free == 0 {
            continue;
        }
        let claim_sent = Instant::now();
        let claimed = match engine
            .store
            .claim_due(engine.instance_id(), free as i64, engine.settings.lease)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "recovery claim failed");
                continue;
            }
        };
        if !claimed.is_empty() {
            tracing::debug!(count = claimed.len(), "claimed due transactions");
            let takeovers = claimed
                .iter()
                .filter(|c| c.previous_owner.is_some())
                .count();
            crate::telemetry::metrics::recovery_claimed(claimed.len(), takeovers);
        }
        let full = claimed.len() == free;
        for c in claimed {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let engine2 = Arc::clone(&engine);
            engine.tracker.spawn(async move {
                engine2.resume(c, claim_sent).await;
                drop(permit);
            });
        }
        // More may be due: look again at once rather than after a full
        // interval.
        if full {
            wake.wake();
        } else {
            pause = until_next_due(&engine, poll_interval).await;
        }
    }
}

/// The least pause between two claims when something is due but was not
/// claimed (another instance's claim holds its row): no busy loop.
const MIN_PAUSE: Duration = Duration::from_millis(20);

/// How long to sleep before the next claim: until the earliest lease
/// expiry or retry time the store knows of (plus a little, for the
/// database's clock to pass it), at most `poll_interval`. A transaction
/// whose owner died is then taken over as soon as its lease ends rather
/// than up to a poll interval later, which is what bounds a takeover after
/// a crash to the dead owner's call deadline plus the margins (README,
/// "Clocks").
async fn until_next_due(engine: &Engine, poll_interval: Duration) -> Duration {
    match engine.store.next_due(poll_interval).await {
        Ok(Some(due)) => (due + Duration::from_millis(2)).clamp(MIN_PAUSE, poll_interval),
        Ok(None) => poll_interval,
        Err(e) => {
            tracing::debug!(error = %e, "next due time not read; polling");
            poll_interval
        }
    }
}

impl Engine {
    /// Takes over a transaction claimed by the recovery loop.
    pub(crate) async fn resume(self: Arc<Self>, claimed: Claimed, claim_sent: Instant) {
        let gid = claimed.lease.gid.clone();
        // The claim granted the configured lease; the driver extends it
        // before a call that needs more.
        let grant = Granted {
            lease: claimed.lease.clone(),
            cover: Countdown {
                from: claim_sent,
                length: self.settings.lease,
            },
        };
        let (tx, branches) = match self.store.load(&gid).await {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(%gid, error = %e, "cannot load claimed transaction; its lease will expire");
                return;
            }
        };
        if tx.fence != claimed.lease.fence {
            return;
        }
        if let Some(previous) = &claimed.previous_owner {
            tracing::info!(%gid, previous_owner = %previous, status = tx.status.as_str(), "took over an expired lease");
        }
        let state = tx.state(&branches);
        match tx.status {
            Status::Trying => {
                let now = self.clock.now();
                let Ok(Verdict::Decided { next, calls }) =
                    tcc::decide(&state, &Command::Expire, now)
                else {
                    // Not past its deadline by our clock (clock skew with
                    // the database): give it back untouched.
                    let _ = self
                        .store
                        .release(&self.settings.instance_id, &[claimed.lease])
                        .await;
                    return;
                };
                let cover = Countdown::start(
                    self.round_lease(&super::calls::called(&branches, &calls).collect::<Vec<_>>()),
                );
                match self
                    .store
                    .decide(self.decision(&tx, next.clone(), now, cover))
                    .await
                {
                    Ok(Some(lease)) => {
                        tracing::info!(%gid, "deadline passed; rolling back");
                        let grant = Granted { lease, cover };
                        self.drive(grant, branches, next, calls, tx.metadata).await;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(%gid, error = %e, "cannot roll back expired transaction")
                    }
                }
            }
            Status::Confirming | Status::Cancelling => {
                let calls = tcc::pending_calls(&state);
                self.drive(grant, branches, state, calls, tx.metadata).await;
            }
            Status::Running | Status::Compensating => {
                self.drive_saga(grant, tx, branches).await;
            }
            // A message past its deadline is asked back; a submitted one
            // has steps owed.
            Status::Prepared | Status::Submitted => {
                self.drive_msg(grant, tx, branches).await;
            }
            Status::Confirmed
            | Status::Cancelled
            | Status::Succeeded
            | Status::Compensated
            | Status::Aborted => {
                let _ = self
                    .store
                    .release(&self.settings.instance_id, &[claimed.lease])
                    .await;
            }
        }
    }
}
