//! Message transitions with a fixed clock: every command in every status
//! (legal, repeated, illegal), the query-back's three answers and its
//! escalation, in-order execution, and rejections that are retried.

use chrono::{Duration, TimeZone, Utc};

use super::*;
use crate::domain::BranchId;
use crate::machine::saga::StepState;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn escalation() -> Escalation {
    Escalation {
        max_attempts: 3,
        max_age: Duration::minutes(10),
    }
}

/// A prepared message of `n` steps whose query-back is due at t0 + 5 s.
fn prepared(n: usize) -> MsgState {
    MsgState {
        status: Status::Prepared,
        submitted_at: t0(),
        deadline: Some(t0() + Duration::seconds(5)),
        decided_at: None,
        reason: None,
        attempts: 0,
        needs_attention: false,
        attention_reason: None,
        steps: (0..n)
            .map(|i| StepState {
                id: BranchId::parse((i + 1).to_string()).unwrap(),
                label: format!("svc{i}.act"),
                depends_on: if i == 0 { vec![] } else { vec![i - 1] },
                action: CallStatus::Pending,
                compensation: CallStatus::NotRequired,
                compensate_rejected: false,
                attempts: 0,
                last_code: None,
                last_error: None,
                policy: Default::default(),
            })
            .collect(),
    }
}

fn with_status(status: Status) -> MsgState {
    MsgState {
        status,
        ..prepared(2)
    }
}

fn abort() -> Command {
    Command::Abort {
        reason: "stock check failed".into(),
    }
}

fn decided(v: Result<Verdict, Illegal>) -> MsgState {
    match v {
        Ok(Verdict::Decided(next)) => next,
        other => panic!("expected a decision, got {other:?}"),
    }
}

#[test]
fn submit_of_a_prepared_message_starts_its_steps() {
    let next = decided(decide(&prepared(2), &Command::Submit, t0()));
    assert_eq!(next.status, Status::Submitted);
    assert_eq!(next.decided_at, Some(t0()));
    assert_eq!(next_step(&next), Some(0));
}

#[test]
fn abort_of_a_prepared_message_is_final_and_runs_nothing() {
    let next = decided(decide(&prepared(2), &abort(), t0()));
    assert_eq!(next.status, Status::Aborted);
    assert!(next.status.is_final());
    assert_eq!(next.reason.as_deref(), Some("stock check failed"));
    assert!(
        next.steps
            .iter()
            .all(|s| s.action == CallStatus::NotRequired)
    );
    assert_eq!(next_step(&next), None);
}

#[test]
fn repeating_a_command_changes_nothing() {
    for status in [Status::Submitted, Status::Succeeded] {
        assert_eq!(
            decide(&with_status(status), &Command::Submit, t0()),
            Ok(Verdict::AlreadyDone),
            "{status:?}"
        );
    }
    assert_eq!(
        decide(&with_status(Status::Aborted), &abort(), t0()),
        Ok(Verdict::AlreadyDone)
    );
}

#[test]
fn contradicting_commands_are_refused() {
    let err = decide(&with_status(Status::Aborted), &Command::Submit, t0()).unwrap_err();
    assert!(err.0.contains("cannot be submitted"), "{err}");
    for status in [Status::Submitted, Status::Succeeded] {
        let err = decide(&with_status(status), &abort(), t0()).unwrap_err();
        assert!(err.0.contains("cannot be aborted"), "{err}");
    }
    // Statuses of other modes are not messages.
    for status in [Status::Trying, Status::Running, Status::Confirmed] {
        for command in [Command::Submit, abort()] {
            assert!(decide(&with_status(status), &command, t0()).is_err());
        }
    }
}

#[test]
fn the_query_back_is_due_only_for_a_prepared_message_past_its_deadline() {
    let m = prepared(1);
    assert!(!query_due(&m, t0()));
    assert!(query_due(&m, t0() + Duration::seconds(5)));
    for status in [Status::Submitted, Status::Aborted, Status::Succeeded] {
        assert!(!query_due(&with_status(status), t0() + Duration::hours(1)));
    }
}

#[test]
fn the_initiator_s_answer_submits_or_aborts() {
    let at = t0() + Duration::seconds(6);
    let Some(Ok(Verdict::Decided(next))) =
        on_query_answer(&prepared(1), &QueryAnswer::Committed, at, escalation())
    else {
        panic!("committed decides");
    };
    assert_eq!(next.status, Status::Submitted);
    assert!(next.reason.unwrap().contains("committed"));
    let Some(Ok(Verdict::Decided(next))) =
        on_query_answer(&prepared(1), &QueryAnswer::RolledBack, at, escalation())
    else {
        panic!("rolled back decides");
    };
    assert_eq!(next.status, Status::Aborted);
    // A submit or abort that won the race makes the answer moot.
    for status in [Status::Submitted, Status::Aborted] {
        assert_eq!(
            on_query_answer(
                &with_status(status),
                &QueryAnswer::RolledBack,
                at,
                escalation()
            ),
            None
        );
    }
}

#[test]
fn an_unknown_answer_asks_again_and_escalates_once() {
    let unknown = QueryAnswer::Unknown {
        code: "UNAVAILABLE".into(),
        message: "connection refused".into(),
    };
    let mut m = prepared(1);
    let mut flagged = 0;
    for round in 1..=4 {
        let at = t0() + Duration::seconds(5 + round);
        let Some(Err(again)) = on_query_answer(&m, &unknown, at, escalation()) else {
            panic!("unknown asks again");
        };
        assert_eq!(again.attempt, round as u32);
        assert_eq!(again.next.status, Status::Prepared);
        flagged += u32::from(again.newly_flagged);
        m = again.next;
    }
    assert_eq!(flagged, 1, "raised once, at the third attempt");
    assert!(m.needs_attention);
    let reason = m.attention_reason.clone().unwrap();
    assert!(
        reason.contains("UNAVAILABLE connection refused"),
        "{reason}"
    );
    // A later answer settles it and clears the flag.
    let Some(Ok(Verdict::Decided(next))) =
        on_query_answer(&m, &QueryAnswer::Committed, t0(), escalation())
    else {
        panic!()
    };
    assert!(!next.needs_attention && next.attempts == 0);
}

#[test]
fn answers_follow_the_outcome_contract() {
    assert_eq!(
        QueryAnswer::from(&Outcome::Succeeded),
        QueryAnswer::Committed
    );
    assert_eq!(
        QueryAnswer::from(&Outcome::Rejected {
            message: "no".into()
        }),
        QueryAnswer::RolledBack
    );
    assert!(matches!(
        QueryAnswer::from(&Outcome::Unknown {
            code: "HTTP_500".into(),
            message: String::new()
        }),
        QueryAnswer::Unknown { .. }
    ));
}

#[test]
fn steps_run_in_order_and_the_last_success_finishes() {
    let m = decided(decide(&prepared(2), &Command::Submit, t0()));
    let (m, done) = on_reply(&m, 0, &Outcome::Succeeded);
    assert!(!done);
    assert_eq!(next_step(&m), Some(1));
    let (m, done) = on_reply(&m, 1, &Outcome::Succeeded);
    assert!(done);
    assert_eq!(m.status, Status::Succeeded);
    assert_eq!(next_step(&m), None);
}

#[test]
fn a_rejected_step_is_retried_never_compensated() {
    let m = decided(decide(&prepared(2), &Command::Submit, t0()));
    let (m, done) = on_reply(
        &m,
        0,
        &Outcome::Rejected {
            message: "no stock".into(),
        },
    );
    assert!(!done);
    assert_eq!(m.status, Status::Submitted);
    assert_eq!(m.steps[0].action, CallStatus::Unknown);
    assert_eq!(m.steps[0].last_code.as_deref(), Some("ABORTED"));
    assert!(m.steps[0].last_error.as_ref().unwrap().contains("no stock"));
    assert_eq!(next_step(&m), Some(0), "the same step again, not the next");
    assert!(
        m.steps
            .iter()
            .all(|s| s.compensation == CallStatus::NotRequired)
    );
    let (m, _) = on_reply(&m, 0, &Outcome::Succeeded);
    assert_eq!(m.steps[0].attempts, 2);
    assert_eq!(next_step(&m), Some(1));
}

#[test]
fn failing_rounds_escalate_like_a_saga_s_actions() {
    let mut m = decided(decide(&prepared(1), &Command::Submit, t0()));
    let unknown = Outcome::Unknown {
        code: "HTTP_503".into(),
        message: "down".into(),
    };
    let mut newly = 0;
    for _ in 0..3 {
        m = on_reply(&m, 0, &unknown).0;
        let (next, _, flagged) = round_failed(&m, t0(), escalation());
        newly += u32::from(flagged);
        m = next;
    }
    assert_eq!(newly, 1);
    assert!(m.attention_reason.unwrap().contains("HTTP_503 down"));
}
