//! Bad input gets a precise status and changes nothing.

use std::time::Duration;

use concord_proto::v1 as pb;
use tonic::Code;

use crate::harness::*;

fn refused<T: std::fmt::Debug>(res: Result<T, tonic::Status>, code: Code, needle: &str) {
    let err = res.unwrap_err();
    assert_eq!(err.code(), code, "{needle}: {err:?}");
    assert!(
        err.message().contains(needle),
        "{:?} should mention {needle:?}",
        err.message()
    );
}

async fn counts(db: &TestDb) -> (i64, i64, i64) {
    (
        db.number("SELECT count(*) FROM global_transactions").await,
        db.number("SELECT count(*) FROM branches").await,
        db.number("SELECT count(*) FROM participant_endpoints")
            .await,
    )
}

async fn malformed_requests_are_refused_without_effect(db: TestDb) {
    let coord = TestCoordinator::start_with(&db, |c| {
        c.max_payload_bytes = 1024;
        c.max_request_bytes = 64 * 1024;
    })
    .await;
    let p = TestParticipant::start("bank", None).await;
    p.register(&coord, &["debit"]).await;
    let mut c = coord.client().await;
    let mut r = coord.registry().await;
    let gid = c
        .begin(begin_req("g-ok", None))
        .await
        .unwrap()
        .into_inner()
        .gid;
    let before = counts(&db).await;

    refused(
        c.begin(begin_req(&"x".repeat(129), None)).await,
        Code::InvalidArgument,
        "limit is 128",
    );
    refused(
        c.begin(begin_req("has space", None)).await,
        Code::InvalidArgument,
        "gid contains",
    );
    let mut big_meta = begin_req("g-meta", None);
    for i in 0..40 {
        big_meta.metadata.insert(format!("k{i}"), "v".into());
    }
    refused(
        c.begin(big_meta).await,
        Code::InvalidArgument,
        "metadata has 40 entries",
    );
    let mut zero = begin_req("g-zero", None);
    zero.timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 0,
    });
    refused(
        c.begin(zero).await,
        Code::InvalidArgument,
        "timeout must be positive",
    );

    refused(
        c.r#try(try_req("nope", "bank", "debit")).await,
        Code::NotFound,
        "transaction nope not found",
    );
    refused(
        c.r#try(try_req("", "bank", "debit")).await,
        Code::InvalidArgument,
        "gid must not be empty",
    );
    refused(
        c.r#try(try_req(&gid, "ghost", "debit")).await,
        Code::NotFound,
        "participant ghost is not registered",
    );
    refused(
        c.r#try(try_req(&gid, "bank", "steal")).await,
        Code::NotFound,
        "has no action steal (registered: debit)",
    );
    let mut big = try_req(&gid, "bank", "debit");
    big.payload = vec![b'x'; 2048];
    refused(
        c.r#try(big).await,
        Code::InvalidArgument,
        "payload is 2048 bytes, the limit is 1024",
    );
    let mut huge = try_req(&gid, "bank", "debit");
    huge.payload = vec![b'x'; 100 * 1024];
    let err = c.r#try(huge).await.unwrap_err();
    // Refused while decoding, before any handler runs.
    assert_eq!(
        err.code(),
        Code::ResourceExhausted,
        "oversized request: {err:?}"
    );
    assert!(
        err.message().starts_with("request is ")
            && err
                .message()
                .ends_with("bytes, over the limit of 65536 bytes (max_request_bytes)"),
        "{}",
        err.message()
    );
    let mut bad_branch = try_req(&gid, "bank", "debit");
    bad_branch.branch_id = "a/b".into();
    refused(
        c.r#try(bad_branch).await,
        Code::InvalidArgument,
        "branch_id contains",
    );

    let reg = |name: &str, endpoint: &str, actions: &[&str]| pb::RegisterParticipantRequest {
        protocol: Default::default(),
        name: name.into(),
        endpoint: endpoint.into(),
        actions: actions
            .iter()
            .map(|a| pb::Action {
                name: a.to_string(),
                ..Default::default()
            })
            .collect(),
    };
    for (req, needle) in [
        (reg("svc", "127.0.0.1:9", &["a"]), "not valid"),
        (
            reg("svc", "ftp://h:1", &["a"]),
            "scheme must be http or https",
        ),
        (reg("svc", "http://h:1/path", &["a"]), "path or query"),
        (reg("svc", "http://h:1", &[]), "registers no action"),
        (
            reg("", "http://h:1", &["a"]),
            "participant must not be empty",
        ),
        (reg("svc", "http://h:1", &["bad name"]), "action contains"),
    ] {
        let err = r.register_participant(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains(needle),
            "{:?} should mention {needle:?}",
            err.message()
        );
    }
    let err = commit_tx(&mut c, "unknown", false).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .get_transaction(pb::GetTransactionRequest {
            gid: "unknown".into(),
            include_events: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    assert_eq!(counts(&db).await, before, "nothing changed");
}

async fn illegal_state_changes_are_refused(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let p = TestParticipant::start("bank", None).await;
    p.register(&coord, &["debit"]).await;
    let mut c = coord.client().await;

    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    c.r#try(try_req(&gid, "bank", "debit")).await.unwrap();
    commit_tx(&mut c, &gid, true).await.unwrap();
    let err = c.r#try(try_req(&gid, "bank", "debit")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("confirmed"), "{}", err.message());
    let err = rollback_tx(&mut c, &gid, "", false).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let tx = get_tx(&mut c, &gid).await;
    assert_eq!(tx.branches.len(), 1);
    assert_eq!(p.total_calls(Ph::Cancel), 0);

    // Same branch id with a different payload is a conflict, not a retry.
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    let mut t = try_req(&gid, "bank", "debit");
    t.branch_id = "b1".into();
    c.r#try(t.clone()).await.unwrap();
    t.payload = b"other".to_vec();
    let err = c.r#try(t).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    // Commit after the deadline is refused; the coordinator rolls it back.
    let gid = c
        .begin(begin_req("", Some(Duration::from_millis(300))))
        .await
        .unwrap()
        .into_inner()
        .gid;
    c.r#try(try_req(&gid, "bank", "debit")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let err = commit_tx(&mut c, &gid, false).await.unwrap_err();
    assert!(
        err.code() == Code::FailedPrecondition,
        "commit after deadline: {err:?}"
    );
    assert_eq!(
        p.total_calls(Ph::Confirm),
        1,
        "only the first transaction confirmed"
    );
}

on_both_stores!(
    malformed_requests_are_refused_without_effect,
    illegal_state_changes_are_refused,
);
