//! End-to-end TCC: coordinator and participants over loopback gRPC.

use std::time::Duration;

use concord_proto::v1::{self as pb, TransactionStatus as S};
use tonic::Code;

use crate::harness::*;

const MIGRATOR: &str = "concord::store::postgres::MIGRATOR";
const _: &str = MIGRATOR;

async fn two_participants(
    db: impl Into<TestDb>,
    coord: &TestCoordinator,
) -> (TestParticipant, TestParticipant) {
    let db = db.into();
    let a = TestParticipant::start_on("bank-a", &db).await;
    let b = TestParticipant::start_on("bank-b", &db).await;
    a.register(coord, &["debit"]).await;
    b.register(coord, &["credit"]).await;
    (a, b)
}

async fn commit_confirms_every_branch_exactly_once(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (a, b) = two_participants(&db, &coord).await;
    let mut c = coord.client().await;
    let mut begin = begin_req("", None);
    begin
        .metadata
        .insert("traceparent".into(), "00-abc-def-01".into());
    let gid = c.begin(begin).await.unwrap().into_inner().gid;
    assert!(
        uuid::Uuid::parse_str(&gid).is_ok(),
        "generated gid is a uuid: {gid}"
    );
    let t1 = c
        .r#try(try_req(&gid, "bank-a", "debit"))
        .await
        .unwrap()
        .into_inner();
    let t2 = c
        .r#try(try_req(&gid, "bank-b", "credit"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((t1.branch_id.as_str(), t2.branch_id.as_str()), ("1", "2"));
    assert_eq!(
        t1.payload,
        b"1:13".to_vec(),
        "try payload returned to the initiator"
    );

    let reply = commit_tx(&mut c, &gid, true).await.unwrap();
    assert_eq!(reply.status, S::Confirmed as i32);
    assert_eq!(a.calls(&gid, "1", Ph::Confirm), 1);
    assert_eq!(b.calls(&gid, "2", Ph::Confirm), 1);
    assert_eq!(a.total_calls(Ph::Cancel) + b.total_calls(Ph::Cancel), 0);
    assert!(
        a.precondition_violations().is_empty(),
        "{:?}",
        a.precondition_violations()
    );
    assert!(
        b.precondition_violations().is_empty(),
        "{:?}",
        b.precondition_violations()
    );
    assert!(
        a.metadata_seen()
            .iter()
            .all(|m| m.get("traceparent").map(String::as_str) == Some("00-abc-def-01")),
        "metadata forwarded on every call"
    );

    // A successful Try's record (and its `call` event) is written just after
    // its reply, on its own writer: it may land after the round's.
    let calls = |tx: &pb::Transaction| tx.events.iter().filter(|e| e.kind == "call").count();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    let mut tx = get_tx(&mut c, &gid).await;
    while calls(&tx) < 4 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx = get_tx(&mut c, &gid).await;
    }
    assert_eq!(status_of(&tx), S::Confirmed);
    assert_eq!(tx.branches.len(), 2);
    for br in &tx.branches {
        assert_eq!(br.first_phase, pb::CallStatus::Succeeded as i32);
        assert_eq!(br.second_phase, pb::CallStatus::Succeeded as i32);
        assert_eq!(br.attempts, 1);
    }
    let kinds: Vec<&str> = tx.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"begun"));
    let last_not_a_call = kinds.iter().rev().find(|k| **k != "call");
    assert!(
        kinds.contains(&"decided") && last_not_a_call == Some(&"finished"),
        "{kinds:?}"
    );
    assert_eq!(
        tx.events.iter().filter(|e| e.kind == "call").count(),
        4,
        "2 tries + 2 confirms recorded"
    );

    // Committing again is idempotent.
    let again = commit_tx(&mut c, &gid, false).await.unwrap();
    assert_eq!(again.status, S::Confirmed as i32);
    assert_eq!(a.calls(&gid, "1", Ph::Confirm), 1);
    // ...and rolling back a committed transaction is refused.
    let err = rollback_tx(&mut c, &gid, "late", false).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("cannot be rolled back"),
        "{}",
        err.message()
    );
}

async fn commit_without_wait_replies_after_the_durable_decision(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (a, _b) = two_participants(&db, &coord).await;
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    a.script(
        Ph::Confirm,
        vec![Behavior::Block(release.clone())],
        Behavior::Ok,
    );
    let mut c = coord.client().await;
    let gid = c
        .begin(begin_req("order-1", None))
        .await
        .unwrap()
        .into_inner()
        .gid;
    assert_eq!(gid, "order-1");
    c.r#try(try_req(&gid, "bank-a", "debit")).await.unwrap();
    let reply = commit_tx(&mut c, &gid, false).await.unwrap();
    assert_eq!(reply.status, S::Confirming as i32);
    let status = db
        .text_of(
            "SELECT status FROM global_transactions WHERE gid = $1",
            &gid,
        )
        .await;
    assert_eq!(
        status.as_deref(),
        Some("confirming"),
        "decision is in the database when Commit replies"
    );
    assert!(
        a.wait_until(Duration::from_secs(5), |p| p.calls(&gid, "1", Ph::Confirm)
            == 1)
            .await
    );
    release.notify_waiters();
    assert!(
        a.wait_until(Duration::from_secs(5), |p| p.has_effect(
            &gid,
            "1",
            Ph::Confirm
        ))
        .await
    );
    wait_status(&mut c, &gid, S::Confirmed, Duration::from_secs(5)).await;
}

async fn rejected_try_then_rollback_cancels_every_branch(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (a, b) = two_participants(&db, &coord).await;
    b.script(Ph::Try, vec![], Behavior::Abort("insufficient funds"));
    let mut c = coord.client().await;
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    c.r#try(try_req(&gid, "bank-a", "debit")).await.unwrap();
    let err = c
        .r#try(try_req(&gid, "bank-b", "credit"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert!(
        err.message().contains("insufficient funds"),
        "{}",
        err.message()
    );

    // Commit is refused while a try did not succeed.
    let err = commit_tx(&mut c, &gid, false).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("branch 2 (bank-b.credit)"),
        "{}",
        err.message()
    );

    let reply = rollback_tx(&mut c, &gid, "funds", true).await.unwrap();
    assert_eq!(reply.status, S::Cancelled as i32);
    assert_eq!(a.calls(&gid, "1", Ph::Cancel), 1);
    assert_eq!(
        b.calls(&gid, "2", Ph::Cancel),
        1,
        "the rejected branch is cancelled too"
    );
    assert_eq!(a.total_calls(Ph::Confirm) + b.total_calls(Ph::Confirm), 0);
    let tx = get_tx(&mut c, &gid).await;
    assert_eq!(tx.rollback_reason, "funds");
    assert_eq!(tx.branches[1].first_phase, pb::CallStatus::Rejected as i32);
    // Committing a rolled-back transaction is refused; rolling back again is fine.
    let err = commit_tx(&mut c, &gid, false).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let again = rollback_tx(&mut c, &gid, "", false).await.unwrap();
    assert_eq!(again.status, S::Cancelled as i32);
}

async fn try_timeout_is_unavailable_and_the_branch_is_still_cancelled(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (a, _b) = two_participants(&db, &coord).await;
    a.script(
        Ph::Try,
        vec![Behavior::Slow(Duration::from_millis(800))],
        Behavior::Ok,
    );
    let mut c = coord.client().await;
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    let mut req = try_req(&gid, "bank-a", "debit");
    req.call_timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 200_000_000,
    });
    let err = c.r#try(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("DEADLINE_EXCEEDED"),
        "{}",
        err.message()
    );
    let tx = get_tx(&mut c, &gid).await;
    assert_eq!(tx.branches.len(), 1);
    assert_eq!(tx.branches[0].first_phase, pb::CallStatus::Unknown as i32);

    // Retrying the same Try with the same branch id creates no second branch.
    req.branch_id = "1".into();
    req.call_timeout = None;
    let ok = c.r#try(req).await.unwrap().into_inner();
    assert_eq!(ok.branch_id, "1");
    assert_eq!(get_tx(&mut c, &gid).await.branches.len(), 1);
    assert_eq!(a.calls(&gid, "1", Ph::Try), 2);

    rollback_tx(&mut c, &gid, "timeout", true).await.unwrap();
    assert_eq!(a.calls(&gid, "1", Ph::Cancel), 1);
}

async fn confirm_is_retried_while_the_participant_is_down(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (a, b) = two_participants(&db, &coord).await;
    b.script(
        Ph::Confirm,
        vec![
            Behavior::Unavailable,
            Behavior::Unavailable,
            Behavior::Unavailable,
        ],
        Behavior::Ok,
    );
    let mut c = coord.client().await;
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    c.r#try(try_req(&gid, "bank-a", "debit")).await.unwrap();
    c.r#try(try_req(&gid, "bank-b", "credit")).await.unwrap();
    let reply = commit_tx(&mut c, &gid, true).await.unwrap();
    assert_eq!(reply.status, S::Confirmed as i32);
    assert_eq!(
        a.calls(&gid, "1", Ph::Confirm),
        1,
        "a succeeded branch is not called again"
    );
    assert_eq!(b.calls(&gid, "2", Ph::Confirm), 4);
    let tx = get_tx(&mut c, &gid).await;
    assert!(!tx.needs_attention);
    let attempts: Vec<(u32, String)> = tx
        .events
        .iter()
        .filter(|e| e.kind == "call" && e.phase == "confirm" && e.branch_id == "2")
        .map(|e| (e.attempt, e.code.clone()))
        .collect();
    assert_eq!(
        attempts,
        vec![
            (1, "UNAVAILABLE".into()),
            (2, "UNAVAILABLE".into()),
            (3, "UNAVAILABLE".into()),
            (4, "OK".into())
        ],
        "each attempt's outcome is recorded"
    );
    assert_eq!(
        tx.events
            .iter()
            .filter(|e| e.kind == "retry_scheduled")
            .count(),
        3
    );
}

async fn expired_trying_transaction_is_rolled_back(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (a, _b) = two_participants(&db, &coord).await;
    let mut c = coord.client().await;
    let gid = c
        .begin(begin_req("", Some(Duration::from_millis(400))))
        .await
        .unwrap()
        .into_inner()
        .gid;
    c.r#try(try_req(&gid, "bank-a", "debit")).await.unwrap();
    let tx = wait_status(&mut c, &gid, S::Cancelled, Duration::from_secs(5)).await;
    assert!(
        tx.rollback_reason.starts_with("deadline passed"),
        "{}",
        tx.rollback_reason
    );
    assert_eq!(a.calls(&gid, "1", Ph::Cancel), 1);
    let err = c.r#try(try_req(&gid, "bank-a", "debit")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

async fn endless_failures_flag_needs_attention_and_keep_retrying(db: TestDb) {
    let coord = TestCoordinator::start_with(&db, |c| c.attention_attempts = 3).await;
    let (a, _b) = two_participants(&db, &coord).await;
    a.script(Ph::Cancel, vec![], Behavior::Unavailable);
    let mut c = coord.client().await;
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    c.r#try(try_req(&gid, "bank-a", "debit")).await.unwrap();
    rollback_tx(&mut c, &gid, "stop", false).await.unwrap();
    assert!(
        a.wait_until(Duration::from_secs(10), |p| p.calls(&gid, "1", Ph::Cancel)
            >= 5)
            .await,
        "keeps retrying after the flag"
    );
    let tx = get_tx(&mut c, &gid).await;
    assert_eq!(status_of(&tx), S::Cancelling);
    assert!(tx.needs_attention);
    assert!(
        tx.attention_reason
            .contains("branch 1 (bank-a.debit) cancel failing"),
        "{}",
        tx.attention_reason
    );
    assert!(
        tx.attention_reason
            .contains("UNAVAILABLE participant is down")
    );
    assert_eq!(
        tx.events
            .iter()
            .filter(|e| e.kind == "needs_attention")
            .count(),
        1
    );
    assert!(tx.next_attempt_at.is_some());

    // Once the participant recovers, the transaction finishes.
    a.script(Ph::Cancel, vec![], Behavior::Ok);
    wait_status(&mut c, &gid, S::Cancelled, Duration::from_secs(5)).await;
}

async fn wait_returns_deadline_exceeded_while_work_goes_on(db: TestDb) {
    let coord = TestCoordinator::start_with(&db, |c| c.max_wait = Duration::from_millis(300)).await;
    let (a, _b) = two_participants(&db, &coord).await;
    a.script(Ph::Confirm, vec![Behavior::Unavailable; 4], Behavior::Ok);
    let mut c = coord.client().await;
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    c.r#try(try_req(&gid, "bank-a", "debit")).await.unwrap();
    let err = commit_tx(&mut c, &gid, true).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(
        err.message().contains("still confirming"),
        "{}",
        err.message()
    );
    wait_status(&mut c, &gid, S::Confirmed, Duration::from_secs(10)).await;
}

async fn begin_is_idempotent_for_the_same_request_only(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let mut c = coord.client().await;
    let first = c
        .begin(begin_req("g-1", Some(Duration::from_secs(20))))
        .await
        .unwrap()
        .into_inner();
    let again = c
        .begin(begin_req("g-1", Some(Duration::from_secs(20))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    let err = c
        .begin(begin_req("g-1", Some(Duration::from_secs(21))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

async fn calls_are_balanced_across_endpoints_and_registration_survives_restart(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let a1 = TestParticipant::start("stock", None).await;
    let a2 = TestParticipant::start("stock", None).await;
    a1.register(&coord, &["reserve"]).await;
    a2.register(&coord, &["reserve"]).await;
    a1.register(&coord, &["reserve"]).await; // idempotent
    coord.shutdown();

    let coord = TestCoordinator::start(&db).await;
    let mut r = coord.registry().await;
    let list = r
        .list_participants(pb::ListParticipantsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.participants.len(), 1);
    assert_eq!(list.participants[0].endpoints.len(), 2);
    let mut c = coord.client().await;
    for _ in 0..20 {
        let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
        c.r#try(try_req(&gid, "stock", "reserve")).await.unwrap();
        commit_tx(&mut c, &gid, true).await.unwrap();
    }
    let (n1, n2) = (a1.total_calls(Ph::Try), a2.total_calls(Ph::Try));
    assert_eq!(n1 + n2, 20);
    assert!(
        n1 >= 3 && n2 >= 3,
        "calls spread over endpoints: {n1} / {n2}"
    );

    // One endpoint down: calls go to the healthy one once its breaker opens.
    a1.stop();
    let mut ok = 0;
    for _ in 0..12 {
        let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
        if c.r#try(try_req(&gid, "stock", "reserve")).await.is_ok() {
            ok += 1;
        }
    }
    assert!(ok >= 6, "most tries reach the healthy endpoint: {ok}/12");
}

on_both_stores!(
    commit_without_wait_replies_after_the_durable_decision,
    try_timeout_is_unavailable_and_the_branch_is_still_cancelled,
    confirm_is_retried_while_the_participant_is_down,
    expired_trying_transaction_is_rolled_back,
    endless_failures_flag_needs_attention_and_keep_retrying,
    wait_returns_deadline_exceeded_while_work_goes_on,
    begin_is_idempotent_for_the_same_request_only,
    calls_are_balanced_across_endpoints_and_registration_survives_restart,
    commit_confirms_every_branch_exactly_once,
    rejected_try_then_rollback_cancels_every_branch,
);
