//! Every transition of the state machine, legal and illegal, with a fixed clock.

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::*;
use crate::machine::Mode;
use crate::machine::policy::CallPolicy;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn branch(id: &str, first: CallStatus) -> BranchState {
    BranchState {
        id: BranchId::parse(id).unwrap(),
        label: format!("svc{id}.act"),
        first_phase: first,
        second_phase: CallStatus::NotRequired,
        attempts: 0,
        last_code: None,
        last_error: None,
        policy: Default::default(),
    }
}

fn trying(branches: Vec<BranchState>) -> TxState {
    TxState {
        status: Status::Trying,
        deadline: t0() + Duration::seconds(30),
        decided_at: None,
        rollback_reason: None,
        attempts: 0,
        needs_attention: false,
        attention_reason: None,
        branches,
    }
}

fn two_tried() -> TxState {
    trying(vec![
        branch("1", CallStatus::Succeeded),
        branch("2", CallStatus::Succeeded),
    ])
}

fn with_status(status: Status) -> TxState {
    let mut tx = two_tried();
    tx.status = status;
    tx
}

const ESC: Escalation = Escalation {
    max_attempts: 3,
    max_age: Duration::minutes(10),
};

fn unknown(msg: &str) -> Outcome {
    Outcome::Unknown {
        code: "UNAVAILABLE".into(),
        message: msg.into(),
    }
}

#[test]
fn add_branch_only_while_trying_and_before_deadline() {
    assert_eq!(
        decide(&two_tried(), &Command::AddBranch, t0()),
        Ok(Verdict::Unchanged)
    );
    assert_eq!(
        decide(
            &two_tried(),
            &Command::AddBranch,
            t0() + Duration::seconds(30)
        ),
        Err(Refusal::DeadlinePassed(t0() + Duration::seconds(30)))
    );
    for s in [
        Status::Confirming,
        Status::Confirmed,
        Status::Cancelling,
        Status::Cancelled,
    ] {
        assert_eq!(
            decide(&with_status(s), &Command::AddBranch, t0()),
            Err(Refusal::NotTrying(s))
        );
    }
}

#[test]
fn commit_decides_confirming_and_calls_every_branch() {
    let Ok(Verdict::Decided { next, calls }) = decide(&two_tried(), &Command::Commit, t0()) else {
        panic!("commit should decide");
    };
    assert_eq!(next.status, Status::Confirming);
    assert_eq!(next.decided_at, Some(t0()));
    assert_eq!(calls.len(), 2);
    assert!(
        next.branches
            .iter()
            .all(|b| b.second_phase == CallStatus::Pending)
    );
    assert_eq!(
        pending_calls(&next),
        vec![
            (BranchId::parse("1").unwrap(), Phase::Confirm),
            (BranchId::parse("2").unwrap(), Phase::Confirm)
        ]
    );
}

#[test]
fn commit_of_empty_transaction_is_allowed() {
    let Ok(Verdict::Decided { calls, .. }) = decide(&trying(vec![]), &Command::Commit, t0()) else {
        panic!("commit should decide");
    };
    assert!(calls.is_empty());
}

#[test]
fn commit_is_idempotent_and_refused_after_rollback() {
    for s in [Status::Confirming, Status::Confirmed] {
        assert_eq!(
            decide(&with_status(s), &Command::Commit, t0()),
            Ok(Verdict::Unchanged)
        );
    }
    for s in [Status::Cancelling, Status::Cancelled] {
        assert_eq!(
            decide(&with_status(s), &Command::Commit, t0()),
            Err(Refusal::CannotCommit(s))
        );
    }
}

#[test]
fn commit_refused_past_deadline() {
    let at = t0() + Duration::seconds(31);
    assert!(matches!(
        decide(&two_tried(), &Command::Commit, at),
        Err(Refusal::DeadlinePassed(_))
    ));
}

#[test]
fn commit_refused_unless_every_try_succeeded() {
    for first in [
        CallStatus::Pending,
        CallStatus::Rejected,
        CallStatus::Unknown,
    ] {
        let tx = trying(vec![branch("1", CallStatus::Succeeded), branch("2", first)]);
        let err = decide(&tx, &Command::Commit, t0()).unwrap_err();
        assert!(
            matches!(err, Refusal::TryNotSucceeded { ref branch, .. } if branch.as_str() == "2")
        );
        assert!(err.to_string().contains("branch 2 (svc2.act)"));
    }
}

#[test]
fn rollback_cancels_every_branch_including_rejected_tries() {
    let tx = trying(vec![
        branch("1", CallStatus::Succeeded),
        branch("2", CallStatus::Rejected),
        branch("3", CallStatus::Pending),
    ]);
    let Ok(Verdict::Decided { next, calls }) = decide(
        &tx,
        &Command::Rollback {
            reason: "no stock".into(),
        },
        t0(),
    ) else {
        panic!("rollback should decide");
    };
    assert_eq!(next.status, Status::Cancelling);
    assert_eq!(next.rollback_reason.as_deref(), Some("no stock"));
    assert_eq!(calls.len(), 3);
    assert!(
        pending_calls(&next)
            .iter()
            .all(|(_, p)| *p == Phase::Cancel)
    );
}

#[test]
fn rollback_allowed_past_deadline() {
    let at = t0() + Duration::hours(1);
    let verdict = decide(&two_tried(), &Command::Rollback { reason: "x".into() }, at).unwrap();
    assert!(
        matches!(verdict, Verdict::Decided { ref next, .. } if next.status == Status::Cancelling)
    );
}

#[test]
fn rollback_is_idempotent_and_refused_after_commit() {
    let cmd = Command::Rollback { reason: "r".into() };
    for s in [Status::Cancelling, Status::Cancelled] {
        assert_eq!(decide(&with_status(s), &cmd, t0()), Ok(Verdict::Unchanged));
    }
    for s in [Status::Confirming, Status::Confirmed] {
        assert_eq!(
            decide(&with_status(s), &cmd, t0()),
            Err(Refusal::CannotRollback(s))
        );
    }
}

#[test]
fn expire_rolls_back_only_past_deadline_and_only_trying() {
    assert_eq!(
        decide(&two_tried(), &Command::Expire, t0()),
        Ok(Verdict::Unchanged)
    );
    let late = t0() + Duration::seconds(30);
    let Ok(Verdict::Decided { next, .. }) = decide(&two_tried(), &Command::Expire, late) else {
        panic!("expire should decide");
    };
    assert_eq!(next.status, Status::Cancelling);
    assert!(next.rollback_reason.unwrap().starts_with("deadline passed"));
    for s in [
        Status::Confirming,
        Status::Confirmed,
        Status::Cancelling,
        Status::Cancelled,
    ] {
        assert_eq!(
            decide(&with_status(s), &Command::Expire, late),
            Ok(Verdict::Unchanged)
        );
    }
}

fn confirming() -> TxState {
    let Ok(Verdict::Decided { next, .. }) = decide(&two_tried(), &Command::Commit, t0()) else {
        panic!()
    };
    next
}

fn id(s: &str) -> BranchId {
    BranchId::parse(s).unwrap()
}

#[test]
fn round_with_every_success_finishes() {
    let (next, settled) = settle_round(
        &confirming(),
        &[(id("1"), Outcome::Succeeded), (id("2"), Outcome::Succeeded)],
        t0(),
        ESC,
    );
    assert_eq!(settled, Settled::Finished(Status::Confirmed));
    assert_eq!(next.status, Status::Confirmed);
    assert!(next.branches.iter().all(|b| b.attempts == 1));
}

#[test]
fn cancelling_round_finishes_cancelled() {
    let tx = {
        let Ok(Verdict::Decided { next, .. }) = decide(
            &two_tried(),
            &Command::Rollback { reason: "r".into() },
            t0(),
        ) else {
            panic!()
        };
        next
    };
    let (next, settled) = settle_round(
        &tx,
        &[(id("1"), Outcome::Succeeded), (id("2"), Outcome::Succeeded)],
        t0(),
        ESC,
    );
    assert_eq!(settled, Settled::Finished(Status::Cancelled));
    assert_eq!(next.status, Status::Cancelled);
}

#[test]
fn partial_round_retries_and_keeps_successes() {
    let (next, settled) = settle_round(
        &confirming(),
        &[(id("1"), Outcome::Succeeded), (id("2"), unknown("refused"))],
        t0(),
        ESC,
    );
    assert_eq!(
        settled,
        Settled::Retry {
            attempt: 1,
            newly_flagged: false
        }
    );
    assert_eq!(next.status, Status::Confirming);
    assert_eq!(pending_calls(&next), vec![(id("2"), Phase::Confirm)]);
    assert_eq!(next.branches[1].last_error.as_deref(), Some("refused"));
    // The next round only calls branch 2; its success finishes the whole.
    let (done, settled) = settle_round(&next, &[(id("2"), Outcome::Succeeded)], t0(), ESC);
    assert_eq!(settled, Settled::Finished(Status::Confirmed));
    assert_eq!(done.branches[0].attempts, 1);
    assert_eq!(done.branches[1].attempts, 2);
    assert_eq!(done.branches[1].last_error, None);
}

#[test]
fn aborted_in_phase_two_is_retried_not_accepted() {
    let (next, settled) = settle_round(
        &confirming(),
        &[
            (id("1"), Outcome::Succeeded),
            (
                id("2"),
                Outcome::Rejected {
                    message: "nope".into(),
                },
            ),
        ],
        t0(),
        ESC,
    );
    assert!(matches!(settled, Settled::Retry { .. }));
    assert_eq!(next.branches[1].second_phase, CallStatus::Unknown);
    assert_eq!(next.branches[1].last_code.as_deref(), Some("ABORTED"));
    assert!(
        next.branches[1]
            .last_error
            .as_ref()
            .unwrap()
            .contains("nope")
    );
}

#[test]
fn escalates_after_max_attempts_once_and_keeps_retrying() {
    let mut tx = confirming();
    let mut flagged_rounds = 0;
    for round in 1..=5 {
        let (next, settled) = settle_round(
            &tx,
            &[(id("1"), unknown("down")), (id("2"), unknown("down"))],
            t0(),
            ESC,
        );
        let Settled::Retry {
            attempt,
            newly_flagged,
        } = settled
        else {
            panic!("should keep retrying")
        };
        assert_eq!(attempt, round);
        if newly_flagged {
            flagged_rounds += 1;
            assert_eq!(round, 3);
        }
        assert_eq!(next.needs_attention, round >= 3);
        tx = next;
    }
    assert_eq!(flagged_rounds, 1);
    let reason = tx.attention_reason.unwrap();
    assert!(
        reason.contains("branch 1 (svc1.act) confirm failing after 5 attempts: UNAVAILABLE down"),
        "{reason}"
    );
}

#[test]
fn a_branch_that_exhausts_its_policy_only_raises_the_flag_and_is_retried() {
    for status in [Command::Commit, Command::Rollback { reason: "r".into() }] {
        let Ok(Verdict::Decided { mut next, .. }) = decide(&two_tried(), &status, t0()) else {
            panic!()
        };
        next.branches[1].policy = CallPolicy {
            max_attempts: Some(2),
            ..CallPolicy::default()
        };
        let phase = next.status.second_phase().unwrap();
        let down = [(id("1"), Outcome::Succeeded), (id("2"), unknown("down"))];
        let (once, settled) = settle_round(&next, &down, t0(), ESC);
        assert!(!once.needs_attention, "1 of 2 attempts");
        assert!(matches!(
            settled,
            Settled::Retry {
                newly_flagged: false,
                ..
            }
        ));
        let (twice, settled) = settle_round(&once, &down[1..], t0(), ESC);
        assert_eq!(
            settled,
            Settled::Retry {
                attempt: 2,
                newly_flagged: true
            },
            "flagged before the coordinator's 3 rounds, and still retried"
        );
        assert_eq!(twice.status, next.status, "never abandoned");
        let reason = twice.attention_reason.clone().unwrap();
        assert!(
            reason.starts_with(&format!(
                "branch 2 (svc2.act) {} exhausted its policy after 2 of 2 attempts; ",
                phase.as_str()
            )),
            "{reason}"
        );
        let (done, settled) = settle_round(&twice, &[(id("2"), Outcome::Succeeded)], t0(), ESC);
        assert!(matches!(settled, Settled::Finished(_)), "{done:?}");
    }
}

#[test]
fn a_branch_max_age_counts_from_the_decision() {
    let mut tx = confirming();
    tx.branches[0].policy = CallPolicy {
        max_age: Some(std::time::Duration::from_secs(30)),
        ..CallPolicy::default()
    };
    let (early, _) = settle_round(
        &tx,
        &[(id("1"), unknown("x"))],
        t0() + Duration::seconds(29),
        ESC,
    );
    assert!(!early.needs_attention);
    let (late, _) = settle_round(
        &tx,
        &[(id("1"), unknown("x"))],
        t0() + Duration::seconds(30),
        ESC,
    );
    assert!(late.needs_attention);
    assert!(
        late.attention_reason
            .unwrap()
            .contains("after 30s (max_age 30s)"),
    );
}

#[test]
fn escalates_after_max_age() {
    let (next, settled) = settle_round(
        &confirming(),
        &[(id("1"), unknown("slow"))],
        t0() + Duration::minutes(11),
        ESC,
    );
    assert_eq!(
        settled,
        Settled::Retry {
            attempt: 1,
            newly_flagged: true
        }
    );
    assert!(next.needs_attention);
}

#[test]
fn replies_for_done_or_unknown_branches_are_ignored() {
    let (first, _) = settle_round(&confirming(), &[(id("1"), Outcome::Succeeded)], t0(), ESC);
    let (second, _) = settle_round(
        &first,
        &[
            (id("1"), unknown("late duplicate")),
            (id("9"), Outcome::Succeeded),
        ],
        t0(),
        ESC,
    );
    assert_eq!(second.branches[0].second_phase, CallStatus::Succeeded);
    assert_eq!(second.branches[0].attempts, 1);
}

#[test]
fn settle_on_a_final_transaction_changes_nothing() {
    let tx = with_status(Status::Confirmed);
    let (next, settled) = settle_round(&tx, &[(id("1"), unknown("x"))], t0(), ESC);
    assert_eq!(next, tx);
    assert_eq!(settled, Settled::Finished(Status::Confirmed));
}

#[test]
fn names_round_trip() {
    for s in Status::ALL {
        assert_eq!(Status::parse(s.as_str()), Some(s));
    }
    assert!(Status::Confirmed.is_final() && Status::Cancelled.is_final());
    assert!(!Status::Trying.is_final());
    assert_eq!(Mode::parse("tcc"), Some(Mode::Tcc));
    assert_eq!(CallStatus::parse("unknown"), Some(CallStatus::Unknown));
    assert_eq!(Status::parse("bogus"), None);
}

#[test]
fn a_non_retryable_answer_in_phase_two_flags_at_once_and_is_retried() {
    let mut tx = confirming();
    tx.branches[0].policy.non_retryable =
        crate::machine::policy::CodeSet::parse(["FAILED_PRECONDITION"]).unwrap();
    let refused = Outcome::Unknown {
        code: "FAILED_PRECONDITION".into(),
        message: "account closed".into(),
    };
    let (next, settled) = settle_round(
        &tx,
        &[(id("1"), refused), (id("2"), Outcome::Succeeded)],
        t0(),
        ESC,
    );
    assert_eq!(
        settled,
        Settled::Retry {
            attempt: 1,
            newly_flagged: true
        }
    );
    assert!(
        next.attention_reason.as_deref().unwrap().starts_with(
            "branch 1 (svc1.act) confirm answered FAILED_PRECONDITION, which its policy declares non-retryable; "
        ),
        "{:?}",
        next.attention_reason
    );
    // Another answer is retried as usual.
    let (other, _) = settle_round(&tx, &[(id("1"), unknown("down"))], t0(), ESC);
    assert!(!other.needs_attention);
}

#[test]
fn a_skipped_branch_is_not_called_and_counts_as_done() {
    let mut tx = confirming();
    tx.branches[1].second_phase = CallStatus::Skipped;
    assert_eq!(pending_calls(&tx), vec![(id("1"), Phase::Confirm)]);
    // A late reply for the skipped branch changes nothing; the other's
    // success finishes the transaction.
    let replies = vec![
        (tx.branches[0].id.clone(), Outcome::Succeeded),
        (
            tx.branches[1].id.clone(),
            Outcome::Unknown {
                code: "UNAVAILABLE".into(),
                message: "late".into(),
            },
        ),
    ];
    let (next, settled) = settle_round(&tx, &replies, t0(), ESC);
    assert_eq!(settled, Settled::Finished(Status::Confirmed));
    assert_eq!(next.branches[1].second_phase, CallStatus::Skipped);
    assert_eq!(next.branches[1].attempts, tx.branches[1].attempts);
}
