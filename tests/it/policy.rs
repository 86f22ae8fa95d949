//! Call policies given in the request: a saga step's attempts and call
//! timeout, exhaustion that compensates a saga, and exhaustion of a TCC
//! branch's Confirm that only flags the transaction (it is never
//! abandoned); the policy in force shown by GetTransaction; bad policies
//! refused naming the field; policies declared per action at registration
//! (request > action > coordinator) and non-retryable HTTP statuses.

use std::time::Duration;

use concord_proto::v1::{self as pb, TransactionStatus as S};
use tonic::Code;

use crate::harness::*;

fn ms(n: u64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: (n / 1000) as i64,
        nanos: ((n % 1000) * 1_000_000) as i32,
    })
}

/// Retries every 50 ms, at most `attempts` calls per phase.
fn quick(attempts: u32) -> pb::CallPolicy {
    pb::CallPolicy {
        retry_initial: ms(50),
        retry_max: ms(50),
        retry_jitter: Some(false),
        max_attempts: attempts,
        ..Default::default()
    }
}

fn step(participant: &str, action: &str, compensation: &str) -> pb::SagaStep {
    pb::SagaStep {
        participant: participant.into(),
        action: action.into(),
        compensation: compensation.into(),
        payload: b"{}".to_vec(),
        ..Default::default()
    }
}

fn saga(steps: Vec<pb::SagaStep>) -> pb::SubmitSagaRequest {
    pb::SubmitSagaRequest {
        steps,
        wait: true,
        ..Default::default()
    }
}

/// The coordinator's own retries are slow (1 s, up to 60 s): what happens
/// within these tests' waits is the policy's doing.
async fn coordinator(db: &TestDb) -> TestCoordinator {
    TestCoordinator::start_with(db, |c| {
        c.retry.initial = Duration::from_secs(1);
        c.retry.max = Duration::from_secs(60);
    })
    .await
}

async fn a_step_that_exhausts_its_attempts_compensates_the_saga(db: TestDb) {
    let coord = coordinator(&db).await;
    let order = TestParticipant::start_on("order", &db).await;
    let pay = TestParticipant::start_on("payment", &db).await;
    order.register(&coord, &["create", "cancel"]).await;
    pay.register(&coord, &["charge", "refund"]).await;
    pay.script(Ph::Execute, vec![], Behavior::Unavailable);
    let mut charge = step("payment", "charge", "refund");
    charge.policy = Some(quick(3));
    let mut c = coord.client().await;
    let reply = c
        .submit_saga(saga(vec![step("order", "create", "cancel"), charge]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status, S::Compensated as i32);
    assert_eq!(
        reply.reason,
        "step 2 (payment.charge) gave up after 3 of 3 attempts: UNAVAILABLE participant is down"
    );
    assert_eq!(pay.calls(&reply.gid, "2", Ph::Execute), 3);
    // It may have run: compensated too, then step 1.
    assert!(pay.has_effect(&reply.gid, "2", Ph::Compensate));
    assert!(order.has_effect(&reply.gid, "1", Ph::Compensate));
    let tx = get_tx(&mut c, &reply.gid).await;
    assert_eq!(tx.branches[0].policy, None, "no policy of its own");
    let shown = tx.branches[1].policy.clone().expect("the policy in force");
    assert_eq!(shown.max_attempts, 3);
    assert_eq!(shown.retry_initial, ms(50));
    assert_eq!(
        shown.retry_factor,
        Some(2.0),
        "the default factor, made explicit"
    );
}

async fn a_step_call_timeout_and_one_attempt_give_up_at_once(db: TestDb) {
    let coord = coordinator(&db).await;
    let slow = TestParticipant::start("slow", None).await;
    slow.register(&coord, &["work", "undo"]).await;
    slow.script(Ph::Execute, vec![], Behavior::Slow(Duration::from_secs(2)));
    let mut s = step("slow", "work", "undo");
    s.call_timeout = ms(200);
    s.policy = Some(pb::CallPolicy {
        max_attempts: 1,
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let reply = coord
        .client()
        .await
        .submit_saga(saga(vec![s]))
        .await
        .unwrap()
        .into_inner();
    // Gave up after the one attempt, at once (the call alone would take 2 s).
    assert!(
        reply
            .reason
            .starts_with("step 1 (slow.work) gave up after 1 of 1 attempts: DEADLINE_EXCEEDED"),
        "{}",
        reply.reason
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The compensation has the same 200 ms deadline: on a loaded machine it
    // may need the coordinator's retry (1 s) before the saga is compensated.
    assert!(
        reply.status == S::Compensated as i32 || reply.status == S::Compensating as i32,
        "{:?}",
        reply.status
    );
    let mut c = coord.client().await;
    wait_status(&mut c, &reply.gid, S::Compensated, Duration::from_secs(15)).await;
}

async fn a_confirm_that_exhausts_its_attempts_is_flagged_and_still_retried(db: TestDb) {
    let coord = coordinator(&db).await;
    let bank = TestParticipant::start_on("bank", &db).await;
    bank.register(&coord, &["debit"]).await;
    bank.script(Ph::Confirm, vec![Behavior::Unavailable; 4], Behavior::Ok);
    let mut c = coord.client().await;
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    let mut t = try_req(&gid, "bank", "debit");
    t.policy = Some(pb::CallPolicy {
        max_attempts: 2,
        ..quick(0)
    });
    c.r#try(t).await.unwrap();
    commit_tx(&mut c, &gid, false).await.unwrap();
    // Flagged after 2 attempts (the coordinator alone would wait for 10).
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let flagged = loop {
        let tx = get_tx(&mut c, &gid).await;
        if tx.needs_attention {
            break tx;
        }
        assert!(std::time::Instant::now() < until, "never flagged: {tx:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status_of(&flagged), S::Confirming, "never abandoned");
    assert!(
        flagged.attention_reason.starts_with(
            "branch 1 (bank.debit) confirm exhausted its policy after 2 of 2 attempts; "
        ),
        "{}",
        flagged.attention_reason
    );
    // Retried still, at the policy's pace, until the participant confirms.
    wait_status(&mut c, &gid, S::Confirmed, Duration::from_secs(10)).await;
    assert_eq!(bank.calls(&gid, "1", Ph::Confirm), 5);
}

async fn bad_policies_are_refused_naming_the_field(db: TestDb) {
    let coord = coordinator(&db).await;
    let p = TestParticipant::start("p", None).await;
    p.register(&coord, &["a", "b"]).await;
    let mut c = coord.client().await;
    let cases = [
        (
            pb::CallPolicy {
                retry_initial: ms(100),
                ..Default::default()
            },
            "steps[1]: policy: give both retry_initial and retry_max, or neither",
        ),
        (
            pb::CallPolicy {
                retry_factor: Some(0.5),
                ..quick(0)
            },
            "steps[1]: policy: retry_factor must be at least 1",
        ),
        (
            pb::CallPolicy {
                retry_max: ms(10),
                ..quick(0)
            },
            "steps[1]: policy: retry_max must not be below retry_initial",
        ),
        (
            pb::CallPolicy {
                retry_jitter: Some(true),
                ..Default::default()
            },
            "steps[1]: policy: retry_factor and retry_jitter need retry_initial and retry_max",
        ),
        (
            pb::CallPolicy {
                non_retryable_codes: vec!["ABORTED".into()],
                ..Default::default()
            },
            "steps[1]: policy: non_retryable_codes: ABORTED cannot be declared non-retryable",
        ),
        (
            pb::CallPolicy {
                non_retryable_codes: vec!["unavailable".into()],
                ..Default::default()
            },
            "steps[1]: policy: non_retryable_codes: \"unavailable\" is not a gRPC code name",
        ),
    ];
    for (policy, message) in cases {
        let mut second = step("p", "a", "b");
        second.policy = Some(policy);
        let err = c
            .submit_saga(saga(vec![step("p", "a", "b"), second]))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::InvalidArgument, message)
        );
    }
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    let mut t = try_req(&gid, "p", "a");
    t.policy = Some(pb::CallPolicy {
        retry_factor: Some(f32::NAN),
        ..quick(0)
    });
    let err = c.r#try(t).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::InvalidArgument,
            "policy: retry_factor must be at least 1"
        )
    );
    let count: i64 = db.number("SELECT count(*) FROM branches").await;
    assert_eq!(count, 0, "refused requests change nothing");
}

async fn non_retryable_codes_count_as_a_rejection(db: TestDb) {
    let coord = coordinator(&db).await;
    let p = TestParticipant::start_on("pay", &db).await;
    p.register(&coord, &["charge", "refund"]).await;
    // The participant answers UNAVAILABLE itself, which this action
    // declares final.
    p.script(Ph::Execute, vec![Behavior::Unavailable], Behavior::Ok);
    p.script(Ph::Try, vec![Behavior::Unavailable], Behavior::Ok);
    p.script(Ph::Confirm, vec![Behavior::Unavailable], Behavior::Ok);
    let final_unavailable = || pb::CallPolicy {
        non_retryable_codes: vec!["UNAVAILABLE".into()],
        ..quick(0)
    };
    let mut c = coord.client().await;

    // A saga action: rejected at once, the saga compensates.
    let mut s = step("pay", "charge", "refund");
    s.policy = Some(final_unavailable());
    let reply = c.submit_saga(saga(vec![s])).await.unwrap().into_inner();
    assert_eq!(reply.status, S::Compensated as i32);
    assert_eq!(
        reply.reason,
        "step 1 (pay.charge) rejected: UNAVAILABLE participant is down"
    );
    assert_eq!(p.calls(&reply.gid, "1", Ph::Execute), 1);

    // A Try: ABORTED to the initiator, as a rejection.
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    let mut t = try_req(&gid, "pay", "charge");
    t.policy = Some(final_unavailable());
    let err = c.r#try(t).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");

    // A Confirm: a decision cannot be refused; flagged at once, retried.
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    let mut t = try_req(&gid, "pay", "charge");
    t.policy = Some(final_unavailable());
    c.r#try(t).await.unwrap();
    commit_tx(&mut c, &gid, false).await.unwrap();
    let tx = wait_status(&mut c, &gid, S::Confirmed, Duration::from_secs(10)).await;
    let flag = tx
        .events
        .iter()
        .find(|e| e.kind == "needs_attention")
        .unwrap_or_else(|| panic!("flagged after the first answer: {:#?}", tx.events));
    assert!(
        flag.message.starts_with(
            "branch 1 (pay.charge) confirm answered UNAVAILABLE, which its policy declares non-retryable; "
        ),
        "{}",
        flag.message
    );
    assert_eq!(p.calls(&gid, "1", Ph::Confirm), 2);
}

fn action(
    name: &str,
    call_timeout: Option<prost_types::Duration>,
    policy: Option<pb::CallPolicy>,
) -> pb::Action {
    pb::Action {
        name: name.into(),
        call_timeout,
        policy,
    }
}

async fn an_action_policy_from_registration_applies_unless_the_request_gives_one(db: TestDb) {
    let coord = coordinator(&db).await;
    let pay = TestParticipant::start_on("payment", &db).await;
    pay.register_actions(
        &coord,
        vec![
            action("charge", ms(900), Some(quick(3))),
            action("refund", None, None),
        ],
    )
    .await
    .unwrap();
    pay.script(Ph::Execute, vec![], Behavior::Unavailable);
    let mut c = coord.client().await;

    // The step gives nothing: the action's policy is the one in force.
    let reply = c
        .submit_saga(saga(vec![step("payment", "charge", "refund")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status, S::Compensated as i32);
    assert_eq!(
        reply.reason,
        "step 1 (payment.charge) gave up after 3 of 3 attempts: UNAVAILABLE participant is down"
    );
    let tx = get_tx(&mut c, &reply.gid).await;
    assert_eq!(tx.branches[0].call_timeout, ms(900), "the action's timeout");
    let shown = tx.branches[0]
        .policy
        .clone()
        .expect("the action's policy, in force");
    assert_eq!(shown.max_attempts, 3);
    assert_eq!(shown.retry_initial, ms(50));

    // The step's own wins, part by part: its attempts, the action's delays.
    let mut own = step("payment", "charge", "refund");
    own.policy = Some(pb::CallPolicy {
        max_attempts: 1,
        ..Default::default()
    });
    let reply = c.submit_saga(saga(vec![own])).await.unwrap().into_inner();
    assert_eq!(
        reply.reason,
        "step 1 (payment.charge) gave up after 1 of 1 attempts: UNAVAILABLE participant is down"
    );
    let shown = get_tx(&mut c, &reply.gid).await.branches[0]
        .policy
        .clone()
        .unwrap();
    assert_eq!((shown.max_attempts, shown.retry_initial), (1, ms(50)));

    // ListParticipants shows what was declared.
    let listed = coord
        .registry()
        .await
        .list_participants(pb::ListParticipantsRequest {})
        .await
        .unwrap()
        .into_inner();
    let p = listed
        .participants
        .iter()
        .find(|p| p.name == "payment")
        .unwrap();
    let charge = p.actions.iter().find(|a| a.name == "charge").unwrap();
    assert_eq!(charge.call_timeout, ms(900));
    assert_eq!(charge.policy.as_ref().unwrap().max_attempts, 3);
    assert_eq!(
        p.actions
            .iter()
            .find(|a| a.name == "refund")
            .unwrap()
            .policy,
        None
    );

    // Registering again without a policy drops it: the coordinator's
    // settings apply to new branches.
    pay.register(&coord, &["charge", "refund"]).await;
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    pay.script(Ph::Try, vec![], Behavior::Ok);
    c.r#try(try_req(&gid, "payment", "charge")).await.unwrap();
    let tx = get_tx(&mut c, &gid).await;
    assert_eq!(
        (tx.branches[0].call_timeout, tx.branches[0].policy.clone()),
        (None, None)
    );
}

async fn a_tcc_branch_takes_its_action_policy_and_non_retryable_codes(db: TestDb) {
    let coord = coordinator(&db).await;
    let bank = TestParticipant::start_on("bank", &db).await;
    bank.register_actions(
        &coord,
        vec![action(
            "debit",
            None,
            Some(pb::CallPolicy {
                non_retryable_codes: vec!["UNAVAILABLE".into()],
                ..quick(2)
            }),
        )],
    )
    .await
    .unwrap();
    let mut c = coord.client().await;
    // A Try answered with a declared code is a rejection.
    bank.script(Ph::Try, vec![Behavior::Unavailable], Behavior::Ok);
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    let err = c.r#try(try_req(&gid, "bank", "debit")).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    // A Confirm: flagged at once by the action's policy, retried at its pace.
    bank.script(Ph::Confirm, vec![Behavior::Unavailable; 2], Behavior::Ok);
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    c.r#try(try_req(&gid, "bank", "debit")).await.unwrap();
    commit_tx(&mut c, &gid, false).await.unwrap();
    let tx = wait_status(&mut c, &gid, S::Confirmed, Duration::from_secs(10)).await;
    assert!(
        tx.events.iter().any(|e| e.kind == "needs_attention"
            && e.message
                .starts_with("branch 1 (bank.debit) confirm answered UNAVAILABLE")),
        "{:#?}",
        tx.events
    );
    assert_eq!(bank.calls(&gid, "1", Ph::Confirm), 3);
}

async fn non_retryable_http_statuses_count_as_a_rejection(db: TestDb) {
    let coord = coordinator(&db).await;
    let (pay, _log) = TestParticipant::start_http_on("pay", &db).await;
    // The HTTP participant answers 503 for "unavailable".
    pay.register_actions(
        &coord,
        vec![
            action(
                "charge",
                None,
                Some(pb::CallPolicy {
                    non_retryable_http_statuses: vec![503],
                    ..Default::default()
                }),
            ),
            action("refund", None, None),
        ],
    )
    .await
    .unwrap();
    pay.script(Ph::Execute, vec![Behavior::Unavailable], Behavior::Ok);
    let mut c = coord.client().await;
    let reply = c
        .submit_saga(saga(vec![step("pay", "charge", "refund")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status, S::Compensated as i32);
    assert_eq!(
        reply.reason,
        "step 1 (pay.charge) rejected: HTTP_503 participant is down"
    );
    assert_eq!(pay.calls(&reply.gid, "1", Ph::Execute), 1);
    let shown = get_tx(&mut c, &reply.gid).await.branches[0]
        .policy
        .clone()
        .unwrap();
    assert_eq!(shown.non_retryable_http_statuses, vec![503]);
}

async fn bad_action_policies_are_refused_at_registration(db: TestDb) {
    let coord = coordinator(&db).await;
    let p = TestParticipant::start("p", None).await;
    let cases = [
        (
            action(
                "a",
                None,
                Some(pb::CallPolicy {
                    non_retryable_http_statuses: vec![409],
                    ..Default::default()
                }),
            ),
            "actions[1]: policy: non_retryable_http_statuses: 409 cannot be declared non-retryable: it is a rejection already",
        ),
        (
            action(
                "a",
                None,
                Some(pb::CallPolicy {
                    non_retryable_http_statuses: vec![200],
                    ..Default::default()
                }),
            ),
            "actions[1]: policy: non_retryable_http_statuses: 200 is not an HTTP error status (400-599)",
        ),
        (
            action("a", ms(0), None),
            "actions[1]: call_timeout must be positive",
        ),
    ];
    for (bad, message) in cases {
        let err = p
            .register_actions(&coord, vec![action("ok", None, None), bad])
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::InvalidArgument, message)
        );
    }
    let count: i64 = db.number("SELECT count(*) FROM participants").await;
    assert_eq!(count, 0, "refused registrations change nothing");
}

on_both_stores!(
    a_step_that_exhausts_its_attempts_compensates_the_saga,
    a_step_call_timeout_and_one_attempt_give_up_at_once,
    a_confirm_that_exhausts_its_attempts_is_flagged_and_still_retried,
    bad_policies_are_refused_naming_the_field,
    non_retryable_codes_count_as_a_rejection,
    an_action_policy_from_registration_applies_unless_the_request_gives_one,
    a_tcc_branch_takes_its_action_policy_and_non_retryable_codes,
    non_retryable_http_statuses_count_as_a_rejection,
    bad_action_policies_are_refused_at_registration,
);
