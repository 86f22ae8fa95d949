//! Alert webhooks (issue 14): a receiver in the test gets one JSON POST
//! when a transaction becomes needs_attention and one when it stops
//! needing it, retried with backoff past a failing answer, never twice
//! for one change; on both stores.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use concord::config::Urls;
use concord_proto::v1::{self as pb, TransactionStatus as S};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::harness::*;

/// What the receiver got, and how many of the next posts it fails.
#[derive(Default)]
struct Inbox {
    got: Vec<(Option<String>, Value)>,
    fail_next: u32,
    refused: u32,
}

/// A webhook receiver on a loopback port; its URL and what it got.
async fn receiver(fail_first: u32) -> (String, Arc<Mutex<Inbox>>) {
    let inbox = Arc::new(Mutex::new(Inbox {
        fail_next: fail_first,
        ..Default::default()
    }));
    async fn take(
        State(inbox): State<Arc<Mutex<Inbox>>>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> StatusCode {
        let mut i = inbox.lock().unwrap();
        if i.fail_next > 0 {
            i.fail_next -= 1;
            i.refused += 1;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let id = headers
            .get("concord-alert-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        i.got.push((id, serde_json::from_slice(&body).unwrap()));
        StatusCode::NO_CONTENT
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/hook", post(take))
        .with_state(inbox.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, inbox)
}

async fn until_alerts(inbox: &Arc<Mutex<Inbox>>, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut got: Vec<Value> = inbox
            .lock()
            .unwrap()
            .got
            .iter()
            .map(|g| g.1.clone())
            .collect();
        if got.len() >= n {
            // Alerts of one pass are posted concurrently: in the order of
            // the changes, by id.
            got.sort_by_key(|a| a["id"].as_i64());
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} alerts of {n}: {got:#?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn an_alert_when_flagged_and_one_when_finished(db: TestDb) {
    let (url, inbox) = receiver(2).await;
    let coord = TestCoordinator::start_with(&db, |c| {
        c.alert_webhooks = Urls(vec![url.clone()]);
        c.alert_console_url = Some("https://concord.example:9464".into());
        c.attention_attempts = 2;
        c.retry.initial = Duration::from_millis(100);
        c.retry.max = Duration::from_millis(100);
    })
    .await;
    let bank = TestParticipant::start("bank", None).await;
    bank.register(&coord, &["debit"]).await;
    // Failing for several rounds past the flag: still one alert.
    bank.script(Ph::Confirm, vec![Behavior::Unavailable; 6], Behavior::Ok);
    let mut c = coord.client().await;
    let gid = c
        .begin(begin_req("alert-1", None))
        .await
        .unwrap()
        .into_inner()
        .gid;
    c.r#try(try_req(&gid, "bank", "debit")).await.unwrap();
    commit_tx(&mut c, &gid, false).await.unwrap();
    wait_status(&mut c, &gid, S::Confirmed, Duration::from_secs(15)).await;

    let got = until_alerts(&inbox, 2).await;
    // Past its first two refusals (503), the receiver took each alert.
    assert_eq!(inbox.lock().unwrap().refused, 2);
    let flagged = &got[0];
    assert_eq!(flagged["event"], "needs_attention");
    assert_eq!(flagged["gid"], "alert-1");
    assert_eq!(flagged["mode"], "tcc");
    assert_eq!(flagged["participant"], "bank");
    assert!(
        flagged["reason"]
            .as_str()
            .unwrap()
            .contains("branch 1 (bank.debit) confirm failing after 2 attempts: UNAVAILABLE"),
        "{flagged}"
    );
    assert_eq!(
        flagged["link"],
        "https://concord.example:9464/ui/#/tx/alert-1"
    );
    assert_eq!(flagged["show"], "concord tx show alert-1");
    let cleared = &got[1];
    assert_eq!(cleared["event"], "attention_cleared");
    assert_eq!(cleared["reason"], "finished: confirmed");
    assert_ne!(flagged["id"], cleared["id"]);
    // The id is in a header too, for receivers that drop repeats.
    for (header, doc) in &inbox.lock().unwrap().got {
        assert_eq!(header.as_deref(), Some(doc["id"].to_string().as_str()));
    }
    // Nothing more: one alert per change.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        inbox.lock().unwrap().got.len(),
        2,
        "{:#?}",
        inbox.lock().unwrap().got
    );
}

async fn resolving_by_hand_clears_the_alert(db: TestDb) {
    let (url, inbox) = receiver(0).await;
    let coord = TestCoordinator::start_with(&db, |c| {
        c.alert_webhooks = Urls(vec![url.clone()]);
        c.admin_tokens = concord::auth::AdminTokens::parse_list("alice:s3cret").unwrap();
        c.attention_attempts = 1;
        c.retry.initial = Duration::from_secs(60);
        c.retry.max = Duration::from_secs(60);
    })
    .await
    // An admin token turns authentication on: every client presents it.
    .with_token("s3cret");
    let bank = TestParticipant::start("bank", None).await;
    bank.register(&coord, &["debit"]).await;
    bank.script(Ph::Cancel, vec![], Behavior::Unavailable);
    let mut c = coord.client().await;
    let gid = c
        .begin(begin_req("alert-2", None))
        .await
        .unwrap()
        .into_inner()
        .gid;
    c.r#try(try_req(&gid, "bank", "debit")).await.unwrap();
    c.rollback(pb::RollbackRequest {
        gid: gid.clone(),
        reason: "r".into(),
        wait: false,
    })
    .await
    .unwrap();
    let got = until_alerts(&inbox, 1).await;
    assert_eq!(got[0]["event"], "needs_attention");
    // No console address configured and no HTTP listener: no link.
    assert_eq!(got[0]["link"], Value::Null);
    let channel = tonic::transport::Channel::from_shared(coord.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = concord_proto::v1::admin_client::AdminClient::with_interceptor(
        channel,
        concord::cli::Bearer::new(Some("s3cret")).unwrap(),
    );
    admin
        .resolve_transaction(pb::ResolveTransactionRequest {
            gid: gid.clone(),
            note: "reversed by hand".into(),
        })
        .await
        .unwrap();
    let got = until_alerts(&inbox, 2).await;
    assert_eq!(got[1]["event"], "attention_cleared");
    assert_eq!(
        got[1]["reason"],
        "resolved by hand by alice: reversed by hand"
    );
}

async fn a_message_flagged_by_its_query_back_is_cleared_by_its_submit(db: TestDb) {
    let (url, inbox) = receiver(0).await;
    let coord = TestCoordinator::start_with(&db, |c| {
        c.alert_webhooks = Urls(vec![url.clone()]);
        c.attention_attempts = 1;
        c.retry.initial = Duration::from_millis(200);
        c.retry.max = Duration::from_millis(200);
    })
    .await;
    let stock = TestParticipant::start("stock", None).await;
    stock.register(&coord, &["reserve"]).await;
    // Nobody answers the query-back: a port that was free a moment ago.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = coord.client().await;
    c.prepare_message(pb::PrepareMessageRequest {
        gid: "m-alert".into(),
        steps: vec![pb::MessageStep {
            participant: "stock".into(),
            action: "reserve".into(),
            payload: b"{}".to_vec(),
            ..Default::default()
        }],
        query_endpoint: format!("http://{port}/orders"),
        query_protocol: pb::Protocol::Http as i32,
        timeout: Some(prost_types::Duration {
            seconds: 0,
            nanos: 100_000_000,
        }),
        metadata: Default::default(),
    })
    .await
    .unwrap();
    let got = until_alerts(&inbox, 1).await;
    assert_eq!(
        (got[0]["event"].as_str(), got[0]["mode"].as_str()),
        (Some("needs_attention"), Some("msg"))
    );
    // The initiator comes back and submits: no longer flagged, said once.
    c.submit_message(pb::SubmitMessageRequest {
        gid: "m-alert".into(),
        wait: true,
    })
    .await
    .unwrap();
    let got = until_alerts(&inbox, 2).await;
    assert_eq!(got[1]["event"], "attention_cleared");
    assert_eq!(got[1]["reason"], "no longer needs attention: submitted");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(inbox.lock().unwrap().got.len(), 2);
}

on_both_stores!(
    an_alert_when_flagged_and_one_when_finished,
    resolving_by_hand_clears_the_alert,
    a_message_flagged_by_its_query_back_is_cleared_by_its_submit,
);
