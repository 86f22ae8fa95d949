//! DTM's TCC through the API: the client registers each branch with its
//! Confirm and Cancel URLs and calls the Try itself, then submits (every
//! branch confirmed) or aborts (every branch cancelled); a transaction
//! never submitted is cancelled at its timeout.

use serde_json::json;
use std::time::Duration;

use super::busi::{Answer, Busi};
use super::{Dtm, PAYLOADS, client, coordinator};
use crate::harness::{TestDb, on_both_stores};

/// What dtmcli's TCC client does for one branch: register it with its
/// Confirm and Cancel URLs, then call its Try itself.
async fn tcc_branch(
    dtm: &Dtm,
    busi: &Busi,
    gid: &str,
    branch: &str,
    name: &str,
    data: &str,
) -> u16 {
    let (status, body) = dtm
        .post(
            "registerBranch",
            &json!({
                "gid": gid, "branch_id": branch, "trans_type": "tcc", "status": "prepared",
                "data": data,
                "confirm": busi.url(&format!("{name}Confirm")),
                "cancel": busi.url(&format!("{name}Cancel")),
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    client()
        .post(format!(
            "{}?gid={gid}&trans_type=tcc&branch_id={branch}&op=try",
            busi.url(&format!("{name}Try"))
        ))
        .body(data.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn tcc_confirms_on_submit_and_cancels_on_abort(db: TestDb) {
    let coord = coordinator(&db).await;
    let dtm = Dtm::of(&coord);
    let busi = Busi::start().await;
    let tcc = |gid: &str, wait: bool| json!({"gid": gid, "trans_type": "tcc", "wait_result": wait, "protocol": "http"});

    // Both Tries succeed: submit confirms both (a first Confirm failure is
    // retried), each with its registered data.
    let gid = dtm.new_gid().await;
    let (status, body) = dtm
        .post("prepare", &json!({"gid": gid, "trans_type": "tcc", "branch_headers": {"x-tenant": "t2"}, "request_timeout": 3}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        tcc_branch(&dtm, &busi, &gid, "01", "TransOut", PAYLOADS[0]).await,
        200
    );
    assert_eq!(
        tcc_branch(&dtm, &busi, &gid, "02", "TransIn", PAYLOADS[1]).await,
        200
    );
    busi.script("TransInConfirm", vec![Answer::Status(503, "busy")]);
    let (status, body) = dtm.post("submit", &tcc(&gid, true)).await;
    assert_eq!(status, 200, "{body}");
    let confirm = &busi.calls(&gid, "TransOutConfirm")[0];
    assert_eq!(
        (
            confirm.op.as_str(),
            confirm.branch_id.as_str(),
            confirm.trans_type.as_str()
        ),
        ("confirm", "01", "tcc")
    );
    assert_eq!(confirm.body, PAYLOADS[0].as_bytes());
    assert_eq!(
        confirm.headers["x-tenant"], "t2",
        "prepare's branch headers reach the branches"
    );
    assert_eq!(busi.calls(&gid, "TransInConfirm").len(), 2);
    assert!(busi.calls(&gid, "TransOutCancel").is_empty());
    let q = dtm.query(&gid).await;
    assert_eq!(q["transaction"]["status"], "succeed", "{q:#}");
    // A repeated submit is fine; an abort after it is refused.
    assert_eq!(dtm.post("submit", &tcc(&gid, false)).await.0, 200);
    let (status, body) = dtm.post("abort", &tcc(&gid, false)).await;
    assert_eq!(
        (status, &body["dtm_result"]),
        (409, &json!("FAILURE")),
        "{body}"
    );

    // The second Try refuses: the SDK aborts, and every registered branch
    // is cancelled (the refused one too: its Try may have done something).
    let gid = dtm.new_gid().await;
    assert_eq!(dtm.post("prepare", &tcc(&gid, false)).await.0, 200);
    busi.script("TransInTry", vec![Answer::Status(409, "no account")]);
    assert_eq!(
        tcc_branch(&dtm, &busi, &gid, "01", "TransOut", PAYLOADS[0]).await,
        200
    );
    assert_eq!(
        tcc_branch(&dtm, &busi, &gid, "02", "TransIn", PAYLOADS[1]).await,
        409
    );
    let (status, body) = dtm.post("abort", &tcc(&gid, true)).await;
    assert_eq!(status, 200, "{body}");
    for name in ["TransOutCancel", "TransInCancel"] {
        let c = &busi.calls(&gid, name)[0];
        assert_eq!(c.op, "cancel", "{name}");
    }
    assert!(busi.calls(&gid, "TransOutConfirm").is_empty());
    assert_eq!(dtm.query(&gid).await["transaction"]["status"], "failed");

    // A prepared TCC never submitted is cancelled at its timeout_to_fail.
    let gid = dtm.new_gid().await;
    assert_eq!(
        dtm.post(
            "prepare",
            &json!({"gid": gid, "trans_type": "tcc", "timeout_to_fail": 1})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        tcc_branch(&dtm, &busi, &gid, "01", "TransOut", PAYLOADS[0]).await,
        200
    );
    dtm.wait_status(&gid, "failed", Duration::from_secs(10))
        .await;
    assert_eq!(busi.calls(&gid, "TransOutCancel").len(), 1);
    // Registering after the end is refused.
    let (status, body) = dtm
        .post("registerBranch", &json!({"gid": gid, "branch_id": "02", "trans_type": "tcc", "data": "{}", "confirm": busi.url("c"), "cancel": busi.url("x")}))
        .await;
    assert_eq!(
        (status, &body["dtm_result"]),
        (409, &json!("FAILURE")),
        "{body}"
    );
}

on_both_stores!(tcc_confirms_on_submit_and_cancels_on_abort,);
