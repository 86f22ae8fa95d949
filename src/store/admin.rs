//! What the operator (admin) API and the server's housekeeping need of the
//! store, beyond the engine's [`Store`]: filtered, paginated listing,
//! detail, summary counts, the writes of operator commands, the gauges'
//! samples, retention and closing.
//!
//! A second trait rather than more [`Store`] methods: the engine never
//! calls these, and keeping them apart keeps the engine's trait the list of
//! what driving a transaction needs. Every operator write compares what
//! the operator rules saw (status, paused, needs_attention, not resolved)
//! and appends the operator's event in the same statement, so an action is
//! recorded exactly when it took effect.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{BranchRecord, OpenCounts, PoolStats, Store, StoreResult, TxRecord};
use crate::domain::{BranchId, Gid};
use crate::machine::{CallStatus, Phase, Status};

/// How an operator closed a transaction by hand.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub at: DateTime<Utc>,
    pub by: String,
    pub note: String,
}

/// A transaction row as operators see it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminTx {
    pub tx: TxRecord,
    pub resolution: Option<Resolution>,
    pub branch_count: u32,
    /// Distinct participants of its branches, sorted.
    pub participants: Vec<String>,
}

/// Filters of the transaction list; `None`/empty/false means "any".
#[derive(Debug, Clone, Default)]
pub struct TxFilter {
    pub statuses: Vec<Status>,
    pub mode: Option<crate::machine::Mode>,
    pub participant: Option<String>,
    pub created_before: Option<DateTime<Utc>>,
    pub created_after: Option<DateTime<Utc>>,
    pub updated_before: Option<DateTime<Utc>>,
    pub needs_attention: bool,
    /// Not final, not resolved and created before this instant.
    pub stuck_since: Option<DateTime<Utc>>,
    pub gid_prefix: Option<String>,
    pub oldest_first: bool,
    pub after: Option<ListCursor>,
    pub limit: u32,
}

/// Position in the list: the last row of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    pub created_at: DateTime<Utc>,
    pub gid: String,
}

impl ListCursor {
    /// Opaque to clients; `<microseconds>.<gid>` (gids contain no spaces,
    /// and the microseconds no dot).
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at.timestamp_micros(), self.gid)
    }

    pub fn decode(raw: &str) -> Option<Self> {
        let (micros, gid) = raw.split_once('.')?;
        let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        (!gid.is_empty()).then(|| Self {
            created_at,
            gid: gid.to_string(),
        })
    }
}

/// What an operator command writes.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminChange {
    RetryAt(DateTime<Utc>),
    SetPaused(bool),
    /// Fences out any driver and stops retries for good.
    Resolve {
        note: String,
    },
    /// Retry now, asked for one branch: the same write as `RetryAt`, the
    /// event names the branch.
    RetryBranchAt {
        at: DateTime<Utc>,
        branch_id: BranchId,
    },
    /// Records that the call `branch_id` owes (its phase 2 or compensation,
    /// `phase`) was done by hand: compare-and-set on the branch's stored
    /// status and attempts as the rules saw them too. Bumps the fence, so
    /// that a round in flight writes nothing over it, and keeps the lease
    /// (a call it covers may still be out); then either finishes the
    /// transaction as `finishes` or makes it due for its other branches.
    SkipBranch {
        branch_id: BranchId,
        phase: Phase,
        expected: CallStatus,
        attempts: u32,
        note: String,
        finishes: Option<Status>,
    },
}

impl AdminChange {
    /// The branch the change is about, for its event.
    pub fn branch(&self) -> Option<&BranchId> {
        match self {
            AdminChange::RetryBranchAt { branch_id, .. }
            | AdminChange::SkipBranch { branch_id, .. } => Some(branch_id),
            _ => None,
        }
    }
}

/// The stored `second_phase` values a status the rules saw may have: a
/// decided transaction's branches that no round wrote yet still hold
/// `not_required` and are read as pending.
pub(crate) fn stored_as(status: CallStatus) -> Vec<&'static str> {
    match status {
        CallStatus::Pending => vec!["pending", "not_required"],
        other => vec![other.as_str()],
    }
}

/// An operator write, applied only if the row is still as the rules saw it.
#[derive(Debug, Clone)]
pub struct AdminWrite {
    pub gid: Gid,
    pub expected_status: Status,
    pub expected_paused: bool,
    pub expected_needs_attention: bool,
    pub change: AdminChange,
    /// Event kind, for example `operator_retry`.
    pub event: &'static str,
    /// Name of the admin token used.
    pub actor: String,
    pub note: Option<String>,
    pub now: DateTime<Utc>,
}

/// Summary counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdminStats {
    pub by_status: Vec<(Status, u64)>,
    pub total: u64,
    pub unfinished: u64,
    pub retry_backlog: u64,
    pub retry_due: u64,
    pub needs_attention: u64,
    pub paused: u64,
    pub resolved: u64,
    pub oldest_unfinished: Option<AdminTx>,
}

/// Transactions that finished in one minute (the console's charts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishedInMinute {
    /// Start of the minute.
    pub minute: DateTime<Utc>,
    /// Reached a final status in that minute.
    pub finished: u64,
    /// Of those, how many ended rolled back (cancelled or compensated).
    pub failed: u64,
}

/// A change of a transaction's needs_attention to post to the alert
/// webhooks, as claimed for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    pub id: i64,
    pub gid: Gid,
    pub mode: crate::machine::Mode,
    /// `needs_attention` or `attention_cleared`.
    pub kind: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Claims so far, this one included.
    pub attempts: u32,
    /// URLs that took it already.
    pub delivered_to: Vec<String>,
    /// The participant of the first branch whose last call failed, if any.
    pub participant: Option<String>,
}

/// The outcome of one delivery attempt of a claimed alert.
#[derive(Debug, Clone)]
pub struct AlertAttempt {
    pub id: i64,
    pub owner: String,
    /// Every URL that took it so far.
    pub delivered_to: Vec<String>,
    /// Every URL took it: nothing more to send.
    pub done: bool,
    /// When to try the others again (ignored when done).
    pub next_at: DateTime<Utc>,
    pub error: Option<String>,
    pub now: DateTime<Utc>,
}

/// The operator's queries and writes, and the server's housekeeping.
#[tonic::async_trait]
pub trait AdminStore: Store {
    /// One page of transactions matching `filter`, and the cursor of the
    /// next page if there is one.
    async fn admin_list(
        &self,
        filter: &TxFilter,
    ) -> StoreResult<(Vec<AdminTx>, Option<ListCursor>)>;

    /// One transaction with its branches (in creation order).
    async fn admin_get(&self, gid: &Gid) -> StoreResult<Option<(AdminTx, Vec<BranchRecord>)>>;

    /// Applies an operator write if the row is still as expected, with its
    /// event; `false` if the row moved on (the caller decides again).
    async fn admin_apply(&self, write: AdminWrite) -> StoreResult<bool>;

    /// Appends an operator event for an action carried out elsewhere (a
    /// rollback decided by the engine).
    async fn admin_event(
        &self,
        gid: &Gid,
        kind: &str,
        message: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Counts over every transaction, plus the oldest unfinished one.
    async fn admin_stats(&self) -> StoreResult<AdminStats>;

    /// Per minute since `since` (its minute included), the transactions
    /// that reached a final status, oldest first; minutes with none are
    /// left out.
    async fn admin_finished_per_minute(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<FinishedInMinute>>;

    /// Unfinished transactions per status, for the gauges.
    async fn open_counts(&self) -> StoreResult<OpenCounts>;

    /// Current size of the store's connection pools.
    fn pool_stats(&self) -> Vec<PoolStats>;

    /// Deletes up to `batch` transactions that finished (or were resolved
    /// by an operator) more than `older_than` ago, with their branches and
    /// events; returns how many. Never waits on rows in use.
    async fn delete_finished(&self, older_than: Duration, batch: u32) -> StoreResult<u64>;

    /// Closes the connections; the store is unusable afterwards.
    async fn close(&self);

    /// Claims up to `limit` undelivered alerts that are due and not
    /// claimed by a live lease, for `owner`, for `lease`; each claim counts
    /// as an attempt. Several instances may claim at once: `SKIP LOCKED`
    /// (PostgreSQL) or the single writer (SQLite) gives each to one.
    async fn claim_alerts(
        &self,
        owner: &str,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<AlertRecord>>;

    /// Records an attempt of an alert `owner` claimed (and gives its lease
    /// back); `false` if the claim was lost to another instance.
    async fn record_alert_attempt(&self, attempt: AlertAttempt) -> StoreResult<bool>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_refuses_garbage() {
        let c = ListCursor {
            created_at: DateTime::from_timestamp_micros(1_767_225_600_123_456).unwrap(),
            gid: "order.42:a_b-c".into(),
        };
        assert_eq!(ListCursor::decode(&c.encode()), Some(c));
        for bad in ["", "abc", "12.", "x.gid", ".gid"] {
            assert_eq!(ListCursor::decode(bad), None, "{bad}");
        }
    }
}
