//! Initiator tests against a fake coordinator on 127.0.0.1:0.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use concord_proto::v1::coordinator_server::{self, CoordinatorServer};
use concord_proto::v1::{
    BeginResponse, CommitResponse, RollbackResponse, SagaStep, SubmitSagaRequest,
    SubmitSagaResponse, TryResponse,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

use super::*;

/// Records every call as a line; a Try whose payload is `no` is rejected.
#[derive(Default)]
struct FakeCoordinator {
    log: Mutex<Vec<String>>,
    sagas: Mutex<Vec<SubmitSagaRequest>>,
}

impl FakeCoordinator {
    fn log(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }
}

#[tonic::async_trait]
impl coordinator_server::Coordinator for FakeCoordinator {
    async fn begin(&self, r: Request<BeginRequest>) -> Result<Response<BeginResponse>, Status> {
        let header = r
            .metadata()
            .get(TRACEPARENT)
            .map(|v| v.to_str().unwrap().to_owned());
        let r = r.into_inner();
        let gid = if r.gid.is_empty() {
            "generated".into()
        } else {
            r.gid
        };
        self.log(format!(
            "begin {gid} timeout={:?} traceparent={:?} header={header:?}",
            r.timeout.map(|d| d.seconds),
            r.metadata.get(TRACEPARENT),
        ));
        Ok(Response::new(BeginResponse {
            gid,
            deadline: None,
        }))
    }

    async fn r#try(&self, r: Request<TryRequest>) -> Result<Response<TryResponse>, Status> {
        let has_header = r.metadata().contains_key(TRACEPARENT);
        let r = r.into_inner();
        self.log(format!(
            "try {} {}/{} id={:?} header={has_header}",
            r.gid, r.participant, r.action, r.branch_id
        ));
        if r.payload == b"no" {
            return Err(Status::aborted("insufficient funds"));
        }
        let branch_id = if r.branch_id.is_empty() {
            "1".into()
        } else {
            r.branch_id
        };
        // Echoes a JSON payload, to check both ends of the typed helpers.
        let payload = if r.payload.starts_with(b"{") {
            r.payload
        } else {
            b"ok".to_vec()
        };
        Ok(Response::new(TryResponse { branch_id, payload }))
    }

    async fn commit(&self, r: Request<CommitRequest>) -> Result<Response<CommitResponse>, Status> {
        let bounded = r.metadata().contains_key("grpc-timeout");
        let r = r.into_inner();
        let bound = if bounded { " bounded" } else { "" };
        self.log(format!("commit {} wait={}{bound}", r.gid, r.wait));
        Ok(Response::new(CommitResponse {
            status: TransactionStatus::Confirmed as i32,
        }))
    }

    async fn rollback(
        &self,
        r: Request<RollbackRequest>,
    ) -> Result<Response<RollbackResponse>, Status> {
        let r = r.into_inner();
        self.log(format!(
            "rollback {} wait={} reason={}",
            r.gid, r.wait, r.reason
        ));
        if r.wait {
            // A coordinator waiting for a participant that is down.
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Ok(Response::new(RollbackResponse {
            status: TransactionStatus::Cancelling as i32,
        }))
    }

    async fn get_transaction(
        &self,
        r: Request<GetTransactionRequest>,
    ) -> Result<Response<Transaction>, Status> {
        Err(Status::not_found(format!(
            "no transaction {}",
            r.into_inner().gid
        )))
    }

    /// Records the whole request; a saga whose first payload is `no`
    /// compensates, one with no step is refused.
    // Messages are tested end to end against the real coordinator
    // (tests/it/msg.rs); this fake only refuses them.
    async fn prepare_message(
        &self,
        _r: Request<concord_proto::v1::PrepareMessageRequest>,
    ) -> Result<Response<concord_proto::v1::PrepareMessageResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn submit_message(
        &self,
        _r: Request<concord_proto::v1::SubmitMessageRequest>,
    ) -> Result<Response<concord_proto::v1::SubmitMessageResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn abort_message(
        &self,
        _r: Request<concord_proto::v1::AbortMessageRequest>,
    ) -> Result<Response<concord_proto::v1::AbortMessageResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn submit_saga(
        &self,
        r: Request<SubmitSagaRequest>,
    ) -> Result<Response<SubmitSagaResponse>, Status> {
        let header = r
            .metadata()
            .get(TRACEPARENT)
            .map(|v| v.to_str().unwrap().to_owned());
        let timeout_header = r.metadata().contains_key("grpc-timeout");
        let r = r.into_inner();
        self.log(format!(
            "saga {:?} steps={} header={header:?} timeout_header={timeout_header}",
            r.gid,
            r.steps.len()
        ));
        if r.steps.is_empty() {
            return Err(Status::invalid_argument("a saga needs at least one step"));
        }
        let gid = if r.gid.is_empty() {
            "generated".to_owned()
        } else {
            r.gid.clone()
        };
        let (status, reason) = match (r.wait, r.steps[0].payload == b"no") {
            (false, _) => (TransactionStatus::Running, String::new()),
            (true, false) => (TransactionStatus::Succeeded, String::new()),
            (true, true) => (
                TransactionStatus::Compensated,
                "step 0 rejected: insufficient funds".to_owned(),
            ),
        };
        self.sagas.lock().unwrap().push(r);
        Ok(Response::new(SubmitSagaResponse {
            gid,
            status: status as i32,
            reason,
        }))
    }
}

struct Harness {
    fake: Arc<FakeCoordinator>,
    coordinator: Coordinator,
    stop: CancellationToken,
}

impl Harness {
    async fn start() -> Self {
        let fake = Arc::new(FakeCoordinator::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(CoordinatorServer::from_arc(fake.clone()))
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    stop.clone().cancelled_owned(),
                ),
        );
        let coordinator = Coordinator::connect(format!("http://{addr}"))
            .await
            .unwrap();
        Self {
            fake,
            coordinator,
            stop,
        }
    }

    fn log(&self) -> Vec<String> {
        self.fake.log.lock().unwrap().clone()
    }

    fn sagas(&self) -> Vec<SubmitSagaRequest> {
        self.fake.sagas.lock().unwrap().clone()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test]
async fn tcc_commits_when_the_body_succeeds() {
    let h = Harness::start().await;
    let opts = BeginOptions::default()
        .gid("g1")
        .timeout(Duration::from_secs(9))
        .metadata(TRACEPARENT, "00-trace-span-01")
        .wait(true);
    let done = h
        .coordinator
        .tcc(opts, |tx| async move {
            assert_eq!(tx.gid(), "g1");
            let a = tx.try_branch("bank", "transfer_out", b"x".to_vec()).await?;
            let b = tx
                .try_branch_with(
                    "bank",
                    "transfer_in",
                    b"y".to_vec(),
                    TryOptions {
                        branch_id: Some("in".into()),
                        ..Default::default()
                    },
                )
                .await?;
            assert_eq!((a.branch_id.as_str(), b.branch_id.as_str()), ("1", "in"));
            Ok(a.payload)
        })
        .await
        .unwrap();
    assert_eq!(done.value, b"ok");
    assert_eq!(done.gid, "g1");
    assert_eq!(done.status, TransactionStatus::Confirmed);
    assert_eq!(
        h.log(),
        [
            r#"begin g1 timeout=Some(9) traceparent=Some("00-trace-span-01") header=Some("00-trace-span-01")"#,
            r#"try g1 bank/transfer_out id="" header=true"#,
            r#"try g1 bank/transfer_in id="in" header=true"#,
            "commit g1 wait=true",
        ]
    );
}

#[tokio::test]
async fn tcc_rolls_back_when_the_body_fails_and_returns_its_error() {
    let h = Harness::start().await;
    let err = h
        .coordinator
        .tcc(BeginOptions::default().wait(true), |tx| async move {
            tx.try_branch("bank", "transfer_out", b"no".to_vec())
                .await?;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(err.is_rejected(), "{err:?}");
    assert_eq!(err.code(), Some(Code::Aborted));
    assert_eq!(
        h.log(),
        [
            "begin generated timeout=None traceparent=None header=None",
            r#"try generated bank/transfer_out id="" header=false"#,
            "rollback generated wait=false reason=insufficient funds",
        ]
    );
}

#[tokio::test]
async fn the_error_path_does_not_wait_for_the_cancels() {
    let h = Harness::start().await;
    let started = std::time::Instant::now();
    let err = h
        .coordinator
        .tcc(
            BeginOptions::default().gid("g3").wait(true),
            |tx| async move {
                tx.try_branch("bank", "transfer_out", b"x".to_vec()).await?;
                Err::<(), _>(Error::other(std::io::Error::other("price feed down")))
            },
        )
        .await
        .unwrap_err();
    // The fake's waiting rollback takes 60 s; the helper's does not wait.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!err.is_rejected());
    let io = err
        .downcast_ref::<std::io::Error>()
        .expect("the body's own error");
    assert_eq!(io.to_string(), "price feed down");
    assert_eq!(
        h.log().last().unwrap(),
        "rollback g3 wait=false reason=price feed down"
    );
}

#[tokio::test]
async fn wait_timeout_bounds_only_the_waiting_commit() {
    let h = Harness::start().await;
    let opts = BeginOptions::default()
        .gid("g6")
        .wait_timeout(Duration::from_secs(3));
    h.coordinator
        .tcc(opts, |_tx| async { Ok(()) })
        .await
        .unwrap();
    let opts = BeginOptions {
        wait: false,
        ..BeginOptions::default()
            .gid("g7")
            .wait_timeout(Duration::from_secs(3))
    };
    h.coordinator
        .tcc(opts, |_tx| async { Ok(()) })
        .await
        .unwrap();
    let log = h.log();
    assert_eq!(log[1], "commit g6 wait=true bounded");
    assert_eq!(log[3], "commit g7 wait=false");
}

#[tokio::test]
async fn a_rejection_decided_by_the_body_rolls_back_as_one() {
    let h = Harness::start().await;
    let err = h
        .coordinator
        .tcc(BeginOptions::default().gid("g4"), |_tx| async move {
            Err::<(), _>(Error::rejected("price changed"))
        })
        .await
        .unwrap_err();
    assert!(err.is_rejected());
    assert_eq!(
        h.log().last().unwrap(),
        "rollback g4 wait=false reason=price changed"
    );
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Leg {
    account: i64,
    amount: i64,
}

#[tokio::test]
async fn json_payloads_go_out_and_come_back_typed() {
    let h = Harness::start().await;
    let leg = Leg {
        account: 1,
        amount: 30,
    };
    let done = h
        .coordinator
        .tcc(BeginOptions::default().gid("g5"), |tx| async move {
            let reply = tx.try_branch_json("bank", "transfer_out", &leg).await?;
            reply.json::<Leg>()
        })
        .await
        .unwrap();
    assert_eq!(
        done.value,
        Leg {
            account: 1,
            amount: 30
        }
    );

    // A reply that is not the JSON asked for is the caller's own error.
    let tx = h.coordinator.begin(BeginOptions::default()).await.unwrap();
    let reply = tx
        .try_branch("bank", "transfer_out", b"x".to_vec())
        .await
        .unwrap();
    let err = reply.json::<Leg>().unwrap_err();
    assert!(err.downcast_ref::<serde_json::Error>().is_some(), "{err:?}");

    let outcome = h
        .coordinator
        .saga(Some("order-9"))
        .step_json(
            "payment",
            "charge",
            "refund",
            &Leg {
                account: 7,
                amount: 5,
            },
        )
        .submit(false)
        .await
        .unwrap();
    assert_eq!(outcome.gid, "order-9");
    assert_eq!(
        h.sagas()[0].steps[0].payload,
        br#"{"account":7,"amount":5}"#
    );

    // A payload that cannot be JSON (a map with non-string keys) is
    // refused before any call.
    let calls = h.log().len();
    let bad: HashMap<(i32, i32), i32> = [((1, 2), 3)].into();
    let err = h
        .coordinator
        .saga(None)
        .step_json("payment", "charge", "refund", &bad)
        .submit(false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { message } if message.contains("step 0")),
        "{err:?}"
    );
    let err = tx
        .try_branch_json("bank", "transfer_out", &bad)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert_eq!(h.log().len(), calls);
}

#[tokio::test]
async fn a_sub_transaction_numbers_its_branches_under_the_caller() {
    let h = Harness::start().await;
    let ctx = crate::BranchContext {
        gid: "trip-1".into(),
        branch_id: "2".into(),
        metadata: [(TRACEPARENT.to_string(), "00-t-s-01".to_string())].into(),
        ..Default::default()
    };
    let sub = h.coordinator.continue_tcc(&ctx);
    assert_eq!(sub.gid(), "trip-1");
    let a = sub
        .try_branch("hotel", "hold", b"x".to_vec())
        .await
        .unwrap();
    let b = sub
        .clone()
        .try_branch_json("car", "hold", &1)
        .await
        .unwrap();
    let opts = TryOptions {
        branch_id: Some("taxi".into()),
        ..Default::default()
    };
    let c = sub
        .try_branch_with("taxi", "hold", b"y".to_vec(), opts)
        .await
        .unwrap();
    assert_eq!(
        [a.branch_id, b.branch_id, c.branch_id],
        ["2.1", "2.2", "2.taxi"]
    );
    // A second handle (a retried Try) finds the same ids again.
    let again = h.coordinator.continue_tcc(&ctx);
    let a2 = again
        .try_branch("hotel", "hold", b"x".to_vec())
        .await
        .unwrap();
    assert_eq!(a2.branch_id, "2.1");
    assert_eq!(
        h.log(),
        [
            r#"try trip-1 hotel/hold id="2.1" header=true"#,
            r#"try trip-1 car/hold id="2.2" header=true"#,
            r#"try trip-1 taxi/hold id="2.taxi" header=true"#,
            r#"try trip-1 hotel/hold id="2.1" header=true"#,
        ]
    );
}

#[tokio::test]
async fn explicit_commit_and_rollback_return_the_status() {
    let h = Harness::start().await;
    let tx = h
        .coordinator
        .begin(BeginOptions::default().gid("g2"))
        .await
        .unwrap();
    assert_eq!(
        tx.commit(false).await.unwrap(),
        TransactionStatus::Confirmed
    );
    assert_eq!(
        tx.rollback("changed my mind", false).await.unwrap(),
        TransactionStatus::Cancelling
    );
    let err = h
        .coordinator
        .get_transaction("g2", false)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

#[test]
fn every_status_code_is_kept() {
    for code in [
        Code::Aborted,
        Code::Unavailable,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::InvalidArgument,
        Code::FailedPrecondition,
        Code::Internal,
        Code::ResourceExhausted,
    ] {
        let e = Error::from(Status::new(code, "m"));
        assert_eq!(e.code(), Some(code));
        assert_eq!(e.is_rejected(), code == Code::Aborted);
    }
}

#[test]
fn malformed_url_is_reported() {
    let err = Coordinator::connect_lazy("not a url").unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }));
    assert_eq!(err.code(), None);
}

fn step(participant: &str, action: &str, compensation: &str, payload: &[u8]) -> SagaStep {
    SagaStep {
        participant: participant.into(),
        action: action.into(),
        compensation: compensation.into(),
        payload: payload.to_vec(),
        ..Default::default()
    }
}

#[tokio::test]
async fn saga_sends_every_step_and_option() {
    let h = Harness::start().await;
    let outcome = h
        .coordinator
        .saga(Some("order-7"))
        .step("inventory", "reserve", "release", b"tea".to_vec())
        .after(&[])
        .step("shipping", "book", "unbook", b"box".to_vec())
        .compensate_rejected(false)
        .step("payment", "charge", "refund", b"30".to_vec())
        .after(&[0, 1])
        .call_timeout(Duration::from_millis(1500))
        .timeout(Duration::from_secs(60))
        .concurrency(3)
        .metadata(TRACEPARENT, "00-trace-span-01")
        .submit(true)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        SagaOutcome {
            gid: "order-7".into(),
            status: TransactionStatus::Succeeded,
            reason: None,
        }
    );
    assert!(outcome.succeeded() && outcome.is_finished());

    let sagas = h.sagas();
    assert_eq!(sagas.len(), 1);
    let r = &sagas[0];
    assert_eq!(r.gid, "order-7");
    assert!(r.wait);
    assert_eq!(r.concurrency, 3);
    assert_eq!(r.timeout.map(|d| d.seconds), Some(60));
    assert_eq!(r.metadata[TRACEPARENT], "00-trace-span-01");
    let shipping = SagaStep {
        compensate_rejected: Some(false),
        ..step("shipping", "book", "unbook", b"box")
    };
    let payment = SagaStep {
        depends_on: vec![0, 1],
        call_timeout: Some(prost_types::Duration {
            seconds: 1,
            nanos: 500_000_000,
        }),
        ..step("payment", "charge", "refund", b"30")
    };
    assert_eq!(
        r.steps,
        [
            step("inventory", "reserve", "release", b"tea"),
            shipping,
            payment
        ]
    );
    assert_eq!(
        h.log(),
        [r#"saga "order-7" steps=3 header=Some("00-trace-span-01") timeout_header=false"#]
    );
}

#[tokio::test]
async fn saga_without_wait_returns_the_generated_gid_and_running() {
    let h = Harness::start().await;
    let saga = h
        .coordinator
        .saga(None)
        .step("payment", "charge", "refund", b"30".to_vec());
    assert_eq!((saga.len(), saga.is_empty()), (1, false));
    let outcome = saga.submit(false).await.unwrap();
    assert_eq!(outcome.gid, "generated");
    assert_eq!(outcome.status, TransactionStatus::Running);
    assert!(!outcome.is_finished());
    let r = &h.sagas()[0];
    assert_eq!((r.gid.as_str(), r.wait, r.concurrency), ("", false, 0));
    assert_eq!((r.timeout, r.steps[0].compensate_rejected), (None, None));
}

#[tokio::test]
async fn saga_compensation_reason_is_returned() {
    let h = Harness::start().await;
    let outcome = h
        .coordinator
        .saga(Some("order-8"))
        .step("payment", "charge", "refund", b"no".to_vec())
        .wait_timeout(Duration::from_secs(5))
        .submit(true)
        .await
        .unwrap();
    assert_eq!(outcome.status, TransactionStatus::Compensated);
    assert_eq!(
        outcome.reason.as_deref(),
        Some("step 0 rejected: insufficient funds")
    );
    assert_eq!(
        h.log(),
        [r#"saga "order-8" steps=1 header=None timeout_header=true"#]
    );
}

#[tokio::test]
async fn saga_errors_keep_their_code() {
    let h = Harness::start().await;
    let err = h.coordinator.saga(None).submit(true).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert_eq!(err.code(), Some(Code::InvalidArgument));
}

#[tokio::test]
async fn saga_qualifier_before_any_step_is_refused_without_a_call() {
    let h = Harness::start().await;
    let err = h
        .coordinator
        .saga(None)
        .after(&[0])
        .step("payment", "charge", "refund", b"30".to_vec())
        .submit(false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { message } if message.contains("after()")),
        "{err:?}"
    );
    assert!(h.log().is_empty());
}
