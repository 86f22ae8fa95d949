//! The TCC half of the state machine.
//!
//! Every change of a TCC transaction goes through two functions:
//! [`decide`] for commands (commit, rollback, a new branch, a passed
//! deadline) and [`settle_round`] for the replies of one round of phase-2
//! calls. Both take the current state and the time and return the new state
//! plus what to do next.

use chrono::{DateTime, Duration, Utc};

use super::policy::CallPolicy;
use super::{CallStatus, Escalation, Outcome, Phase, Status};
use crate::domain::BranchId;

/// What the state machine needs to know of a branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchState {
    pub id: BranchId,
    /// `participant.action`, for messages.
    pub label: String,
    pub first_phase: CallStatus,
    pub second_phase: CallStatus,
    pub attempts: u32,
    pub last_code: Option<String>,
    pub last_error: Option<String>,
    /// Its own retry policy (phase 2 only: a Try is called once).
    pub policy: CallPolicy,
}

/// What the state machine needs to know of a global transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxState {
    pub status: Status,
    pub deadline: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub rollback_reason: Option<String>,
    /// Phase-2 rounds that did not finish the transaction.
    pub attempts: u32,
    pub needs_attention: bool,
    pub attention_reason: Option<String>,
    pub branches: Vec<BranchState>,
}

/// A command against a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Register one more branch (TCC Try).
    AddBranch,
    Commit,
    Rollback {
        reason: String,
    },
    /// The recovery loop noticed the deadline.
    Expire,
}

/// Why a command was refused; nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("transaction is {}, branches can only be added while trying", .0.as_str())]
    NotTrying(Status),
    #[error("transaction deadline passed at {0}; it is being rolled back")]
    DeadlinePassed(DateTime<Utc>),
    #[error("transaction is {}; it cannot be committed", .0.as_str())]
    CannotCommit(Status),
    #[error("transaction is {}; it cannot be rolled back after a commit decision", .0.as_str())]
    CannotRollback(Status),
    #[error("branch {branch} ({label}) try is {}; commit needs every try to have succeeded, roll back instead", .status.as_str())]
    TryNotSucceeded {
        branch: BranchId,
        label: String,
        status: CallStatus,
    },
}

/// Result of an accepted command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to change: the command was already applied (idempotent
    /// repeat) or, for `AddBranch`, the branch may be added.
    Unchanged,
    /// The decision: persist the new state, then make `calls` (every
    /// branch's phase-2 call).
    Decided {
        next: TxState,
        calls: Vec<(BranchId, Phase)>,
    },
}

/// Applies a command. Pure: the same input always gives the same output.
pub fn decide(tx: &TxState, command: &Command, now: DateTime<Utc>) -> Result<Verdict, Refusal> {
    match command {
        Command::AddBranch => match tx.status {
            Status::Trying if now >= tx.deadline => Err(Refusal::DeadlinePassed(tx.deadline)),
            Status::Trying => Ok(Verdict::Unchanged),
            other => Err(Refusal::NotTrying(other)),
        },
        Command::Commit => match tx.status {
            Status::Trying if now >= tx.deadline => Err(Refusal::DeadlinePassed(tx.deadline)),
            Status::Trying => {
                if let Some(b) = tx
                    .branches
                    .iter()
                    .find(|b| b.first_phase != CallStatus::Succeeded)
                {
                    return Err(Refusal::TryNotSucceeded {
                        branch: b.id.clone(),
                        label: b.label.clone(),
                        status: b.first_phase,
                    });
                }
                Ok(decided(tx, Status::Confirming, None, now))
            }
            Status::Confirming | Status::Confirmed => Ok(Verdict::Unchanged),
            other => Err(Refusal::CannotCommit(other)),
        },
        Command::Rollback { reason } => match tx.status {
            Status::Trying => Ok(decided(tx, Status::Cancelling, Some(reason.clone()), now)),
            Status::Cancelling | Status::Cancelled => Ok(Verdict::Unchanged),
            other => Err(Refusal::CannotRollback(other)),
        },
        Command::Expire => match tx.status {
            Status::Trying if now >= tx.deadline => Ok(decided(
                tx,
                Status::Cancelling,
                Some(format!("deadline passed at {}", tx.deadline.to_rfc3339())),
                now,
            )),
            _ => Ok(Verdict::Unchanged),
        },
    }
}

fn decided(tx: &TxState, status: Status, reason: Option<String>, now: DateTime<Utc>) -> Verdict {
    let mut next = tx.clone();
    next.status = status;
    next.decided_at = Some(now);
    next.rollback_reason = reason;
    for b in &mut next.branches {
        // A commit is decided only with every Try succeeded; the state says
        // so, and the store persists it even if a Try's own record (written
        // after its reply) has not landed yet.
        if status == Status::Confirming {
            b.first_phase = CallStatus::Succeeded;
        }
        b.second_phase = CallStatus::Pending;
        b.attempts = 0;
    }
    let calls = pending_calls(&next);
    Verdict::Decided { next, calls }
}

/// The phase-2 state a branch must still have for a Try's reply to be
/// recorded on it. The record is written after the reply, so it can arrive
/// after phase 2 began; it must not overwrite phase 2's outcome (a commit
/// carries its Tries as succeeded itself, see [`decide`]). The store
/// applies the record as a compare-and-set on this state; the call stays
/// in the history either way.
pub fn try_record_applies() -> CallStatus {
    CallStatus::NotRequired
}

/// The branches still owed a phase-2 call, and which call.
pub fn pending_calls(tx: &TxState) -> Vec<(BranchId, Phase)> {
    let Some(phase) = tx.status.second_phase() else {
        return Vec::new();
    };
    tx.branches
        .iter()
        .filter(|b| !b.second_phase.is_done())
        .map(|b| (b.id.clone(), phase))
        .collect()
}

/// What a phase-2 round led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Every branch is done; the transaction is final.
    Finished(Status),
    /// Some branch is not done; retry after the backoff for `attempt`.
    Retry {
        attempt: u32,
        /// True when this round crossed the escalation threshold.
        newly_flagged: bool,
    },
}

/// Folds the replies of one round of phase-2 calls into the state.
pub fn settle_round(
    tx: &TxState,
    replies: &[(BranchId, Outcome)],
    now: DateTime<Utc>,
    escalation: Escalation,
) -> (TxState, Settled) {
    let mut next = tx.clone();
    let Some(phase) = tx.status.second_phase() else {
        return (next, Settled::Finished(tx.status));
    };
    for (id, outcome) in replies {
        let Some(b) = next.branches.iter_mut().find(|b| &b.id == id) else {
            continue;
        };
        // Done already, or skipped by an operator: a late reply changes
        // nothing.
        if b.second_phase.is_done() {
            continue;
        }
        b.attempts += 1;
        match outcome {
            Outcome::Succeeded => {
                b.second_phase = CallStatus::Succeeded;
                b.last_code = None;
                b.last_error = None;
            }
            // ABORTED is no valid answer to Confirm or Cancel: the decision
            // is final, so the call is retried like any failure.
            Outcome::Rejected { message } => {
                b.second_phase = CallStatus::Unknown;
                b.last_code = Some("ABORTED".into());
                b.last_error = Some(format!(
                    "participant refused {} (ABORTED is not allowed in phase 2): {message}",
                    phase.as_str()
                ));
            }
            Outcome::Unknown { code, message } => {
                b.second_phase = CallStatus::Unknown;
                b.last_code = Some(code.clone());
                b.last_error = Some(message.clone());
            }
        }
    }
    if next.branches.iter().all(|b| b.second_phase.is_done()) {
        next.status = tx.status.finished().unwrap_or(tx.status);
        return (next.clone(), Settled::Finished(next.status));
    }
    next.attempts += 1;
    let age = now - tx.decided_at.unwrap_or(now);
    // A branch whose own policy is exhausted cannot be abandoned (the
    // decision is final): it only raises the flag, sooner than the
    // coordinator's thresholds would, and is retried still.
    let exhausted = next
        .branches
        .iter()
        .filter(|b| !b.second_phase.is_done())
        .find_map(|b| {
            let why = b
                .policy
                .stop_reason(b.attempts, age, b.last_code.as_deref())?;
            Some(format!(
                "branch {} ({}) {} {why}; ",
                b.id,
                b.label,
                phase.as_str()
            ))
        });
    let over = next.attempts >= escalation.max_attempts || age >= escalation.max_age;
    let mut newly_flagged = false;
    if over || exhausted.is_some() {
        let prefix = exhausted.unwrap_or_default();
        newly_flagged = !next.needs_attention;
        next.needs_attention = true;
        next.attention_reason = Some(format!(
            "{prefix}{}",
            attention_reason(&next, phase, age, now)
        ));
    }
    (
        next.clone(),
        Settled::Retry {
            attempt: next.attempts,
            newly_flagged,
        },
    )
}

fn attention_reason(tx: &TxState, phase: Phase, age: Duration, _now: DateTime<Utc>) -> String {
    let failing: Vec<String> = tx
        .branches
        .iter()
        .filter(|b| !b.second_phase.is_done())
        .map(|b| {
            format!(
                "branch {} ({}) {} failing after {} attempts: {} {}",
                b.id,
                b.label,
                phase.as_str(),
                b.attempts,
                b.last_code.as_deref().unwrap_or("UNKNOWN"),
                b.last_error.as_deref().unwrap_or("")
            )
            .trim_end()
            .to_string()
        })
        .collect();
    format!(
        "{} rounds over {}s; {}",
        tx.attempts,
        age.num_seconds(),
        failing.join("; ")
    )
}

#[cfg(test)]
#[path = "tcc_tests.rs"]
mod tests;
