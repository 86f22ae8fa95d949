//! [`MemoryStore`]: the barrier's rows in this process's memory.
//!
//! A transaction locks its branch for its whole life, which gives the same
//! ordering as PostgreSQL's unique index (a second op of the branch waits
//! for the first to commit or roll back), at the price of serialising the
//! ops of one branch, which the coordinator does not run concurrently
//! anyway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::{BarrierStore, BranchKey};
use crate::{BoxError, Op};

/// The rows of one branch: op -> origin.
type Rows = HashMap<Op, Op>;

/// Barrier rows in memory; see [`Barrier::memory`](super::Barrier::memory).
///
/// ```
/// let store = concord_sdk::barrier::MemoryStore::default();
/// assert!(store.is_empty());
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    branches: Mutex<HashMap<BranchKey, Arc<AsyncMutex<Rows>>>>,
}

impl MemoryStore {
    /// How many barrier rows are stored (committed ones only).
    ///
    /// ```
    /// assert_eq!(concord_sdk::barrier::MemoryStore::default().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        let branches = self.branches.lock().unwrap_or_else(|e| e.into_inner());
        branches
            .values()
            // A branch locked by an open transaction is counted as empty:
            // its rows are not committed yet from anyone else's view.
            .map(|rows| rows.try_lock().map(|r| r.len()).unwrap_or(0))
            .sum()
    }

    /// Whether no row is stored.
    ///
    /// ```
    /// assert!(concord_sdk::barrier::MemoryStore::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An open transaction of a [`MemoryStore`]: holds its branch's lock, and
/// the rows it inserted until it commits.
///
/// ```
/// fn takes(_tx: &mut concord_sdk::barrier::MemoryTx) {}
/// ```
#[derive(Debug)]
pub struct MemoryTx {
    rows: OwnedMutexGuard<Rows>,
    pending: Vec<(Op, Op)>,
    /// What the business code gets: nothing, the business state is the
    /// application's own.
    conn: (),
}

#[tonic::async_trait]
impl BarrierStore for MemoryStore {
    type Tx = MemoryTx;
    type Conn = ();

    async fn begin(&self, key: &BranchKey) -> Result<MemoryTx, BoxError> {
        let rows = {
            let mut branches = self.branches.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(branches.entry(key.clone()).or_default())
        };
        Ok(MemoryTx {
            rows: rows.lock_owned().await,
            pending: Vec::new(),
            conn: (),
        })
    }

    fn conn(tx: &mut MemoryTx) -> &mut () {
        &mut tx.conn
    }

    async fn insert(
        &self,
        tx: &mut MemoryTx,
        _key: &BranchKey,
        op: Op,
        origin: Op,
    ) -> Result<bool, BoxError> {
        if tx.rows.contains_key(&op) || tx.pending.iter().any(|(o, _)| *o == op) {
            return Ok(false);
        }
        tx.pending.push((op, origin));
        Ok(true)
    }

    async fn origin(
        &self,
        tx: &mut MemoryTx,
        _key: &BranchKey,
        op: Op,
    ) -> Result<Option<Op>, BoxError> {
        let pending = tx.pending.iter().find(|(o, _)| *o == op).map(|(_, o)| *o);
        Ok(pending.or_else(|| tx.rows.get(&op).copied()))
    }

    async fn commit(&self, mut tx: MemoryTx) -> Result<(), BoxError> {
        let pending = std::mem::take(&mut tx.pending);
        tx.rows.extend(pending);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::barrier::{Barrier, BarrierOutcome};
    use crate::{ActionError, BranchContext};

    fn branch(id: usize) -> BranchContext {
        BranchContext {
            gid: "race".into(),
            branch_id: id.to_string(),
            ..Default::default()
        }
    }

    /// What one request ended with.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Seen {
        Ran,
        Duplicate,
        NullCompensated,
        Rejected,
    }

    fn seen(r: Result<BarrierOutcome<()>, ActionError>) -> Seen {
        match r {
            Ok(BarrierOutcome::Ran(())) => Seen::Ran,
            Ok(BarrierOutcome::Duplicate) => Seen::Duplicate,
            Ok(BarrierOutcome::NullCompensated) => Seen::NullCompensated,
            Err(e) if e.is_rejected() => Seen::Rejected,
            Err(e) => panic!("unexpected failure: {e:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn try_racing_cancel_has_exactly_one_consistent_outcome() {
        let barrier = Barrier::memory();
        // The business effects, in order, per branch.
        let effects: std::sync::Arc<Mutex<Vec<(usize, Op)>>> = Default::default();
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(100));
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let (barrier, effects, start) = (barrier.clone(), effects.clone(), start.clone());
                let (b, op) = (i / 2, if i % 2 == 0 { Op::Try } else { Op::Cancel });
                tokio::spawn(async move {
                    start.wait().await;
                    let r = barrier
                        .run(&branch(b), op, async |_| {
                            effects.lock().unwrap().push((b, op));
                            // Widens the window in which the other request
                            // finds this one in flight.
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            Ok(())
                        })
                        .await;
                    seen(r)
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        let effects = effects.lock().unwrap();
        for (b, pair) in outcomes.chunks(2).enumerate() {
            let ops: Vec<Op> = effects
                .iter()
                .filter(|(x, _)| *x == b)
                .map(|(_, op)| *op)
                .collect();
            match (pair[0], pair[1]) {
                (Seen::Ran, Seen::Ran) => assert_eq!(ops, [Op::Try, Op::Cancel], "branch {b}"),
                (Seen::Rejected, Seen::NullCompensated) => assert!(ops.is_empty(), "branch {b}"),
                other => panic!("branch {b}: inconsistent outcome {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn an_error_rolls_the_row_back_and_a_retry_runs() {
        let barrier = Barrier::memory();
        let ctx = branch(1);
        let failed = barrier
            .run(&ctx, Op::Execute, async |_| {
                Err::<(), _>(ActionError::failed("down"))
            })
            .await;
        assert!(failed.is_err());
        assert!(barrier.store().is_empty());
        let ran = barrier.run(&ctx, Op::Execute, async |_| Ok(7)).await;
        assert_eq!(ran.unwrap(), BarrierOutcome::Ran(7));
        assert_eq!(barrier.store().len(), 1);
    }

    #[tokio::test]
    async fn compensation_first_refuses_the_late_forward_op() {
        let barrier = Barrier::memory();
        let ctx = branch(1);
        let undo = barrier.run(&ctx, Op::Compensate, async |_| Ok(())).await;
        assert_eq!(undo.unwrap(), BarrierOutcome::NullCompensated);
        let again = barrier.run(&ctx, Op::Compensate, async |_| Ok(())).await;
        assert_eq!(again.unwrap(), BarrierOutcome::Duplicate);
        let late = barrier
            .run(&ctx, Op::Execute, async |_| -> Result<(), ActionError> {
                panic!("a late execute must not run")
            })
            .await
            .unwrap_err();
        assert!(late.is_rejected(), "{late:?}");
        // execute (done by compensate) and compensate.
        assert_eq!(barrier.store().len(), 2);
    }
}
