//! The recovery loop: every poll interval (or when woken) it claims due work
//! with `FOR UPDATE SKIP LOCKED` and a lease, and drives it: phase-2 rounds
//! whose retry time came, transactions whose owner died (expired lease), and
//! trying transactions past their deadline (rolled back). Several instances
//! run it on one database without driving a transaction twice.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;

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
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(poll_interval) => {}
            _ = wake.0.notified() => {}
        }
        // Claim only what can be driven now: a claimed row waits for nobody
        // else while it sits in a queue here.
        let free = permits.available_permits();
        if free == 0 {
            continue;
        }
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
                engine2.resume(c).await;
                drop(permit);
            });
        }
        // More may be due: look again at once rather than after a full
        // interval.
        if full {
            wake.wake();
        }
    }
}
