//! Rows as the store returns them, and their conversion to the state the
//! state machine works on.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::{ActionName, BranchId, EndpointUrl, Gid, ParticipantName, Protocol, UrlCall};
use crate::machine::policy::{ActionPolicy, CallPolicy};
use crate::machine::saga::{SagaState, StepState};
use crate::machine::tcc::{BranchState, TxState};
use crate::machine::{CallStatus, Mode, Status};

/// The deadline stored for a saga that has none (PostgreSQL's timestamp
/// range and the protobuf Timestamp both reach year 9999).
pub fn no_deadline() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(253_370_764_800, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Transaction metadata (for example `traceparent`).
pub use crate::domain::metadata::Metadata;

/// A global transaction row.
#[derive(Debug, Clone, PartialEq)]
pub struct TxRecord {
    pub gid: Gid,
    pub mode: Mode,
    pub status: Status,
    pub metadata: Metadata,
    pub timeout: Duration,
    pub deadline: DateTime<Utc>,
    pub branch_seq: i32,
    pub rollback_reason: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub needs_attention: bool,
    pub attention_reason: Option<String>,
    pub paused: bool,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub fence: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Sagas: most steps running at once.
    pub concurrency: u32,
    /// The identity that began it; `None` when authentication was off.
    pub initiator: Option<String>,
}

/// A branch row.
#[derive(Debug, Clone, PartialEq)]
pub struct BranchRecord {
    pub branch_id: BranchId,
    pub participant: ParticipantName,
    pub action: ActionName,
    pub payload: Vec<u8>,
    pub call_timeout: Option<Duration>,
    pub first_phase: CallStatus,
    pub second_phase: CallStatus,
    pub attempts: u32,
    pub last_code: Option<String>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Sagas: the action that undoes `action`.
    pub compensation: Option<ActionName>,
    /// Sagas: indices of the steps this one waits for.
    pub depends_on: Vec<usize>,
    /// Sagas: compensate even when the action was rejected.
    pub compensate_rejected: bool,
    /// Its own retry policy (request-given; unset parts follow the config).
    pub policy: CallPolicy,
    /// A Try of this branch may still be running at its participant until
    /// this moment (local clock, read conservatively late): nothing else is
    /// sent to the branch before it.
    pub call_busy_until: Option<std::time::Instant>,
    /// Set once an operator skipped the call it owed (phase 2 or a
    /// compensation) after doing its work by hand.
    pub skipped: Option<Skip>,
    /// A branch called by URL (the DTM-compatible API): its URLs and
    /// headers; `None` for a registered participant's branch.
    pub url_call: Option<UrlCall>,
}

/// How an operator skipped a branch's owed call. The branch's own phase
/// columns keep the last real outcome; the state machine reads the owed
/// phase as [`CallStatus::Skipped`].
#[derive(Debug, Clone, PartialEq)]
pub struct Skip {
    pub at: DateTime<Utc>,
    pub by: String,
    pub note: String,
}

/// A URL branch's calls as the JSON text both stores keep (`url_call`).
pub(crate) fn url_call_text(c: &Option<UrlCall>) -> Option<String> {
    c.as_ref().and_then(|c| serde_json::to_string(c).ok())
}

/// Reads `url_call` back; a value this version cannot read is left out
/// (the branch then fails its calls visibly rather than guessing).
pub(crate) fn url_call_of(text: Option<&str>) -> Option<UrlCall> {
    text.and_then(|t| serde_json::from_str(t).ok())
}

impl BranchRecord {
    /// `participant.action`, the way operators name a branch.
    pub fn label(&self) -> String {
        format!("{}.{}", self.participant, self.action)
    }

    /// Its phase 2 or compensation as the state machine sees it: skipped
    /// by an operator, or as last recorded.
    pub fn owed_phase(&self) -> CallStatus {
        if self.skipped.is_some() {
            CallStatus::Skipped
        } else {
            self.second_phase
        }
    }

    pub fn state(&self) -> BranchState {
        BranchState {
            id: self.branch_id.clone(),
            label: self.label(),
            first_phase: self.first_phase,
            second_phase: self.owed_phase(),
            attempts: self.attempts,
            last_code: self.last_code.clone(),
            last_error: self.last_error.clone(),
            policy: self.policy,
        }
    }
}

impl TxRecord {
    /// The row as a store just inserted it (nothing decided, nothing
    /// retried), for callers that keep what they wrote instead of reading
    /// it back.
    pub fn inserted(
        gid: Gid,
        mode: Mode,
        metadata: Metadata,
        timeout: Duration,
        deadline: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Self {
        let status = match mode {
            Mode::Tcc => Status::Trying,
            Mode::Saga => Status::Running,
            Mode::Msg => Status::Prepared,
        };
        TxRecord {
            gid,
            mode,
            status,
            metadata,
            timeout,
            deadline,
            branch_seq: 0,
            rollback_reason: None,
            decided_at: None,
            attempts: 0,
            needs_attention: false,
            attention_reason: None,
            paused: false,
            next_attempt_at: Some(deadline),
            owner: None,
            lease_until: None,
            fence: 0,
            created_at: now,
            updated_at: now,
            finished_at: None,
            concurrency: 0,
            initiator: None,
        }
    }

    /// False for a saga submitted without a timeout.
    pub fn has_deadline(&self) -> bool {
        self.deadline < no_deadline()
    }

    /// The saga view of this row and its steps (branches in step order).
    pub fn saga_state(&self, steps: &[BranchRecord]) -> SagaState {
        SagaState {
            status: self.status,
            submitted_at: self.created_at,
            deadline: self.has_deadline().then_some(self.deadline),
            decided_at: self.decided_at,
            reason: self.rollback_reason.clone(),
            attempts: self.attempts,
            needs_attention: self.needs_attention,
            attention_reason: self.attention_reason.clone(),
            steps: steps
                .iter()
                .map(|b| StepState {
                    id: b.branch_id.clone(),
                    label: b.label(),
                    depends_on: b.depends_on.clone(),
                    action: b.first_phase,
                    compensation: b.owed_phase(),
                    compensate_rejected: b.compensate_rejected,
                    attempts: b.attempts,
                    last_code: b.last_code.clone(),
                    last_error: b.last_error.clone(),
                    policy: b.policy,
                })
                .collect(),
        }
    }

    /// The state-machine view of this row and its branches.
    pub fn state(&self, branches: &[BranchRecord]) -> TxState {
        // The decision does not rewrite branch rows; a branch of a decided
        // transaction without a recorded round is owed its phase-2 call.
        let owed = self.status.second_phase().is_some();
        let branches = branches
            .iter()
            .map(|b| {
                let mut s = b.state();
                if owed && s.second_phase == CallStatus::NotRequired {
                    s.second_phase = CallStatus::Pending;
                }
                s
            })
            .collect();
        TxState {
            status: self.status,
            deadline: self.deadline,
            decided_at: self.decided_at,
            rollback_reason: self.rollback_reason.clone(),
            attempts: self.attempts,
            needs_attention: self.needs_attention,
            attention_reason: self.attention_reason.clone(),
            branches,
        }
    }
}

/// One line of a transaction's history (its fields are the columns of
/// `transaction_events`).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EventRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub status: Option<String>,
    pub branch_id: Option<String>,
    pub phase: Option<String>,
    pub attempt: Option<i32>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub actor: Option<String>,
}

/// A registered participant endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointRecord {
    pub url: EndpointUrl,
    pub protocol: Protocol,
    pub registered_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// A registered participant.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantRecord {
    pub name: ParticipantName,
    pub actions: Vec<ActionName>,
    pub endpoints: Vec<EndpointRecord>,
    /// The call timeout and policy declared for its actions at
    /// registration; actions that declared none are not in it.
    pub policies: std::collections::BTreeMap<ActionName, ActionPolicy>,
}

/// Unfinished, unresolved transactions, for the metrics gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenCounts {
    pub by_status: Vec<(Status, u64)>,
    pub needs_attention: u64,
    /// Age of the oldest one by the database clock; zero when there is none.
    pub oldest_age: Duration,
}

/// Size of one connection pool of the store.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub name: &'static str,
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}
