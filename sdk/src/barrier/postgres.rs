//! [`PgStore`]: the barrier's rows in a table of the participant's own
//! PostgreSQL, written in the transaction of the business change.
//!
//! Concurrency rests on PostgreSQL's unique index: an insert of a key that
//! another open transaction has inserted waits for that transaction to end,
//! then either conflicts (it committed) or succeeds (it rolled back). This
//! holds under READ COMMITTED.

use std::time::Duration;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::{Barrier, BarrierStore, BranchKey};
use crate::{BoxError, Op};

/// The SQL creating the barrier table, for applications that prefer to copy
/// it into their own migrations over calling [`Barrier::migrate`].
///
/// ```
/// assert!(concord_sdk::barrier::MIGRATION_SQL.contains("CREATE TABLE IF NOT EXISTS concord_barrier"));
/// ```
pub const MIGRATION_SQL: &str = include_str!("../../migrations/0001_barrier.sql");

/// Arbitrary constant key of the advisory lock that serialises concurrent
/// [`Barrier::migrate`] calls (several replicas starting at once), since
/// concurrent `CREATE TABLE IF NOT EXISTS` can fail on the catalog.
const MIGRATE_LOCK: i64 = 0x636f_6e63_6f72_6462; // "concordb"

/// The barrier table `concord_barrier` in a PostgreSQL database; see
/// [`Barrier::postgres`].
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) {
/// let barrier = concord_sdk::Barrier::new(concord_sdk::barrier::PgStore::new(pool));
/// # let _ = barrier;
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// The store over `pool`; the table must exist (see [`Barrier::migrate`]).
    ///
    /// ```no_run
    /// # async fn run(pool: sqlx::PgPool) {
    /// let store = concord_sdk::barrier::PgStore::new(pool);
    /// # let _ = store;
    /// # }
    /// ```
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool.
    ///
    /// ```no_run
    /// # async fn run(barrier: concord_sdk::PgBarrier) -> Result<(), sqlx::Error> {
    /// sqlx::query("SELECT 1").execute(barrier.store().pool()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[tonic::async_trait]
impl BarrierStore for PgStore {
    type Tx = Transaction<'static, Postgres>;
    type Conn = PgConnection;

    async fn begin(&self, _key: &BranchKey) -> Result<Self::Tx, BoxError> {
        Ok(self.pool.begin().await?)
    }

    fn conn(tx: &mut Self::Tx) -> &mut PgConnection {
        tx
    }

    async fn insert(
        &self,
        tx: &mut Self::Tx,
        key: &BranchKey,
        op: Op,
        origin: Op,
    ) -> Result<bool, BoxError> {
        let inserted = sqlx::query(
            "INSERT INTO concord_barrier (gid, branch_id, op, origin_op) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&key.gid)
        .bind(&key.branch_id)
        .bind(op.as_str())
        .bind(origin.as_str())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn origin(
        &self,
        tx: &mut Self::Tx,
        key: &BranchKey,
        op: Op,
    ) -> Result<Option<Op>, BoxError> {
        // A fresh statement under READ COMMITTED sees the row whose commit
        // the conflicting insert waited for.
        let origin: Option<String> = sqlx::query_scalar(
            "SELECT origin_op FROM concord_barrier WHERE gid = $1 AND branch_id = $2 AND op = $3",
        )
        .bind(&key.gid)
        .bind(&key.branch_id)
        .bind(op.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        Ok(origin.map(|o| o.parse()).transpose()?)
    }

    async fn commit(&self, tx: Self::Tx) -> Result<(), BoxError> {
        Ok(tx.commit().await?)
    }
}

impl Barrier<PgStore> {
    /// A barrier keeping its rows in the table `concord_barrier` of `pool`'s
    /// database, which must exist: create it with [`migrate`](Self::migrate)
    /// or [`MIGRATION_SQL`].
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), sqlx::Error> {
    /// let pool = sqlx::PgPool::connect("postgres://localhost/bank").await?;
    /// let barrier = concord_sdk::Barrier::postgres(pool);
    /// barrier.migrate().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn postgres(pool: PgPool) -> Self {
        Self::new(PgStore::new(pool))
    }

    /// Creates the barrier table if it does not exist. Idempotent and safe to
    /// call from several instances at once.
    ///
    /// ```no_run
    /// # async fn run(pool: sqlx::PgPool) -> Result<(), sqlx::Error> {
    /// concord_sdk::Barrier::postgres(pool).migrate().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn migrate(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.store.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(MIGRATION_SQL).execute(&mut *tx).await?;
        tx.commit().await
    }

    /// Deletes barrier rows older than `older_than`, `batch` rows per
    /// statement so no single statement holds locks for long, and returns
    /// how many were deleted.
    ///
    /// `older_than` must exceed the longest time a delayed request can still
    /// arrive (the coordinator's whole retry horizon): a try arriving after
    /// its rows are gone would no longer be recognised as hanging.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// # async fn run(barrier: concord_sdk::PgBarrier) -> Result<(), sqlx::Error> {
    /// // Daily, keeping a week of rows.
    /// let week = Duration::from_secs(7 * 24 * 3600);
    /// let deleted = barrier.cleanup(week, 10_000).await?;
    /// println!("{deleted} barrier rows deleted");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn cleanup(&self, older_than: Duration, batch: i64) -> Result<u64, sqlx::Error> {
        if batch <= 0 {
            return Ok(0);
        }
        let mut total = 0;
        loop {
            // SKIP LOCKED so concurrent cleanups (one per replica) share the
            // work instead of queueing on the same rows.
            let deleted = sqlx::query(
                "WITH doomed AS ( \
                     SELECT gid, branch_id, op FROM concord_barrier \
                     WHERE created_at < now() - make_interval(secs => $1) \
                     LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 DELETE FROM concord_barrier b USING doomed d \
                 WHERE b.gid = d.gid AND b.branch_id = d.branch_id AND b.op = d.op",
            )
            .bind(older_than.as_secs_f64())
            .bind(batch)
            .execute(&self.store.pool)
            .await?
            .rows_affected();
            total += deleted;
            if deleted < batch as u64 {
                break;
            }
        }
        if total > 0 {
            tracing::info!(deleted = total, "barrier cleanup");
        }
        Ok(total)
    }
}
