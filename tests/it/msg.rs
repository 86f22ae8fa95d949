//! 2-phase messages end to end: prepare, then submit (every step executed
//! once, in order, a rejection retried) or abort (nothing executed); an
//! initiator that never comes back is asked back over HTTP or gRPC and its
//! answer (committed, rolled back, no answer) decides; bad requests change
//! nothing.

use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use concord_proto::participant::v1::message_initiator_server::{
    MessageInitiator, MessageInitiatorServer,
};
use concord_proto::participant::v1::{BranchRequest, BranchResponse};
use concord_proto::v1::{self as pb, TransactionStatus as S};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tonic::Code;

use crate::harness::*;

fn step(participant: &str, action: &str) -> pb::MessageStep {
    pb::MessageStep {
        participant: participant.into(),
        action: action.into(),
        payload: format!("{{\"to\":\"{participant}\"}}").into_bytes(),
        call_timeout: None,
    }
}

fn prepare(
    gid: &str,
    steps: Vec<pb::MessageStep>,
    query: &str,
    protocol: pb::Protocol,
    timeout: Duration,
) -> pb::PrepareMessageRequest {
    pb::PrepareMessageRequest {
        gid: gid.into(),
        steps,
        query_endpoint: query.into(),
        query_protocol: protocol as i32,
        timeout: Some(prost_types::Duration {
            seconds: timeout.as_secs() as i64,
            nanos: timeout.subsec_nanos() as i32,
        }),
        metadata: Default::default(),
    }
}

fn submit(gid: &str, wait: bool) -> pb::SubmitMessageRequest {
    pb::SubmitMessageRequest {
        gid: gid.into(),
        wait,
    }
}

fn abort(gid: &str) -> pb::AbortMessageRequest {
    pb::AbortMessageRequest {
        gid: gid.into(),
        reason: "stock check failed".into(),
    }
}

/// A query endpoint nobody serves (the initiator crashed for good).
const NOWHERE: &str = "http://127.0.0.1:9";

/// Two participants, checking durability in either store; the message goes
/// to both.
async fn two(db: &TestDb, coord: &TestCoordinator) -> (TestParticipant, TestParticipant) {
    let a = TestParticipant::start_on("stock", db).await;
    let b = TestParticipant::start_on("mail", db).await;
    a.register(coord, &["reserve"]).await;
    b.register(coord, &["send"]).await;
    (a, b)
}

fn steps() -> Vec<pb::MessageStep> {
    vec![step("stock", "reserve"), step("mail", "send")]
}

fn kinds(tx: &pb::Transaction) -> Vec<String> {
    tx.events.iter().map(|e| e.kind.clone()).collect()
}

/// An HTTP initiator answering the query-back with `status` (changeable),
/// counting the queries and keeping the gid header of the last one.
#[derive(Clone)]
struct HttpInitiator {
    status: Arc<AtomicU16>,
    queries: Arc<AtomicU32>,
    last_gid: Arc<Mutex<String>>,
}

impl HttpInitiator {
    async fn serve(listener: TcpListener, status: StatusCode) -> Self {
        let me = HttpInitiator {
            status: Arc::new(AtomicU16::new(status.as_u16())),
            queries: Arc::new(AtomicU32::new(0)),
            last_gid: Arc::default(),
        };
        let state = me.clone();
        let app = Router::new().route(
            "/orders/query_prepared",
            post(move |headers: HeaderMap| {
                let state = state.clone();
                async move {
                    state.queries.fetch_add(1, Ordering::SeqCst);
                    *state.last_gid.lock().unwrap() = headers
                        .get("concord-gid")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let status = StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap();
                    (status, "checked")
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        me
    }
}

/// A gRPC initiator answering the query-back with `code` (OK or another).
struct GrpcInitiator {
    code: Code,
    queries: Arc<AtomicU32>,
}

#[tonic::async_trait]
impl MessageInitiator for GrpcInitiator {
    async fn query_prepared(
        &self,
        r: tonic::Request<BranchRequest>,
    ) -> Result<tonic::Response<BranchResponse>, tonic::Status> {
        assert!(!r.get_ref().gid.is_empty());
        self.queries.fetch_add(1, Ordering::SeqCst);
        match self.code {
            Code::Ok => Ok(tonic::Response::new(BranchResponse::default())),
            code => Err(tonic::Status::new(code, "rolled back")),
        }
    }
}

async fn grpc_initiator(code: Code) -> (String, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let queries = Arc::new(AtomicU32::new(0));
    let svc = GrpcInitiator {
        code,
        queries: queries.clone(),
    };
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(MessageInitiatorServer::new(svc))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (url, queries)
}

async fn a_submitted_message_executes_every_step_once_in_order(db: TestDb) {
    let coord = TestCoordinator::start(db.clone()).await;
    let (a, b) = two(&db, &coord).await;
    let mut c = coord.client().await;
    let timeout = Duration::from_secs(30);
    let gid = c
        .prepare_message(prepare("", steps(), NOWHERE, pb::Protocol::Http, timeout))
        .await
        .unwrap()
        .into_inner()
        .gid;
    let tx = get_tx(&mut c, &gid).await;
    assert_eq!(status_of(&tx), S::Prepared);
    assert_eq!(tx.mode, pb::TransactionMode::Msg as i32);
    assert_eq!(a.total_calls(Ph::Execute) + b.total_calls(Ph::Execute), 0);
    // Preparing again with the same content is idempotent.
    c.prepare_message(prepare(&gid, steps(), NOWHERE, pb::Protocol::Http, timeout))
        .await
        .unwrap();

    let reply = c
        .submit_message(submit(&gid, true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status, S::Succeeded as i32);
    assert_eq!(a.calls(&gid, "1", Ph::Execute), 1);
    assert_eq!(b.calls(&gid, "2", Ph::Execute), 1);
    assert_eq!(
        a.total_calls(Ph::Compensate) + b.total_calls(Ph::Compensate),
        0
    );
    assert!(a.precondition_violations().is_empty());
    let tx = get_tx(&mut c, &gid).await;
    assert_eq!(
        kinds(&tx),
        ["prepared", "decided", "call", "call", "finished"],
        "{tx:#?}"
    );
    assert_eq!(tx.events[1].status, S::Submitted as i32);

    // Submit again: the same answer; abort now: refused.
    let again = c.submit_message(submit(&gid, false)).await.unwrap();
    assert_eq!(again.into_inner().status, S::Succeeded as i32);
    let err = c.abort_message(abort(&gid)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("cannot be aborted"),
        "{}",
        err.message()
    );
    assert_eq!(a.calls(&gid, "1", Ph::Execute), 1);
}

async fn an_aborted_message_executes_nothing(db: TestDb) {
    let coord = TestCoordinator::start(db.clone()).await;
    let (a, b) = two(&db, &coord).await;
    let mut c = coord.client().await;
    let req = prepare(
        "m-abort",
        steps(),
        NOWHERE,
        pb::Protocol::Http,
        Duration::from_secs(30),
    );
    c.prepare_message(req).await.unwrap();
    let reply = c
        .abort_message(abort("m-abort"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status, S::Aborted as i32);
    // Abort again: fine; submit: refused, with the reason.
    c.abort_message(abort("m-abort")).await.unwrap();
    let err = c
        .submit_message(submit("m-abort", false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("stock check failed"),
        "{}",
        err.message()
    );
    let tx = get_tx(&mut c, "m-abort").await;
    assert_eq!(status_of(&tx), S::Aborted);
    assert_eq!(tx.rollback_reason, "stock check failed");
    assert!(
        tx.branches
            .iter()
            .all(|b| b.first_phase == pb::CallStatus::NotRequired as i32)
    );
    assert_eq!(a.total_calls(Ph::Execute) + b.total_calls(Ph::Execute), 0);
}

async fn a_rejected_step_is_retried_until_it_succeeds(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (a, b) = two(&db, &coord).await;
    b.script(
        Ph::Execute,
        vec![Behavior::Abort("mailbox full")],
        Behavior::Ok,
    );
    let mut c = coord.client().await;
    let req = prepare(
        "m-retry",
        steps(),
        NOWHERE,
        pb::Protocol::Http,
        Duration::from_secs(30),
    );
    c.prepare_message(req).await.unwrap();
    let reply = c.submit_message(submit("m-retry", true)).await.unwrap();
    assert_eq!(reply.into_inner().status, S::Succeeded as i32);
    assert_eq!(a.calls("m-retry", "1", Ph::Execute), 1, "not repeated");
    assert_eq!(b.calls("m-retry", "2", Ph::Execute), 2);
    assert_eq!(b.total_calls(Ph::Compensate), 0);
    let tx = get_tx(&mut c, "m-retry").await;
    assert!(
        tx.events
            .iter()
            .any(|e| e.code == "ABORTED" && e.message == "mailbox full"),
        "{tx:#?}"
    );
}

async fn an_initiator_gone_after_committing_is_asked_back_and_the_message_executed(db: TestDb) {
    let coord = TestCoordinator::start(db.clone()).await;
    let (a, b) = two(&db, &coord).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let query = format!("http://{}/orders", listener.local_addr().unwrap());
    let initiator = HttpInitiator::serve(listener, StatusCode::OK).await;
    let mut c = coord.client().await;
    // Prepared, then the initiator commits locally and crashes before
    // submitting: nothing but the timeout tells the coordinator.
    let req = prepare(
        "m-lost",
        steps(),
        &query,
        pb::Protocol::Http,
        Duration::from_millis(200),
    );
    c.prepare_message(req).await.unwrap();
    let tx = wait_status(&mut c, "m-lost", S::Succeeded, Duration::from_secs(10)).await;
    assert_eq!(initiator.queries.load(Ordering::SeqCst), 1);
    assert_eq!(*initiator.last_gid.lock().unwrap(), "m-lost");
    assert_eq!(a.calls("m-lost", "1", Ph::Execute), 1);
    assert_eq!(b.calls("m-lost", "2", Ph::Execute), 1);
    let query_back = tx.events.iter().find(|e| e.kind == "query_back").unwrap();
    assert_eq!(
        (query_back.code.as_str(), query_back.phase.as_str()),
        ("OK", "query_prepared")
    );
    assert!(
        tx.rollback_reason.contains("committed"),
        "{}",
        tx.rollback_reason
    );
}

async fn an_initiator_that_rolled_back_answers_over_grpc_and_the_message_is_aborted(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (a, b) = two(&db, &coord).await;
    let (query, queries) = grpc_initiator(Code::Aborted).await;
    let mut c = coord.client().await;
    let req = prepare(
        "m-rb",
        steps(),
        &query,
        pb::Protocol::Grpc,
        Duration::from_millis(200),
    );
    c.prepare_message(req).await.unwrap();
    let tx = wait_status(&mut c, "m-rb", S::Aborted, Duration::from_secs(10)).await;
    assert_eq!(queries.load(Ordering::SeqCst), 1);
    assert_eq!(a.total_calls(Ph::Execute) + b.total_calls(Ph::Execute), 0);
    assert!(
        tx.rollback_reason.contains("rolled back"),
        "{}",
        tx.rollback_reason
    );
    assert_eq!(kinds(&tx), ["prepared", "query_back", "finished"]);
}

async fn an_unreachable_initiator_is_asked_again_until_it_answers(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (a, _b) = two(&db, &coord).await;
    // A port that was free a moment ago: refused until the initiator is back.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let query = format!("http://{port}/orders");
    let mut c = coord.client().await;
    let req = prepare(
        "m-down",
        steps(),
        &query,
        pb::Protocol::Http,
        Duration::from_millis(100),
    );
    c.prepare_message(req).await.unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tx = get_tx(&mut c, "m-down").await;
        let refused = tx
            .events
            .iter()
            .filter(|e| e.kind == "query_back" && e.code == "UNAVAILABLE")
            .count();
        if refused >= 2 {
            assert_eq!(status_of(&tx), S::Prepared);
            break;
        }
        assert!(tokio::time::Instant::now() < until, "{tx:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(a.total_calls(Ph::Execute), 0);
    // Back, but not sure yet (503: asked again), then sure.
    let listener = TcpListener::bind(port).await.unwrap();
    let initiator = HttpInitiator::serve(listener, StatusCode::SERVICE_UNAVAILABLE).await;
    let asked = tokio::time::Instant::now() + Duration::from_secs(10);
    while initiator.queries.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < asked);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    initiator.status.store(200, Ordering::SeqCst);
    wait_status(&mut c, "m-down", S::Succeeded, Duration::from_secs(10)).await;
    assert_eq!(a.calls("m-down", "1", Ph::Execute), 1);
}

async fn bad_message_requests_are_refused_and_change_nothing(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    two(&db, &coord).await;
    let mut c = coord.client().await;
    let long = Duration::from_secs(30);
    let cases = [
        (
            prepare("m-bad", vec![], NOWHERE, pb::Protocol::Http, long),
            Code::InvalidArgument,
            "at least one step",
        ),
        (
            prepare(
                "m-bad",
                vec![step("nobody", "x")],
                NOWHERE,
                pb::Protocol::Http,
                long,
            ),
            Code::NotFound,
            "steps[0]: participant nobody is not registered",
        ),
        (
            prepare("m-bad", steps(), "ftp://h:1", pb::Protocol::Http, long),
            Code::InvalidArgument,
            "query_endpoint",
        ),
        (
            prepare(
                "m-bad",
                steps(),
                "http://h:1/base",
                pb::Protocol::Grpc,
                long,
            ),
            Code::InvalidArgument,
            "a path",
        ),
    ];
    for (req, code, message) in cases {
        let err = c.prepare_message(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(message), "{}", err.message());
    }
    let err = c.get_transaction(pb::GetTransactionRequest {
        gid: "m-bad".into(),
        include_events: false,
    });
    assert_eq!(
        err.await.unwrap_err().code(),
        Code::NotFound,
        "nothing written"
    );

    let err = c.submit_message(submit("m-none", false)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    c.begin(begin_req("t-1", None)).await.unwrap();
    let err = c.submit_message(submit("t-1", false)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("not a message"), "{}", err.message());
    // The same gid with other steps is a different message.
    let req = prepare("m-1", steps(), NOWHERE, pb::Protocol::Http, long);
    c.prepare_message(req).await.unwrap();
    let other = prepare(
        "m-1",
        vec![step("stock", "reserve")],
        NOWHERE,
        pb::Protocol::Http,
        long,
    );
    let err = c.prepare_message(other).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

/// The SDK's initiator side: the barrier table in `pool` (the initiator's
/// own database, PostgreSQL on either store's run) and the
/// query-back service on a loopback port.
async fn sdk_initiator(pool: &PgPool) -> String {
    concord_sdk::Barrier::postgres(pool.clone())
        .migrate()
        .await
        .unwrap();
    sqlx::query("CREATE TABLE orders (id int PRIMARY KEY)")
        .execute(pool)
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let svc = concord_sdk::initiator::MessageQuery::new(pool.clone()).service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    url
}

async fn orders(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn sdk_do_and_submit_commits_the_local_work_then_the_message(db: TestDb, pool: PgPool) {
    let coord = TestCoordinator::start(&db).await;
    let (a, b) = two(&db, &coord).await;
    let query = sdk_initiator(&pool).await;
    let sdk = concord_sdk::Coordinator::connect(coord.url())
        .await
        .unwrap();
    let done = sdk
        .message(Some("m-sdk"), &query)
        .step("stock", "reserve", b"{}".to_vec())
        .step("mail", "send", b"{}".to_vec())
        .do_and_submit(&pool, async |conn| {
            sqlx::query("INSERT INTO orders (id) VALUES (1)")
                .execute(conn)
                .await?;
            Ok(7)
        })
        .await
        .unwrap();
    assert_eq!((done.gid.as_str(), done.value), ("m-sdk", 7));
    assert_eq!(orders(&pool).await, 1);
    let mut c = coord.client().await;
    wait_status(&mut c, "m-sdk", S::Succeeded, Duration::from_secs(10)).await;
    assert_eq!(a.calls("m-sdk", "1", Ph::Execute), 1);
    assert_eq!(b.calls("m-sdk", "2", Ph::Execute), 1);

    // Local work that fails: rolled back with its barrier row, message aborted.
    let err = sdk
        .message(Some("m-sdk-2"), &query)
        .step("stock", "reserve", b"{}".to_vec())
        .do_and_submit(&pool, async |conn| {
            sqlx::query("INSERT INTO orders (id) VALUES (1)")
                .execute(conn)
                .await?;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("duplicate key"), "{err:?}");
    let tx = get_tx(&mut c, "m-sdk-2").await;
    assert_eq!(status_of(&tx), S::Aborted);
    assert_eq!(orders(&pool).await, 1);
}

async fn sdk_query_back_answers_exactly_after_a_crash(db: TestDb, pool: PgPool) {
    let coord = TestCoordinator::start(&db).await;
    let (a, _b) = two(&db, &coord).await;
    let query = sdk_initiator(&pool).await;
    let mut c = coord.client().await;
    let short = Duration::from_millis(200);
    // Crashed after committing (the barrier row is there), before submitting.
    let req = prepare(
        "m-c",
        vec![step("stock", "reserve")],
        &query,
        pb::Protocol::Grpc,
        short,
    );
    c.prepare_message(req).await.unwrap();
    sqlx::query(
        "INSERT INTO concord_barrier (gid, branch_id, op, origin_op) VALUES ('m-c', 'msg', 'msg', 'msg')",
    )
    .execute(&pool)
    .await
    .unwrap();
    // Crashed before committing: no row.
    let req = prepare(
        "m-r",
        vec![step("stock", "reserve")],
        &query,
        pb::Protocol::Grpc,
        short,
    );
    c.prepare_message(req).await.unwrap();
    wait_status(&mut c, "m-c", S::Succeeded, Duration::from_secs(10)).await;
    wait_status(&mut c, "m-r", S::Aborted, Duration::from_secs(10)).await;
    assert_eq!(a.calls("m-c", "1", Ph::Execute), 1);
    assert_eq!(a.calls("m-r", "1", Ph::Execute), 0);
    // The rolled-back answer is final: the local transaction cannot commit
    // after it (its barrier insert finds the query's row).
    let late = sqlx::query(
        "INSERT INTO concord_barrier (gid, branch_id, op, origin_op) VALUES ('m-r', 'msg', 'msg', 'msg') ON CONFLICT DO NOTHING",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(late.rows_affected(), 0);
}

// Messages on the SQLite store too: prepare, submit, abort, query-back.
on_both_stores!(
    a_rejected_step_is_retried_until_it_succeeds,
    an_initiator_that_rolled_back_answers_over_grpc_and_the_message_is_aborted,
    an_unreachable_initiator_is_asked_again_until_it_answers,
    bad_message_requests_are_refused_and_change_nothing,
    a_submitted_message_executes_every_step_once_in_order,
    an_aborted_message_executes_nothing,
    an_initiator_gone_after_committing_is_asked_back_and_the_message_executed,
);

// The SDK's initiator keeps its barrier in its own PostgreSQL database.
on_both_stores_beside_postgres!(
    sdk_do_and_submit_commits_the_local_work_then_the_message,
    sdk_query_back_answers_exactly_after_a_crash,
);
