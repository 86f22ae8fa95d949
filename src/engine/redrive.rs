//! Re-drive when a participant is back. Transactions waiting on a
//! participant that was down sit at their backoff time (up to `retry_max`
//! after their last failed round); when the participant answers again (see
//! [`crate::participant::recovered`]) this makes them due now in the
//! database, where any instance's recovery loop claims them, and wakes this
//! instance's loop. The participant is protected from the backlog by the
//! per-participant bound on calls in flight
//! ([`crate::participant::bulkhead`]) and by `recovery_concurrency`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Engine;
use super::recovery::Wake;
use crate::participant::recovered::Recovered;

/// A round in flight when the re-drive ran (its call failed on a breaker
/// not yet closed, say) writes its own next time, at the backoff, after
/// the re-drive: one more pass once such rounds are over (a lease later)
/// makes those due too. It schedules nothing further.
fn follow_up(
    engine: &Arc<Engine>,
    participant: crate::domain::ParticipantName,
    wake: &Wake,
    stop: &CancellationToken,
) {
    let (engine2, wake, stop) = (Arc::clone(engine), wake.clone(), stop.clone());
    let after = engine.settings.lease;
    engine.tracker.spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(after) => {}
        }
        match engine2
            .store
            .redrive(&participant, engine2.instance_id())
            .await
        {
            Ok(0) => {}
            Ok(moved) => {
                tracing::info!(%participant, transactions = moved, "re-drive follow-up: rounds that ended after it are due now");
                crate::telemetry::metrics::redriven(participant.as_str(), moved);
                wake.wake();
            }
            Err(e) => tracing::warn!(%participant, error = %e, "re-drive follow-up failed"),
        }
    });
}

/// Runs until `stop` is cancelled.
pub async fn run(
    engine: Arc<Engine>,
    recovered: Arc<Recovered>,
    wake: Wake,
    stop: CancellationToken,
) {
    loop {
        let back = tokio::select! {
            _ = stop.cancelled() => return,
            back = recovered.next() => back,
        };
        for participant in back {
            match engine
                .store
                .redrive(&participant, engine.instance_id())
                .await
            {
                Ok(0) => {}
                Ok(moved) => {
                    tracing::info!(%participant, transactions = moved, "participant is back; its waiting transactions are due now");
                    crate::telemetry::metrics::redriven(participant.as_str(), moved);
                    wake.wake();
                    follow_up(&engine, participant, &wake, &stop);
                }
                // Its transactions still come due at their backoff time,
                // and its next answer after a failure raises the signal
                // again.
                Err(e) => {
                    tracing::warn!(%participant, error = %e, "re-drive failed; waiting transactions keep their backoff")
                }
            }
        }
    }
}
