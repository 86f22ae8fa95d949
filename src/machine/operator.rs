//! Operator commands (retry now, roll back, resolve, pause, resume), decided
//! by the same rules as everything else and just as pure: the admin API asks
//! [`operate`] what an operator's command means for a transaction as it is,
//! then persists the effect with a compare-and-set. A refusal says why and
//! changes nothing.
//!
//! Commands on one branch ([`operate_branch`]): retry it now, or skip its
//! stuck Confirm, Cancel or compensation after a human did its work by
//! hand. A skipped call is done but not succeeded; the transaction
//! finishes (confirmed, cancelled, compensated) once every branch is done
//! or skipped.

use chrono::{DateTime, Utc};

use super::saga::SagaState;
use super::tcc::{Command, Refusal, TxState, Verdict, decide};
use super::{CallStatus, Phase, Status};
use crate::domain::BranchId;

/// What the operator rules need beyond the state machine's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorFlags {
    pub paused: bool,
    /// Who resolved it by hand, if someone did.
    pub resolved_by: Option<String>,
}

/// A command from an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorOp {
    /// Drive the transaction now instead of after its backoff delay.
    RetryNow,
    Rollback {
        reason: String,
    },
    /// Close a transaction that needs attention by hand.
    Resolve {
        note: String,
    },
    Pause,
    Resume,
}

impl OperatorOp {
    /// Name of the command in events and logs.
    pub fn name(&self) -> &'static str {
        match self {
            OperatorOp::RetryNow => "retry",
            OperatorOp::Rollback { .. } => "rollback",
            OperatorOp::Resolve { .. } => "resolve",
            OperatorOp::Pause => "pause",
            OperatorOp::Resume => "resume",
        }
    }
}

/// What an accepted operator command does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorEffect {
    /// Set the next attempt to `at` and wake the recovery loop.
    RetryAt(DateTime<Utc>),
    /// Decide rollback, exactly as an initiator's Rollback would.
    Rollback {
        reason: String,
    },
    /// Fence out any driver, stop retries for good and keep the note.
    Resolve {
        note: String,
    },
    SetPaused(bool),
    /// Already as asked; nothing to write.
    Unchanged(&'static str),
}

/// Why an operator command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorRefusal {
    #[error("transaction is {}; it is finished and nothing more happens to it", .0.as_str())]
    Final(Status),
    #[error("transaction was resolved by {0}; nothing more happens to it")]
    Resolved(String),
    #[error(
        "transaction is {}; only a transaction in phase 2 (confirming or cancelling) has retries to hurry",
        .0.as_str()
    )]
    NothingToRetry(Status),
    #[error("transaction is paused; resume it to retry")]
    Paused,
    #[error("transaction is already {}; there is nothing to roll back", .0.as_str())]
    AlreadyRollingBack(Status),
    #[error("{0}")]
    CannotRollback(Refusal),
    #[error(
        "transaction does not need attention; only a transaction flagged needs_attention can be resolved (pause it if it must stop)"
    )]
    NotNeedingAttention,
    #[error("transaction has no branch {0}")]
    UnknownBranch(BranchId),
    #[error(
        "transaction is {}; only a branch of a phase 2 (confirming, cancelling) or of a compensation can be skipped",
        .0.as_str()
    )]
    NotSkippable(Status),
    #[error("branch {branch} ({label}) owes no call: its {phase} is {}", .status.as_str())]
    BranchNotOwed {
        branch: BranchId,
        label: String,
        phase: &'static str,
        status: CallStatus,
    },
}

/// A command on one branch of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BranchOp {
    /// Call this branch now instead of after the transaction's backoff.
    Retry,
    /// Its owed call was done by hand: stop calling it.
    Skip { note: String },
}

impl BranchOp {
    /// Name of the command in events and logs.
    pub fn name(&self) -> &'static str {
        match self {
            BranchOp::Retry => "retry_branch",
            BranchOp::Skip { .. } => "skip_branch",
        }
    }
}

/// What an accepted branch command does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BranchEffect {
    /// Make the transaction due at `at` and wake the recovery loop: its
    /// next round calls the branch (with every other call still owed; a
    /// round is what holds the lease that keeps calls of a branch single).
    RetryAt(DateTime<Utc>),
    /// Record the owed call of the branch as skipped (compare-and-set on
    /// `expected` and `attempts`, what the rules saw), fencing out any
    /// round in flight; `finishes` is the final status when no other
    /// branch owes a call.
    Skip {
        phase: Phase,
        expected: CallStatus,
        attempts: u32,
        note: String,
        finishes: Option<Status>,
    },
}

/// One branch as the branch commands see it: the phase it is in and that
/// phase's status; `None` when it owes nothing in this status (a saga
/// step that never ran, while compensating).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchView {
    pub id: BranchId,
    pub label: String,
    pub call: Option<(Phase, CallStatus)>,
    pub attempts: u32,
}

/// A transaction as the branch commands see it, whatever its mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchesView {
    pub status: Status,
    pub branches: Vec<BranchView>,
}

impl BranchesView {
    /// A TCC transaction: each branch's Try while trying, its Confirm or
    /// Cancel once decided.
    pub fn of_tcc(tx: &TxState) -> Self {
        let phase = tx.status.second_phase();
        BranchesView {
            status: tx.status,
            branches: tx
                .branches
                .iter()
                .map(|b| BranchView {
                    id: b.id.clone(),
                    label: b.label.clone(),
                    call: Some(match phase {
                        Some(p) => (p, b.second_phase),
                        None => (Phase::Try, b.first_phase),
                    }),
                    attempts: b.attempts,
                })
                .collect(),
        }
    }

    /// A saga or a message: each step's action, or its compensation once
    /// compensating (none when it needs none).
    pub fn of_saga(saga: &SagaState) -> Self {
        BranchesView {
            status: saga.status,
            branches: saga
                .steps
                .iter()
                .map(|s| BranchView {
                    id: s.id.clone(),
                    label: s.label.clone(),
                    call: match saga.status {
                        Status::Compensating | Status::Compensated => s
                            .needs_compensation()
                            .then_some((Phase::Compensate, s.compensation)),
                        _ => Some((Phase::Execute, s.action)),
                    },
                    attempts: s.attempts,
                })
                .collect(),
        }
    }
}

/// Whether a call in this status is still owed (and may be retried).
fn owes(status: CallStatus) -> bool {
    matches!(status, CallStatus::Pending | CallStatus::Unknown)
}

/// The status a transaction reaches when no branch owes a call any more,
/// if skipping may lead there.
fn finished_by_skip(status: Status) -> Option<Status> {
    match status {
        Status::Confirming => Some(Status::Confirmed),
        Status::Cancelling => Some(Status::Cancelled),
        Status::Compensating => Some(Status::Compensated),
        _ => None,
    }
}

/// Applies a command on one branch to a transaction as it is now. Pure.
pub fn operate_branch(
    tx: &BranchesView,
    flags: &OperatorFlags,
    branch: &BranchId,
    op: &BranchOp,
    now: DateTime<Utc>,
) -> Result<BranchEffect, OperatorRefusal> {
    if let Some(by) = &flags.resolved_by {
        return Err(OperatorRefusal::Resolved(by.clone()));
    }
    if tx.status.is_final() {
        return Err(OperatorRefusal::Final(tx.status));
    }
    let Some(b) = tx.branches.iter().find(|b| &b.id == branch) else {
        return Err(OperatorRefusal::UnknownBranch(branch.clone()));
    };
    let not_owed = |(phase, status): (Phase, CallStatus)| OperatorRefusal::BranchNotOwed {
        branch: b.id.clone(),
        label: b.label.clone(),
        phase: phase.as_str(),
        status,
    };
    match op {
        BranchOp::Retry => {
            // What has a backoff to cut short: phase 2, a saga's actions and
            // compensations, a submitted message's steps. A Try is the
            // initiator's to repeat.
            let retries = matches!(
                tx.status,
                Status::Confirming
                    | Status::Cancelling
                    | Status::Running
                    | Status::Compensating
                    | Status::Submitted
            );
            if !retries {
                return Err(OperatorRefusal::NothingToRetry(tx.status));
            }
            if flags.paused {
                return Err(OperatorRefusal::Paused);
            }
            match b.call {
                Some((_, status)) if owes(status) => Ok(BranchEffect::RetryAt(now)),
                Some(call) => Err(not_owed(call)),
                None => Err(not_owed((Phase::Compensate, CallStatus::NotRequired))),
            }
        }
        BranchOp::Skip { note } => {
            let Some(finished) = finished_by_skip(tx.status) else {
                return Err(OperatorRefusal::NotSkippable(tx.status));
            };
            let (phase, status) = match b.call {
                Some((phase, status)) if owes(status) => (phase, status),
                Some(call) => return Err(not_owed(call)),
                None => return Err(not_owed((Phase::Compensate, CallStatus::NotRequired))),
            };
            let others_done = tx
                .branches
                .iter()
                .filter(|o| &o.id != branch)
                .all(|o| o.call.is_none_or(|(_, s)| !owes(s)));
            Ok(BranchEffect::Skip {
                phase,
                expected: status,
                attempts: b.attempts,
                note: note.clone(),
                finishes: others_done.then_some(finished),
            })
        }
    }
}

/// Applies an operator command to a transaction as it is now. Pure.
pub fn operate(
    tx: &TxState,
    flags: &OperatorFlags,
    op: &OperatorOp,
    now: DateTime<Utc>,
) -> Result<OperatorEffect, OperatorRefusal> {
    if let Some(by) = &flags.resolved_by {
        return Err(OperatorRefusal::Resolved(by.clone()));
    }
    if tx.status.is_final() {
        return Err(OperatorRefusal::Final(tx.status));
    }
    match op {
        OperatorOp::RetryNow => {
            // A trying transaction has no backoff: it waits for its
            // initiator or its deadline, and hurrying it does nothing.
            if tx.status.second_phase().is_none() {
                return Err(OperatorRefusal::NothingToRetry(tx.status));
            }
            if flags.paused {
                return Err(OperatorRefusal::Paused);
            }
            Ok(OperatorEffect::RetryAt(now))
        }
        OperatorOp::Rollback { reason } => {
            match decide(
                tx,
                &Command::Rollback {
                    reason: reason.clone(),
                },
                now,
            ) {
                Ok(Verdict::Decided { .. }) => Ok(OperatorEffect::Rollback {
                    reason: reason.clone(),
                }),
                // The machine treats a repeated rollback as done; an operator
                // asking for one is told it is under way.
                Ok(Verdict::Unchanged) => Err(OperatorRefusal::AlreadyRollingBack(tx.status)),
                Err(r) => Err(OperatorRefusal::CannotRollback(r)),
            }
        }
        OperatorOp::Resolve { note } => {
            if !tx.needs_attention {
                return Err(OperatorRefusal::NotNeedingAttention);
            }
            Ok(OperatorEffect::Resolve { note: note.clone() })
        }
        OperatorOp::Pause if flags.paused => Ok(OperatorEffect::Unchanged("already paused")),
        OperatorOp::Pause => Ok(OperatorEffect::SetPaused(true)),
        OperatorOp::Resume if !flags.paused => Ok(OperatorEffect::Unchanged("not paused")),
        OperatorOp::Resume => Ok(OperatorEffect::SetPaused(false)),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::domain::BranchId;
    use crate::machine::CallStatus;
    use crate::machine::tcc::BranchState;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn tx(status: Status) -> TxState {
        TxState {
            status,
            deadline: t0() + Duration::seconds(30),
            decided_at: None,
            rollback_reason: None,
            attempts: 0,
            needs_attention: false,
            attention_reason: None,
            branches: vec![BranchState {
                id: BranchId::parse("1").unwrap(),
                label: "bank.debit".into(),
                first_phase: CallStatus::Succeeded,
                second_phase: CallStatus::NotRequired,
                attempts: 0,
                last_code: None,
                last_error: None,
                policy: Default::default(),
            }],
        }
    }

    fn flagged(status: Status) -> TxState {
        let mut t = tx(status);
        t.needs_attention = true;
        t
    }

    const RUNNING: OperatorFlags = OperatorFlags {
        paused: false,
        resolved_by: None,
    };
    const PAUSED: OperatorFlags = OperatorFlags {
        paused: true,
        resolved_by: None,
    };

    fn all_ops() -> Vec<OperatorOp> {
        vec![
            OperatorOp::RetryNow,
            OperatorOp::Rollback { reason: "r".into() },
            OperatorOp::Resolve { note: "n".into() },
            OperatorOp::Pause,
            OperatorOp::Resume,
        ]
    }

    #[test]
    fn every_command_is_refused_on_a_final_transaction() {
        for status in [Status::Confirmed, Status::Cancelled] {
            for op in all_ops() {
                assert_eq!(
                    operate(&flagged(status), &RUNNING, &op, t0()),
                    Err(OperatorRefusal::Final(status)),
                    "{op:?} on {status:?}"
                );
            }
        }
    }

    #[test]
    fn every_command_is_refused_on_a_resolved_transaction() {
        let flags = OperatorFlags {
            paused: false,
            resolved_by: Some("alice".into()),
        };
        for op in all_ops() {
            let err = operate(&flagged(Status::Confirming), &flags, &op, t0()).unwrap_err();
            assert_eq!(err, OperatorRefusal::Resolved("alice".into()));
            assert!(err.to_string().contains("resolved by alice"));
        }
    }

    #[test]
    fn retry_now_in_phase_two() {
        for status in [Status::Confirming, Status::Cancelling] {
            assert_eq!(
                operate(&tx(status), &RUNNING, &OperatorOp::RetryNow, t0()),
                Ok(OperatorEffect::RetryAt(t0()))
            );
        }
    }

    #[test]
    fn retry_refused_while_trying_or_paused() {
        assert_eq!(
            operate(&tx(Status::Trying), &RUNNING, &OperatorOp::RetryNow, t0()),
            Err(OperatorRefusal::NothingToRetry(Status::Trying))
        );
        assert_eq!(
            operate(
                &tx(Status::Confirming),
                &PAUSED,
                &OperatorOp::RetryNow,
                t0()
            ),
            Err(OperatorRefusal::Paused)
        );
    }

    #[test]
    fn rollback_only_while_trying_even_past_the_deadline() {
        let op = OperatorOp::Rollback {
            reason: "stuck".into(),
        };
        for at in [t0(), t0() + Duration::hours(1)] {
            assert_eq!(
                operate(&tx(Status::Trying), &RUNNING, &op, at),
                Ok(OperatorEffect::Rollback {
                    reason: "stuck".into()
                })
            );
        }
        assert!(operate(&tx(Status::Trying), &PAUSED, &op, t0()).is_ok());
    }

    #[test]
    fn rollback_refused_after_a_commit_decision() {
        let op = OperatorOp::Rollback { reason: "r".into() };
        let err = operate(&flagged(Status::Confirming), &RUNNING, &op, t0()).unwrap_err();
        assert_eq!(
            err,
            OperatorRefusal::CannotRollback(Refusal::CannotRollback(Status::Confirming))
        );
        assert!(err.to_string().contains("after a commit decision"), "{err}");
    }

    #[test]
    fn rollback_of_a_cancelling_transaction_says_it_is_under_way() {
        let op = OperatorOp::Rollback { reason: "r".into() };
        assert_eq!(
            operate(&tx(Status::Cancelling), &RUNNING, &op, t0()),
            Err(OperatorRefusal::AlreadyRollingBack(Status::Cancelling))
        );
    }

    #[test]
    fn resolve_needs_attention() {
        let op = OperatorOp::Resolve {
            note: "fixed by hand".into(),
        };
        for status in [Status::Trying, Status::Confirming, Status::Cancelling] {
            assert_eq!(
                operate(&tx(status), &RUNNING, &op, t0()),
                Err(OperatorRefusal::NotNeedingAttention)
            );
        }
        for status in [Status::Confirming, Status::Cancelling] {
            for flags in [RUNNING, PAUSED] {
                assert_eq!(
                    operate(&flagged(status), &flags, &op, t0()),
                    Ok(OperatorEffect::Resolve {
                        note: "fixed by hand".into()
                    })
                );
            }
        }
    }

    #[test]
    fn pause_and_resume_any_unfinished_transaction() {
        for status in [Status::Trying, Status::Confirming, Status::Cancelling] {
            assert_eq!(
                operate(&tx(status), &RUNNING, &OperatorOp::Pause, t0()),
                Ok(OperatorEffect::SetPaused(true))
            );
            assert_eq!(
                operate(&tx(status), &PAUSED, &OperatorOp::Resume, t0()),
                Ok(OperatorEffect::SetPaused(false))
            );
        }
    }

    // ---- commands on one branch ------------------------------------------

    fn id(n: &str) -> BranchId {
        BranchId::parse(n).unwrap()
    }

    /// A TCC transaction in `status` whose branches' phase 2 are `phases`.
    fn branches(status: Status, phases: &[CallStatus]) -> BranchesView {
        let mut t = tx(status);
        t.branches = phases
            .iter()
            .enumerate()
            .map(|(i, p)| BranchState {
                id: id(&(i + 1).to_string()),
                label: format!("svc{}.act", i + 1),
                first_phase: CallStatus::Succeeded,
                second_phase: *p,
                attempts: 3,
                last_code: None,
                last_error: None,
                policy: Default::default(),
            })
            .collect();
        BranchesView::of_tcc(&t)
    }

    /// A compensating saga: step 1 compensated, step 2 compensation
    /// failing, step 3 never ran (nothing to compensate).
    fn compensating_saga() -> BranchesView {
        use crate::machine::saga::StepState;
        let step = |n: &str, action, compensation| StepState {
            id: id(n),
            label: format!("svc{n}.act"),
            depends_on: Vec::new(),
            action,
            compensation,
            compensate_rejected: false,
            attempts: 2,
            last_code: None,
            last_error: None,
            policy: Default::default(),
        };
        BranchesView::of_saga(&SagaState {
            status: Status::Compensating,
            submitted_at: t0(),
            deadline: None,
            decided_at: Some(t0()),
            reason: None,
            attempts: 4,
            needs_attention: true,
            attention_reason: None,
            steps: vec![
                step("1", CallStatus::Succeeded, CallStatus::Succeeded),
                step("2", CallStatus::Succeeded, CallStatus::Unknown),
                step("3", CallStatus::Pending, CallStatus::NotRequired),
            ],
        })
    }

    fn skip() -> BranchOp {
        BranchOp::Skip {
            note: "cancelled by hand, OPS-1".into(),
        }
    }

    #[test]
    fn branch_commands_are_refused_on_final_or_resolved_transactions_and_unknown_branches() {
        let resolved = OperatorFlags {
            paused: false,
            resolved_by: Some("bob".into()),
        };
        for op in [BranchOp::Retry, skip()] {
            let done = branches(Status::Confirmed, &[CallStatus::Succeeded]);
            assert_eq!(
                operate_branch(&done, &RUNNING, &id("1"), &op, t0()),
                Err(OperatorRefusal::Final(Status::Confirmed))
            );
            let stuck = branches(Status::Confirming, &[CallStatus::Unknown]);
            assert_eq!(
                operate_branch(&stuck, &resolved, &id("1"), &op, t0()),
                Err(OperatorRefusal::Resolved("bob".into()))
            );
            let err = operate_branch(&stuck, &RUNNING, &id("9"), &op, t0()).unwrap_err();
            assert_eq!(err, OperatorRefusal::UnknownBranch(id("9")));
            assert_eq!(err.to_string(), "transaction has no branch 9");
        }
    }

    #[test]
    fn retry_a_branch_that_owes_a_call() {
        for status in [Status::Confirming, Status::Cancelling] {
            for owed in [CallStatus::Unknown, CallStatus::Pending] {
                let t = branches(status, &[CallStatus::Succeeded, owed]);
                assert_eq!(
                    operate_branch(&t, &RUNNING, &id("2"), &BranchOp::Retry, t0()),
                    Ok(BranchEffect::RetryAt(t0()))
                );
            }
        }
        assert_eq!(
            operate_branch(
                &compensating_saga(),
                &RUNNING,
                &id("2"),
                &BranchOp::Retry,
                t0()
            ),
            Ok(BranchEffect::RetryAt(t0()))
        );
    }

    #[test]
    fn retry_of_a_branch_refused_when_it_owes_nothing_paused_or_trying() {
        let t = branches(
            Status::Confirming,
            &[CallStatus::Succeeded, CallStatus::Unknown],
        );
        let err = operate_branch(&t, &RUNNING, &id("1"), &BranchOp::Retry, t0()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "branch 1 (svc1.act) owes no call: its confirm is succeeded"
        );
        assert_eq!(
            operate_branch(&t, &PAUSED, &id("2"), &BranchOp::Retry, t0()),
            Err(OperatorRefusal::Paused)
        );
        let trying = branches(Status::Trying, &[CallStatus::NotRequired]);
        assert_eq!(
            operate_branch(&trying, &RUNNING, &id("1"), &BranchOp::Retry, t0()),
            Err(OperatorRefusal::NothingToRetry(Status::Trying))
        );
        let saga = compensating_saga();
        let err = operate_branch(&saga, &RUNNING, &id("3"), &BranchOp::Retry, t0()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "branch 3 (svc3.act) owes no call: its compensate is not_required"
        );
        let err = operate_branch(&saga, &RUNNING, &id("1"), &BranchOp::Retry, t0()).unwrap_err();
        assert!(err.to_string().contains("compensate is succeeded"), "{err}");
    }

    #[test]
    fn skipping_the_last_owed_branch_finishes_the_transaction() {
        for (status, finished) in [
            (Status::Confirming, Status::Confirmed),
            (Status::Cancelling, Status::Cancelled),
        ] {
            let t = branches(status, &[CallStatus::Succeeded, CallStatus::Unknown]);
            // Paused or not: the human did the work.
            for flags in [RUNNING, PAUSED] {
                assert_eq!(
                    operate_branch(&t, &flags, &id("2"), &skip(), t0()),
                    Ok(BranchEffect::Skip {
                        phase: status.second_phase().unwrap(),
                        expected: CallStatus::Unknown,
                        attempts: 3,
                        note: "cancelled by hand, OPS-1".into(),
                        finishes: Some(finished),
                    })
                );
            }
        }
        // A saga: the step that never ran owes nothing, so skipping the one
        // failing compensation finishes it.
        match operate_branch(&compensating_saga(), &RUNNING, &id("2"), &skip(), t0()) {
            Ok(BranchEffect::Skip {
                phase, finishes, ..
            }) => assert_eq!(
                (phase, finishes),
                (Phase::Compensate, Some(Status::Compensated))
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn skipping_one_of_several_owed_branches_leaves_the_transaction_going() {
        let t = branches(
            Status::Cancelling,
            &[
                CallStatus::Unknown,
                CallStatus::Skipped,
                CallStatus::Pending,
            ],
        );
        match operate_branch(&t, &RUNNING, &id("1"), &skip(), t0()) {
            Ok(BranchEffect::Skip { finishes, .. }) => assert_eq!(finishes, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn skip_refused_outside_phase_two_and_compensation_or_when_nothing_is_owed() {
        for status in [
            Status::Trying,
            Status::Running,
            Status::Submitted,
            Status::Prepared,
        ] {
            let t = branches(status, &[CallStatus::Unknown]);
            let err = operate_branch(&t, &RUNNING, &id("1"), &skip(), t0()).unwrap_err();
            assert_eq!(err, OperatorRefusal::NotSkippable(status));
        }
        assert!(
            OperatorRefusal::NotSkippable(Status::Running)
                .to_string()
                .contains("only a branch of a phase 2")
        );
        for done in [CallStatus::Succeeded, CallStatus::Skipped] {
            let t = branches(Status::Confirming, &[done, CallStatus::Unknown]);
            let err = operate_branch(&t, &RUNNING, &id("1"), &skip(), t0()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "branch 1 (svc1.act) owes no call: its confirm is {}",
                    done.as_str()
                )
            );
        }
        let err =
            operate_branch(&compensating_saga(), &RUNNING, &id("3"), &skip(), t0()).unwrap_err();
        assert!(err.to_string().contains("not_required"), "{err}");
    }

    #[test]
    fn pause_and_resume_repeat_as_no_ops() {
        assert_eq!(
            operate(&tx(Status::Confirming), &PAUSED, &OperatorOp::Pause, t0()),
            Ok(OperatorEffect::Unchanged("already paused"))
        );
        assert_eq!(
            operate(&tx(Status::Confirming), &RUNNING, &OperatorOp::Resume, t0()),
            Ok(OperatorEffect::Unchanged("not paused"))
        );
    }
}
