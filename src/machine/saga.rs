//! The saga half of the state machine, pure like the TCC half: step
//! ordering (sequential or a DAG), which actions and compensations may run
//! now, and how each reply moves the saga. The saga driver performs what
//! [`next_calls`] returns and persists what [`on_reply`] returns.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::policy::CallPolicy;
use super::{CallStatus, Escalation, Outcome, Status};
use crate::domain::BranchId;

/// Which saga call a step gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SagaPhase {
    Execute,
    Compensate,
}

/// One step as the state machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepState {
    pub id: BranchId,
    /// `participant.action`, for messages.
    pub label: String,
    /// Indices of the steps this one waits for (already made explicit for
    /// sequential sagas by [`effective_dependencies`]).
    pub depends_on: Vec<usize>,
    pub action: CallStatus,
    pub compensation: CallStatus,
    /// Compensate this step even when its action was rejected (it may have
    /// partly run; the participant's barrier makes it harmless).
    pub compensate_rejected: bool,
    pub attempts: u32,
    pub last_code: Option<String>,
    pub last_error: Option<String>,
    /// Its own retry policy, for its action and its compensation.
    pub policy: CallPolicy,
}

/// A saga as the state machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaState {
    pub status: Status,
    /// When it was submitted: a forward action's `max_age` counts from it.
    pub submitted_at: DateTime<Utc>,
    /// Past it, a running saga compensates. `None`: no deadline.
    pub deadline: Option<DateTime<Utc>>,
    /// When compensation was decided.
    pub decided_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    /// Rounds that ended with work left to retry.
    pub attempts: u32,
    pub needs_attention: bool,
    pub attention_reason: Option<String>,
    pub steps: Vec<StepState>,
}

/// Checks a step list; the error names the step by its place in the
/// request (`steps[0]` is the first; its branch id, used everywhere once the
/// saga exists, is 1).
pub fn validate(depends_on: &[Vec<usize>]) -> Result<(), String> {
    let n = depends_on.len();
    for (i, deps) in depends_on.iter().enumerate() {
        let mut seen = HashSet::new();
        for &d in deps {
            if d == i {
                return Err(format!("steps[{i}] depends on itself"));
            }
            if d >= n {
                return Err(format!(
                    "steps[{i}] depends on steps[{d}], which does not exist"
                ));
            }
            if d > i {
                return Err(format!(
                    "steps[{i}] depends on steps[{d}]; depends_on may only name earlier steps"
                ));
            }
            if !seen.insert(d) {
                return Err(format!("steps[{i}] lists steps[{d}] twice in depends_on"));
            }
        }
    }
    // Dependencies only point backwards, so there is no cycle.
    Ok(())
}

/// With no `depends_on` anywhere, steps run one after another; otherwise
/// the declared graph is used as is.
pub fn effective_dependencies(declared: &[Vec<usize>]) -> Vec<Vec<usize>> {
    if declared.iter().all(Vec::is_empty) {
        (0..declared.len())
            .map(|i| if i == 0 { Vec::new() } else { vec![i - 1] })
            .collect()
    } else {
        declared.to_vec()
    }
}

impl StepState {
    /// Whether compensation is owed once the saga compensates.
    pub fn needs_compensation(&self) -> bool {
        match self.action {
            CallStatus::Succeeded | CallStatus::Unknown => true,
            CallStatus::Rejected => self.compensate_rejected,
            // An action is never skipped (only compensations are).
            CallStatus::Pending | CallStatus::NotRequired | CallStatus::Skipped => false,
        }
    }

    fn compensated(&self) -> bool {
        !self.needs_compensation() || self.compensation.is_done()
    }
}

/// The calls that may start now, given the calls already in flight and
/// those already tried in this round (an unknown outcome waits for the next
/// round's backoff instead of being hammered), at most `limit` at once.
pub fn next_calls(
    saga: &SagaState,
    in_flight: &HashSet<usize>,
    tried: &HashSet<(usize, SagaPhase)>,
    limit: usize,
) -> Vec<(usize, SagaPhase)> {
    let room = limit.saturating_sub(in_flight.len());
    if room == 0 {
        return Vec::new();
    }
    let steps = &saga.steps;
    let mut calls = Vec::new();
    match saga.status {
        Status::Running => {
            for (i, s) in steps.iter().enumerate() {
                let ready = matches!(s.action, CallStatus::Pending | CallStatus::Unknown)
                    && !in_flight.contains(&i)
                    && !tried.contains(&(i, SagaPhase::Execute))
                    && s.depends_on
                        .iter()
                        .all(|&d| steps[d].action == CallStatus::Succeeded);
                if ready {
                    calls.push((i, SagaPhase::Execute));
                }
            }
        }
        Status::Compensating => {
            // Actions still in flight finish first: their outcome decides
            // whether they need compensating.
            if !in_flight.is_empty() {
                return Vec::new();
            }
            for (i, s) in steps.iter().enumerate() {
                if s.compensated() || tried.contains(&(i, SagaPhase::Compensate)) {
                    continue;
                }
                // Reverse dependency order: every step that depends on this
                // one must be compensated (or never have run) first.
                let dependents_done = steps
                    .iter()
                    .filter(|other| other.depends_on.contains(&i))
                    .all(StepState::compensated);
                if dependents_done {
                    calls.push((i, SagaPhase::Compensate));
                }
            }
        }
        _ => {}
    }
    calls.truncate(room);
    calls
}

/// What a reply changed beyond the step itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaChange {
    /// Only the step changed.
    Step,
    /// The saga turned to compensating (a step was rejected).
    Compensating,
    /// The saga is final.
    Finished(Status),
}

/// Folds one reply into the saga.
pub fn on_reply(
    saga: &SagaState,
    step: usize,
    phase: SagaPhase,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> (SagaState, SagaChange) {
    let mut next = saga.clone();
    let Some(s) = next.steps.get_mut(step) else {
        return (next, SagaChange::Step);
    };
    s.attempts += 1;
    // An answer the action declared non-retryable is a rejection of the
    // action; a compensation must not be refused, so there it stays
    // unknown (retried, and flagged by `round_failed`).
    let classified;
    let outcome = match phase {
        SagaPhase::Execute => {
            classified = s.policy.classify(outcome.clone());
            &classified
        }
        SagaPhase::Compensate => outcome,
    };
    let status = match outcome {
        Outcome::Succeeded => {
            s.last_code = None;
            s.last_error = None;
            CallStatus::Succeeded
        }
        Outcome::Rejected { message } => {
            s.last_code = Some("ABORTED".into());
            s.last_error = Some(message.clone());
            match phase {
                SagaPhase::Execute => CallStatus::Rejected,
                // A compensation must not be refused; retried like a failure.
                SagaPhase::Compensate => CallStatus::Unknown,
            }
        }
        Outcome::Unknown { code, message } => {
            s.last_code = Some(code.clone());
            s.last_error = Some(message.clone());
            CallStatus::Unknown
        }
    };
    // Steps are named by their branch id everywhere (events, `tx show`,
    // what the participant receives), never by their 0-based index.
    let label = format!("{} ({})", s.id, s.label);
    match phase {
        SagaPhase::Execute => s.action = status,
        SagaPhase::Compensate => s.compensation = status,
    }
    // A forward action that exhausted its policy is given up like a
    // rejected one: the saga compensates, saying why. (It may have run, so
    // it is compensated too.)
    let gave_up = phase == SagaPhase::Execute
        && status == CallStatus::Unknown
        && next.status == Status::Running
        && s.policy.exhausted(s.attempts, now - next.submitted_at);
    if gave_up {
        let why = format!(
            "step {label} gave up {}: {} {}",
            s.policy.describe_limit(s.attempts, now - next.submitted_at),
            outcome.code(),
            outcome.message()
        )
        .trim_end()
        .to_string();
        next.status = Status::Compensating;
        next.decided_at = Some(now);
        for step in &mut next.steps {
            step.attempts = 0;
        }
        next.reason = Some(why);
        return finish_if_done(next, SagaChange::Compensating);
    }
    if phase == SagaPhase::Execute
        && status == CallStatus::Rejected
        && next.status == Status::Running
    {
        next.status = Status::Compensating;
        next.decided_at = Some(now);
        // Attempt numbers count per phase, as participants see them.
        for step in &mut next.steps {
            step.attempts = 0;
        }
        next.reason = Some(format!("step {label} rejected: {}", outcome.message()));
        return finish_if_done(next, SagaChange::Compensating);
    }
    finish_if_done(next, SagaChange::Step)
}

fn finish_if_done(mut saga: SagaState, change: SagaChange) -> (SagaState, SagaChange) {
    let done = match saga.status {
        Status::Running => saga.steps.iter().all(|s| s.action == CallStatus::Succeeded),
        Status::Compensating => saga.steps.iter().all(StepState::compensated),
        _ => false,
    };
    if !done {
        return (saga, change);
    }
    saga.status = match saga.status {
        Status::Running => Status::Succeeded,
        _ => Status::Compensated,
    };
    let status = saga.status;
    (saga, SagaChange::Finished(status))
}

/// A running saga past its deadline compensates.
pub fn expire(saga: &SagaState, now: DateTime<Utc>) -> Option<SagaState> {
    let deadline = saga.deadline?;
    if saga.status != Status::Running || now < deadline {
        return None;
    }
    let mut next = saga.clone();
    next.status = Status::Compensating;
    next.decided_at = Some(now);
    next.reason = Some(format!("deadline passed at {}", deadline.to_rfc3339()));
    for step in &mut next.steps {
        step.attempts = 0;
    }
    Some(finish_if_done(next, SagaChange::Compensating).0)
}

/// A round ended with calls whose outcome is unknown: count it and escalate
/// past the thresholds, as TCC phase 2 does. Returns the attempt number for
/// the backoff and whether this round raised the flag.
pub fn round_failed(
    saga: &SagaState,
    now: DateTime<Utc>,
    escalation: Escalation,
) -> (SagaState, u32, bool) {
    let mut next = saga.clone();
    next.attempts += 1;
    // A running saga has no decision time: only the attempt count applies.
    let age = now - saga.decided_at.unwrap_or(now);
    // Nothing is retried silently forever: forward actions (bounded by the
    // deadline only when the saga has one) and compensations both raise the
    // flag past the thresholds, and keep being retried.
    // A compensation that exhausted its own policy cannot be abandoned
    // either: it raises the flag sooner, and is retried still.
    let exhausted = next
        .steps
        .iter()
        .filter(|s| {
            next.status == Status::Compensating
                && s.needs_compensation()
                && !s.compensation.is_done()
        })
        .find_map(|s| {
            let why = s
                .policy
                .stop_reason(s.attempts, age, s.last_code.as_deref())?;
            Some(format!("step {} ({}) compensate {why}; ", s.id, s.label))
        });
    let over = next.attempts >= escalation.max_attempts || age >= escalation.max_age;
    let mut newly = false;
    if over || exhausted.is_some() {
        newly = !next.needs_attention;
        next.needs_attention = true;
        let (phase, owed): (&str, fn(&StepState) -> bool) = if next.status == Status::Compensating {
            ("compensate", |s| {
                s.needs_compensation() && !s.compensation.is_done()
            })
        } else {
            ("execute", |s| s.action == CallStatus::Unknown)
        };
        let failing: Vec<String> = next
            .steps
            .iter()
            .filter(|s| owed(s))
            .map(|s| {
                format!(
                    "step {} ({}) {phase} failing after {} attempts: {} {}",
                    s.id,
                    s.label,
                    s.attempts,
                    s.last_code.as_deref().unwrap_or("UNKNOWN"),
                    s.last_error.as_deref().unwrap_or("")
                )
                .trim_end()
                .to_string()
            })
            .collect();
        next.attention_reason = Some(format!(
            "{}{} rounds over {}s; {}",
            exhausted.unwrap_or_default(),
            next.attempts,
            age.num_seconds(),
            failing.join("; ")
        ));
    }
    let attempt = next.attempts;
    (next, attempt, newly)
}

#[cfg(test)]
#[path = "saga_tests.rs"]
mod tests;
