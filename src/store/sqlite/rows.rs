//! Rows of the SQLite schema as `sqlx` decodes them, and their conversion
//! to the store's records: the SQLite twin of [`crate::store::rows`] (a new
//! column is added there and here). Instants are stored as microseconds
//! since the Unix epoch, the precision PostgreSQL keeps, so a record reads
//! back the same from either store.

use chrono::{DateTime, Utc};

use crate::domain::{ActionName, BranchId, Gid, ParticipantName};
use crate::machine::{CallStatus, Mode, Status};
use crate::store::policy::StoredPolicy;
use crate::store::rows::duration_of;
use crate::store::{BranchRecord, EventRecord, Metadata, TxRecord};

/// An instant as the schema stores it.
pub(super) fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// A stored instant (one out of chrono's range reads as the earliest).
pub(super) fn at(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `t + d`, saturating at the latest instant.
pub(super) fn after(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t - d`, saturating at the earliest instant.
pub(super) fn before(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn u32_of(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// A row of `global_transactions`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct TxRow {
    gid: String,
    mode: Mode,
    status: Status,
    #[sqlx(json)]
    metadata: Metadata,
    timeout_ms: i64,
    deadline: i64,
    branch_seq: i32,
    rollback_reason: Option<String>,
    decided_at: Option<i64>,
    attempts: i32,
    needs_attention: bool,
    attention_reason: Option<String>,
    paused: bool,
    next_attempt_at: Option<i64>,
    owner: Option<String>,
    lease_until: Option<i64>,
    fence: i64,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
    concurrency: i32,
    initiator: Option<String>,
}

impl From<TxRow> for TxRecord {
    fn from(r: TxRow) -> Self {
        TxRecord {
            gid: Gid::from_trusted(r.gid),
            mode: r.mode,
            status: r.status,
            metadata: r.metadata,
            timeout: duration_of(r.timeout_ms),
            deadline: at(r.deadline),
            branch_seq: r.branch_seq,
            rollback_reason: r.rollback_reason,
            decided_at: r.decided_at.map(at),
            attempts: u32_of(r.attempts),
            needs_attention: r.needs_attention,
            attention_reason: r.attention_reason,
            paused: r.paused,
            next_attempt_at: r.next_attempt_at.map(at),
            owner: r.owner,
            lease_until: r.lease_until.map(at),
            fence: r.fence,
            created_at: at(r.created_at),
            updated_at: at(r.updated_at),
            finished_at: r.finished_at.map(at),
            concurrency: u32_of(r.concurrency),
            initiator: r.initiator,
        }
    }
}

/// A row of `branches`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct BranchRow {
    branch_id: String,
    participant: String,
    action: String,
    payload: Vec<u8>,
    call_timeout_ms: Option<i64>,
    first_phase: CallStatus,
    second_phase: CallStatus,
    attempts: i32,
    last_code: Option<String>,
    last_error: Option<String>,
    last_attempt_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    compensation: Option<String>,
    /// A JSON array of step indices.
    #[sqlx(json)]
    depends_on: Vec<usize>,
    compensate_rejected: bool,
    call_until: Option<i64>,
    /// JSON (`store::policy`); NULL for the default policy.
    policy: Option<String>,
    skipped_at: Option<i64>,
    skipped_by: Option<String>,
    skip_note: Option<String>,
    /// JSON (`domain::UrlCall`); NULL for a registered participant's branch.
    url_call: Option<String>,
}

impl From<BranchRow> for BranchRecord {
    fn from(r: BranchRow) -> Self {
        BranchRecord {
            branch_id: BranchId::from_trusted(r.branch_id),
            participant: ParticipantName::from_trusted(r.participant),
            action: ActionName::from_trusted(r.action),
            payload: r.payload,
            call_timeout: r.call_timeout_ms.map(duration_of),
            first_phase: r.first_phase,
            second_phase: r.second_phase,
            attempts: u32_of(r.attempts),
            last_code: r.last_code,
            last_error: r.last_error,
            last_attempt_at: r.last_attempt_at.map(at),
            created_at: at(r.created_at),
            updated_at: at(r.updated_at),
            compensation: r.compensation.map(ActionName::from_trusted),
            depends_on: r.depends_on,
            compensate_rejected: r.compensate_rejected,
            // Written by this store from a valid policy: one that does not
            // parse is read as the default rather than failing the read.
            policy: r
                .policy
                .and_then(|p| serde_json::from_str::<StoredPolicy>(&p).ok())
                .map(|p| p.policy())
                .unwrap_or_default(),
            // The row was written by this process's clock: what is left of
            // it, counted from now.
            call_busy_until: r
                .call_until
                .map(|until| at(until) - Utc::now())
                .and_then(|left| left.to_std().ok())
                .filter(|left| !left.is_zero())
                .map(|left| std::time::Instant::now() + left),
            skipped: r.skipped_at.map(|t| crate::store::Skip {
                at: at(t),
                by: r.skipped_by.unwrap_or_default(),
                note: r.skip_note.unwrap_or_default(),
            }),
            url_call: crate::store::records::url_call_of(r.url_call.as_deref()),
        }
    }
}

/// A row of `transaction_events`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct EventRow {
    id: i64,
    at: i64,
    kind: String,
    status: Option<String>,
    branch_id: Option<String>,
    phase: Option<String>,
    attempt: Option<i32>,
    code: Option<String>,
    message: Option<String>,
    actor: Option<String>,
}

impl From<EventRow> for EventRecord {
    fn from(r: EventRow) -> Self {
        EventRecord {
            id: r.id,
            at: at(r.at),
            kind: r.kind,
            status: r.status,
            branch_id: r.branch_id,
            phase: r.phase,
            attempt: r.attempt,
            code: r.code,
            message: r.message,
            actor: r.actor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_round_trip_at_microseconds() {
        let t = DateTime::from_timestamp_micros(1_767_225_600_123_456).unwrap();
        assert_eq!(at(us(t)), t);
        assert_eq!(
            at(us(crate::store::no_deadline())),
            crate::store::no_deadline()
        );
        assert_eq!(at(i64::MAX), DateTime::<Utc>::MIN_UTC);
    }
}
