//! The admin API and the real `concord` CLI binary against a coordinator and
//! a participant that fails on purpose: list → show → retry → resolve,
//! authentication, illegal commands refused, and resolution fencing out a
//! driver that is still in flight.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use concord::auth::AdminTokens;
use concord::cli::Bearer;
use concord_proto::v1::admin_client::AdminClient;
use concord_proto::v1::{self as pb, TransactionStatus as S};
use serde_json::Value;
use tokio::sync::Notify;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::harness::*;

pub(crate) const TOKEN: &str = "s3cret";

/// A coordinator that flags a transaction after its first failed round and
/// then waits `backoff` before the next, so that only an operator's retry
/// makes it call again soon.
pub(crate) async fn coordinator(db: impl Into<TestDb>, backoff: Duration) -> TestCoordinator {
    TestCoordinator::start_with(db, |c| {
        c.admin_tokens = AdminTokens::parse_list("alice:s3cret,ops-bot:t0ken").unwrap();
        c.attention_attempts = 1;
        c.retry.initial = backoff;
        c.retry.max = backoff;
    })
    .await
    .with_token(TOKEN)
}

pub(crate) type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

pub(crate) async fn admin(coord: &TestCoordinator, token: Option<&str>) -> Admin {
    let channel = Channel::from_shared(coord.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    AdminClient::with_interceptor(channel, Bearer::new(token).unwrap())
}

/// Output of one run of the real binary.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not json ({e}): {}", self.stdout))
    }
}

pub(crate) async fn cli(coord: &TestCoordinator, token: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_concord"));
    cmd.args(args)
        .env("CONCORD_ENDPOINT", coord.url())
        .env_remove("CONCORD_TOKEN")
        .stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("CONCORD_TOKEN", t);
    }
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("cli finishes")
        .expect("cli runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Begins a transaction with one branch on `participant`.
pub(crate) async fn tried(coord: &TestCoordinator, gid: &str, participant: &str) {
    let mut c = coord.client().await;
    c.begin(begin_req(gid, None)).await.unwrap();
    c.r#try(try_req(gid, participant, "debit")).await.unwrap();
}

pub(crate) async fn commit(coord: &TestCoordinator, gid: &str) {
    commit_tx(&mut coord.client().await, gid, false)
        .await
        .unwrap();
}

pub(crate) async fn detail(a: &mut Admin, gid: &str) -> pb::TransactionDetail {
    a.get_transaction_detail(pb::GetTransactionDetailRequest { gid: gid.into() })
        .await
        .unwrap()
        .into_inner()
}

/// Polls until the transaction needs attention.
pub(crate) async fn until_flagged(a: &mut Admin, gid: &str) -> pb::TransactionDetail {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let d = detail(a, gid).await;
        if d.transaction.as_ref().unwrap().needs_attention {
            return d;
        }
        assert!(tokio::time::Instant::now() < until, "never flagged: {d:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["kind"].as_str().unwrap()).collect()
}

async fn cli_lists_shows_retries_and_resolves_a_stuck_transaction(db: TestDb) {
    let coord = coordinator(&db, Duration::from_secs(60)).await;
    let p = TestParticipant::start_on("bank-a", &db).await;
    p.register(&coord, &["debit"]).await;
    p.script(Ph::Confirm, vec![], Behavior::Unavailable);
    tried(&coord, "order-1", "bank-a").await;
    tried(&coord, "other-1", "bank-a").await;
    commit(&coord, "order-1").await;
    let mut a = admin(&coord, Some(TOKEN)).await;
    until_flagged(&mut a, "order-1").await;

    // list: the stuck one, as a table and as JSON.
    let run = cli(&coord, Some(TOKEN), &["tx", "list", "--needs-attention"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("GID"), "{}", run.stdout);
    assert!(run.stdout.contains("order-1") && !run.stdout.contains("other-1"));
    let list = cli(&coord, Some(TOKEN), &["tx", "list", "-o", "json"])
        .await
        .json();
    let txs = list["transactions"].as_array().unwrap();
    assert_eq!(txs.len(), 2);
    let order = txs.iter().find(|t| t["gid"] == "order-1").unwrap();
    assert_eq!(order["status"], "confirming");
    assert_eq!(order["needs_attention"], true);
    assert_eq!(order["participants"], serde_json::json!(["bank-a"]));
    assert!(order["next_attempt_at"].is_string());
    assert!(list["next_cursor"].is_null());

    // show: why it is stuck, per-phase branch detail, the history.
    let show = cli(
        &coord,
        Some(TOKEN),
        &["tx", "show", "order-1", "-o", "json"],
    )
    .await
    .json();
    let why = show["blocked_by"].as_str().unwrap();
    assert!(
        why.starts_with("branch 1 (bank-a.debit) confirm failing for")
            && why.contains("UNAVAILABLE participant is down, next retry in"),
        "{why}"
    );
    let phases = show["branches"][0]["phases"].as_array().unwrap();
    assert_eq!(phases[0]["phase"], "try");
    assert_eq!(phases[0]["status"], "succeeded");
    assert_eq!(phases[1]["phase"], "confirm");
    assert_eq!(phases[1]["status"], "unknown");
    assert_eq!(phases[1]["last_code"], "UNAVAILABLE");
    assert!(kinds(show["events"].as_array().unwrap()).contains(&"needs_attention"));
    let text = cli(&coord, Some(TOKEN), &["tx", "show", "order-1"]).await;
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("why") && text.stdout.contains("confirm failing"));
    assert!(!text.stdout.contains('\x1b'), "no colour off a terminal");

    // retry: the next call comes at once instead of after 60 s.
    let calls = p.calls("order-1", "1", Ph::Confirm);
    let retry = cli(
        &coord,
        Some(TOKEN),
        &[
            "tx",
            "retry",
            "order-1",
            "--note",
            "db is back",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(retry.code, 0, "{}", retry.stderr);
    assert_eq!(retry.json()["changed"], true);
    assert!(
        p.wait_until(Duration::from_secs(5), |p| p.calls(
            "order-1",
            "1",
            Ph::Confirm
        ) > calls)
            .await,
        "retry woke the recovery loop"
    );

    // resolve: refused without a note, then recorded with actor and note.
    let usage = cli(&coord, Some(TOKEN), &["tx", "resolve", "order-1", "--yes"]).await;
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    let resolved = cli(
        &coord,
        Some(TOKEN),
        &[
            "tx",
            "resolve",
            "order-1",
            "--note",
            "confirmed by hand in bank-a",
            "--yes",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(resolved.code, 0, "{}", resolved.stderr);
    let tx = &resolved.json()["transaction"];
    assert_eq!(tx["resolution"]["resolved_by"], "alice");
    assert_eq!(tx["needs_attention"], false);
    assert!(tx["next_attempt_at"].is_null());
    let show = cli(
        &coord,
        Some(TOKEN),
        &["tx", "show", "order-1", "-o", "json"],
    )
    .await
    .json();
    assert!(
        show["blocked_by"]
            .as_str()
            .unwrap()
            .starts_with("resolved by hand by alice")
    );
    let events = show["events"].as_array().unwrap();
    let ops: Vec<(&str, &str, &str)> = events
        .iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("operator_"))
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
                e["message"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("operator_retry", "alice", "db is back"),
            ("operator_resolve", "alice", "confirmed by hand in bank-a")
        ]
    );
    let text = cli(&coord, Some(TOKEN), &["tx", "list"]).await;
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("order-1") && l.contains("resolved")),
        "{}",
        text.stdout
    );

    // Nothing more happens to it.
    let again = cli(&coord, Some(TOKEN), &["tx", "retry", "order-1"]).await;
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("resolved by alice"),
        "{}",
        again.stderr
    );
    let idle = db
        .number(
            "SELECT count(*) FROM global_transactions
              WHERE gid = 'order-1' AND next_attempt_at IS NULL AND owner IS NULL",
        )
        .await;
    assert_eq!(idle, 1, "no next attempt, no owner");

    let stats = cli(&coord, Some(TOKEN), &["stats", "-o", "json"])
        .await
        .json();
    assert_eq!(stats["resolved"], 1);
    assert_eq!(stats["needs_attention"], 0);
    assert_eq!(stats["by_status"]["trying"], 1);
    assert_eq!(stats["oldest_unfinished"]["gid"], "other-1");

    let parts = cli(&coord, Some(TOKEN), &["participants", "list", "-o", "json"])
        .await
        .json();
    let ep = &parts["participants"][0]["endpoints"][0];
    assert_eq!(parts["participants"][0]["name"], "bank-a");
    assert!(ep["recent_failures"].as_u64().unwrap() >= 1, "{ep}");
    assert!(ep["last_success_at"].is_string(), "the tries succeeded");
    assert!(ep["breaker"].is_string());

    let missing = cli(&coord, Some(TOKEN), &["tx", "show", "no-such-gid"]).await;
    assert_eq!(missing.code, 3, "{}", missing.stderr);
    assert!(missing.stdout.is_empty());
}

async fn calls_without_a_valid_token_are_refused(db: TestDb) {
    let coord = coordinator(&db, Duration::from_secs(1)).await;
    let none = cli(&coord, None, &["stats"]).await;
    assert_eq!(none.code, 1);
    assert!(
        none.stderr.contains("missing bearer token"),
        "{}",
        none.stderr
    );
    let wrong = cli(&coord, Some("s3cre"), &["tx", "list"]).await;
    assert_eq!(wrong.code, 1);
    assert!(wrong.stderr.contains("invalid token"), "{}", wrong.stderr);
    assert!(wrong.stdout.is_empty());
    for token in [None, Some("nope")] {
        let err = admin(&coord, token)
            .await
            .get_stats(pb::GetStatsRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    // The second token works too; an admin token also drives transactions
    // (the harness's clients present the first one).
    assert!(
        admin(&coord, Some("t0ken"))
            .await
            .get_stats(pb::GetStatsRequest {})
            .await
            .is_ok()
    );
    coord
        .client()
        .await
        .begin(begin_req("open", None))
        .await
        .unwrap();

    // No tokens configured: the admin API is closed (in the first one's
    // place: a SQLite file admits one instance).
    coord.shutdown();
    let closed = TestCoordinator::start(&db).await;
    let err = admin(&closed, Some(TOKEN))
        .await
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("disabled"), "{}", err.message());
}

async fn illegal_operator_commands_are_refused_and_change_nothing(db: TestDb) {
    let coord = coordinator(&db, Duration::from_secs(60)).await;
    let p = TestParticipant::start_on("bank-a", &db).await;
    p.register(&coord, &["debit"]).await;
    let hold = Arc::new(Notify::new());
    p.script(
        Ph::Confirm,
        vec![Behavior::Block(hold.clone())],
        Behavior::Ok,
    );
    tried(&coord, "confirming", "bank-a").await;
    commit(&coord, "confirming").await;
    tried(&coord, "trying", "bank-a").await;
    let mut a = admin(&coord, Some(TOKEN)).await;
    let before = detail(&mut a, "confirming").await;

    let run = cli(
        &coord,
        Some(TOKEN),
        &["tx", "rollback", "confirming", "--reason", "oops", "--yes"],
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("refused") && run.stderr.contains("after a commit decision"),
        "{}",
        run.stderr
    );
    let err = a
        .resolve_transaction(pb::ResolveTransactionRequest {
            gid: "confirming".into(),
            note: "n".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("does not need attention"));
    let err = a
        .retry_transaction(pb::RetryTransactionRequest {
            gid: "trying".into(),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = a
        .resolve_transaction(pb::ResolveTransactionRequest {
            gid: "confirming".into(),
            note: "  ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let after = detail(&mut a, "confirming").await;
    assert_eq!(after.events, before.events, "nothing was written");
    assert_eq!(after.transaction.unwrap().status, S::Confirming as i32);

    // Pause twice is a no-op the second time; retry while paused is refused.
    let paused = cli(
        &coord,
        Some(TOKEN),
        &["tx", "pause", "trying", "-o", "json"],
    )
    .await;
    assert_eq!(paused.json()["changed"], true);
    let again = cli(
        &coord,
        Some(TOKEN),
        &["tx", "pause", "trying", "-o", "json"],
    )
    .await;
    assert_eq!(
        (again.code, &again.json()["changed"]),
        (0, &Value::Bool(false))
    );
    let resumed = cli(&coord, Some(TOKEN), &["tx", "resume", "trying"]).await;
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);

    // A trying transaction may be rolled back, by the engine's rules.
    let run = cli(
        &coord,
        Some(TOKEN),
        &[
            "tx",
            "rollback",
            "trying",
            "--reason",
            "customer gave up",
            "--yes",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut c = coord.client().await;
    let tx = wait_status(&mut c, "trying", S::Cancelled, Duration::from_secs(5)).await;
    assert_eq!(tx.rollback_reason, "operator alice: customer gave up");
    let op = tx
        .events
        .iter()
        .find(|e| e.kind == "operator_rollback")
        .expect("operator event");
    assert_eq!(
        (op.actor.as_str(), op.message.as_str()),
        ("alice", "customer gave up")
    );
    let kinds: Vec<&str> = tx.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| k.starts_with("operator_")).count(),
        3,
        "pause, resume, rollback (the no-op pause wrote nothing): {kinds:?}"
    );
    hold.notify_waiters();
}

async fn resolution_fences_out_a_driver_in_flight(db: TestDb) {
    let coord = coordinator(&db, Duration::from_millis(100)).await;
    let p = TestParticipant::start_on("bank-a", &db).await;
    p.register(&coord, &["debit"]).await;
    let hold = Arc::new(Notify::new());
    p.script(
        Ph::Confirm,
        vec![Behavior::Unavailable, Behavior::Block(hold.clone())],
        Behavior::Ok,
    );
    tried(&coord, "g", "bank-a").await;
    commit(&coord, "g").await;
    let mut a = admin(&coord, Some(TOKEN)).await;
    until_flagged(&mut a, "g").await;
    // The second round is in flight, blocked in the participant.
    assert!(
        p.wait_until(Duration::from_secs(5), |p| p.calls("g", "1", Ph::Confirm)
            == 2)
            .await
    );
    a.resolve_transaction(pb::ResolveTransactionRequest {
        gid: "g".into(),
        note: "fixed by hand".into(),
    })
    .await
    .unwrap();
    hold.notify_waiters();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = detail(&mut a, "g").await;
    let t = d.transaction.unwrap();
    assert_eq!(
        t.status,
        S::Confirming as i32,
        "the late OK did not finish it"
    );
    assert!(t.resolution.is_some() && t.finished_at.is_none());
    assert_eq!(p.calls("g", "1", Ph::Confirm), 2, "never called again");
}

async fn list_filters_and_paginates(db: TestDb) {
    let coord = coordinator(&db, Duration::from_secs(1)).await;
    let mut c = coord.client().await;
    for i in 0..5 {
        c.begin(begin_req(&format!("batch-{i}"), None))
            .await
            .unwrap();
    }
    c.begin(begin_req("solo", None)).await.unwrap();
    rollback_tx(&mut c, "solo", "r", true).await.unwrap();
    let mut a = admin(&coord, Some(TOKEN)).await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = a
            .list_transactions(pb::ListTransactionsRequest {
                gid_prefix: "batch-".into(),
                page_size: 2,
                cursor: cursor.clone(),
                oldest_first: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.transactions.len() <= 2);
        seen.extend(page.transactions.into_iter().map(|t| t.gid));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(
        seen,
        ["batch-0", "batch-1", "batch-2", "batch-3", "batch-4"]
    );
    let cancelled = a
        .list_transactions(pb::ListTransactionsRequest {
            statuses: vec![S::Cancelled as i32, S::Cancelling as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.transactions.len(), 1);
    assert_eq!(cancelled.transactions[0].gid, "solo");
    let stuck = a
        .list_transactions(pb::ListTransactionsRequest {
            stuck_for: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stuck.transactions.is_empty(), "nothing is an hour old");
    let bad = a
        .list_transactions(pb::ListTransactionsRequest {
            cursor: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let usage = cli(&coord, Some(TOKEN), &["tx", "list", "--status", "done"]).await;
    assert_eq!(usage.code, 2, "{}", usage.stderr);
}

/// `tx show` of a saga submitted without a timeout: "deadline none" (null
/// in JSON) while it runs, and no deadline line once it has finished.
async fn tx_show_of_a_saga_without_deadline(db: TestDb) {
    let coord = coordinator(&db, Duration::from_secs(60)).await;
    let p = TestParticipant::start_on("shop", &db).await;
    p.register(&coord, &["ship", "unship"]).await;
    let hold = Arc::new(Notify::new());
    p.script(
        Ph::Execute,
        vec![Behavior::Block(hold.clone())],
        Behavior::Ok,
    );
    let saga = pb::SubmitSagaRequest {
        gid: "saga-1".into(),
        steps: vec![pb::SagaStep {
            participant: "shop".into(),
            action: "ship".into(),
            compensation: "unship".into(),
            ..Default::default()
        }],
        timeout: None,
        ..Default::default()
    };
    coord.client().await.submit_saga(saga).await.unwrap();
    let deadline_line = |text: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with("deadline "))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
    };

    let running = cli(&coord, Some(TOKEN), &["tx", "show", "saga-1"]).await;
    assert_eq!(running.code, 0, "{}", running.stderr);
    assert!(running.stdout.contains("running"), "{}", running.stdout);
    assert_eq!(
        deadline_line(&running.stdout).as_deref(),
        Some("none"),
        "{}",
        running.stdout
    );
    let json = cli(&coord, Some(TOKEN), &["tx", "show", "saga-1", "-o", "json"]).await;
    assert!(
        json.json()["transaction"]["deadline"].is_null(),
        "{}",
        json.stdout
    );

    hold.notify_one();
    let mut a = admin(&coord, Some(TOKEN)).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while detail(&mut a, "saga-1").await.transaction.unwrap().status != S::Succeeded as i32 {
        assert!(
            tokio::time::Instant::now() < until,
            "the saga never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = cli(&coord, Some(TOKEN), &["tx", "show", "saga-1"]).await;
    assert!(done.stdout.contains("succeeded"), "{}", done.stdout);
    assert_eq!(deadline_line(&done.stdout), None, "{}", done.stdout);
}

on_both_stores!(
    cli_lists_shows_retries_and_resolves_a_stuck_transaction,
    calls_without_a_valid_token_are_refused,
    resolution_fences_out_a_driver_in_flight,
    tx_show_of_a_saga_without_deadline,
    a_paused_message_runs_nothing_until_resumed,
    illegal_operator_commands_are_refused_and_change_nothing,
    list_filters_and_paginates,
);

/// A message paused by an operator while prepared and then submitted by
/// its initiator does not run its steps until it is resumed: the submit
/// is recorded, the execution waits (the recovery loop claims no paused
/// transaction, and the submitting instance does not run it either).
async fn a_paused_message_runs_nothing_until_resumed(db: TestDb) {
    let coord = coordinator(&db, Duration::from_millis(100)).await;
    let stock = TestParticipant::start_on("stock", &db).await;
    stock.register(&coord, &["reserve"]).await;
    let mut c = coord.client().await;
    c.prepare_message(pb::PrepareMessageRequest {
        gid: "m-paused".into(),
        steps: vec![pb::MessageStep {
            participant: "stock".into(),
            action: "reserve".into(),
            payload: b"{}".to_vec(),
            call_timeout: None,
        }],
        query_endpoint: "http://127.0.0.1:9".into(),
        query_protocol: pb::Protocol::Http as i32,
        timeout: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        metadata: Default::default(),
    })
    .await
    .unwrap();
    let mut a = admin(&coord, Some(TOKEN)).await;
    a.pause_transaction(pb::PauseTransactionRequest {
        gid: "m-paused".into(),
        note: "stock is being migrated".into(),
    })
    .await
    .unwrap();
    c.submit_message(pb::SubmitMessageRequest {
        gid: "m-paused".into(),
        wait: false,
    })
    .await
    .unwrap();
    // Well past the poll interval and the lease: still nothing called.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stock.total_calls(Ph::Execute), 0, "a paused message ran");
    assert_eq!(status_of(&get_tx(&mut c, "m-paused").await), S::Submitted);

    a.resume_transaction(pb::ResumeTransactionRequest {
        gid: "m-paused".into(),
        note: String::new(),
    })
    .await
    .unwrap();
    wait_status(&mut c, "m-paused", S::Succeeded, Duration::from_secs(10)).await;
    assert_eq!(stock.total_calls(Ph::Execute), 1);
}
