//! The sampler behind the gauges that describe state rather than events:
//! unfinished transactions in the database, the pools, the leases this
//! instance holds and its endpoints' breakers. Every few seconds, never on
//! the hot path; the metric names and labels are `crate::telemetry::metrics`'s.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::store::admin::AdminStore;
use crate::telemetry::metrics;

/// How often the database is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Samples every [`SAMPLE_INTERVAL`] until `stop`, and runs the recorder's
/// upkeep (which bounds histogram memory).
pub async fn sample(
    store: Arc<dyn AdminStore>,
    engine: Arc<Engine>,
    handle: PrometheusHandle,
    stop: CancellationToken,
) {
    loop {
        sample_once(store.as_ref(), &engine).await;
        handle.run_upkeep();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SAMPLE_INTERVAL) => {}
        }
    }
}

/// One sample of the database, the pools, the leases and the breakers.
pub async fn sample_once(store: &dyn AdminStore, engine: &Engine) {
    match store.open_counts().await {
        Ok(counts) => {
            metrics::set_open(&counts.by_status, counts.needs_attention, counts.oldest_age)
        }
        Err(e) => {
            metrics::sample_failed();
            tracing::debug!(error = %e, "metrics sample failed");
        }
    }
    for pool in store.pool_stats() {
        metrics::set_pool(pool.name, pool.size, pool.idle, pool.max);
    }
    metrics::set_leases_held(engine.leases.len());
    for endpoint in engine.clients.health() {
        metrics::set_breaker(endpoint.url.as_str(), endpoint.breaker);
    }
}
