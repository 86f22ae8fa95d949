//! The retention task: deletes transactions that finished longer ago than
//! the configured retention, in batches with a pause between them, so that
//! the tables stop growing without ever holding the hot path up. Several
//! instances may run it at once; `SKIP LOCKED` splits the work.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::admin::AdminStore;
use crate::telemetry::metrics;

/// Pause between two batches of one sweep.
pub const BATCH_PAUSE: Duration = Duration::from_millis(200);
/// Time between sweeps.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Sweeps now, then every [`SWEEP_INTERVAL`], until `stop`.
pub async fn run(
    store: Arc<dyn AdminStore>,
    retention: Duration,
    batch: u32,
    stop: CancellationToken,
) {
    loop {
        sweep(store.as_ref(), retention, batch, &stop).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
    }
}

/// Deletes batch after batch until a batch comes back short (or `stop`);
/// returns how many transactions were deleted.
pub async fn sweep(
    store: &dyn AdminStore,
    retention: Duration,
    batch: u32,
    stop: &CancellationToken,
) -> u64 {
    let mut total = 0;
    loop {
        match store.delete_finished(retention, batch).await {
            Ok(n) => {
                metrics::retention_deleted(n);
                total += n;
                if n < u64::from(batch) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention batch failed; trying again next sweep");
                break;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(BATCH_PAUSE) => {}
        }
    }
    if total > 0 {
        tracing::info!(deleted = total, "retention deleted finished transactions");
    }
    total
}
