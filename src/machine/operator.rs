//! Operator commands (retry now, roll back, resolve, pause, resume), decided
//! by the same rules as everything else and just as pure: the admin API asks
//! [`operate`] what an operator's command means for a transaction as it is,
//! then persists the effect with a compare-and-set. A refusal says why and
//! changes nothing.

use chrono::{DateTime, Utc};

use super::Status;
use super::tcc::{Command, Refusal, TxState, Verdict, decide};

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
