//! The DTM-compatible API end to end: requests shaped exactly as DTM's
//! client SDKs send them (the bodies of dtmcli's `TransBase`, its
//! `registerBranch`, its TCC client calling the Try itself) against a
//! coordinator on real PostgreSQL (and SQLite for one saga), with branches
//! at URLs of an axum service written the DTM way ([`busi`]). Sagas
//! sequential and concurrent, TCC, and messages asked back through
//! `query_prepared`; rejections, retries, ONGOING, timeouts, a crash, and
//! refusals that change nothing. Sagas, the crash and the refusals are
//! here; TCC in [`tcc`], messages in [`msg`]; [`sdk`] drives it all with
//! DTM's own Python client from PyPI.

mod busi;
mod msg;
mod sdk;
mod tcc;

use std::time::Duration;

use concord::domain::Gid;
use serde_json::{Value, json};

use self::busi::{Answer, Busi};
use self::msg::msg_body;
use crate::harness::*;

/// A coordinator with the DTM API on a free port.
pub async fn coordinator(db: impl Into<TestDb>) -> TestCoordinator {
    TestCoordinator::start_with(db, |c| {
        c.dtm_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(concord::tls::http_tls(None, None).unwrap())
        .no_proxy()
        .build()
        .unwrap()
}

/// What a DTM SDK does over HTTP, by hand.
pub struct Dtm {
    pub base: String,
    http: reqwest::Client,
}

impl Dtm {
    pub fn of(coord: &TestCoordinator) -> Self {
        Self {
            base: format!(
                "http://{}/api/dtmsvr",
                coord.dtm_addr.expect("dtm api bound")
            ),
            http: client(),
        }
    }

    async fn reply(r: reqwest::Response) -> (u16, Value) {
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// POST `{base}/{op}` with a JSON body.
    pub async fn post(&self, op: &str, body: &Value) -> (u16, Value) {
        self.post_raw(op, body.to_string().into_bytes()).await
    }

    pub async fn post_raw(&self, op: &str, body: Vec<u8>) -> (u16, Value) {
        self.post_with(op, body, &[]).await
    }

    /// The same with headers of the initiator's own request.
    pub async fn post_with(
        &self,
        op: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/{op}", self.base))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Self::reply(request.send().await.unwrap()).await
    }

    pub async fn new_gid(&self) -> String {
        let r = self
            .http
            .get(format!("{}/newGid", self.base))
            .send()
            .await
            .unwrap();
        let (status, body) = Self::reply(r).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["dtm_result"], "SUCCESS");
        body["gid"].as_str().unwrap().to_string()
    }

    pub async fn query(&self, gid: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/query?gid={gid}", self.base))
            .send()
            .await
            .unwrap();
        let (status, body) = Self::reply(r).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls `query` until the transaction's DTM status is `want`.
    pub async fn wait_status(&self, gid: &str, want: &str, timeout: Duration) -> Value {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let q = self.query(gid).await;
            if q["transaction"]["status"] == want {
                return q;
            }
            if tokio::time::Instant::now() >= until {
                panic!("{gid} is not {want}: {q:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A saga body as dtmcli's `TransBase` serialises it.
fn saga_body(gid: &str, steps: &[(String, String)], payloads: &[&str], options: Value) -> Value {
    let mut body = json!({
        "gid": gid,
        "trans_type": "saga",
        "steps": steps.iter().map(|(a, c)| json!({"action": a, "compensate": c})).collect::<Vec<_>>(),
        "payloads": payloads,
        "protocol": "http",
        "concurrent": false,
    });
    for (k, v) in options.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn transfer(busi: &Busi) -> Vec<(String, String)> {
    vec![
        (busi.url("TransOut"), busi.url("TransOutRevert")),
        (busi.url("TransIn"), busi.url("TransInRevert")),
    ]
}

pub const PAYLOADS: [&str; 2] = [r#"{"amount":30,"user":1}"#, r#"{"amount":30,"user":2}"#];

async fn saga_runs_in_order_and_compensates_a_failure(db: TestDb) {
    // Borrowed: a SQLite file lives as long as `db`.
    let coord = coordinator(&db).await;
    let dtm = Dtm::of(&coord);
    let busi = Busi::start().await;

    // Success: both actions, in order, by DTM's convention, with the
    // branch headers and the initiator's passthrough header.
    let gid = dtm.new_gid().await;
    let options = json!({"wait_result": true, "branch_headers": {"x-tenant": "t1"},
                         "passthrough_headers": ["x-request-id"]});
    let (status, body) = dtm
        .post_with(
            "submit",
            saga_body(&gid, &transfer(&busi), &PAYLOADS, options.clone())
                .to_string()
                .into_bytes(),
            &[("x-request-id", "req-7")],
        )
        .await;
    assert_eq!(
        (status, &body["dtm_result"]),
        (200, &json!("SUCCESS")),
        "{body}"
    );
    assert_eq!(busi.order(&gid), ["TransOut", "TransIn"]);
    let out = &busi.calls(&gid, "TransOut")[0];
    assert_eq!(
        (
            out.method.as_str(),
            out.trans_type.as_str(),
            out.branch_id.as_str(),
            out.op.as_str()
        ),
        ("POST", "saga", "01", "action")
    );
    assert_eq!(out.body, PAYLOADS[0].as_bytes());
    assert_eq!(out.headers["x-tenant"], "t1");
    assert_eq!(out.headers["x-request-id"], "req-7");
    assert_eq!(out.headers["content-type"], "application/json");
    assert_eq!(busi.calls(&gid, "TransIn")[0].branch_id, "02");
    let q = dtm.query(&gid).await;
    assert_eq!(q["transaction"]["status"], "succeed", "{q:#}");
    assert_eq!(q["transaction"]["trans_type"], "saga");

    // TransIn refuses (409): both steps are compensated, in reverse order;
    // with wait_result the submit answers FAILURE.
    let gid = dtm.new_gid().await;
    busi.script("TransIn", vec![Answer::Status(409, "account frozen")]);
    let (status, body) = dtm
        .post(
            "submit",
            &saga_body(&gid, &transfer(&busi), &PAYLOADS, options.clone()),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["dtm_result"], "FAILURE");
    assert!(
        body["message"].as_str().unwrap().contains("account frozen"),
        "{body}"
    );
    assert_eq!(
        busi.order(&gid),
        ["TransOut", "TransIn", "TransInRevert", "TransOutRevert"]
    );
    let revert = &busi.calls(&gid, "TransOutRevert")[0];
    assert_eq!(
        (revert.op.as_str(), revert.branch_id.as_str()),
        ("compensate", "01")
    );
    assert_eq!(revert.body, PAYLOADS[0].as_bytes());
    let q = dtm.query(&gid).await;
    assert_eq!(q["transaction"]["status"], "failed", "{q:#}");

    // The old convention: FAILURE in a 200 body is a refusal too; a step
    // without a compensation URL needs none.
    let gid = dtm.new_gid().await;
    busi.script(
        "TransIn",
        vec![Answer::Status(200, r#"{"dtm_result":"FAILURE"}"#)],
    );
    let steps = vec![
        (busi.url("TransOut"), String::new()),
        (busi.url("TransIn"), busi.url("TransInRevert")),
    ];
    let (status, _) = dtm
        .post("submit", &saga_body(&gid, &steps, &PAYLOADS, options))
        .await;
    assert_eq!(status, 409);
    assert_eq!(busi.order(&gid), ["TransOut", "TransIn", "TransInRevert"]);
}

on_both_stores!(
    saga_runs_in_order_and_compensates_a_failure,
    a_concurrent_saga_follows_its_orders,
    unknown_outcomes_and_ongoing_are_retried_and_a_timeout_compensates,
    a_crash_mid_saga_is_finished_by_a_fresh_instance,
    refusals_are_precise_and_change_nothing,
);

async fn a_concurrent_saga_follows_its_orders(db: TestDb) {
    let coord = coordinator(&db).await;
    let dtm = Dtm::of(&coord);
    let busi = Busi::start().await;
    busi.always("A", Answer::Slow(Duration::from_millis(300)));
    busi.always("B", Answer::Slow(Duration::from_millis(300)));
    let gid = dtm.new_gid().await;
    let steps: Vec<(String, String)> = ["A", "B", "C"]
        .iter()
        .map(|n| (busi.url(n), busi.url(&format!("{n}Revert"))))
        .collect();
    // As dtmcli's Saga.SetConcurrent().AddBranchOrder(2, []int{0, 1}) sends it.
    let options = json!({
        "concurrent": true,
        "wait_result": true,
        "custom_data": json!({"orders": {"2": [0, 1]}, "concurrent": true}).to_string(),
    });
    let (status, body) = dtm
        .post(
            "submit",
            &saga_body(&gid, &steps, &["{}", "{}", "{}"], options),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (a, b, c) = (
        busi.calls(&gid, "A")[0].clone(),
        busi.calls(&gid, "B")[0].clone(),
        busi.calls(&gid, "C")[0].clone(),
    );
    // A and B ran at the same time; C only after both.
    assert!(
        b.started < a.ended && a.started < b.ended,
        "A and B overlap"
    );
    assert!(
        c.started >= a.ended && c.started >= b.ended,
        "C waits for A and B"
    );

    // An order naming a step that does not exist is refused; nothing runs.
    let gid = dtm.new_gid().await;
    let options =
        json!({"concurrent": true, "custom_data": json!({"orders": {"5": [0]}}).to_string()});
    let (status, body) = dtm
        .post(
            "submit",
            &saga_body(&gid, &steps, &["{}", "{}", "{}"], options),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("orders"),
        "{body}"
    );
    assert_eq!(dtm.query(&gid).await["transaction"], Value::Null);
}

async fn unknown_outcomes_and_ongoing_are_retried_and_a_timeout_compensates(db: TestDb) {
    let coord = coordinator(&db).await;
    let dtm = Dtm::of(&coord);
    let busi = Busi::start().await;

    // 500, then ONGOING (425 and in the body), then success: retried,
    // never compensated.
    let gid = dtm.new_gid().await;
    busi.script(
        "TransIn",
        vec![
            Answer::Status(500, "db down"),
            Answer::Status(425, ""),
            Answer::Status(200, r#"{"dtm_result":"ONGOING"}"#),
        ],
    );
    let (status, body) = dtm
        .post(
            "submit",
            &saga_body(
                &gid,
                &transfer(&busi),
                &PAYLOADS,
                json!({"retry_interval": 1}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    dtm.wait_status(&gid, "succeed", Duration::from_secs(20))
        .await;
    assert_eq!(busi.calls(&gid, "TransIn").len(), 4);
    assert!(busi.calls(&gid, "TransInRevert").is_empty());
    // Each attempt is in the history (the CLI's view) with its code.
    let mut c = coord.client().await;
    let tx = get_tx(&mut c, &gid).await;
    let codes: Vec<String> = tx
        .events
        .iter()
        .filter(|e| e.kind == "call")
        .map(|e| e.code.clone())
        .collect();
    assert!(codes.contains(&"HTTP_500".to_string()), "{codes:?}");
    assert!(codes.contains(&"ONGOING".to_string()), "{codes:?}");

    // A step that never answers in time (request_timeout 1 s) until the
    // saga's timeout_to_fail (2 s): compensated, with the reason.
    let gid = dtm.new_gid().await;
    busi.always("Slow", Answer::Slow(Duration::from_millis(1500)));
    let steps = vec![
        (busi.url("TransOut"), busi.url("TransOutRevert")),
        (busi.url("Slow"), busi.url("SlowRevert")),
    ];
    let options = json!({"timeout_to_fail": 2, "request_timeout": 1, "wait_result": true});
    let (status, body) = dtm
        .post("submit", &saga_body(&gid, &steps, &PAYLOADS, options))
        .await;
    assert_eq!(status, 409, "{body}");
    let q = dtm.query(&gid).await;
    assert_eq!(q["transaction"]["status"], "failed", "{q:#}");
    assert!(!busi.calls(&gid, "TransOutRevert").is_empty());
    let tx = get_tx(&mut c, &gid).await;
    let codes: Vec<String> = tx
        .events
        .iter()
        .filter(|e| e.kind == "call")
        .map(|e| e.code.clone())
        .collect();
    assert!(
        codes.contains(&"DEADLINE_EXCEEDED".to_string()),
        "{codes:?}"
    );
}

async fn a_crash_mid_saga_is_finished_by_a_fresh_instance(db: TestDb) {
    let busi = Busi::start().await;
    busi.script("TransIn", vec![Answer::Slow(Duration::from_secs(3))]);
    let coord = coordinator(&db).await;
    let dtm = Dtm::of(&coord);
    let gid = dtm.new_gid().await;
    let (status, _) = dtm
        .post(
            "submit",
            &saga_body(
                &gid,
                &transfer(&busi),
                &PAYLOADS,
                json!({"request_timeout": 5}),
            ),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        busi.wait_calls(&gid, "TransOut", 1, Duration::from_secs(5))
            .await
    );
    // TransIn is in flight: the coordinator dies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    coord.crash();

    let fresh = coordinator(&db).await;
    let dtm = Dtm::of(&fresh);
    dtm.wait_status(&gid, "succeed", Duration::from_secs(30))
        .await;
    // The completed action is not run again; the one in flight may be
    // (at least once, as DTM promises): its barrier makes that harmless.
    assert_eq!(busi.calls(&gid, "TransOut").len(), 1);
    assert!(!busi.calls(&gid, "TransIn").is_empty());
    assert!(busi.calls(&gid, "TransOutRevert").is_empty());
}

async fn refusals_are_precise_and_change_nothing(db: TestDb) {
    let coord = TestCoordinator::start_with(&db, |c| {
        c.dtm_listen = Some("127.0.0.1:0".parse().unwrap());
        c.max_request_bytes = 64 * 1024;
    })
    .await;
    let dtm = Dtm::of(&coord);
    let busi = Busi::start().await;
    let steps = transfer(&busi);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "prepare",
            json!({"gid": "x1", "trans_type": "xa"}),
            409,
            "not supported",
        ),
        (
            "submit",
            json!({"gid": "x2", "trans_type": "workflow"}),
            409,
            "not supported",
        ),
        (
            "submit",
            saga_body("x3", &steps, &PAYLOADS, json!({"protocol": "grpc"})),
            409,
            "protocol",
        ),
        (
            "submit",
            saga_body("", &steps, &PAYLOADS, json!({})),
            400,
            "gid is required",
        ),
        (
            "submit",
            saga_body("x 4", &steps, &PAYLOADS, json!({})),
            400,
            "gid",
        ),
        (
            "submit",
            saga_body(
                "x5",
                &[("ftp://h/a".into(), String::new())],
                &["{}"],
                json!({}),
            ),
            400,
            "steps[0]",
        ),
        (
            "submit",
            saga_body("x6", &steps, &["{}"], json!({})),
            400,
            "payloads",
        ),
        (
            "submit",
            saga_body(
                "x7",
                &steps,
                &PAYLOADS,
                json!({"branch_headers": {"bad name": "v"}}),
            ),
            400,
            "header",
        ),
        (
            "submit",
            saga_body("x8", &steps, &PAYLOADS, json!({"timeout_to_fail": -1})),
            400,
            "negative",
        ),
        (
            "prepare",
            saga_body("x9", &steps, &PAYLOADS, json!({})),
            409,
            "submit it whole",
        ),
        (
            "abort",
            saga_body("x10", &steps, &PAYLOADS, json!({})),
            409,
            "compensates by itself",
        ),
        (
            "prepare",
            msg_body("x11", &busi, "", json!({})),
            400,
            "query_prepared",
        ),
        (
            "registerBranch",
            json!({"gid": "x12", "branch_id": "01", "trans_type": "tcc", "data": "", "confirm": busi.url("c"), "cancel": busi.url("x")}),
            404,
            "not found",
        ),
        (
            "registerBranch",
            json!({"gid": "x13", "branch_id": "01", "trans_type": "xa", "url": busi.url("c")}),
            409,
            "not supported",
        ),
        (
            "registerXaBranch",
            json!({"gid": "x14"}),
            409,
            "not supported",
        ),
    ];
    for (op, body, want, why) in cases {
        let (status, reply) = dtm.post(op, &body).await;
        assert_eq!(status, want, "{op} {body}: {reply}");
        assert_eq!(reply["dtm_result"], "FAILURE", "{reply}");
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(why),
            "{op}: {message:?} should say {why:?}"
        );
        let gid = body["gid"].as_str().unwrap_or_default();
        if Gid::parse(gid).is_ok() {
            assert_eq!(
                dtm.query(gid).await["transaction"],
                Value::Null,
                "{gid} created"
            );
        }
    }
    // Not JSON, and over max_request_bytes.
    let (status, reply) = dtm.post_raw("submit", b"{not json".to_vec()).await;
    assert_eq!(
        (status, &reply["dtm_result"]),
        (400, &json!("FAILURE")),
        "{reply}"
    );
    let big = saga_body("x15", &steps, &[&"a".repeat(70 * 1024), "{}"], json!({}));
    let (status, reply) = dtm.post("submit", &big).await;
    assert_eq!(status, 413, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("max_request_bytes"),
        "{reply}"
    );
    assert_eq!(dtm.query("x15").await["transaction"], Value::Null);
    // Nothing reached the service.
    assert!(busi.order("x3").is_empty() && busi.order("x6").is_empty());
}
