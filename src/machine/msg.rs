//! The 2-phase message, pure like the TCC and saga halves. A message is
//! prepared (its steps durable, nothing called), then the initiator runs
//! its local transaction and submits or aborts it. Once submitted, every
//! step is executed, in order, until it succeeds: a message is never
//! compensated, so a rejection is retried like an unknown outcome (and
//! escalated like one). If neither submit nor abort arrives before the
//! message's deadline, the coordinator asks the initiator back whether its
//! local transaction committed ([`on_query_answer`]).
//!
//! Statuses: `prepared` → `submitted` → `succeeded`, or `prepared` →
//! `aborted`. A message has the saga's shape (a status and steps with an
//! action each, no compensation), so it is held in a [`SagaState`] and
//! persisted by the same fenced progress write.

use chrono::{DateTime, Utc};

use super::saga::SagaState;
use super::{CallStatus, Escalation, Outcome, Status};

/// A message as the state machine sees it. Its `deadline` is when the
/// query-back becomes due (while prepared); `reason` says why it was
/// submitted or aborted.
pub type MsgState = SagaState;

/// What the initiator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Its local transaction committed: execute the steps.
    Submit,
    /// Its local transaction rolled back: forget the steps.
    Abort { reason: String },
}

/// What a command (or an answer of the query-back) comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The message is already where the command would take it: a repeat,
    /// nothing to write.
    AlreadyDone,
    /// Persist `next` (fenced), then act on its status: `submitted` runs
    /// the steps, `aborted` is final.
    Decided(MsgState),
}

/// A command the message's status forbids; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Illegal(pub String);

/// Applies the initiator's command.
pub fn decide(state: &MsgState, command: &Command, now: DateTime<Utc>) -> Result<Verdict, Illegal> {
    match (command, state.status) {
        (Command::Submit, Status::Prepared) => Ok(Verdict::Decided(submitted(
            state,
            now,
            "submitted by the initiator",
        ))),
        (Command::Submit, Status::Submitted | Status::Succeeded) => Ok(Verdict::AlreadyDone),
        (Command::Submit, Status::Aborted) => Err(Illegal(format!(
            "the message was aborted ({}); it cannot be submitted",
            state.reason.as_deref().unwrap_or("no reason")
        ))),
        (Command::Abort { reason }, Status::Prepared) => {
            Ok(Verdict::Decided(aborted(state, now, reason)))
        }
        (Command::Abort { .. }, Status::Aborted) => Ok(Verdict::AlreadyDone),
        (Command::Abort { .. }, Status::Submitted | Status::Succeeded) => Err(Illegal(
            "the message was submitted; it cannot be aborted (its steps are never undone)".into(),
        )),
        (_, other) => Err(Illegal(format!(
            "not a message (status {})",
            other.as_str()
        ))),
    }
}

/// Whether the initiator must be asked back: prepared, and neither submit
/// nor abort arrived before the deadline.
pub fn query_due(state: &MsgState, now: DateTime<Utc>) -> bool {
    state.status == Status::Prepared && state.deadline.is_some_and(|d| now >= d)
}

/// The initiator's answer to the query-back, as the outcome contract
/// classifies it: OK (2xx) = its local transaction committed, ABORTED (409)
/// = it rolled back, anything else = it could not say (not yet, or not
/// reachable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryAnswer {
    Committed,
    RolledBack,
    Unknown { code: String, message: String },
}

impl From<&Outcome> for QueryAnswer {
    fn from(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Succeeded => QueryAnswer::Committed,
            Outcome::Rejected { .. } => QueryAnswer::RolledBack,
            Outcome::Unknown { code, message } => QueryAnswer::Unknown {
                code: code.clone(),
                message: message.clone(),
            },
        }
    }
}

/// After an unanswered query-back: ask again after the backoff of
/// `attempt`; `newly_flagged` when this answer raised needs_attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskAgain {
    pub next: MsgState,
    pub attempt: u32,
    pub newly_flagged: bool,
}

/// Folds the query-back's answer into a prepared message. `None` when the
/// message is no longer prepared (a submit or abort won the race): the
/// answer is moot.
pub fn on_query_answer(
    state: &MsgState,
    answer: &QueryAnswer,
    now: DateTime<Utc>,
    escalation: Escalation,
) -> Option<Result<Verdict, AskAgain>> {
    if state.status != Status::Prepared {
        return None;
    }
    Some(match answer {
        QueryAnswer::Committed => Ok(Verdict::Decided(submitted(
            state,
            now,
            "query-back: the initiator's transaction committed",
        ))),
        QueryAnswer::RolledBack => Ok(Verdict::Decided(aborted(
            state,
            now,
            "query-back: the initiator's transaction rolled back",
        ))),
        QueryAnswer::Unknown { code, message } => {
            let mut next = state.clone();
            next.attempts += 1;
            let age = now - state.deadline.unwrap_or(now);
            let over = next.attempts >= escalation.max_attempts || age >= escalation.max_age;
            let newly_flagged = over && !next.needs_attention;
            if over {
                next.needs_attention = true;
                next.attention_reason = Some(
                    format!(
                        "query-back unanswered after {} attempts over {}s: {code} {message}",
                        next.attempts,
                        age.num_seconds()
                    )
                    .trim_end()
                    .to_string(),
                );
            }
            Err(AskAgain {
                attempt: next.attempts,
                next,
                newly_flagged,
            })
        }
    })
}

/// The step to execute next: the first one not yet succeeded, while the
/// message is submitted. Steps run one after another, in the order given.
pub fn next_step(state: &MsgState) -> Option<usize> {
    if state.status != Status::Submitted {
        return None;
    }
    state
        .steps
        .iter()
        .position(|s| s.action != CallStatus::Succeeded)
}

/// Folds one step's reply into the message; true when it is now final.
/// A rejection is recorded and retried: a submitted message must complete.
pub fn on_reply(state: &MsgState, step: usize, outcome: &Outcome) -> (MsgState, bool) {
    let mut next = state.clone();
    let Some(s) = next.steps.get_mut(step) else {
        return (next, false);
    };
    s.attempts += 1;
    match outcome {
        Outcome::Succeeded => {
            s.action = CallStatus::Succeeded;
            s.last_code = None;
            s.last_error = None;
        }
        Outcome::Rejected { message } => {
            s.action = CallStatus::Unknown;
            s.last_code = Some("ABORTED".into());
            s.last_error = Some(format!(
                "rejected ({message}); a message step is retried until it succeeds"
            ));
        }
        Outcome::Unknown { code, message } => {
            s.action = CallStatus::Unknown;
            s.last_code = Some(code.clone());
            s.last_error = Some(message.clone());
        }
    }
    if next.status == Status::Submitted
        && next.steps.iter().all(|s| s.action == CallStatus::Succeeded)
    {
        next.status = Status::Succeeded;
        return (next, true);
    }
    (next, false)
}

/// An execution round ended with a step still owed: counted and escalated
/// as a saga's forward actions are (the flag is raised past the thresholds
/// and the step keeps being retried).
pub fn round_failed(
    state: &MsgState,
    now: DateTime<Utc>,
    escalation: Escalation,
) -> (MsgState, u32, bool) {
    super::saga::round_failed(state, now, escalation)
}

fn submitted(state: &MsgState, now: DateTime<Utc>, why: &str) -> MsgState {
    let mut next = state.clone();
    next.status = Status::Submitted;
    next.decided_at = Some(now);
    next.reason = Some(why.into());
    // Attempts count the execution rounds from here, as participants see
    // them; the query-back's are done with, and so is its flag.
    next.attempts = 0;
    next.needs_attention = false;
    next.attention_reason = None;
    if next.steps.is_empty() {
        next.status = Status::Succeeded;
    }
    next
}

fn aborted(state: &MsgState, now: DateTime<Utc>, why: &str) -> MsgState {
    let mut next = state.clone();
    next.status = Status::Aborted;
    next.decided_at = Some(now);
    next.reason = Some(why.into());
    next.needs_attention = false;
    next.attention_reason = None;
    for s in &mut next.steps {
        s.action = CallStatus::NotRequired;
    }
    next
}

#[cfg(test)]
#[path = "msg_tests.rs"]
mod tests;
