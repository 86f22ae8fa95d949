//! Read-only samples for the metrics gauges: unfinished transactions per
//! status, the needs-attention count, the oldest one's age, and the pools.
//! Inherent methods of [`PgStore`] (not part of the [`Store`](super::Store) trait): only
//! the metrics sampler uses them, every few seconds.

use std::time::Duration;

use sqlx::Row;

use super::postgres::PgStore;
use super::{StoreResult, map_sqlx};
use crate::machine::Status;

/// Unfinished, unresolved transactions in the database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenCounts {
    pub by_status: Vec<(Status, u64)>,
    pub needs_attention: u64,
    /// Age of the oldest one by the database clock; zero when there is none.
    pub oldest_age: Duration,
}

/// Size of one connection pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub name: &'static str,
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

impl PgStore {
    /// One grouped scan of the unfinished rows (the partial status index).
    pub async fn open_counts(&self) -> StoreResult<OpenCounts> {
        let open: Vec<&str> = Status::ALL
            .into_iter()
            .filter(|s| !s.is_final())
            .map(Status::as_str)
            .collect();
        let rows = sqlx::query(
            "SELECT status, count(*) AS n,
                    count(*) FILTER (WHERE needs_attention) AS attention,
                    COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS age
               FROM global_transactions
              WHERE status = ANY($1) AND finished_at IS NULL AND resolved_at IS NULL
              GROUP BY status",
        )
        .bind(&open)
        .fetch_all(self.pool())
        .await
        .map_err(map_sqlx)?;
        let mut counts = OpenCounts::default();
        let mut oldest = 0.0_f64;
        for row in rows {
            let status: String = row.try_get("status").map_err(map_sqlx)?;
            let n: i64 = row.try_get("n").map_err(map_sqlx)?;
            let attention: i64 = row.try_get("attention").map_err(map_sqlx)?;
            let age: f64 = row.try_get("age").map_err(map_sqlx)?;
            if let Some(s) = Status::parse(&status) {
                counts.by_status.push((s, n.max(0) as u64));
            }
            counts.needs_attention += attention.max(0) as u64;
            oldest = oldest.max(age);
        }
        counts.oldest_age = Duration::try_from_secs_f64(oldest).unwrap_or_default();
        Ok(counts)
    }

    /// Current size of both pools.
    pub fn pool_stats(&self) -> [PoolStats; 2] {
        let stats = |name, pool: &sqlx::PgPool| PoolStats {
            name,
            size: pool.size(),
            idle: pool.num_idle() as u32,
            max: pool.options().get_max_connections(),
        };
        [
            stats("durable", self.pool()),
            stats("relaxed", self.relaxed_pool()),
        ]
    }
}
