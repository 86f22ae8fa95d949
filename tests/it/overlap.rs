//! Issue 11: never two calls of one branch in flight, across a crash and a
//! lost database. Each test makes one participant call outlive the lease
//! (fast_config: lease 1 s, call deadline 2 s; the call works 1.5 s and its
//! work runs on after the coordinator dies, as a participant's database
//! transaction would), kills or cuts off the coordinator while that call is
//! out, and lets another instance finish the transaction. Before the fix the
//! new owner called the branch again once the 1 s lease had expired, while
//! the first call still ran: these tests failed on every run.

use std::time::{Duration, Instant};

use concord_proto::v1::{self as pb, TransactionStatus as S};
use concord_testdb::Proxy;
use sqlx::PgPool;

use crate::harness::*;

/// How long the slow call works: longer than the lease, within the deadline.
const SLOW: Duration = Duration::from_millis(1500);

fn assert_no_overlap(participants: &[&TestParticipant]) {
    for p in participants {
        assert_eq!(
            p.concurrent_violations(),
            0,
            "{}: a branch phase called twice at once",
            p.name
        );
        assert_eq!(
            p.branch_overlaps(),
            0,
            "{}: a branch called while a call of it was out",
            p.name
        );
        assert!(
            p.precondition_violations().is_empty(),
            "{:?}",
            p.precondition_violations()
        );
    }
}

/// Begins, tries both banks and commits without waiting; returns the gid.
async fn transfer(coord: &TestCoordinator) -> String {
    let mut c = coord.client().await;
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    c.r#try(try_req(&gid, "bank-a", "debit")).await.unwrap();
    c.r#try(try_req(&gid, "bank-b", "credit")).await.unwrap();
    let reply = commit_tx(&mut c, &gid, false).await.unwrap();
    assert_eq!(reply.status, S::Confirming as i32);
    gid
}

async fn crash_during_a_slow_confirm_is_taken_over_after_its_deadline(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (a, b) = bank_participants(&db, &coord).await;
    a.script(Ph::Confirm, vec![Behavior::Busy(SLOW)], Behavior::Ok);
    let gid = transfer(&coord).await;
    assert!(
        a.wait_until(Duration::from_secs(5), |p| p.calls(&gid, "1", Ph::Confirm)
            == 1)
            .await
    );
    let killed = Instant::now();
    coord.crash();

    let fresh = TestCoordinator::start(&db).await;
    let mut c = fresh.client().await;
    wait_status(&mut c, &gid, S::Confirmed, Duration::from_secs(15)).await;
    assert_no_overlap(&[&a, &b]);
    assert_eq!(a.effects(Ph::Confirm), 1);
    assert_eq!(b.effects(Ph::Confirm), 1);
    // Not before the first call's deadline, and soon after it.
    assert!(killed.elapsed() < Duration::from_secs(10));
}

async fn crash_during_a_slow_try_cancels_only_after_the_try_is_over(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (a, _b) = bank_participants(&db, &coord).await;
    a.script(Ph::Try, vec![Behavior::Busy(SLOW)], Behavior::Ok);
    let mut c = coord.client().await;
    // A deadline shorter than the Try: the next instance rolls it back as
    // soon as it may.
    let gid = c
        .begin(begin_req("", Some(Duration::from_millis(500))))
        .await
        .unwrap()
        .into_inner()
        .gid;
    let trying = {
        let mut c = c.clone();
        let gid = gid.clone();
        tokio::spawn(async move { c.r#try(try_req(&gid, "bank-a", "debit")).await })
    };
    assert!(
        a.wait_until(Duration::from_secs(5), |p| p.calls(&gid, "1", Ph::Try) == 1)
            .await
    );
    coord.crash();
    let _ = trying.await;

    let fresh = TestCoordinator::start(&db).await;
    let mut c = fresh.client().await;
    wait_status(&mut c, &gid, S::Cancelled, Duration::from_secs(15)).await;
    assert_eq!(a.calls(&gid, "1", Ph::Cancel), 1);
    assert_no_overlap(&[&a]);
}

/// A rollback that waits for a Try still out holds its lease for that wait
/// alone: after a crash during the wait the next instance takes over once
/// the Try is past its deadline, and cancels within a second of it. The
/// lease used to cover the round's calls from the decision on, which kept
/// every instance away for up to a call deadline after the Try was over.
async fn crash_while_waiting_for_a_try_cancels_soon_after_the_try(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (a, _b) = bank_participants(&db, &coord).await;
    a.script(Ph::Try, vec![Behavior::Busy(SLOW)], Behavior::Ok);
    let mut c = coord.client().await;
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    let trying = {
        let (mut c, gid) = (c.clone(), gid.clone());
        tokio::spawn(async move { c.r#try(try_req(&gid, "bank-a", "debit")).await })
    };
    assert!(
        a.wait_until(Duration::from_secs(5), |p| p.calls(&gid, "1", Ph::Try) == 1)
            .await
    );
    let tried = Instant::now();
    // The initiator gives up a second into the Try (which works 1.5 s): the
    // decision rolls back and the round waits for the Try.
    tokio::time::sleep(Duration::from_secs(1)).await;
    rollback_tx(&mut c, &gid, "gave up", false).await.unwrap();
    let decided = tried.elapsed();
    coord.crash();
    let _ = trying.await;

    let fresh = TestCoordinator::start(&db).await;
    let mut c = fresh.client().await;
    wait_status(&mut c, &gid, S::Cancelled, Duration::from_secs(15)).await;
    let cancelled = tried.elapsed();
    assert_eq!(a.calls(&gid, "1", Ph::Cancel), 1);
    assert_no_overlap(&[&a]);
    // The Try's deadline is the call deadline (fast_config: 2 s) after it
    // arrived; a lease for the round's calls would have lasted 2 s (plus
    // margins) from the decision, a second after the Try.
    assert!(
        cancelled < Duration::from_secs(3),
        "cancelled {cancelled:?} after the Try arrived (decided after {decided:?}): \
         more than a second past the Try's deadline"
    );
}

async fn a_repeated_try_waits_for_the_one_still_out(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (a, _b) = bank_participants(&db, &coord).await;
    a.script(Ph::Try, vec![Behavior::Busy(SLOW)], Behavior::Ok);
    let mut c = coord.client().await;
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    let mut req = try_req(&gid, "bank-a", "debit");
    req.branch_id = "b1".into();
    let first = {
        let (mut c, req) = (c.clone(), req.clone());
        tokio::spawn(async move { c.r#try(req).await })
    };
    assert!(
        a.wait_until(Duration::from_secs(5), |p| p.calls(&gid, "b1", Ph::Try)
            == 1)
            .await
    );
    // The initiator (or another instance) repeats it while it is out.
    let again = c.r#try(req.clone()).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::Unavailable, "{again:?}");
    assert!(again.message().contains("still out"), "{}", again.message());
    first.await.unwrap().unwrap();
    // Once its reply is recorded (written just after the reply), a repeat
    // is sent and answered as before.
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        match c.r#try(req.clone()).await {
            Ok(_) => break,
            Err(e) if e.code() == tonic::Code::Unavailable && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("repeat refused: {e:?}"),
        }
    }
    assert_eq!(a.calls(&gid, "b1", Ph::Try), 2);
    assert_no_overlap(&[&a]);
}

async fn crash_during_a_slow_saga_step_is_taken_over_after_its_deadline(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let a = TestParticipant::start_on("order", &db).await;
    let b = TestParticipant::start_on("stock", &db).await;
    a.register(&coord, &["create", "cancel"]).await;
    b.register(&coord, &["reserve", "release"]).await;
    a.script(Ph::Execute, vec![Behavior::Busy(SLOW)], Behavior::Ok);
    let step = |participant: &str, action: &str, compensation: &str, deps: &[u32]| pb::SagaStep {
        participant: participant.into(),
        action: action.into(),
        compensation: compensation.into(),
        payload: b"{}".to_vec(),
        depends_on: deps.to_vec(),
        compensate_rejected: None,
        call_timeout: None,
        policy: None,
    };
    let mut c = coord.client().await;
    let gid = c
        .submit_saga(pb::SubmitSagaRequest {
            gid: String::new(),
            steps: vec![
                step("order", "create", "cancel", &[]),
                step("stock", "reserve", "release", &[0]),
            ],
            timeout: None,
            wait: false,
            metadata: Default::default(),
            concurrency: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .gid;
    assert!(
        a.wait_until(Duration::from_secs(5), |p| p.calls(&gid, "1", Ph::Execute)
            == 1)
            .await
    );
    coord.crash();

    let fresh = TestCoordinator::start(&db).await;
    let mut c = fresh.client().await;
    wait_status(&mut c, &gid, S::Succeeded, Duration::from_secs(15)).await;
    assert_no_overlap(&[&a, &b]);
    assert_eq!(b.calls(&gid, "2", Ph::Execute), 1);
}

/// PostgreSQL only: the database is a server cut off behind a network proxy,
/// and another instance finishes the transaction.
#[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
async fn an_instance_cut_off_from_the_database_is_not_overtaken_mid_call(pool: PgPool) {
    let direct = concord::store::postgres::PgStore::url_of(&pool);
    let o = pool.connect_options();
    let upstream = format!("{}:{}", o.get_host(), o.get_port());
    let upstream = tokio::net::lookup_host(upstream)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(upstream).await.unwrap();
    let database = o.get_database().unwrap_or("postgres").to_string();
    let proxied = format!("postgres://{}@{}/{database}", o.get_username(), proxy.addr);
    assert_ne!(proxied, direct);

    let cut_off = TestCoordinator::start_with(&pool, |c| {
        c.database_url = Some(proxied);
        c.dtm_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (a, b) = bank_participants(&pool, &cut_off).await;
    a.script(Ph::Confirm, vec![Behavior::Busy(SLOW)], Behavior::Ok);
    let gid = transfer(&cut_off).await;
    assert!(
        a.wait_until(Duration::from_secs(5), |p| p.calls(&gid, "1", Ph::Confirm)
            == 1)
            .await
    );
    // It can no longer renew its lease, while its Confirm is out.
    proxy.sever();

    let other = TestCoordinator::start(&pool).await;
    let mut c = other.client().await;
    wait_status(&mut c, &gid, S::Confirmed, Duration::from_secs(15)).await;
    assert_no_overlap(&[&a, &b]);
    assert_eq!(a.effects(Ph::Confirm), 1);

    // Cut off, it refuses at once and says why; back, it serves again.
    let mut cut = cut_off.client().await;
    let asked = Instant::now();
    let refused = cut.begin(begin_req("", None)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("database unreachable"),
        "{}",
        refused.message()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    // So does the DTM-compatible API, with 503.
    let dtm = crate::dtm::Dtm::of(&cut_off);
    let asked = Instant::now();
    let body = serde_json::json!({"gid": "cut-off-dtm", "trans_type": "tcc"});
    let (status, reply) = dtm.post("prepare", &body).await;
    assert_eq!(status, 503, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap_or_default()
            .contains("database unreachable"),
        "{reply}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    proxy.restore();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match cut.begin(begin_req("", None)).await {
            Ok(_) => break,
            Err(e) if Instant::now() < until => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("still refused after the database came back: {e:?}"),
        }
    }
    cut_off.crash();
}

/// A re-drive right after a round whose call timed out here (the
/// participant registers again at once) still waits the margin before the
/// next call: the timed-out call runs on at the participant for as long as
/// its request took to arrive. Here it arrives "200 ms late" (less than the
/// 250 ms margin). Before the fix the re-drive made the retry due at once
/// and the second Confirm arrived while the first still ran (the chaos run
/// caught one 40 ms before the first's deadline).
async fn a_redrive_right_after_a_timeout_waits_the_margin(db: TestDb) {
    let coord = TestCoordinator::start_with(&db, |c| {
        // Only the re-drive can bring the retry back within the test.
        c.retry.initial = Duration::from_secs(60);
        c.retry.max = Duration::from_secs(60);
        c.call_timeout = Duration::from_millis(500);
        c.poll_interval = Duration::from_millis(20);
    })
    .await;
    let (a, b) = bank_participants(&db, &coord).await;
    a.script(
        Ph::Confirm,
        vec![Behavior::PastDeadline(Duration::from_millis(200))],
        Behavior::Ok,
    );
    let gid = transfer(&coord).await;
    let mut c = coord.client().await;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let tx = get_tx(&mut c, &gid).await;
        if tx.events.iter().any(|e| e.kind == "retry_scheduled") {
            break;
        }
        assert!(Instant::now() < until, "the Confirm never timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.register(&coord, &["debit"]).await;
    wait_status(&mut c, &gid, S::Confirmed, Duration::from_secs(10)).await;
    assert_eq!(a.calls(&gid, "1", Ph::Confirm), 2);
    let tx = get_tx(&mut c, &gid).await;
    assert!(
        tx.events.iter().any(|e| e.kind == "redriven"),
        "the retry came from the re-drive, not the 60 s backoff"
    );
    assert_no_overlap(&[&a, &b]);
}

on_both_stores!(
    a_redrive_right_after_a_timeout_waits_the_margin,
    crash_during_a_slow_confirm_is_taken_over_after_its_deadline,
    crash_during_a_slow_try_cancels_only_after_the_try_is_over,
    crash_while_waiting_for_a_try_cancels_soon_after_the_try,
    a_repeated_try_waits_for_the_one_still_out,
    crash_during_a_slow_saga_step_is_taken_over_after_its_deadline,
);
