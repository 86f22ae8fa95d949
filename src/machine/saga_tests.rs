//! Saga transitions with a fixed clock: ordering, rejection, reverse
//! compensation, retries, deadlines and escalation.

use std::collections::HashSet;

use chrono::{Duration, TimeZone, Utc};

use super::*;
use crate::machine::policy::CallPolicy;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn saga(deps: &[Vec<usize>]) -> SagaState {
    let deps = effective_dependencies(deps);
    SagaState {
        status: Status::Running,
        submitted_at: t0(),
        deadline: None,
        decided_at: None,
        reason: None,
        attempts: 0,
        needs_attention: false,
        attention_reason: None,
        steps: deps
            .into_iter()
            .enumerate()
            .map(|(i, d)| StepState {
                id: BranchId::parse((i + 1).to_string()).unwrap(),
                label: format!("svc{i}.act"),
                depends_on: d,
                action: CallStatus::Pending,
                compensation: CallStatus::NotRequired,
                compensate_rejected: true,
                attempts: 0,
                last_code: None,
                last_error: None,
                policy: CallPolicy::default(),
            })
            .collect(),
    }
}

fn none() -> HashSet<usize> {
    HashSet::new()
}

fn untried() -> HashSet<(usize, SagaPhase)> {
    HashSet::new()
}

fn ok(s: &SagaState, i: usize, p: SagaPhase) -> (SagaState, SagaChange) {
    on_reply(s, i, p, &Outcome::Succeeded, t0())
}

fn rejected() -> Outcome {
    Outcome::Rejected {
        message: "no funds".into(),
    }
}

fn unknown() -> Outcome {
    Outcome::Unknown {
        code: "UNAVAILABLE".into(),
        message: "down".into(),
    }
}

const ESC: Escalation = Escalation {
    max_attempts: 3,
    max_age: Duration::minutes(10),
};

#[test]
fn validation_names_the_offending_step() {
    assert!(validate(&[vec![], vec![0], vec![0, 1]]).is_ok());
    assert_eq!(
        validate(&[vec![0]]).unwrap_err(),
        "steps[0] depends on itself"
    );
    assert_eq!(
        validate(&[vec![], vec![5]]).unwrap_err(),
        "steps[1] depends on steps[5], which does not exist"
    );
    assert!(
        validate(&[vec![1], vec![]])
            .unwrap_err()
            .contains("only name earlier steps")
    );
    assert!(
        validate(&[vec![], vec![0, 0]])
            .unwrap_err()
            .contains("twice")
    );
}

#[test]
fn without_dependencies_steps_run_in_order() {
    let mut s = saga(&[vec![], vec![], vec![]]);
    for i in 0..3 {
        assert_eq!(
            next_calls(&s, &none(), &untried(), 8),
            vec![(i, SagaPhase::Execute)]
        );
        let (n, change) = ok(&s, i, SagaPhase::Execute);
        s = n;
        if i < 2 {
            assert_eq!(change, SagaChange::Step);
        } else {
            assert_eq!(change, SagaChange::Finished(Status::Succeeded));
        }
    }
    assert_eq!(s.status, Status::Succeeded);
    assert!(next_calls(&s, &none(), &untried(), 8).is_empty());
}

#[test]
fn a_dag_runs_independent_steps_concurrently_within_the_limit() {
    // 0 -> {1, 2, 3} -> 4
    let s = saga(&[vec![], vec![0], vec![0], vec![0], vec![1, 2, 3]]);
    let (s, _) = ok(&s, 0, SagaPhase::Execute);
    assert_eq!(next_calls(&s, &none(), &untried(), 8).len(), 3);
    assert_eq!(next_calls(&s, &none(), &untried(), 2).len(), 2);
    let in_flight: HashSet<usize> = [1, 2].into();
    assert_eq!(
        next_calls(&s, &in_flight, &untried(), 3),
        vec![(3, SagaPhase::Execute)]
    );
    let (s, _) = ok(&s, 1, SagaPhase::Execute);
    let (s, _) = ok(&s, 2, SagaPhase::Execute);
    assert!(
        next_calls(&s, &[3].into(), &untried(), 8).is_empty(),
        "4 waits for 3"
    );
    let (s, _) = ok(&s, 3, SagaPhase::Execute);
    assert_eq!(
        next_calls(&s, &none(), &untried(), 8),
        vec![(4, SagaPhase::Execute)]
    );
}

#[test]
fn rejection_compensates_in_reverse_order_including_the_rejected_step() {
    let s = saga(&[vec![], vec![], vec![]]);
    let (s, _) = ok(&s, 0, SagaPhase::Execute);
    let (s, _) = ok(&s, 1, SagaPhase::Execute);
    let (s, change) = on_reply(&s, 2, SagaPhase::Execute, &rejected(), t0());
    assert_eq!(change, SagaChange::Compensating);
    assert_eq!(s.status, Status::Compensating);
    assert_eq!(
        s.reason.as_deref(),
        Some("step 3 (svc2.act) rejected: no funds")
    );
    assert_eq!(
        next_calls(&s, &none(), &untried(), 8),
        vec![(2, SagaPhase::Compensate)]
    );
    let (s, _) = ok(&s, 2, SagaPhase::Compensate);
    assert_eq!(
        next_calls(&s, &none(), &untried(), 8),
        vec![(1, SagaPhase::Compensate)]
    );
    let (s, _) = ok(&s, 1, SagaPhase::Compensate);
    let (s, change) = ok(&s, 0, SagaPhase::Compensate);
    assert_eq!(change, SagaChange::Finished(Status::Compensated));
    assert_eq!(s.status, Status::Compensated);
}

#[test]
fn rejected_step_is_skipped_when_configured_and_unrun_steps_never_compensate() {
    let mut s = saga(&[vec![], vec![], vec![]]);
    s.steps[1].compensate_rejected = false;
    let (s, _) = ok(&s, 0, SagaPhase::Execute);
    let (s, _) = on_reply(&s, 1, SagaPhase::Execute, &rejected(), t0());
    assert_eq!(
        next_calls(&s, &none(), &untried(), 8),
        vec![(0, SagaPhase::Compensate)]
    );
    let (s, change) = ok(&s, 0, SagaPhase::Compensate);
    assert_eq!(change, SagaChange::Finished(Status::Compensated));
    assert_eq!(s.steps[2].compensation, CallStatus::NotRequired);
}

#[test]
fn in_flight_actions_finish_before_compensation_and_unknown_ones_are_compensated() {
    // 0 -> {1, 2}
    let s = saga(&[vec![], vec![0], vec![0]]);
    let (s, _) = ok(&s, 0, SagaPhase::Execute);
    let (s, _) = on_reply(&s, 1, SagaPhase::Execute, &rejected(), t0());
    assert!(
        next_calls(&s, &[2].into(), &untried(), 8).is_empty(),
        "no compensation while step 2 runs"
    );
    assert!(
        !next_calls(&s, &none(), &untried(), 8).contains(&(2, SagaPhase::Execute)),
        "no new action once compensating"
    );
    let (s, _) = on_reply(&s, 2, SagaPhase::Execute, &unknown(), t0());
    let calls = next_calls(&s, &none(), &untried(), 8);
    assert!(
        calls.contains(&(1, SagaPhase::Compensate)) && calls.contains(&(2, SagaPhase::Compensate))
    );
    assert!(
        !calls.contains(&(0, SagaPhase::Compensate)),
        "0 waits for its dependents"
    );
}

#[test]
fn unknown_actions_wait_for_the_next_round_and_compensations_escalate() {
    let s = saga(&[vec![]]);
    let (s, change) = on_reply(&s, 0, SagaPhase::Execute, &unknown(), t0());
    assert_eq!(change, SagaChange::Step);
    let tried: HashSet<_> = [(0, SagaPhase::Execute)].into();
    assert!(next_calls(&s, &none(), &tried, 8).is_empty());
    let (s, attempt, flagged) = round_failed(&s, t0(), ESC);
    assert_eq!((attempt, flagged), (1, false));
    assert_eq!(
        next_calls(&s, &none(), &untried(), 8),
        vec![(0, SagaPhase::Execute)]
    );

    // Forward retries escalate too (nothing is retried silently forever).
    let mut r = s.clone();
    for _ in 0..5 {
        r = round_failed(&r, t0(), ESC).0;
    }
    assert!(r.needs_attention);
    assert!(
        r.attention_reason
            .unwrap()
            .contains("step 1 (svc0.act) execute failing")
    );
    let mut c = s;
    c.status = Status::Compensating;
    c.decided_at = Some(t0());
    let mut flags = 0;
    for _ in 0..4 {
        let (n, _, newly) = round_failed(&c, t0(), ESC);
        flags += newly as u32;
        c = n;
    }
    assert_eq!(flags, 1);
    assert!(
        c.attention_reason
            .unwrap()
            .contains("step 1 (svc0.act) compensate failing")
    );
}

#[test]
fn an_aborted_compensation_is_retried() {
    let s = saga(&[vec![], vec![]]);
    let (s, _) = ok(&s, 0, SagaPhase::Execute);
    let (s, _) = on_reply(&s, 1, SagaPhase::Execute, &rejected(), t0());
    let (s, _) = ok(&s, 1, SagaPhase::Compensate);
    let (s, change) = on_reply(&s, 0, SagaPhase::Compensate, &rejected(), t0());
    assert_eq!(change, SagaChange::Step);
    assert_eq!(s.steps[0].compensation, CallStatus::Unknown);
    assert_eq!(
        next_calls(&s, &none(), &untried(), 8),
        vec![(0, SagaPhase::Compensate)]
    );
}

#[test]
fn deadline_turns_a_running_saga_to_compensating() {
    let mut s = saga(&[vec![], vec![]]);
    assert_eq!(expire(&s, t0()), None, "no deadline, no expiry");
    s.deadline = Some(t0() + Duration::seconds(5));
    assert_eq!(expire(&s, t0()), None);
    let (s, _) = ok(&s, 0, SagaPhase::Execute);
    let e = expire(&s, t0() + Duration::seconds(5)).unwrap();
    assert_eq!(e.status, Status::Compensating);
    assert!(e.reason.unwrap().starts_with("deadline passed"));
    // Nothing ran: the expired saga is compensated at once.
    let fresh = SagaState {
        deadline: Some(t0()),
        ..saga(&[vec![]])
    };
    assert_eq!(expire(&fresh, t0()).unwrap().status, Status::Compensated);
}

fn limited(max_attempts: u32) -> CallPolicy {
    CallPolicy {
        max_attempts: Some(max_attempts),
        ..CallPolicy::default()
    }
}

#[test]
fn a_forward_action_that_exhausts_its_policy_compensates_the_saga_with_the_reason() {
    let mut s = saga(&[vec![], vec![]]);
    s.steps[1].policy = limited(2);
    let (s, _) = ok(&s, 0, SagaPhase::Execute);
    let (s, change) = on_reply(&s, 1, SagaPhase::Execute, &unknown(), t0());
    assert_eq!(change, SagaChange::Step, "1 of 2 attempts: retried");
    let (s, _, _) = round_failed(&s, t0(), ESC);
    let (s, change) = on_reply(&s, 1, SagaPhase::Execute, &unknown(), t0());
    assert_eq!(change, SagaChange::Compensating);
    assert_eq!(s.status, Status::Compensating);
    assert_eq!(
        s.reason.as_deref(),
        Some("step 2 (svc1.act) gave up after 2 of 2 attempts: UNAVAILABLE down")
    );
    // It may have run: it is compensated too, after the step after it (none)
    // and before step 1.
    assert!(s.steps[1].needs_compensation());
    assert_eq!(
        next_calls(&s, &none(), &untried(), 8),
        vec![(1, SagaPhase::Compensate)]
    );
}

#[test]
fn a_forward_max_age_counts_from_submission_and_a_success_is_never_given_up() {
    let mut s = saga(&[vec![]]);
    s.steps[0].policy = CallPolicy {
        max_age: Some(std::time::Duration::from_secs(10)),
        ..CallPolicy::default()
    };
    let late = t0() + Duration::seconds(10);
    let (early, change) = on_reply(
        &s,
        0,
        SagaPhase::Execute,
        &unknown(),
        late - Duration::seconds(1),
    );
    assert_eq!((early.status, change), (Status::Running, SagaChange::Step));
    let (done, change) = on_reply(&s, 0, SagaPhase::Execute, &Outcome::Succeeded, late);
    assert_eq!(change, SagaChange::Finished(Status::Succeeded), "{done:?}");
    let (gave_up, change) = on_reply(&s, 0, SagaPhase::Execute, &unknown(), late);
    assert_eq!(
        change,
        SagaChange::Compensating,
        "it may have run: compensated"
    );
    assert!(
        gave_up
            .reason
            .unwrap()
            .contains("gave up after 10s (max_age 10s)")
    );
}

#[test]
fn a_compensation_that_exhausts_its_policy_is_flagged_and_never_abandoned() {
    let mut s = saga(&[vec![]]);
    s.steps[0].policy = limited(2);
    let (s, _) = ok(&s, 0, SagaPhase::Execute);
    let mut c = s;
    c.status = Status::Compensating;
    c.decided_at = Some(t0());
    c.steps[0].attempts = 0;
    let (c, change) = on_reply(&c, 0, SagaPhase::Compensate, &unknown(), t0());
    assert_eq!(change, SagaChange::Step);
    let (c, _, newly) = round_failed(&c, t0(), ESC);
    assert!(!newly, "1 of 2 attempts");
    let (c, change) = on_reply(&c, 0, SagaPhase::Compensate, &unknown(), t0());
    assert_eq!(change, SagaChange::Step, "a compensation is never given up");
    let (c, attempt, newly) = round_failed(&c, t0(), ESC);
    assert!(newly, "flagged before the coordinator's 3 rounds");
    assert_eq!(attempt, 2);
    assert_eq!(c.status, Status::Compensating);
    assert!(
        c.attention_reason.as_deref().unwrap().starts_with(
            "step 1 (svc0.act) compensate exhausted its policy after 2 of 2 attempts; "
        ),
        "{:?}",
        c.attention_reason
    );
    assert_eq!(
        next_calls(&c, &none(), &untried(), 8),
        vec![(0, SagaPhase::Compensate)]
    );
}

#[test]
fn a_non_retryable_answer_rejects_an_action_but_only_flags_a_compensation() {
    let codes = crate::machine::policy::CodeSet::parse(["UNAVAILABLE"]).unwrap();
    let mut s = saga(&[vec![], vec![]]);
    s.steps[1].policy.non_retryable = codes;
    let (s, _) = ok(&s, 0, SagaPhase::Execute);
    let (s, change) = on_reply(&s, 1, SagaPhase::Execute, &unknown(), t0());
    assert_eq!(change, SagaChange::Compensating);
    assert_eq!(s.steps[1].action, CallStatus::Rejected);
    assert_eq!(
        s.reason.as_deref(),
        Some("step 2 (svc1.act) rejected: UNAVAILABLE down")
    );
    // Its compensation answered the same: not accepted as done, flagged now.
    let (s, change) = on_reply(&s, 1, SagaPhase::Compensate, &unknown(), t0());
    assert_eq!(change, SagaChange::Step);
    assert_eq!(s.steps[1].compensation, CallStatus::Unknown);
    let (s, _, newly) = round_failed(&s, t0(), ESC);
    assert!(newly);
    assert!(
        s.attention_reason
            .as_deref()
            .unwrap()
            .starts_with("step 2 (svc1.act) compensate answered UNAVAILABLE, which its policy declares non-retryable; "),
        "{:?}",
        s.attention_reason
    );
}

#[test]
fn a_skipped_compensation_counts_as_compensated() {
    let mut s = saga(&[vec![], vec![]]);
    s.status = Status::Compensating;
    s.decided_at = Some(t0());
    s.steps[0].action = CallStatus::Succeeded;
    s.steps[0].compensation = CallStatus::Skipped;
    s.steps[1].action = CallStatus::Unknown;
    s.steps[1].compensation = CallStatus::Unknown;
    // Only step 2's compensation is called; step 1's was done by hand.
    assert_eq!(
        next_calls(&s, &none(), &untried(), 8),
        vec![(1, SagaPhase::Compensate)]
    );
    let (next, change) = ok(&s, 1, SagaPhase::Compensate);
    assert_eq!(change, SagaChange::Finished(Status::Compensated));
    assert_eq!(next.steps[0].compensation, CallStatus::Skipped);
}
