//! Operator control of one branch (issue 14): retry one branch now, skip a
//! stuck Confirm, Cancel or compensation after a human did its work by
//! hand (shown as skipped, never as succeeded; the transaction finishes
//! once every branch is done or skipped), through the real `concord` CLI
//! and the admin API, recorded with the actor.

use std::time::Duration;

use concord_proto::v1::{self as pb, TransactionStatus as S};
use serde_json::Value;
use tonic::Code;

use crate::admin::*;
use crate::harness::*;

/// Polls until `check` holds for the transaction's detail.
async fn until(
    a: &mut Admin,
    gid: &str,
    what: &str,
    check: impl Fn(&pb::TransactionDetail) -> bool,
) -> pb::TransactionDetail {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = detail(a, gid).await;
        if check(&d) {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {what}: {d:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status(d: &pb::TransactionDetail) -> i32 {
    d.transaction.as_ref().unwrap().status
}

/// Two branches, `bank-a.debit` (1) and `bank-b.debit` (2), committed.
async fn two_branches(coord: &TestCoordinator, gid: &str) {
    let mut c = coord.client().await;
    c.begin(begin_req(gid, None)).await.unwrap();
    c.r#try(try_req(gid, "bank-a", "debit")).await.unwrap();
    c.r#try(try_req(gid, "bank-b", "debit")).await.unwrap();
    commit(coord, gid).await;
}

async fn cli_retries_one_branch_and_skips_a_stuck_confirm(db: TestDb) {
    // The coordinator's own next retry is a minute away: only the
    // operator's commands make anything happen within this test.
    let coord = coordinator(&db, Duration::from_secs(60)).await;
    let a_bank = TestParticipant::start_on("bank-a", &db).await;
    let b_bank = TestParticipant::start_on("bank-b", &db).await;
    a_bank.register(&coord, &["debit"]).await;
    b_bank.register(&coord, &["debit"]).await;
    b_bank.script(Ph::Confirm, vec![], Behavior::Unavailable);
    two_branches(&coord, "t-1").await;
    let mut a = admin(&coord, Some(TOKEN)).await;
    until_flagged(&mut a, "t-1").await;
    assert_eq!(b_bank.calls("t-1", "2", Ph::Confirm), 1);

    // Retry branch 2 now: it is called again at once.
    let run = cli(
        &coord,
        Some(TOKEN),
        &[
            "tx",
            "branch",
            "retry",
            "t-1",
            "2",
            "--note",
            "b redeployed",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("branch 2: retry scheduled now"),
        "{}",
        run.stdout
    );
    until(&mut a, "t-1", "called again", |_| {
        b_bank.calls("t-1", "2", Ph::Confirm) >= 2
    })
    .await;

    // Branch 1 owes nothing: refused, nothing changes.
    let run = cli(&coord, Some(TOKEN), &["tx", "branch", "retry", "t-1", "1"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("branch 1 (bank-a.debit) owes no call: its confirm is succeeded"),
        "{}",
        run.stderr
    );
    let run = cli(
        &coord,
        Some(TOKEN),
        &["tx", "branch", "skip", "t-1", "1", "--note", "x", "--yes"],
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("owes no call"), "{}", run.stderr);
    // No note: a usage error.
    let run = cli(
        &coord,
        Some(TOKEN),
        &["tx", "branch", "skip", "t-1", "2", "--yes"],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    // A branch that does not exist.
    let run = cli(
        &coord,
        Some(TOKEN),
        &["tx", "branch", "skip", "t-1", "7", "--note", "x", "--yes"],
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("transaction has no branch 7"),
        "{}",
        run.stderr
    );
    assert_eq!(status(&detail(&mut a, "t-1").await), S::Confirming as i32);

    // Skip branch 2 after confirming it by hand: the transaction finishes.
    let run = cli(
        &coord,
        Some(TOKEN),
        &[
            "tx",
            "branch",
            "skip",
            "t-1",
            "2",
            "--note",
            "debit confirmed by hand, OPS-7",
            "--yes",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json = run.json();
    assert_eq!(json["changed"], true);
    assert_eq!(json["transaction"]["status"], "confirmed", "{json}");
    let calls = b_bank.calls("t-1", "2", Ph::Confirm);

    let show = cli(&coord, Some(TOKEN), &["tx", "show", "t-1", "-o", "json"])
        .await
        .json();
    let b2 = &show["branches"][1];
    let confirm = b2["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "confirm")
        .unwrap();
    assert_eq!(
        confirm["status"], "skipped",
        "skipped, never succeeded: {b2}"
    );
    assert_eq!(b2["skipped"]["by"], "alice");
    assert_eq!(b2["skipped"]["note"], "debit confirmed by hand, OPS-7");
    let b1_confirm = show["branches"][0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "confirm")
        .unwrap()
        .clone();
    assert_eq!(b1_confirm["status"], "succeeded");
    let events = show["events"].as_array().unwrap();
    let skip = events
        .iter()
        .find(|e| e["kind"] == "operator_skip")
        .expect("skip recorded");
    assert_eq!(skip["actor"], "alice");
    assert_eq!(skip["branch_id"], "2");
    assert_eq!(skip["phase"], "confirm");
    assert_eq!(skip["message"], "debit confirmed by hand, OPS-7");
    let retry = events
        .iter()
        .find(|e| e["kind"] == "operator_retry_branch")
        .expect("retry recorded");
    assert_eq!(
        (retry["actor"].clone(), retry["branch_id"].clone()),
        (Value::from("alice"), Value::from("2"))
    );
    assert_eq!(kinds(events).last(), Some(&"finished"));
    let text = cli(&coord, Some(TOKEN), &["tx", "show", "t-1"]).await;
    assert!(
        text.stdout
            .contains("branch 2 skipped by alice: debit confirmed by hand, OPS-7"),
        "{}",
        text.stdout
    );

    // Final: nothing more; the participant is not called again.
    let run = cli(
        &coord,
        Some(TOKEN),
        &[
            "tx", "branch", "skip", "t-1", "2", "--note", "again", "--yes",
        ],
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("it is finished"), "{}", run.stderr);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b_bank.calls("t-1", "2", Ph::Confirm), calls);
}

async fn skipping_one_of_two_stuck_branches_leaves_the_other_driven(db: TestDb) {
    let coord = coordinator(&db, Duration::from_secs(60)).await;
    let a_bank = TestParticipant::start_on("bank-a", &db).await;
    let b_bank = TestParticipant::start_on("bank-b", &db).await;
    a_bank.register(&coord, &["debit"]).await;
    b_bank.register(&coord, &["debit"]).await;
    a_bank.script(Ph::Confirm, vec![], Behavior::Unavailable);
    b_bank.script(Ph::Confirm, vec![Behavior::Unavailable], Behavior::Ok);
    two_branches(&coord, "t-2").await;
    let mut a = admin(&coord, Some(TOKEN)).await;
    until_flagged(&mut a, "t-2").await;
    let reply = a
        .skip_branch(pb::SkipBranchRequest {
            gid: "t-2".into(),
            branch_id: "1".into(),
            note: "credited by hand".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.changed);
    assert_eq!(
        reply.message,
        "branch 1: confirm skipped; the other branches are still driven"
    );
    // It was made due: branch 2 is called (and now confirms), branch 1 not.
    let calls_a = a_bank.calls("t-2", "1", Ph::Confirm);
    let d = until(&mut a, "t-2", "confirmed", |d| {
        status(d) == S::Confirmed as i32
    })
    .await;
    assert_eq!(
        a_bank.calls("t-2", "1", Ph::Confirm),
        calls_a,
        "a skipped branch is not called"
    );
    let confirm = |b: &pb::BranchDetail| {
        b.phases
            .iter()
            .find(|p| p.phase == "confirm")
            .unwrap()
            .status
    };
    assert_eq!(confirm(&d.branches[0]), pb::CallStatus::Skipped as i32);
    assert_eq!(confirm(&d.branches[1]), pb::CallStatus::Succeeded as i32);
    assert_eq!(d.branches[0].skip.as_ref().unwrap().skipped_by, "alice");
    // An empty note is refused.
    let err = a
        .skip_branch(pb::SkipBranchRequest {
            gid: "t-2".into(),
            branch_id: "2".into(),
            note: "  ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "note is required")
    );
}

async fn skipping_a_stuck_compensation_compensates_the_saga(db: TestDb) {
    let coord = coordinator(&db, Duration::from_secs(60)).await;
    let order = TestParticipant::start_on("order", &db).await;
    let pay = TestParticipant::start_on("pay", &db).await;
    order.register(&coord, &["create", "cancel"]).await;
    pay.register(&coord, &["charge", "refund"]).await;
    order.script(Ph::Compensate, vec![], Behavior::Unavailable);
    pay.script(Ph::Execute, vec![], Behavior::Abort("card declined"));
    let step = |p: &str, a: &str, c: &str| pb::SagaStep {
        participant: p.into(),
        action: a.into(),
        compensation: c.into(),
        payload: b"{}".to_vec(),
        ..Default::default()
    };
    let reply = coord
        .client()
        .await
        .submit_saga(pb::SubmitSagaRequest {
            gid: "s-1".into(),
            steps: vec![
                step("order", "create", "cancel"),
                step("pay", "charge", "refund"),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut a = admin(&coord, Some(TOKEN)).await;
    until_flagged(&mut a, &reply.gid).await;
    // Step 2 was rejected (and compensated); step 1's compensation is stuck.
    let err = a
        .skip_branch(pb::SkipBranchRequest {
            gid: "s-1".into(),
            branch_id: "2".into(),
            note: "n".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("compensate is succeeded"),
        "{}",
        err.message()
    );
    let reply = a
        .skip_branch(pb::SkipBranchRequest {
            gid: "s-1".into(),
            branch_id: "1".into(),
            note: "order cancelled by hand".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.transaction.unwrap().status, S::Compensated as i32);
    let d = detail(&mut a, "s-1").await;
    let compensate = d.branches[0]
        .phases
        .iter()
        .find(|p| p.phase == "compensate")
        .unwrap();
    assert_eq!(compensate.status, pb::CallStatus::Skipped as i32);
}

async fn branch_commands_are_refused_while_trying_and_retry_while_paused(db: TestDb) {
    let coord = coordinator(&db, Duration::from_secs(60)).await;
    let bank = TestParticipant::start_on("bank-a", &db).await;
    bank.register(&coord, &["debit"]).await;
    tried(&coord, "t-3", "bank-a").await;
    let mut a = admin(&coord, Some(TOKEN)).await;
    let err = a
        .skip_branch(pb::SkipBranchRequest {
            gid: "t-3".into(),
            branch_id: "1".into(),
            note: "n".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .contains("transaction is trying; only a branch of a phase 2"),
        "{}",
        err.message()
    );
    let err = a
        .retry_branch(pb::RetryBranchRequest {
            gid: "t-3".into(),
            branch_id: "1".into(),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = a
        .retry_branch(pb::RetryBranchRequest {
            gid: "t-3".into(),
            branch_id: "not a branch!".into(),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Without a token: refused.
    let mut anonymous = admin(&coord, None).await;
    let err = anonymous
        .retry_branch(pb::RetryBranchRequest {
            gid: "t-3".into(),
            branch_id: "1".into(),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

fn outcomes(json: &Value) -> Vec<(String, String)> {
    json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["gid"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn bulk_commands_by_filter_with_dry_run_and_a_result_each(db: TestDb) {
    let coord = coordinator(&db, Duration::from_secs(60)).await;
    let good = TestParticipant::start_on("bank-a", &db).await;
    let bad = TestParticipant::start_on("bank-b", &db).await;
    good.register(&coord, &["debit"]).await;
    bad.register(&coord, &["debit"]).await;
    bad.script(Ph::Confirm, vec![], Behavior::Unavailable);
    let mut a = admin(&coord, Some(TOKEN)).await;
    for gid in ["stuck-1", "stuck-2", "stuck-3"] {
        tried(&coord, gid, "bank-b").await;
        commit(&coord, gid).await;
        until_flagged(&mut a, gid).await;
    }
    tried(&coord, "open-1", "bank-a").await;
    let stuck = |outcome: &str| {
        ["stuck-1", "stuck-2", "stuck-3"]
            .iter()
            .map(|g| (g.to_string(), outcome.to_string()))
            .collect::<Vec<_>>()
    };

    // Without a filter: refused, nothing reaches every transaction.
    let run = cli(&coord, Some(TOKEN), &["tx", "bulk", "pause", "--yes"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("give at least one filter"),
        "{}",
        run.stderr
    );

    // A dry run says which and how many, and changes nothing.
    let run = cli(
        &coord,
        Some(TOKEN),
        &[
            "tx",
            "bulk",
            "retry",
            "--participant",
            "bank-b",
            "--dry-run",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json = run.json();
    assert_eq!(json["dry_run"], true);
    assert_eq!(outcomes(&json), stuck("would_change"));
    let text = cli(
        &coord,
        Some(TOKEN),
        &[
            "tx",
            "bulk",
            "retry",
            "--participant",
            "bank-b",
            "--dry-run",
        ],
    )
    .await;
    assert!(
        text.stdout.starts_with(
            "3 of 3 transactions would change (0 unchanged, 0 refused); dry run, nothing changed\n"
        ),
        "{}",
        text.stdout
    );
    let d = detail(&mut a, "stuck-1").await;
    assert!(
        !d.events.iter().any(|e| e.kind.starts_with("operator_")),
        "{:#?}",
        d.events
    );

    // Pause every one that needs attention: one result each, recorded
    // with the actor.
    let run = cli(
        &coord,
        Some(TOKEN),
        &[
            "tx",
            "bulk",
            "pause",
            "--needs-attention",
            "--yes",
            "--note",
            "db repair",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(outcomes(&run.json()), stuck("changed"));
    for gid in ["stuck-1", "stuck-2", "stuck-3"] {
        let d = detail(&mut a, gid).await;
        assert!(d.transaction.as_ref().unwrap().paused);
        let pause = d
            .events
            .iter()
            .find(|e| e.kind == "operator_pause")
            .unwrap();
        assert_eq!(
            (pause.actor.as_str(), pause.message.as_str()),
            ("alice", "db repair")
        );
    }
    assert!(!detail(&mut a, "open-1").await.transaction.unwrap().paused);
    // Again: nothing would change, nothing is asked or written.
    let run = cli(
        &coord,
        Some(TOKEN),
        &[
            "tx",
            "bulk",
            "pause",
            "--needs-attention",
            "--yes",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(run.code, 0);
    assert_eq!(outcomes(&run.json()), stuck("unchanged"));

    // Retry is refused while paused: the dry run says so, nothing to do.
    let run = cli(
        &coord,
        Some(TOKEN),
        &[
            "tx",
            "bulk",
            "retry",
            "--needs-attention",
            "--dry-run",
            "-o",
            "json",
        ],
    )
    .await;
    let json = run.json();
    assert_eq!(outcomes(&json), stuck("refused"));
    assert_eq!(
        json["results"][0]["message"],
        "transaction is paused; resume it to retry"
    );

    // Through the API, `gids` narrows what was matched to what a human
    // confirmed.
    let reply = a
        .bulk_act(pb::BulkActRequest {
            action: pb::BulkAction::Resume as i32,
            filter: Some(pb::ListTransactionsRequest {
                participant: "bank-b".into(),
                ..Default::default()
            }),
            gids: vec!["stuck-2".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.results.len(), 1);
    assert_eq!(
        (
            reply.results[0].gid.as_str(),
            reply.results[0].outcome.as_str()
        ),
        ("stuck-2", "changed")
    );
    assert!(detail(&mut a, "stuck-1").await.transaction.unwrap().paused);

    // Resolve needs a note.
    let run = cli(
        &coord,
        Some(TOKEN),
        &["tx", "bulk", "resolve", "--needs-attention", "--yes"],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("note is required"), "{}", run.stderr);
    let run = cli(
        &coord,
        Some(TOKEN),
        &[
            "tx",
            "bulk",
            "resolve",
            "--needs-attention",
            "--note",
            "reversed by hand, OPS-9",
            "--yes",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(outcomes(&run.json()), stuck("changed"));
    for gid in ["stuck-1", "stuck-2", "stuck-3"] {
        let t = detail(&mut a, gid).await.transaction.unwrap();
        assert_eq!(t.resolution.unwrap().resolved_by, "alice");
    }
    // Resolved ones refuse everything: nothing would change, nothing is
    // asked or written.
    let run = cli(
        &coord,
        Some(TOKEN),
        &["tx", "bulk", "pause", "--gid-prefix", "stuck-", "--yes"],
    )
    .await;
    assert_eq!(run.code, 0, "nothing would change: {}", run.stdout);
    assert!(
        run.stdout
            .starts_with("0 of 3 transactions would change (0 unchanged, 3 refused)"),
        "{}",
        run.stdout
    );
}

on_both_stores!(
    cli_retries_one_branch_and_skips_a_stuck_confirm,
    skipping_one_of_two_stuck_branches_leaves_the_other_driven,
    skipping_a_stuck_compensation_compensates_the_saga,
    branch_commands_are_refused_while_trying_and_retry_while_paused,
    bulk_commands_by_filter_with_dry_run_and_a_result_each,
);
