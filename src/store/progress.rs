//! A transaction's progress under its lease, as every store writes it: a
//! TCC phase-2 round ([`RoundWrite`]) and a saga's progress ([`SagaWrite`])
//! normalised to one shape, the transaction row, the branch rows that
//! changed and the events to append. Deciding which events a write makes is
//! the same on every database; only the statements differ. A saga's success
//! path makes no events: its rows tell it (`history`).

use chrono::{DateTime, Utc};

use crate::machine::{CallStatus, Mode, Phase, Status};
use crate::store::history;
use crate::store::{CallRecord, QueryRecord, RoundWrite, SagaWrite};

/// One branch row of a progress write.
pub(in crate::store) struct BranchRow {
    pub(in crate::store) id: String,
    /// `None` keeps the stored value (a saga step not in this write).
    pub(in crate::store) first: Option<&'static str>,
    pub(in crate::store) second: &'static str,
    pub(in crate::store) attempts: i32,
    pub(in crate::store) code: Option<String>,
    pub(in crate::store) error: Option<String>,
}

/// One event row.
pub(in crate::store) struct EventRow {
    pub(in crate::store) kind: String,
    pub(in crate::store) status: Option<&'static str>,
    pub(in crate::store) branch: Option<String>,
    pub(in crate::store) phase: Option<&'static str>,
    pub(in crate::store) attempt: Option<i32>,
    pub(in crate::store) code: Option<String>,
    pub(in crate::store) message: Option<String>,
}

impl EventRow {
    fn call(c: &CallRecord) -> Self {
        let m = c.outcome.message();
        Self {
            kind: "call".into(),
            status: None,
            branch: Some(c.branch_id.as_str().to_string()),
            phase: Some(c.phase.as_str()),
            attempt: Some(i32::try_from(c.attempt).unwrap_or(i32::MAX)),
            code: Some(c.outcome.code().to_string()),
            message: (!m.is_empty()).then(|| m.to_string()),
        }
    }

    /// A message's query-back: no branch, the initiator's answer as code.
    fn query(q: &QueryRecord) -> Self {
        let m = q.outcome.message();
        Self {
            kind: "query_back".into(),
            status: None,
            branch: None,
            phase: Some(Phase::QueryPrepared.as_str()),
            attempt: Some(i32::try_from(q.attempt).unwrap_or(i32::MAX)),
            code: Some(q.outcome.code().to_string()),
            message: (!m.is_empty()).then(|| m.to_string()),
        }
    }

    fn conclude(kind: &str, status: Status, message: Option<String>) -> Self {
        Self {
            kind: kind.into(),
            status: Some(status.as_str()),
            branch: None,
            phase: None,
            attempt: None,
            code: None,
            message,
        }
    }
}

/// A transaction's progress under its lease: the TCC round and the saga
/// write normalised to one shape.
pub(in crate::store) struct Progress {
    pub(in crate::store) gid: String,
    pub(in crate::store) fence: i64,
    pub(in crate::store) owner: String,
    pub(in crate::store) status: Status,
    pub(in crate::store) decided_at: Option<DateTime<Utc>>,
    pub(in crate::store) reason: Option<String>,
    pub(in crate::store) attempts: i32,
    pub(in crate::store) needs_attention: bool,
    pub(in crate::store) attention_reason: Option<String>,
    pub(in crate::store) next_attempt_at: Option<DateTime<Utc>>,
    pub(in crate::store) release: bool,
    pub(in crate::store) now: DateTime<Utc>,
    pub(in crate::store) branches: Vec<BranchRow>,
    pub(in crate::store) events: Vec<EventRow>,
    /// A saga turning to compensation: if it was running, first copy its
    /// successful actions from the branch rows (as they were before this
    /// write) into events, since compensation overwrites those rows.
    pub(in crate::store) copy_successes: bool,
}

pub(in crate::store) fn clamp(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl From<RoundWrite> for Progress {
    fn from(r: RoundWrite) -> Self {
        let status = r.next.status;
        let mut events: Vec<EventRow> = r.calls.iter().map(EventRow::call).collect();
        events.push(match r.next_attempt_at {
            None => EventRow::conclude("finished", status, None),
            Some(at) => EventRow::conclude(
                "retry_scheduled",
                status,
                Some(format!(
                    "round {} failed; next at {}",
                    r.next.attempts,
                    at.to_rfc3339()
                )),
            ),
        });
        if r.newly_flagged {
            events.push(EventRow::conclude(
                "needs_attention",
                status,
                r.next.attention_reason.clone(),
            ));
        }
        Self {
            gid: r.lease.gid.as_str().to_string(),
            fence: r.lease.fence,
            owner: r.owner,
            status,
            decided_at: r.next.decided_at,
            reason: r.next.rollback_reason.clone(),
            attempts: clamp(r.next.attempts),
            needs_attention: r.next.needs_attention,
            attention_reason: r.next.attention_reason.clone(),
            next_attempt_at: r.next_attempt_at,
            release: true,
            now: r.now,
            branches: r
                .next
                .branches
                .iter()
                // A skipped branch's row keeps its last real outcome and
                // its skip columns (an operator's write, not a round's).
                .filter(|b| b.second_phase != CallStatus::Skipped)
                .map(|b| BranchRow {
                    id: b.id.as_str().to_string(),
                    // As the state says: a commit decision carries every
                    // Try as succeeded, which covers a Try record still on
                    // its way (`machine::decide`).
                    first: Some(b.first_phase.as_str()),
                    second: b.second_phase.as_str(),
                    attempts: clamp(b.attempts),
                    code: b.last_code.clone(),
                    error: b.last_error.clone(),
                })
                .collect(),
            events,
            copy_successes: false,
        }
    }
}

impl From<SagaWrite> for Progress {
    fn from(w: SagaWrite) -> Self {
        let status = w.state.status;
        let saga = w.mode == Mode::Saga;
        let mut events: Vec<EventRow> = w
            .calls
            .iter()
            .filter(|c| !(saga && history::call_told_by_rows(status, c)))
            .map(EventRow::call)
            .collect();
        if let Some(q) = &w.query {
            events.push(EventRow::query(q));
        }
        if w.status_changed && !(saga && history::finish_told_by_rows(status)) {
            let kind = match status {
                s if s.is_final() => "finished",
                // A message the query-back found committed.
                Status::Submitted => "decided",
                _ => "compensating",
            };
            events.push(EventRow::conclude(kind, status, w.state.reason.clone()));
        } else if w.release && w.next_attempt_at.is_some() {
            events.push(EventRow::conclude(
                "retry_scheduled",
                status,
                w.next_attempt_at.map(|at| {
                    format!(
                        "round {} incomplete; next at {}",
                        w.state.attempts,
                        at.to_rfc3339()
                    )
                }),
            ));
        }
        if w.newly_flagged {
            events.push(EventRow::conclude(
                "needs_attention",
                status,
                w.state.attention_reason.clone(),
            ));
        }
        let branches = w
            .steps
            .iter()
            .filter_map(|&i| w.state.steps.get(i))
            .filter(|s| s.compensation != CallStatus::Skipped)
            .map(|s| BranchRow {
                id: s.id.as_str().to_string(),
                first: Some(s.action.as_str()),
                second: s.compensation.as_str(),
                attempts: clamp(s.attempts),
                code: s.last_code.clone(),
                error: s.last_error.clone(),
            })
            .collect();
        Self {
            gid: w.lease.gid.as_str().to_string(),
            fence: w.lease.fence,
            owner: w.owner,
            status,
            decided_at: w.state.decided_at,
            reason: w.state.reason.clone(),
            attempts: clamp(w.state.attempts),
            needs_attention: w.state.needs_attention,
            attention_reason: w.state.attention_reason.clone(),
            next_attempt_at: w.next_attempt_at,
            release: w.release,
            now: w.now,
            branches,
            events,
            copy_successes: saga && history::turns_to_compensation(status, w.status_changed),
        }
    }
}
