//! What this instance last wrote about the transactions it is serving, so
//! that a Commit or Rollback arriving here after Begin and Try can decide
//! without reading the transaction back. Only ever a shortcut: the decision
//! is written with a compare-and-set on status, branch count and fence, so
//! state that is stale (another instance served a Try, recovery took the
//! transaction over) makes the write match nothing, and the engine then
//! decides again from the database. A refusal is never based on it.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::{BranchId, Gid};
use crate::machine::CallStatus;
use crate::store::{BranchRecord, TxRecord};

/// Bound on entries; transactions that never decide are dropped with the
/// rest when it is reached (they are then simply read from the database).
const MAX_ENTRIES: usize = 50_000;

#[derive(Default)]
pub struct Recent {
    entries: Mutex<HashMap<Gid, (TxRecord, Vec<BranchRecord>)>>,
}

impl Recent {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<Gid, (TxRecord, Vec<BranchRecord>)>) -> R) -> R {
        f(&mut self.entries.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A transaction this instance just created.
    pub fn begun(&self, tx: TxRecord) {
        self.with(|m| {
            if m.len() >= MAX_ENTRIES {
                m.clear();
            }
            m.insert(tx.gid.clone(), (tx, Vec::new()));
        });
    }

    /// A branch this instance just registered; `seq` is the transaction's
    /// branch counter after it.
    pub fn branch_added(&self, gid: &Gid, branch: &BranchRecord, seq: i32) {
        self.with(|m| {
            if let Some((tx, branches)) = m.get_mut(gid) {
                tx.branch_seq = seq;
                branches.push(branch.clone());
            }
        });
    }

    /// The recorded outcome of a Try.
    pub fn try_recorded(&self, gid: &Gid, branch: &BranchId, status: CallStatus) {
        self.with(|m| {
            if let Some((_, branches)) = m.get_mut(gid)
                && let Some(b) = branches.iter_mut().find(|b| &b.branch_id == branch)
            {
                b.first_phase = status;
            }
        });
    }

    /// Something happened that this instance cannot follow: forget it.
    pub fn forget(&self, gid: &Gid) {
        self.with(|m| {
            m.remove(gid);
        });
    }

    /// Takes the entry (a decision is made once).
    pub fn take(&self, gid: &Gid) -> Option<(TxRecord, Vec<BranchRecord>)> {
        self.with(|m| m.remove(gid))
    }
}
