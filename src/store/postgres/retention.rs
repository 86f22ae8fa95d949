//! Retention: deletes finished transactions (and resolved ones) older than
//! the retention, with their branches (by cascade) and events, in small
//! batches. `SKIP LOCKED` keeps it off rows an operator or another
//! instance's retention holds, so it never waits on the hot path. The loop
//! that calls it is [`crate::engine::retention`].

use std::time::Duration;

use super::PgStore;
use crate::store::StoreResult;

impl PgStore {
    /// Deletes up to `batch` transactions that finished (or were resolved
    /// by an operator) more than `older_than` ago by the database clock;
    /// returns how many.
    pub(super) async fn delete_finished(
        &self,
        older_than: Duration,
        batch: u32,
    ) -> StoreResult<u64> {
        let deleted: i64 = sqlx::query_scalar(
            "WITH doomed AS (
                SELECT gid FROM global_transactions
                 WHERE (finished_at IS NOT NULL OR resolved_at IS NOT NULL)
                   AND COALESCE(finished_at, resolved_at)
                       < now() - make_interval(secs => $1::float8)
                 ORDER BY COALESCE(finished_at, resolved_at)
                 LIMIT $2
                   FOR UPDATE SKIP LOCKED
            ), events AS (
                DELETE FROM transaction_events
                 WHERE gid IN (SELECT gid FROM doomed)
            ), gone AS (
                DELETE FROM global_transactions
                 WHERE gid IN (SELECT gid FROM doomed)
                RETURNING gid
            )
            SELECT count(*) FROM gone",
        )
        .bind(older_than.as_secs_f64())
        .bind(i64::from(batch.max(1)))
        .fetch_one(&self.durable)
        .await?;
        Ok(deleted.max(0) as u64)
    }
}
