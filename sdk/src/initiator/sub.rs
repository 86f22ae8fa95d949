//! Sub-transactions: a participant whose Try needs branches on other
//! services adds them to the global transaction it was called in, rather
//! than opening a transaction of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Coordinator, Result, TccTransaction, TryOptions, TryOutcome, to_json};
use crate::BranchContext;

impl Coordinator {
    /// Continues, from inside a participant's Try, the TCC transaction that
    /// Try belongs to: branches tried through the returned handle join the
    /// same global transaction, so they are confirmed with it or cancelled
    /// with it, with the same guarantees as the initiator's own branches.
    ///
    /// Only the initiator decides: the handle can add branches, not commit
    /// or roll back. Call it from a Try (the transaction accepts branches
    /// only while it is trying; from any other phase the coordinator
    /// answers [`FailedPrecondition`](super::Error::FailedPrecondition)),
    /// and finish within the Try's call timeout. A sub-branch's rejection
    /// converts with `?` into a rejection of the calling Try, which makes
    /// the initiator roll everything back.
    ///
    /// ```no_run
    /// use concord_sdk::{ActionResult, BranchContext, Coordinator, Op, PgBarrier};
    ///
    /// // The `travel` participant's Try books a flight itself and a hotel
    /// // through the `hotel` participant, in the same transaction.
    /// async fn book_trip(barrier: PgBarrier, coordinator: Coordinator, ctx: BranchContext) -> ActionResult {
    ///     barrier
    ///         .run(&ctx, Op::Try, async |conn| {
    ///             sqlx::query("UPDATE seats SET held = held + 1 WHERE flight = 'LX318'")
    ///                 .execute(conn)
    ///                 .await?;
    ///             Ok(())
    ///         })
    ///         .await?;
    ///     // Outside the barrier's transaction: no local lock is held while
    ///     // the hotel answers. Repeated when the Try is, which is harmless.
    ///     let sub = coordinator.continue_tcc(&ctx);
    ///     sub.try_branch("hotel", "hold_room", ctx.payload.clone()).await?;
    ///     Ok(Vec::new())
    /// }
    /// ```
    pub fn continue_tcc(&self, ctx: &BranchContext) -> SubTransaction {
        SubTransaction {
            client: self.client.clone(),
            gid: ctx.gid.clone(),
            parent: ctx.branch_id.clone(),
            traceparent: ctx.traceparent().map(str::to_owned),
            next: Arc::new(AtomicU32::new(1)),
        }
    }
}

/// Handle on the global transaction a participant's Try belongs to; see
/// [`Coordinator::continue_tcc`]. Cheap to clone; clones share the branch
/// numbering.
///
/// Branch ids derive from the calling branch's: the n-th branch tried
/// through the handle is `"<parent>.<n>"`, and an explicit id `x` becomes
/// `"<parent>.x"`. A retried Try therefore finds the branches of its first
/// attempt instead of adding new ones, as long as it tries them in the same
/// order (or with explicit ids).
///
/// ```no_run
/// # async fn run(coordinator: concord_sdk::Coordinator, ctx: concord_sdk::BranchContext) -> Result<(), concord_sdk::initiator::Error> {
/// let sub = coordinator.continue_tcc(&ctx);
/// let hotel = sub.try_branch_json("hotel", "hold_room", &("Zurich", 2)).await?;
/// assert_eq!(hotel.branch_id, format!("{}.1", ctx.branch_id));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SubTransaction {
    client: super::Client,
    gid: String,
    parent: String,
    traceparent: Option<String>,
    next: Arc<AtomicU32>,
}

impl SubTransaction {
    /// The global transaction id (the calling branch's).
    ///
    /// ```no_run
    /// # fn run(coordinator: concord_sdk::Coordinator, ctx: concord_sdk::BranchContext) {
    /// assert_eq!(coordinator.continue_tcc(&ctx).gid(), ctx.gid);
    /// # }
    /// ```
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// Adds a branch on `participant`'s `action` and runs its Try, as
    /// [`TccTransaction::try_branch`] does for the initiator.
    ///
    /// ```no_run
    /// # async fn run(sub: concord_sdk::SubTransaction) -> Result<(), concord_sdk::initiator::Error> {
    /// sub.try_branch("hotel", "hold_room", b"2 nights".to_vec()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_branch(
        &self,
        participant: &str,
        action: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<TryOutcome> {
        self.try_branch_with(participant, action, payload, TryOptions::default())
            .await
    }

    /// [`try_branch`](Self::try_branch) with `payload` sent as JSON.
    ///
    /// ```no_run
    /// # async fn run(sub: concord_sdk::SubTransaction) -> Result<(), concord_sdk::initiator::Error> {
    /// sub.try_branch_json("hotel", "hold_room", &serde_json::json!({"nights": 2})).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_branch_json<P: serde::Serialize + ?Sized>(
        &self,
        participant: &str,
        action: &str,
        payload: &P,
    ) -> Result<TryOutcome> {
        self.try_branch(participant, action, to_json(payload)?)
            .await
    }

    /// [`try_branch`](Self::try_branch) with an explicit id (prefixed with
    /// the calling branch's) or call timeout.
    ///
    /// ```no_run
    /// use concord_sdk::TryOptions;
    ///
    /// # async fn run(sub: concord_sdk::SubTransaction) -> Result<(), concord_sdk::initiator::Error> {
    /// let opts = TryOptions { branch_id: Some("hotel".into()), ..Default::default() };
    /// let outcome = sub.try_branch_with("hotel", "hold_room", b"2".to_vec(), opts).await?;
    /// assert!(outcome.branch_id.ends_with(".hotel"));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_branch_with(
        &self,
        participant: &str,
        action: &str,
        payload: impl Into<Vec<u8>>,
        mut opts: TryOptions,
    ) -> Result<TryOutcome> {
        let own = match opts.branch_id.take() {
            Some(id) => id,
            None => self.next.fetch_add(1, Ordering::Relaxed).to_string(),
        };
        opts.branch_id = Some(format!("{}.{own}", self.parent));
        self.as_transaction()
            .try_branch_with(participant, action, payload, opts)
            .await
    }

    /// The initiator's handle, whose try path is the same; never exposed,
    /// since it could commit or roll back.
    fn as_transaction(&self) -> TccTransaction {
        TccTransaction {
            client: self.client.clone(),
            gid: self.gid.clone(),
            deadline: None,
            traceparent: self.traceparent.clone(),
        }
    }
}
