//! Unit tests of `wire`: bodies as DTM's SDKs send them read into engine
//! requests, and bad ones refused precisely.

use super::*;

fn body(json: &str) -> TransBody {
    serde_json::from_str(json).unwrap()
}

#[test]
fn the_python_sdks_saga_body_reads() {
    // As dtmcli 1.7.7.0 sends it: nulls for unset options.
    let b = body(
        r#"{"gid":"g1","trans_type":"saga","custom_data":null,
            "steps":[{"action":"http://h:1/a","compensate":"http://h:1/ar"},
                     {"action":"http://h:2/b","compensate":""}],
            "payloads":["{\"amount\":30}","{}"],"query_prepared":null,"protocol":null,
            "wait_result":false,"timeout_to_fail":0,"request_timeout":8,"retry_interval":0,
            "passthrough_headers":[],"branch_headers":{},"concurrent":false}"#,
    );
    let saga = b.saga(BTreeMap::new()).unwrap();
    assert_eq!(saga.steps.len(), 2);
    assert_eq!(saga.steps[1].depends_on, vec![0]);
    assert_eq!(saga.steps[0].payload, br#"{"amount":30}"#);
    assert_eq!(saga.steps[0].call_timeout, Some(Duration::from_secs(8)));
    assert_eq!(saga.steps[0].participant.as_str(), "h:1");
    let c = saga.steps[1].url_call.as_ref().unwrap();
    assert_eq!(c.branch_id, "02");
    assert_eq!(c.url("compensate"), None);
    assert_eq!(saga.timeout, None);
}

#[test]
fn concurrent_sagas_follow_their_orders() {
    let b = body(
        r#"{"gid":"g","trans_type":"saga","concurrent":true,
            "custom_data":"{\"orders\":{\"2\":[0,1]},\"concurrent\":true}",
            "steps":[{"action":"http://h/a"},{"action":"http://h/b"},{"action":"http://h/c"}],
            "payloads":["","",""]}"#,
    );
    let saga = b.saga(BTreeMap::new()).unwrap();
    let deps: Vec<_> = saga.steps.iter().map(|s| s.depends_on.clone()).collect();
    assert_eq!(deps, vec![vec![], vec![], vec![0, 1]]);
    assert_eq!(saga.concurrency, Some(3));
}

#[test]
fn bad_bodies_are_refused_precisely() {
    let cases = [
        (r#"{"gid":"g","trans_type":"xa"}"#, "not supported"),
        (r#"{"gid":"g","trans_type":"workflow"}"#, "not supported"),
        (
            r#"{"gid":"g","trans_type":"saga","protocol":"grpc"}"#,
            "protocol",
        ),
    ];
    for (json, want) in cases {
        let e = body(json).trans_type().unwrap_err();
        assert!(e.to_string().contains(want), "{json}: {e}");
    }
    let no_steps = body(r#"{"gid":"g","trans_type":"saga"}"#);
    assert!(no_steps.saga(BTreeMap::new()).is_err());
    let bad_url = body(r#"{"gid":"g","trans_type":"saga","steps":[{"action":"ftp://x"}]}"#);
    let e = bad_url.saga(BTreeMap::new()).unwrap_err().to_string();
    assert!(e.contains("steps[0]"), "{e}");
    let no_query = body(r#"{"gid":"g","trans_type":"msg","steps":[{"action":"http://h/a"}]}"#);
    assert!(no_query.msg(BTreeMap::new(), false).is_err());
    assert!(no_query.msg(BTreeMap::new(), true).unwrap().query.is_none());
    let negative = body(
        r#"{"gid":"g","trans_type":"saga","timeout_to_fail":-1,"steps":[{"action":"http://h/a"}]}"#,
    );
    assert!(negative.saga(BTreeMap::new()).is_err());
}

#[test]
fn tcc_options_travel_in_metadata_to_the_branches() {
    let b = body(
        r#"{"gid":"g","trans_type":"tcc","request_timeout":3,"retry_interval":2,
            "branch_headers":{"x-tenant":"t1"}}"#,
    );
    let headers = b.headers(&http::HeaderMap::new()).unwrap();
    let m = b.tcc_metadata(&headers).unwrap();
    let r: RegisterBody = serde_json::from_str(
        r#"{"gid":"g","branch_id":"01","trans_type":"tcc","status":"prepared",
            "data":"{\"a\":1}","confirm":"http://h:9/c","cancel":"http://h:9/x"}"#,
    )
    .unwrap();
    let branch = r.branch(&m).unwrap();
    assert_eq!(branch.call_timeout, Some(Duration::from_secs(3)));
    assert_eq!(
        branch.policy.retry.map(|r| r.initial),
        Some(Duration::from_secs(2))
    );
    assert_eq!(branch.url_call.headers["x-tenant"], "t1");
    assert_eq!(branch.url_call.branch_id, "01");
    assert_eq!(branch.payload, br#"{"a":1}"#);
}
