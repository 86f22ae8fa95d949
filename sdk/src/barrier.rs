//! The idempotency barrier: makes a participant's actions safe against the
//! three anomalies of at-least-once delivery, using a table in the
//! participant's own PostgreSQL, written in the same local transaction as
//! the business change.
//!
//! - **Duplicates**: a retried op finds its row and does nothing.
//! - **Null compensation**: a cancel (compensate) whose try (execute) never
//!   ran records the try as done-by-cancel and does nothing.
//! - **Hanging**: a try (execute) arriving after its cancel (compensate)
//!   finds that record and is rejected, so no resource stays reserved
//!   forever.
//!
//! Concurrency rests on PostgreSQL's unique index: an insert of a key that
//! another open transaction has inserted waits for that transaction to end,
//! then either conflicts (it committed) or succeeds (it rolled back). Both
//! a try and its cancel insert the *try* key first, so whichever gets it
//! first decides the outcome and the other queues behind it; no transaction
//! ever waits on a second key while holding the first one that the other
//! needs, so they cannot deadlock. This holds under READ COMMITTED.
//!
//! ```no_run
//! use concord_sdk::{ActionResult, Barrier, BranchContext, Op};
//!
//! async fn confirm(pool: &sqlx::PgPool, ctx: BranchContext) -> ActionResult {
//!     // Runs once per branch, however often the coordinator calls.
//!     Barrier::run(pool, &ctx, Op::Confirm, async |conn| {
//!         sqlx::query("UPDATE account SET balance = balance - 30, frozen = frozen - 30 WHERE id = 1")
//!             .execute(conn)
//!             .await?;
//!         Ok(())
//!     })
//!     .await?;
//!     Ok(Vec::new())
//! }
//! ```

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use crate::{ActionError, BranchContext, Op};

/// The SQL creating the barrier table, for applications that prefer to copy
/// it into their own migrations over calling [`Barrier::migrate`].
///
/// ```
/// assert!(concord_sdk::barrier::MIGRATION_SQL.contains("CREATE TABLE IF NOT EXISTS concord_barrier"));
/// ```
pub const MIGRATION_SQL: &str = include_str!("../migrations/0001_barrier.sql");

/// Arbitrary constant key of the advisory lock that serialises concurrent
/// [`Barrier::migrate`] calls (several replicas starting at once), since
/// concurrent `CREATE TABLE IF NOT EXISTS` can fail on the catalog.
const MIGRATE_LOCK: i64 = 0x636f_6e63_6f72_6462; // "concordb"

/// What [`Barrier::run`] did.
///
/// ```
/// use concord_sdk::BarrierOutcome;
///
/// fn describe(outcome: &BarrierOutcome<i64>) -> String {
///     match outcome {
///         BarrierOutcome::Ran(frozen) => format!("froze {frozen}"),
///         BarrierOutcome::Duplicate => "already done".into(),
///         BarrierOutcome::NullCompensated => "nothing to undo".into(),
///     }
/// }
/// assert_eq!(describe(&BarrierOutcome::Ran(30)), "froze 30");
/// ```
// Not `#[must_use]`: most actions only care that the op is done, however.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BarrierOutcome<T> {
    /// First delivery: the business logic ran and was committed with the
    /// barrier row.
    Ran(T),
    /// The op had already happened for this branch; nothing ran.
    Duplicate,
    /// A cancel (compensate) of a branch whose try (execute) never ran;
    /// nothing ran, and a later try (execute) will be rejected.
    NullCompensated,
}

impl<T> BarrierOutcome<T> {
    /// The business logic's value, if it ran.
    ///
    /// ```
    /// use concord_sdk::BarrierOutcome;
    ///
    /// assert_eq!(BarrierOutcome::Ran(7).ran(), Some(7));
    /// assert_eq!(BarrierOutcome::<i32>::Duplicate.ran(), None);
    /// ```
    pub fn ran(self) -> Option<T> {
        match self {
            Self::Ran(value) => Some(value),
            _ => None,
        }
    }
}

/// The idempotency barrier; a namespace for functions over the participant's
/// [`PgPool`]. See the [module docs](self) for what it guarantees.
///
/// ```no_run
/// use concord_sdk::{ActionError, ActionResult, Barrier, BranchContext, Op, TccAction};
///
/// struct TransferOut {
///     pool: sqlx::PgPool,
/// }
///
/// #[tonic::async_trait]
/// impl TccAction for TransferOut {
///     async fn try_(&self, ctx: BranchContext) -> ActionResult {
///         let amount: i64 = ctx.json()?;
///         Barrier::run(&self.pool, &ctx, Op::Try, async |conn| {
///             let frozen = sqlx::query(
///                 "UPDATE account SET frozen = frozen + $1 \
///                  WHERE id = 1 AND balance - frozen >= $1",
///             )
///             .bind(amount)
///             .execute(conn)
///             .await?;
///             if frozen.rows_affected() == 0 {
///                 return Err(ActionError::rejected("insufficient funds"));
///             }
///             Ok(())
///         })
///         .await?;
///         Ok(Vec::new())
///     }
///     async fn confirm(&self, ctx: BranchContext) -> ActionResult {
///         let amount: i64 = ctx.json()?;
///         Barrier::run(&self.pool, &ctx, Op::Confirm, async |conn| {
///             sqlx::query(
///                 "UPDATE account SET balance = balance - $1, frozen = frozen - $1 WHERE id = 1",
///             )
///             .bind(amount)
///             .execute(conn)
///             .await?;
///             Ok(())
///         })
///         .await?;
///         Ok(Vec::new())
///     }
///     async fn cancel(&self, ctx: BranchContext) -> ActionResult {
///         let amount: i64 = ctx.json()?;
///         Barrier::run(&self.pool, &ctx, Op::Cancel, async |conn| {
///             sqlx::query("UPDATE account SET frozen = frozen - $1 WHERE id = 1")
///                 .bind(amount)
///                 .execute(conn)
///                 .await?;
///             Ok(())
///         })
///         .await?;
///         Ok(Vec::new())
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Barrier;

impl Barrier {
    /// Creates the barrier table if it does not exist. Idempotent and safe to
    /// call from several instances at once.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), sqlx::Error> {
    /// let pool = sqlx::PgPool::connect("postgres://localhost/bank").await?;
    /// concord_sdk::Barrier::migrate(&pool).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(MIGRATION_SQL).execute(&mut *tx).await?;
        tx.commit().await
    }

    /// Runs `body` as `op` of the branch `ctx` at most once, in one local
    /// transaction with the barrier row.
    ///
    /// `body` gets the transaction's connection: its changes commit only if
    /// it returns `Ok`, and an `Err` rolls back both them and the barrier
    /// row, so a retry runs it again. A try (execute) that comes after its
    /// cancel (compensate) returns [`ActionError::Rejected`] without running,
    /// and so does a context with an empty gid or branch id. Database errors
    /// are [`ActionError::Failed`], hence retried.
    ///
    /// ```no_run
    /// use concord_sdk::{ActionResult, Barrier, BranchContext, Op};
    ///
    /// async fn release(pool: &sqlx::PgPool, ctx: BranchContext) -> ActionResult {
    ///     let qty: i32 = ctx.json()?;
    ///     Barrier::run(pool, &ctx, Op::Compensate, async |conn| {
    ///         sqlx::query("UPDATE stock SET available = available + $1 WHERE sku = 'tea'")
    ///             .bind(qty)
    ///             .execute(conn)
    ///             .await?;
    ///         Ok(())
    ///     })
    ///     .await?;
    ///     Ok(Vec::new())
    /// }
    /// ```
    pub async fn run<T, F>(
        pool: &PgPool,
        ctx: &BranchContext,
        op: Op,
        body: F,
    ) -> Result<BarrierOutcome<T>, ActionError>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, ActionError>,
    {
        // Empty ids would make unrelated branches share barrier rows.
        if ctx.gid.is_empty() || ctx.branch_id.is_empty() {
            return Err(ActionError::rejected("missing gid or branch_id"));
        }
        let mut tx = pool.begin().await?;

        // Undoing ops claim the forward op's key first: if the forward op
        // has not happened, this both detects it and blocks it for good.
        let null_compensation = match op.undoes() {
            Some(forward) => insert(&mut tx, ctx, forward, op).await?,
            None => false,
        };
        let first = insert(&mut tx, ctx, op, op).await?;

        if null_compensation {
            tx.commit().await?;
            tracing::debug!(gid = %ctx.gid, branch_id = %ctx.branch_id, op = op.as_str(), "null compensation");
            return Ok(BarrierOutcome::NullCompensated);
        }
        if !first {
            if op.is_forward()
                && origin(&mut tx, ctx, op)
                    .await?
                    .is_some_and(|o| o != op.as_str())
            {
                tracing::info!(gid = %ctx.gid, branch_id = %ctx.branch_id, op = op.as_str(), "refused hanging request after compensation");
                return Err(ActionError::rejected(format!(
                    "branch {}/{} was already compensated, refusing {op}",
                    ctx.gid, ctx.branch_id
                )));
            }
            tracing::debug!(gid = %ctx.gid, branch_id = %ctx.branch_id, op = op.as_str(), "duplicate request");
            return Ok(BarrierOutcome::Duplicate);
        }

        // On error `tx` is dropped, which rolls back the barrier row with
        // the business change.
        let value = body(&mut tx).await?;
        tx.commit().await?;
        Ok(BarrierOutcome::Ran(value))
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
    /// # async fn run(pool: sqlx::PgPool) -> Result<(), sqlx::Error> {
    /// // Daily, keeping a week of rows.
    /// let week = Duration::from_secs(7 * 24 * 3600);
    /// let deleted = concord_sdk::Barrier::cleanup(&pool, week, 10_000).await?;
    /// println!("{deleted} barrier rows deleted");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn cleanup(
        pool: &PgPool,
        older_than: Duration,
        batch: i64,
    ) -> Result<u64, sqlx::Error> {
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
            .execute(pool)
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

/// Inserts the barrier row `op` for the branch; `false` if it already
/// exists. Waits if another open transaction inserted the same key.
async fn insert(
    conn: &mut PgConnection,
    ctx: &BranchContext,
    op: Op,
    origin: Op,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO concord_barrier (gid, branch_id, op, origin_op) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(&ctx.gid)
    .bind(&ctx.branch_id)
    .bind(op.as_str())
    .bind(origin.as_str())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// The `origin_op` of the barrier row `op` of the branch.
async fn origin(
    conn: &mut PgConnection,
    ctx: &BranchContext,
    op: Op,
) -> Result<Option<String>, sqlx::Error> {
    // A fresh statement under READ COMMITTED sees the row whose commit the
    // conflicting insert waited for.
    sqlx::query_scalar(
        "SELECT origin_op FROM concord_barrier WHERE gid = $1 AND branch_id = $2 AND op = $3",
    )
    .bind(&ctx.gid)
    .bind(&ctx.branch_id)
    .bind(op.as_str())
    .fetch_optional(conn)
    .await
}
