//! Read-only samples for the metrics gauges: unfinished transactions per
//! status, the needs-attention count, the oldest one's age, and the pools.
//! Only the metrics sampler asks, every few seconds.

use std::time::Duration;

use super::PgStore;
use crate::machine::Status;
use crate::store::{OpenCounts, PoolStats, StoreResult};

#[derive(sqlx::FromRow)]
struct OpenRow {
    status: Status,
    n: i64,
    attention: i64,
    age: f64,
}

impl PgStore {
    /// One grouped scan of the unfinished rows (the partial status index).
    pub(super) async fn open_counts(&self) -> StoreResult<OpenCounts> {
        let open: Vec<&str> = Status::ALL
            .into_iter()
            .filter(|s| !s.is_final())
            .map(Status::as_str)
            .collect();
        let rows: Vec<OpenRow> = sqlx::query_as(
            "SELECT status, count(*) AS n,
                    count(*) FILTER (WHERE needs_attention) AS attention,
                    COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS age
               FROM global_transactions
              WHERE status = ANY($1) AND finished_at IS NULL AND resolved_at IS NULL
              GROUP BY status",
        )
        .bind(&open)
        .fetch_all(&self.durable)
        .await?;
        let mut counts = OpenCounts::default();
        let mut oldest = 0.0_f64;
        for row in rows {
            counts.by_status.push((row.status, row.n.max(0) as u64));
            counts.needs_attention += row.attention.max(0) as u64;
            oldest = oldest.max(row.age);
        }
        counts.oldest_age = Duration::try_from_secs_f64(oldest).unwrap_or_default();
        Ok(counts)
    }

    /// Current size of both pools.
    pub(super) fn pool_stats(&self) -> Vec<PoolStats> {
        let stats = |name, pool: &sqlx::PgPool| PoolStats {
            name,
            size: pool.size(),
            idle: pool.num_idle() as u32,
            max: pool.options().get_max_connections(),
        };
        vec![
            stats("durable", &self.durable),
            stats("relaxed", &self.relaxed),
        ]
    }
}
