//! End-to-end sagas: ordering, concurrency, compensation in reverse order,
//! retries, deadlines, validation, idempotent resubmission, and crashes.

use std::sync::Arc;
use std::time::Duration;

use concord_proto::v1::{self as pb, TransactionStatus as S};
use sqlx::PgPool;
use tokio::sync::Notify;
use tonic::Code;

use crate::harness::*;

fn step(participant: &str, action: &str, compensation: &str, deps: &[u32]) -> pb::SagaStep {
    pb::SagaStep {
        participant: participant.into(),
        action: action.into(),
        compensation: compensation.into(),
        payload: format!("{participant}.{action}").into_bytes(),
        depends_on: deps.to_vec(),
        compensate_rejected: None,
        call_timeout: None,
        policy: None,
    }
}

fn saga(gid: &str, steps: Vec<pb::SagaStep>, wait: bool) -> pb::SubmitSagaRequest {
    pb::SubmitSagaRequest {
        gid: gid.into(),
        steps,
        timeout: None,
        wait,
        metadata: Default::default(),
        concurrency: 0,
    }
}

/// order -> stock -> payment, each on its own participant.
async fn shop(
    db: impl Into<TestDb>,
    coord: &TestCoordinator,
) -> (TestParticipant, TestParticipant, TestParticipant) {
    let db = db.into();
    let order = TestParticipant::start_on("order", &db).await;
    let stock = TestParticipant::start_on("stock", &db).await;
    let pay = TestParticipant::start_on("payment", &db).await;
    order.register(coord, &["create", "cancel"]).await;
    stock.register(coord, &["reserve", "release"]).await;
    pay.register(coord, &["charge", "refund"]).await;
    (order, stock, pay)
}

fn three_steps() -> Vec<pb::SagaStep> {
    vec![
        step("order", "create", "cancel", &[]),
        step("stock", "reserve", "release", &[]),
        step("payment", "charge", "refund", &[]),
    ]
}

fn no_violations(ps: &[&TestParticipant]) {
    for p in ps {
        assert!(
            p.precondition_violations().is_empty(),
            "{}: {:?}",
            p.name,
            p.precondition_violations()
        );
        assert_eq!(p.concurrent_violations(), 0);
    }
}

async fn sequential_saga_succeeds_with_each_action_once(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (order, stock, pay) = shop(&db, &coord).await;
    let mut c = coord.client().await;
    let reply = c
        .submit_saga(saga("", three_steps(), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status, S::Succeeded as i32, "{reply:?}");
    let gid = reply.gid;
    for (p, branch) in [(&order, "1"), (&stock, "2"), (&pay, "3")] {
        assert_eq!(p.calls(&gid, branch, Ph::Execute), 1);
        assert_eq!(p.total_calls(Ph::Compensate), 0);
    }
    no_violations(&[&order, &stock, &pay]);
    let tx = get_tx(&mut c, &gid).await;
    assert_eq!(tx.mode, pb::TransactionMode::Saga as i32);
    assert_eq!(tx.deadline, None, "sagas have no deadline by default");
    assert_eq!(tx.branches[2].compensation, "refund");
    assert_eq!(
        tx.branches[2].depends_on,
        vec![1],
        "sequential order made explicit"
    );
    assert!(tx.events.iter().any(|e| e.kind == "submitted"));
    assert_eq!(tx.events.last().unwrap().kind, "finished");
}

async fn rejection_compensates_every_step_in_reverse_order(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (order, stock, pay) = shop(&db, &coord).await;
    pay.script(Ph::Execute, vec![], Behavior::Abort("card declined"));
    let mut c = coord.client().await;
    let reply = c
        .submit_saga(saga("o-1", three_steps(), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status, S::Compensated as i32);
    assert_eq!(
        reply.reason,
        "step 3 (payment.charge) rejected: card declined"
    );
    // Reverse order, the rejected step included (it may have partly run).
    assert_eq!(pay.calls("o-1", "3", Ph::Compensate), 1);
    assert_eq!(stock.calls("o-1", "2", Ph::Compensate), 1);
    assert_eq!(order.calls("o-1", "1", Ph::Compensate), 1);
    no_violations(&[&order, &stock, &pay]);
    let tx = get_tx(&mut c, "o-1").await;
    let comp_order: Vec<String> = tx
        .events
        .iter()
        .filter(|e| e.kind == "call" && e.phase == "compensate")
        .map(|e| e.branch_id.clone())
        .collect();
    assert_eq!(comp_order, vec!["3", "2", "1"]);
}

async fn rejected_step_is_not_compensated_when_told_so(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (order, stock, pay) = shop(&db, &coord).await;
    stock.script(Ph::Execute, vec![], Behavior::Abort("out of stock"));
    let mut steps = three_steps();
    steps[1].compensate_rejected = Some(false);
    let mut c = coord.client().await;
    let reply = c
        .submit_saga(saga("o-2", steps, true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status, S::Compensated as i32);
    assert_eq!(stock.total_calls(Ph::Compensate), 0);
    assert_eq!(order.calls("o-2", "1", Ph::Compensate), 1);
    assert_eq!(
        pay.total_calls(Ph::Execute) + pay.total_calls(Ph::Compensate),
        0,
        "step 2 never ran"
    );
}

async fn dag_runs_independent_steps_concurrently(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let p = TestParticipant::start_on("svc", &db).await;
    p.register(&coord, &["a", "undo"]).await;
    p.script(
        Ph::Execute,
        vec![],
        Behavior::Slow(Duration::from_millis(150)),
    );
    let steps = vec![
        step("svc", "a", "undo", &[]),
        step("svc", "a", "undo", &[0]),
        step("svc", "a", "undo", &[0]),
        step("svc", "a", "undo", &[0]),
        step("svc", "a", "undo", &[1, 2, 3]),
    ];
    let mut c = coord.client().await;
    let reply = c
        .submit_saga(saga("dag", steps, true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status, S::Succeeded as i32);
    assert_eq!(p.max_in_flight(), 3, "steps 1-3 ran at once");
    let log = p.log("dag");
    assert_eq!(log.first().unwrap().0, "1");
    assert_eq!(log.last().unwrap().0, "5");
    no_violations(&[&p]);
}

async fn unknown_outcomes_are_retried_and_deadline_compensates(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (order, stock, _pay) = shop(&db, &coord).await;
    stock.script(
        Ph::Execute,
        vec![Behavior::Unavailable, Behavior::Unavailable],
        Behavior::Ok,
    );
    let mut c = coord.client().await;
    let reply = c
        .submit_saga(saga("retry", three_steps(), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status, S::Succeeded as i32);
    assert_eq!(stock.calls("retry", "2", Ph::Execute), 3);
    assert_eq!(
        order.calls("retry", "1", Ph::Execute),
        1,
        "a completed action is not re-executed"
    );

    // Unknown forever: past the saga's deadline it compensates, including
    // the step whose outcome is unknown.
    stock.script(Ph::Execute, vec![], Behavior::Unavailable);
    let mut req = saga("late", three_steps(), true);
    req.timeout = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    let reply = c.submit_saga(req).await.unwrap().into_inner();
    assert_eq!(reply.status, S::Compensated as i32);
    assert!(
        reply.reason.starts_with("deadline passed"),
        "{}",
        reply.reason
    );
    assert_eq!(stock.calls("late", "2", Ph::Compensate), 1);
    assert_eq!(order.calls("late", "1", Ph::Compensate), 1);
}

async fn failing_compensation_escalates_and_keeps_retrying(db: TestDb) {
    let coord = TestCoordinator::start_with(&db, |c| c.attention_attempts = 2).await;
    let (order, _stock, pay) = shop(&db, &coord).await;
    pay.script(Ph::Execute, vec![], Behavior::Abort("no"));
    order.script(Ph::Compensate, vec![], Behavior::Unavailable);
    let mut c = coord.client().await;
    c.submit_saga(saga("stuck", three_steps(), false))
        .await
        .unwrap();
    assert!(
        order
            .wait_until(Duration::from_secs(10), |p| p.calls(
                "stuck",
                "1",
                Ph::Compensate
            ) >= 4)
            .await
    );
    let tx = get_tx(&mut c, "stuck").await;
    assert_eq!(status_of(&tx), S::Compensating);
    assert!(tx.needs_attention);
    assert!(
        tx.attention_reason
            .contains("step 1 (order.create) compensate failing"),
        "{}",
        tx.attention_reason
    );
    order.script(Ph::Compensate, vec![], Behavior::Ok);
    wait_status(&mut c, "stuck", S::Compensated, Duration::from_secs(10)).await;
}

async fn invalid_sagas_are_refused_naming_the_step(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let _shop = shop(&db, &coord).await;
    let mut c = coord.client().await;
    let cases = vec![
        (
            vec![step("order", "create", "cancel", &[0])],
            "steps[0] depends on itself",
        ),
        (
            vec![
                step("order", "create", "cancel", &[]),
                step("stock", "reserve", "release", &[7]),
            ],
            "steps[1] depends on steps[7]",
        ),
        (
            vec![
                step("order", "create", "cancel", &[1]),
                step("stock", "reserve", "release", &[0]),
            ],
            "steps[0] depends on steps[1]",
        ),
        (
            vec![step("ghost", "create", "cancel", &[])],
            "steps[0]: participant ghost is not registered",
        ),
        (
            vec![step("order", "create", "nope", &[])],
            "steps[0]: participant order has no action nope",
        ),
        (
            vec![step("order", "", "cancel", &[])],
            "steps[0]: action must not be empty",
        ),
        (vec![], "at least one step"),
    ];
    for (steps, needle) in cases {
        let err = c.submit_saga(saga("bad", steps, false)).await.unwrap_err();
        // An unknown participant or action is NOT_FOUND, as for a Try; the
        // rest of a malformed saga is INVALID_ARGUMENT.
        let expected = if needle.contains("not registered") || needle.contains("has no action") {
            Code::NotFound
        } else {
            Code::InvalidArgument
        };
        assert_eq!(err.code(), expected, "{needle}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{:?} should contain {needle:?}",
            err.message()
        );
    }
    let n = db.number("SELECT count(*) FROM global_transactions").await;
    assert_eq!(n, 0, "nothing persisted");
}

async fn resubmission_is_idempotent_only_for_the_same_steps(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (order, _stock, _pay) = shop(&db, &coord).await;
    let mut c = coord.client().await;
    c.submit_saga(saga("same", three_steps(), true))
        .await
        .unwrap();
    let again = c
        .submit_saga(saga("same", three_steps(), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.status, S::Succeeded as i32);
    assert_eq!(order.calls("same", "1", Ph::Execute), 1);
    let mut other = three_steps();
    other[0].payload = b"different".to_vec();
    let err = c.submit_saga(saga("same", other, false)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    // A TCC gid cannot be reused for a saga either.
    c.begin(begin_req("tcc-1", None)).await.unwrap();
    let err = c
        .submit_saga(saga("tcc-1", three_steps(), false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

async fn crash_between_steps_resumes_without_re_executing(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (order, stock, pay) = shop(&db, &coord).await;
    let hold = Arc::new(Notify::new());
    stock.script(
        Ph::Execute,
        vec![Behavior::Block(hold.clone())],
        Behavior::Ok,
    );
    let mut c = coord.client().await;
    c.submit_saga(saga("crash-1", three_steps(), false))
        .await
        .unwrap();
    assert!(
        stock
            .wait_until(Duration::from_secs(5), |p| p.calls(
                "crash-1",
                "2",
                Ph::Execute
            ) == 1)
            .await
    );
    coord.crash();
    let fresh = TestCoordinator::start(&db).await;
    let mut c = fresh.client().await;
    wait_status(&mut c, "crash-1", S::Succeeded, Duration::from_secs(10)).await;
    assert_eq!(
        order.calls("crash-1", "1", Ph::Execute),
        1,
        "completed step not re-executed"
    );
    assert_eq!(stock.effects(Ph::Execute), 1);
    assert_eq!(pay.calls("crash-1", "3", Ph::Execute), 1);
    no_violations(&[&order, &stock, &pay]);
}

async fn crash_during_compensation_finishes_compensating(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (order, stock, pay) = shop(&db, &coord).await;
    let hold = Arc::new(Notify::new());
    pay.script(Ph::Execute, vec![], Behavior::Abort("declined"));
    stock.script(
        Ph::Compensate,
        vec![Behavior::Block(hold.clone())],
        Behavior::Ok,
    );
    let mut c = coord.client().await;
    c.submit_saga(saga("crash-2", three_steps(), false))
        .await
        .unwrap();
    assert!(
        stock
            .wait_until(Duration::from_secs(5), |p| p.calls(
                "crash-2",
                "2",
                Ph::Compensate
            ) == 1)
            .await
    );
    coord.crash();
    let fresh = TestCoordinator::start(&db).await;
    let mut c = fresh.client().await;
    let tx = wait_status(&mut c, "crash-2", S::Compensated, Duration::from_secs(10)).await;
    assert!(tx.rollback_reason.contains("declined"));
    assert_eq!(
        pay.calls("crash-2", "3", Ph::Compensate),
        1,
        "done before the crash, not redone"
    );
    assert_eq!(stock.effects(Ph::Compensate), 1);
    assert_eq!(order.calls("crash-2", "1", Ph::Compensate), 1);
    for p in [&order, &stock, &pay] {
        assert!(p.effects(Ph::Execute) <= 1);
    }
    no_violations(&[&order, &stock, &pay]);
}

/// PostgreSQL only: two instances share the database.
#[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
async fn two_instances_racing_run_each_step_at_most_once(pool: PgPool) {
    let one = TestCoordinator::start(&pool).await;
    let two = TestCoordinator::start(&pool).await;
    let (order, stock, pay) = shop(&pool, &one).await;
    stock.script(Ph::Execute, vec![], Behavior::FailFirstPerBranch(2));
    order.script(Ph::Compensate, vec![], Behavior::FailFirstPerBranch(1));
    let mut c1 = one.client().await;
    let mut c2 = two.client().await;
    let mut gids = Vec::new();
    for i in 0..24 {
        let c = if i % 2 == 0 { &mut c1 } else { &mut c2 };
        let gid = format!("race-{i}");
        let mut steps = three_steps();
        if i % 3 == 0 {
            steps[2].action = "charge".into();
            steps[2].payload = b"decline".to_vec();
        }
        c.submit_saga(saga(&gid, steps, false)).await.unwrap();
        gids.push(gid);
    }
    for gid in &gids {
        let tx = wait_status(&mut c1, gid, S::Succeeded, Duration::from_secs(20)).await;
        assert_eq!(status_of(&tx), S::Succeeded);
        assert_eq!(
            stock.calls(gid, "2", Ph::Execute),
            3,
            "2 failures and 1 success, never more"
        );
        assert_eq!(order.calls(gid, "1", Ph::Execute), 1);
        assert_eq!(pay.calls(gid, "3", Ph::Execute), 1);
    }
    no_violations(&[&order, &stock, &pay]);
    let actors: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT actor FROM transaction_events WHERE kind = 'call' AND phase = 'execute'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(actors.len(), 2, "both instances drove steps: {actors:?}");
}

on_both_stores!(
    invalid_sagas_are_refused_naming_the_step,
    rejected_step_is_not_compensated_when_told_so,
    dag_runs_independent_steps_concurrently,
    unknown_outcomes_are_retried_and_deadline_compensates,
    failing_compensation_escalates_and_keeps_retrying,
    resubmission_is_idempotent_only_for_the_same_steps,
    crash_between_steps_resumes_without_re_executing,
    sequential_saga_succeeds_with_each_action_once,
    rejection_compensates_every_step_in_reverse_order,
    crash_during_compensation_finishes_compensating,
);
