//! Whole rows as the database returns them, decoded by `sqlx::FromRow`, and
//! their conversion to the plain records of [`super::records`]. Every
//! module that reads a transaction or a branch decodes it here, so a new
//! column is added in one place.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::Postgres;
use sqlx::{Database, Decode, Type};

use super::{BranchRecord, Metadata, TxRecord};
use crate::domain::{ActionName, BranchId, Gid, ParticipantName};
use crate::machine::{CallStatus, Mode, Status};

/// A stored millisecond count as a duration (negative reads as zero).
pub(super) fn duration_of(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A duration as the milliseconds the schema stores.
pub(super) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl BranchRecord {
    /// The row of `b` as a store just inserted it under branch id `id`,
    /// its Try out until `busy_until` (local clock): everything in it is
    /// known, so neither store reads it back.
    pub(crate) fn inserted(
        b: super::NewBranch,
        id: String,
        busy_until: std::time::Instant,
    ) -> Self {
        Self {
            branch_id: BranchId::from_trusted(id),
            participant: b.participant,
            action: b.action,
            payload: b.payload,
            // At the stored (millisecond) precision.
            call_timeout: b.call_timeout.map(|t| duration_of(ms(t))),
            first_phase: if b.tried_by_initiator {
                CallStatus::Succeeded
            } else {
                CallStatus::Pending
            },
            second_phase: CallStatus::NotRequired,
            attempts: 0,
            last_code: None,
            last_error: None,
            last_attempt_at: None,
            created_at: b.now,
            updated_at: b.now,
            compensation: None,
            depends_on: Vec::new(),
            compensate_rejected: true,
            policy: b.policy,
            call_busy_until: Some(busy_until),
            skipped: None,
            url_call: b.url_call,
        }
    }
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
    deadline: DateTime<Utc>,
    branch_seq: i32,
    rollback_reason: Option<String>,
    decided_at: Option<DateTime<Utc>>,
    attempts: i32,
    needs_attention: bool,
    attention_reason: Option<String>,
    paused: bool,
    next_attempt_at: Option<DateTime<Utc>>,
    owner: Option<String>,
    lease_until: Option<DateTime<Utc>>,
    fence: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
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
            deadline: r.deadline,
            branch_seq: r.branch_seq,
            rollback_reason: r.rollback_reason,
            decided_at: r.decided_at,
            attempts: u32_of(r.attempts),
            needs_attention: r.needs_attention,
            attention_reason: r.attention_reason,
            paused: r.paused,
            next_attempt_at: r.next_attempt_at,
            owner: r.owner,
            lease_until: r.lease_until,
            fence: r.fence,
            created_at: r.created_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
            concurrency: u32_of(r.concurrency),
            initiator: r.initiator,
        }
    }
}

/// A saga step's dependencies: `integer[]` on PostgreSQL.
#[derive(Debug, Default)]
pub(super) struct StepList(pub Vec<usize>);

impl Type<Postgres> for StepList {
    fn type_info() -> <Postgres as Database>::TypeInfo {
        <Vec<i32> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &<Postgres as Database>::TypeInfo) -> bool {
        <Vec<i32> as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for StepList {
    fn decode(
        value: <Postgres as Database>::ValueRef<'r>,
    ) -> Result<Self, sqlx::error::BoxDynError> {
        let steps = <Vec<i32> as Decode<Postgres>>::decode(value)?;
        Ok(StepList(
            steps
                .into_iter()
                .map(|d| usize::try_from(d).unwrap_or(0))
                .collect(),
        ))
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
    last_attempt_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    compensation: Option<String>,
    depends_on: StepList,
    compensate_rejected: bool,
    policy: Option<sqlx::types::Json<super::policy::StoredPolicy>>,
    url_call: Option<sqlx::types::Json<crate::domain::UrlCall>>,
    /// `call_until` as milliseconds from the database's now (see
    /// `branch_columns!`): a duration survives clock skew with this
    /// instance, a timestamp would not.
    call_remaining_ms: Option<i64>,
    skipped_at: Option<DateTime<Utc>>,
    skipped_by: Option<String>,
    skip_note: Option<String>,
}

/// What a read of `branches` selects for a [`BranchRow`] (a macro, so that
/// queries stay `concat!`-ed literals).
macro_rules! branch_columns {
    () => {
        "*, (EXTRACT(EPOCH FROM (call_until - now())) * 1000)::bigint AS call_remaining_ms"
    };
}
pub(super) use branch_columns;

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
            last_attempt_at: r.last_attempt_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            compensation: r.compensation.map(ActionName::from_trusted),
            depends_on: r.depends_on.0,
            compensate_rejected: r.compensate_rejected,
            policy: r.policy.map(|p| p.0.policy()).unwrap_or_default(),
            // Counted from when the row arrived, which is after the
            // database computed it: later, never earlier, than the truth.
            call_busy_until: r
                .call_remaining_ms
                .filter(|ms| *ms > 0)
                .map(|ms| std::time::Instant::now() + duration_of(ms)),
            skipped: r.skipped_at.map(|at| super::Skip {
                at,
                by: r.skipped_by.unwrap_or_default(),
                note: r.skip_note.unwrap_or_default(),
            }),
            url_call: r.url_call.map(|c| c.0),
        }
    }
}
