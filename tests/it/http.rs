//! HTTP/JSON participants end to end: TCC and sagas over the documented
//! request (URL, headers, body byte for byte), the outcome contract (2xx,
//! 409 final, anything else retried), deadlines, an endpoint that goes away
//! and comes back, and the OpenAPI file the coordinator serves.

use std::time::Duration;

use concord_proto::v1::{self as pb, TransactionStatus as S};
use tonic::Code;

use crate::harness::*;
use crate::harness_http::HttpLog;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn two_banks(
    db: &TestDb,
    coord: &TestCoordinator,
) -> ((TestParticipant, HttpLog), (TestParticipant, HttpLog)) {
    let a = TestParticipant::start_http_on("bank-a", db).await;
    let b = TestParticipant::start_http_on("bank-b", db).await;
    a.0.register(coord, &["debit"]).await;
    b.0.register(coord, &["credit"]).await;
    (a, b)
}

fn step(participant: &str, action: &str, compensation: &str) -> pb::SagaStep {
    pb::SagaStep {
        participant: participant.into(),
        action: action.into(),
        compensation: compensation.into(),
        payload: format!("{{\"step\":\"{participant}.{action}\"}}").into_bytes(),
        depends_on: vec![],
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

fn codes(tx: &pb::Transaction) -> Vec<String> {
    tx.events
        .iter()
        .filter(|e| e.kind == "call")
        .map(|e| e.code.clone())
        .collect()
}

async fn tcc_over_http_sends_the_documented_request_and_commits(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let ((a, a_log), (b, _)) = two_banks(&db, &coord).await;
    let mut c = coord.client().await;
    let mut begin = begin_req("h-1", None);
    begin
        .metadata
        .insert("traceparent".into(), TRACEPARENT.into());
    begin.metadata.insert("tenant".into(), "zürich".into());
    c.begin(begin).await.unwrap();
    // Not valid UTF-8 and not JSON: still passed byte for byte.
    let payload = vec![0xff, b'{', 0x00, b'}'];
    let t1 = c
        .r#try(pb::TryRequest {
            payload: payload.clone(),
            ..try_req("h-1", "bank-a", "debit")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t1.payload, b"1:4".to_vec(), "reply body returned as is");
    c.r#try(try_req("h-1", "bank-b", "credit")).await.unwrap();
    let reply = commit_tx(&mut c, "h-1", true).await.unwrap();
    assert_eq!(reply.status, S::Confirmed as i32);
    assert_eq!(a.calls("h-1", "1", Ph::Confirm), 1);
    assert_eq!(b.calls("h-1", "2", Ph::Confirm), 1);
    assert!(a.precondition_violations().is_empty());
    assert!(b.precondition_violations().is_empty());

    let calls = a_log.all();
    let phases: Vec<(&str, &str)> = calls
        .iter()
        .map(|r| (r.action.as_str(), r.phase.as_str()))
        .collect();
    assert_eq!(phases, [("debit", "try"), ("debit", "confirm")]);
    let try_call = &calls[0];
    assert_eq!(try_call.body, payload);
    let h = &try_call.headers;
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["concord-gid"], "h-1");
    assert_eq!(h["concord-branch-id"], "1");
    assert_eq!(h["concord-phase"], "try");
    assert_eq!(h["concord-action"], "debit");
    assert_eq!(h["concord-attempt"], "1");
    assert_eq!(h["traceparent"], TRACEPARENT);
    let deadline: u64 = h["concord-deadline-ms"].parse().unwrap();
    // The time left of the call timeout of the test config (2 s): a wait
    // for a slot of the participant's bulkhead is taken off it.
    assert!(
        (1950..=2000).contains(&deadline),
        "the call timeout of the test config: {deadline}"
    );
    let metadata: std::collections::HashMap<String, String> =
        serde_json::from_str(&h["concord-metadata"]).unwrap();
    assert_eq!(metadata["tenant"], "zürich");

    let tx = get_tx(&mut c, "h-1").await;
    assert_eq!(codes(&tx), ["OK", "OK", "OK", "OK"]);
}

async fn a_409_rejects_a_try_for_good_and_the_rollback_cancels_over_http(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let ((a, _), (b, _)) = two_banks(&db, &coord).await;
    b.script(Ph::Try, vec![], Behavior::Abort("account closed"));
    let mut c = coord.client().await;
    c.begin(begin_req("h-2", None)).await.unwrap();
    c.r#try(try_req("h-2", "bank-a", "debit")).await.unwrap();
    let err = c
        .r#try(try_req("h-2", "bank-b", "credit"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(
        err.message().contains("account closed"),
        "{}",
        err.message()
    );
    assert_eq!(
        b.calls("h-2", "2", Ph::Try),
        1,
        "a rejection is not retried"
    );
    let reply = rollback_tx(&mut c, "h-2", "rejected", true).await.unwrap();
    assert_eq!(reply.status, S::Cancelled as i32);
    // Both are cancelled, the rejected one too (it may have partly run).
    assert_eq!(a.calls("h-2", "1", Ph::Cancel), 1);
    assert_eq!(b.calls("h-2", "2", Ph::Cancel), 1);
}

async fn saga_over_http_retries_errors_and_timeouts_then_compensates_a_409(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (order, order_log) = TestParticipant::start_http_on("order", &db).await;
    let (pay, _) = TestParticipant::start_http_on("payment", &db).await;
    order.register(&coord, &["create", "cancel"]).await;
    pay.register(&coord, &["charge", "refund"]).await;
    // create: a 503, then a reply later than the step's deadline, then OK.
    order.script(
        Ph::Execute,
        vec![
            Behavior::Unavailable,
            Behavior::Slow(Duration::from_millis(1500)),
        ],
        Behavior::Ok,
    );
    pay.script(Ph::Execute, vec![], Behavior::Abort("card declined"));
    let mut c = coord.client().await;
    let mut create = step("order", "create", "cancel");
    create.call_timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 300_000_000,
    });
    let reply = c
        .submit_saga(saga(
            "h-3",
            vec![create, step("payment", "charge", "refund")],
            true,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status, S::Compensated as i32, "{reply:?}");
    assert_eq!(
        reply.reason,
        "step 2 (payment.charge) rejected: card declined"
    );
    assert_eq!(order.calls("h-3", "1", Ph::Execute), 3);
    assert_eq!(pay.calls("h-3", "2", Ph::Execute), 1, "a 409 is final");
    assert_eq!(pay.calls("h-3", "2", Ph::Compensate), 1);
    assert_eq!(order.calls("h-3", "1", Ph::Compensate), 1);

    let log = order_log.all();
    let attempts: Vec<&str> = log
        .iter()
        .filter(|r| r.phase == "execute")
        .map(|r| r.headers["concord-attempt"].as_str())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(
        order_log.all().iter().all(|r| r.phase != "execute"
            || (250..=300).contains(&r.headers["concord-deadline-ms"].parse::<u64>().unwrap())),
        "the step's own call timeout is the deadline sent"
    );
    let tx = get_tx(&mut c, "h-3").await;
    let codes = codes(&tx);
    assert!(
        codes.starts_with(&["HTTP_503".into(), "DEADLINE_EXCEEDED".into(), "OK".into()]),
        "{codes:?}"
    );
    assert!(
        tx.events
            .iter()
            .any(|e| e.code == "HTTP_503" && e.message == "participant is down"),
        "the reply body is the message"
    );
}

async fn an_http_participant_that_goes_away_is_retried_until_it_is_back(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (p, _) = TestParticipant::start_http_on("stock", &db).await;
    p.register(&coord, &["reserve", "release"]).await;
    let addr = p.addr;
    p.stop();
    let mut c = coord.client().await;
    c.submit_saga(saga(
        "h-4",
        vec![step("stock", "reserve", "release")],
        false,
    ))
    .await
    .unwrap();
    // Refused connections: recorded as UNAVAILABLE, retried.
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tx = get_tx(&mut c, "h-4").await;
        if codes(&tx).iter().filter(|c| *c == "UNAVAILABLE").count() >= 2 {
            assert_eq!(status_of(&tx), S::Running);
            break;
        }
        assert!(tokio::time::Instant::now() < until, "{tx:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (back, _) = TestParticipant::serve_http_on("stock", listener, Some(db.clone())).await;
    let tx = wait_status(&mut c, "h-4", S::Succeeded, Duration::from_secs(10)).await;
    assert_eq!(back.calls("h-4", "1", Ph::Execute), 1);
    assert_eq!(codes(&tx).last().map(String::as_str), Some("OK"));
}

async fn registration_declares_the_protocol_and_bad_endpoints_are_refused(db: TestDb) {
    let coord = TestCoordinator::start_with(&db, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (p, _) = TestParticipant::start_http("stock", None).await;
    p.register(&coord, &["reserve"]).await;
    let mut registry = coord.registry().await;
    let listed = registry
        .list_participants(pb::ListParticipantsRequest {})
        .await
        .unwrap()
        .into_inner();
    let endpoint = &listed.participants[0].endpoints[0];
    assert_eq!(endpoint.url, p.endpoint());
    assert_eq!(endpoint.protocol, pb::Protocol::Http as i32);
    let register = |endpoint: &str, protocol: i32| pb::RegisterParticipantRequest {
        name: "x".into(),
        endpoint: endpoint.into(),
        actions: vec![pb::Action { name: "a".into() }],
        protocol,
    };
    for (endpoint, protocol, why) in [
        ("http://h:1/base?x=1", pb::Protocol::Http as i32, "query"),
        ("http://h:1/base", pb::Protocol::Grpc as i32, "a path"),
        ("http://h:1", 7, "unknown protocol 7"),
    ] {
        let err = registry
            .register_participant(register(endpoint, protocol))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{endpoint}");
        assert!(err.message().contains(why), "{}", err.message());
    }

    let url = format!(
        "http://{}/openapi/participant.yaml",
        coord.metrics_addr.unwrap()
    );
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(concord::tls::http_tls(None, None).unwrap())
        .no_proxy()
        .build()
        .unwrap();
    let reply = client.get(&url).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    let text = reply.text().await.unwrap();
    assert!(text.starts_with("openapi: 3"), "{text}");
    for header in ["concord-gid", "concord-deadline-ms", "concord-metadata"] {
        assert!(text.contains(header), "{header} documented");
    }
}

on_both_stores!(
    tcc_over_http_sends_the_documented_request_and_commits,
    a_409_rejects_a_try_for_good_and_the_rollback_cancels_over_http,
    saga_over_http_retries_errors_and_timeouts_then_compensates_a_409,
    an_http_participant_that_goes_away_is_retried_until_it_is_back,
    registration_declares_the_protocol_and_bad_endpoints_are_refused,
);
