//! The idempotency barrier: makes a participant's actions safe against the
//! three anomalies of at-least-once delivery, by recording each op of each
//! branch in the participant's own store, in the same local transaction as
//! the business change.
//!
//! - **Duplicates**: a retried op finds its row and does nothing.
//! - **Null compensation**: a cancel (compensate) whose try (execute) never
//!   ran records the try as done-by-cancel and does nothing.
//! - **Hanging**: a try (execute) arriving after its cancel (compensate)
//!   finds that record and is rejected, so no resource stays reserved
//!   forever.
//!
//! The logic lives once, in [`Barrier::run`]; where the rows are kept is a
//! [`BarrierStore`]: [`PgStore`] (feature `postgres`, on by default) keeps
//! them in a table of the participant's PostgreSQL, [`MemoryStore`] in
//! memory (for tests and examples whose state is in memory too). A store
//! must give "insert this key unless it exists" inside a local transaction
//! that the business change joins, and make a second transaction inserting
//! the same key wait until the first one ends.
//!
//! Concurrency: both a try and its cancel insert the *try* key first, so
//! whichever gets it first decides the outcome and the other queues behind
//! it; no transaction ever waits on a second key while holding the first
//! one that the other needs, so they cannot deadlock.
//!
//! ```no_run
//! use concord_sdk::{ActionResult, BranchContext, Op, PgBarrier};
//!
//! async fn confirm(barrier: &PgBarrier, ctx: BranchContext) -> ActionResult {
//!     // Runs once per branch, however often the coordinator calls.
//!     barrier
//!         .run(&ctx, Op::Confirm, async |conn| {
//!             sqlx::query("UPDATE account SET balance = balance - 30, frozen = frozen - 30 WHERE id = 1")
//!                 .execute(conn)
//!                 .await?;
//!             Ok(())
//!         })
//!         .await?;
//!     Ok(Vec::new())
//! }
//! ```

mod memory;
#[cfg(feature = "postgres")]
mod postgres;

use std::fmt;
use std::sync::Arc;

pub use memory::{MemoryStore, MemoryTx};
#[cfg(feature = "postgres")]
pub use postgres::{MIGRATION_SQL, PgStore};

use crate::{ActionError, BoxError, BranchContext, Op};

/// A barrier over PostgreSQL, the usual one.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), sqlx::Error> {
/// let barrier: concord_sdk::PgBarrier = concord_sdk::Barrier::postgres(pool);
/// barrier.migrate().await?;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "postgres")]
pub type PgBarrier = Barrier<PgStore>;

/// A barrier in memory, for tests and for examples whose state is in
/// memory too.
///
/// ```
/// let barrier: concord_sdk::MemoryBarrier = concord_sdk::Barrier::memory();
/// # let _ = barrier;
/// ```
pub type MemoryBarrier = Barrier<MemoryStore>;

/// What [`Barrier::run`] did.
///
/// A handler may return it as is: it answers with the body's value when the
/// body ran, and with an empty payload otherwise (see
/// [`IntoReply`](crate::IntoReply)).
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

/// The branch a barrier row belongs to.
///
/// ```
/// let key = concord_sdk::barrier::BranchKey { gid: "order-42".into(), branch_id: "1".into() };
/// assert_eq!(key.to_string(), "order-42/1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BranchKey {
    /// The global transaction id.
    pub gid: String,
    /// The branch id within it.
    pub branch_id: String,
}

impl fmt::Display for BranchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.gid, self.branch_id)
    }
}

/// Where a [`Barrier`] keeps its rows: one row per `(branch, op)` that
/// happened, with the op whose call inserted it (its *origin*).
///
/// Implement it for a store whose local transactions the business change
/// can join; the guarantees hold if [`insert`](Self::insert) is atomic, a
/// second transaction inserting the same key waits for the first to end (or
/// fails, and the coordinator retries), and dropping a transaction without
/// [`commit`](Self::commit) discards its inserts.
///
/// ```
/// use concord_sdk::barrier::{BarrierStore, BranchKey, MemoryStore};
/// use concord_sdk::{BoxError, Op};
///
/// /// Counts transactions around the in-memory store.
/// #[derive(Default)]
/// struct Counted {
///     inner: MemoryStore,
///     begun: std::sync::atomic::AtomicU64,
/// }
///
/// #[concord_sdk::async_trait]
/// impl BarrierStore for Counted {
///     type Tx = <MemoryStore as BarrierStore>::Tx;
///     type Conn = <MemoryStore as BarrierStore>::Conn;
///
///     async fn begin(&self, key: &BranchKey) -> Result<Self::Tx, BoxError> {
///         self.begun.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///         self.inner.begin(key).await
///     }
///     fn conn(tx: &mut Self::Tx) -> &mut Self::Conn {
///         MemoryStore::conn(tx)
///     }
///     async fn insert(&self, tx: &mut Self::Tx, key: &BranchKey, op: Op, origin: Op) -> Result<bool, BoxError> {
///         self.inner.insert(tx, key, op, origin).await
///     }
///     async fn origin(&self, tx: &mut Self::Tx, key: &BranchKey, op: Op) -> Result<Option<Op>, BoxError> {
///         self.inner.origin(tx, key, op).await
///     }
///     async fn commit(&self, tx: Self::Tx) -> Result<(), BoxError> {
///         self.inner.commit(tx).await
///     }
/// }
/// let barrier = concord_sdk::Barrier::new(Counted::default());
/// # let _ = barrier;
/// ```
#[tonic::async_trait]
pub trait BarrierStore: Send + Sync + 'static {
    /// An open local transaction; dropping it rolls it back.
    type Tx: Send;
    /// What the business code gets to make its change in that transaction
    /// (a `PgConnection` for [`PgStore`]).
    type Conn: ?Sized + Send;

    /// Opens a local transaction for one op of the branch `key`.
    async fn begin(&self, key: &BranchKey) -> Result<Self::Tx, BoxError>;

    /// The business code's handle on the transaction.
    fn conn(tx: &mut Self::Tx) -> &mut Self::Conn;

    /// Inserts the row `(key, op)` with `origin` unless it exists; `true`
    /// if it was inserted. Waits while another open transaction holds the
    /// same row.
    async fn insert(
        &self,
        tx: &mut Self::Tx,
        key: &BranchKey,
        op: Op,
        origin: Op,
    ) -> Result<bool, BoxError>;

    /// The origin of the row `(key, op)`, if it exists.
    async fn origin(
        &self,
        tx: &mut Self::Tx,
        key: &BranchKey,
        op: Op,
    ) -> Result<Option<Op>, BoxError>;

    /// Commits the transaction.
    async fn commit(&self, tx: Self::Tx) -> Result<(), BoxError>;
}

/// The idempotency barrier over a [`BarrierStore`]. Cheap to clone (clones
/// share the store). See the [module docs](self) for what it guarantees.
///
/// ```no_run
/// use concord_sdk::{ActionError, ActionResult, BranchContext, Op, PgBarrier, TccAction};
///
/// struct TransferOut {
///     barrier: PgBarrier,
/// }
///
/// #[concord_sdk::async_trait]
/// impl TccAction for TransferOut {
///     async fn try_(&self, ctx: BranchContext) -> ActionResult {
///         let amount: i64 = ctx.json()?;
///         self.barrier
///             .run(&ctx, Op::Try, async |conn| {
///                 let frozen = sqlx::query(
///                     "UPDATE account SET frozen = frozen + $1 WHERE id = 1 AND balance - frozen >= $1",
///                 )
///                 .bind(amount)
///                 .execute(conn)
///                 .await?;
///                 if frozen.rows_affected() == 0 {
///                     return Err(ActionError::rejected("insufficient funds"));
///                 }
///                 Ok(())
///             })
///             .await?;
///         Ok(Vec::new())
///     }
///     async fn confirm(&self, ctx: BranchContext) -> ActionResult {
///         let amount: i64 = ctx.json()?;
///         self.barrier
///             .run(&ctx, Op::Confirm, async |conn| {
///                 sqlx::query("UPDATE account SET balance = balance - $1, frozen = frozen - $1 WHERE id = 1")
///                     .bind(amount)
///                     .execute(conn)
///                     .await?;
///                 Ok(())
///             })
///             .await?;
///         Ok(Vec::new())
///     }
///     async fn cancel(&self, ctx: BranchContext) -> ActionResult {
///         let amount: i64 = ctx.json()?;
///         self.barrier
///             .run(&ctx, Op::Cancel, async |conn| {
///                 sqlx::query("UPDATE account SET frozen = frozen - $1 WHERE id = 1")
///                     .bind(amount)
///                     .execute(conn)
///                     .await?;
///                 Ok(())
///             })
///             .await?;
///         Ok(Vec::new())
///     }
/// }
/// ```
pub struct Barrier<S> {
    store: Arc<S>,
}

impl<S> Clone for Barrier<S> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
        }
    }
}

impl<S> fmt::Debug for Barrier<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("store", &std::any::type_name::<S>())
            .finish()
    }
}

impl Barrier<MemoryStore> {
    /// A barrier whose rows live in this process's memory: for tests, and
    /// for participants whose business state is in memory too (both are
    /// lost together on a restart). Rows are never deleted.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use concord_sdk::{Barrier, BarrierOutcome, BranchContext, Op};
    ///
    /// let barrier = Barrier::memory();
    /// let ctx = BranchContext { gid: "g".into(), branch_id: "1".into(), ..Default::default() };
    /// let first = barrier.run(&ctx, Op::Try, async |_| Ok(())).await.unwrap();
    /// let again = barrier.run(&ctx, Op::Try, async |_| Ok(())).await.unwrap();
    /// assert_eq!((first, again), (BarrierOutcome::Ran(()), BarrierOutcome::Duplicate));
    /// # }
    /// ```
    pub fn memory() -> Self {
        Self::new(MemoryStore::default())
    }
}

impl<S: BarrierStore> Barrier<S> {
    /// A barrier over any [`BarrierStore`].
    ///
    /// ```
    /// let barrier = concord_sdk::Barrier::new(concord_sdk::barrier::MemoryStore::default());
    /// # let _ = barrier;
    /// ```
    pub fn new(store: S) -> Self {
        Self {
            store: Arc::new(store),
        }
    }

    /// The store.
    ///
    /// ```
    /// let barrier = concord_sdk::Barrier::memory();
    /// assert_eq!(barrier.store().len(), 0);
    /// ```
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Runs `body` as `op` of the branch `ctx` at most once, in one local
    /// transaction with the barrier row.
    ///
    /// `body` gets the transaction's connection: its changes commit only if
    /// it returns `Ok`, and an `Err` rolls back both them and the barrier
    /// row, so a retry runs it again. A try (execute) that comes after its
    /// cancel (compensate) returns [`ActionError::Rejected`] without running,
    /// and so does a context with an empty gid or branch id. Store errors
    /// are [`ActionError::Failed`], hence retried.
    ///
    /// ```no_run
    /// use concord_sdk::{ActionResult, BranchContext, Op, PgBarrier};
    ///
    /// async fn release(barrier: &PgBarrier, ctx: BranchContext) -> ActionResult {
    ///     let qty: i32 = ctx.json()?;
    ///     barrier
    ///         .run(&ctx, Op::Compensate, async |conn| {
    ///             sqlx::query("UPDATE stock SET available = available + $1 WHERE sku = 'tea'")
    ///                 .bind(qty)
    ///                 .execute(conn)
    ///                 .await?;
    ///             Ok(())
    ///         })
    ///         .await?;
    ///     Ok(Vec::new())
    /// }
    /// ```
    pub async fn run<T, F>(
        &self,
        ctx: &BranchContext,
        op: Op,
        body: F,
    ) -> Result<BarrierOutcome<T>, ActionError>
    where
        F: AsyncFnOnce(&mut S::Conn) -> Result<T, ActionError>,
    {
        // Empty ids would make unrelated branches share barrier rows.
        if ctx.gid.is_empty() || ctx.branch_id.is_empty() {
            return Err(ActionError::rejected("missing gid or branch_id"));
        }
        let key = BranchKey {
            gid: ctx.gid.clone(),
            branch_id: ctx.branch_id.clone(),
        };
        let store = &*self.store;
        let mut tx = store.begin(&key).await.map_err(ActionError::Failed)?;

        // Undoing ops claim the forward op's key first: if the forward op
        // has not happened, this both detects it and blocks it for good.
        let null_compensation = match op.undoes() {
            Some(forward) => store
                .insert(&mut tx, &key, forward, op)
                .await
                .map_err(ActionError::Failed)?,
            None => false,
        };
        let first = store
            .insert(&mut tx, &key, op, op)
            .await
            .map_err(ActionError::Failed)?;

        if null_compensation {
            store.commit(tx).await.map_err(ActionError::Failed)?;
            tracing::debug!(gid = %ctx.gid, branch_id = %ctx.branch_id, op = op.as_str(), "null compensation");
            return Ok(BarrierOutcome::NullCompensated);
        }
        if !first {
            let origin = if op.is_forward() {
                store
                    .origin(&mut tx, &key, op)
                    .await
                    .map_err(ActionError::Failed)?
            } else {
                None
            };
            if origin.is_some_and(|o| o != op) {
                tracing::info!(gid = %ctx.gid, branch_id = %ctx.branch_id, op = op.as_str(), "refused hanging request after compensation");
                return Err(ActionError::rejected(format!(
                    "branch {key} was already compensated, refusing {op}"
                )));
            }
            tracing::debug!(gid = %ctx.gid, branch_id = %ctx.branch_id, op = op.as_str(), "duplicate request");
            return Ok(BarrierOutcome::Duplicate);
        }

        // On error `tx` is dropped, which rolls back the barrier row with
        // the business change.
        let value = body(S::conn(&mut tx)).await?;
        store.commit(tx).await.map_err(ActionError::Failed)?;
        Ok(BarrierOutcome::Ran(value))
    }
}
