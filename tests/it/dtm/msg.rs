//! DTM's 2-phase messages through the API: prepared then submitted, or
//! asked back through `query_prepared` (committed, rolled back, down), and
//! submitted without a prepare.

use serde_json::{Value, json};
use std::time::Duration;

use super::busi::{Answer, Busi};
use super::{Dtm, PAYLOADS, coordinator};
use crate::harness::*;

/// A message's body as dtmcli's `Msg` sends it.
pub fn msg_body(gid: &str, busi: &Busi, query: &str, options: Value) -> Value {
    let mut body = json!({
        "gid": gid, "trans_type": "msg",
        "steps": [{"action": busi.url("TransOut")}, {"action": busi.url("TransIn")}],
        "payloads": PAYLOADS,
        "query_prepared": query,
        "protocol": "http",
    });
    for (k, v) in options.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn a_msg_is_asked_back_through_query_prepared(db: TestDb) {
    let coord = coordinator(&db).await;
    let dtm = Dtm::of(&coord);
    let busi = Busi::start().await;
    let query = busi.url("QueryPrepared");
    let prepared = |gid: &str| msg_body(gid, &busi, &query, json!({"timeout_to_fail": 1}));

    // Prepared, then submitted by the initiator: both steps, in order.
    let gid = dtm.new_gid().await;
    assert_eq!(dtm.post("prepare", &prepared(&gid)).await.0, 200);
    let (status, body) = dtm
        .post(
            "submit",
            &msg_body(&gid, &busi, &query, json!({"wait_result": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(busi.order(&gid), ["TransOut", "TransIn"]);
    let step = &busi.calls(&gid, "TransIn")[0];
    assert_eq!(
        (
            step.op.as_str(),
            step.branch_id.as_str(),
            step.trans_type.as_str()
        ),
        ("action", "02", "msg")
    );

    // The initiator never comes back; query_prepared says committed (200).
    let gid = dtm.new_gid().await;
    assert_eq!(dtm.post("prepare", &prepared(&gid)).await.0, 200);
    dtm.wait_status(&gid, "succeed", Duration::from_secs(15))
        .await;
    let asked = &busi.calls(&gid, "QueryPrepared")[0];
    assert_eq!(
        (
            asked.method.as_str(),
            asked.op.as_str(),
            asked.branch_id.as_str(),
            asked.trans_type.as_str()
        ),
        ("GET", "msg", "00", "msg")
    );
    assert_eq!(busi.order(&gid), ["QueryPrepared", "TransOut", "TransIn"]);

    // query_prepared says rolled back (409 FAILURE): aborted, no step runs.
    let gid = dtm.new_gid().await;
    busi.script(
        "QueryPrepared",
        vec![Answer::Status(409, r#"{"dtm_result":"FAILURE"}"#)],
    );
    assert_eq!(dtm.post("prepare", &prepared(&gid)).await.0, 200);
    dtm.wait_status(&gid, "failed", Duration::from_secs(15))
        .await;
    assert!(busi.calls(&gid, "TransOut").is_empty());

    // query_prepared is down: asked again, nothing runs, still prepared.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/api/busi/QueryPrepared", l.local_addr().unwrap())
    };
    let gid = dtm.new_gid().await;
    let body = msg_body(&gid, &busi, &gone, json!({"timeout_to_fail": 1}));
    assert_eq!(dtm.post("prepare", &body).await.0, 200);
    let mut c = coord.client().await;
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let tx = get_tx(&mut c, &gid).await;
        let asked: Vec<_> = tx
            .events
            .iter()
            .filter(|e| e.kind == "query_back")
            .collect();
        if asked.len() >= 2 {
            assert!(asked.iter().all(|e| e.code == "UNAVAILABLE"), "{asked:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "asked back twice: {tx:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dtm.query(&gid).await["transaction"]["status"], "prepared");
    assert!(busi.calls(&gid, "TransOut").is_empty());
    // The initiator's own abort still wins.
    assert_eq!(dtm.post("abort", &body).await.0, 200);
    assert_eq!(dtm.query(&gid).await["transaction"]["status"], "failed");

    // Submitted without a prepare, as dtmcli's Msg.Submit() does.
    let gid = dtm.new_gid().await;
    let body = msg_body(&gid, &busi, "", json!({"wait_result": true}));
    let (status, reply) = dtm.post("submit", &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(busi.order(&gid), ["TransOut", "TransIn"]);
}

on_both_stores!(a_msg_is_asked_back_through_query_prepared,);
