//! Crashes between any two steps, recovery by a fresh instance, and two
//! instances racing for the same work. Invariants: all-or-nothing, and each
//! Confirm/Cancel effect applied exactly once behind a barrier.

use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_proto::v1::{self as pb, TransactionStatus as S};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::harness::*;

async fn crash_after_branch_insert_rolls_back_on_a_fresh_instance(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (a, _b) = bank_participants(&db, &coord).await;
    let hold = Arc::new(Notify::new());
    a.script(Ph::Try, vec![Behavior::Block(hold.clone())], Behavior::Ok);
    let mut c = coord.client().await;
    let gid = c
        .begin(begin_req("", Some(Duration::from_millis(1500))))
        .await
        .unwrap()
        .into_inner()
        .gid;
    let mut c2 = c.clone();
    let g = gid.clone();
    let pending = tokio::spawn(async move { c2.r#try(try_req(&g, "bank-a", "debit")).await });
    assert!(
        a.wait_until(Duration::from_secs(5), |p| p.calls(&gid, "1", Ph::Try) == 1)
            .await
    );
    coord.crash();
    assert!(
        pending.await.unwrap().is_err(),
        "the initiator sees the crash"
    );
    hold.notify_waiters();

    let fresh = TestCoordinator::start(&db).await;
    let mut c = fresh.client().await;
    let tx = wait_status(&mut c, &gid, S::Cancelled, Duration::from_secs(10)).await;
    assert!(tx.rollback_reason.starts_with("deadline passed"));
    assert_eq!(a.calls(&gid, "1", Ph::Cancel), 1);
    assert_eq!(a.total_calls(Ph::Confirm), 0);
    assert!(
        a.precondition_violations().is_empty(),
        "{:?}",
        a.precondition_violations()
    );
}

/// Commits a transaction with a Try on each of `tries` (participant,
/// action) without waiting, `a`'s Confirm scripted to hang, and returns its
/// gid once that Confirm is at `a`: a decision made, a call of it out.
async fn committed_with_a_confirm_out(
    coord: &TestCoordinator,
    a: &TestParticipant,
    tries: &[(&str, &str)],
) -> String {
    a.script(
        Ph::Confirm,
        vec![Behavior::Block(Arc::new(Notify::new()))],
        Behavior::Ok,
    );
    let mut c = coord.client().await;
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    for (participant, action) in tries {
        c.r#try(try_req(&gid, participant, action)).await.unwrap();
    }
    let reply = commit_tx(&mut c, &gid, false).await.unwrap();
    assert_eq!(reply.status, S::Confirming as i32);
    assert!(
        a.wait_until(Duration::from_secs(5), |p| p.calls(&gid, "1", Ph::Confirm)
            == 1)
            .await
    );
    gid
}

async fn crash_after_decision_is_finished_by_a_fresh_instance(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (a, b) = bank_participants(&db, &coord).await;
    b.script(
        Ph::Confirm,
        vec![Behavior::Block(Arc::new(Notify::new()))],
        Behavior::Ok,
    );
    let gid =
        committed_with_a_confirm_out(&coord, &a, &[("bank-a", "debit"), ("bank-b", "credit")])
            .await;
    coord.crash();

    let fresh = TestCoordinator::start(&db).await;
    let mut c = fresh.client().await;
    wait_status(&mut c, &gid, S::Confirmed, Duration::from_secs(10)).await;
    for (p, branch) in [(&a, "1"), (&b, "2")] {
        assert!(p.has_effect(&gid, branch, Ph::Confirm));
        assert_eq!(p.effects(Ph::Confirm), 1);
        assert_eq!(p.total_calls(Ph::Cancel), 0);
        assert!(p.precondition_violations().is_empty());
    }
}

async fn crash_between_two_confirms_confirms_each_effect_once(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (a, b) = bank_participants(&db, &coord).await;
    let hold = Arc::new(Notify::new());
    b.script(
        Ph::Confirm,
        vec![Behavior::Block(hold.clone())],
        Behavior::Ok,
    );
    let mut c = coord.client().await;
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    c.r#try(try_req(&gid, "bank-a", "debit")).await.unwrap();
    c.r#try(try_req(&gid, "bank-b", "credit")).await.unwrap();
    commit_tx(&mut c, &gid, false).await.unwrap();
    assert!(
        a.wait_until(Duration::from_secs(5), |p| p.has_effect(
            &gid,
            "1",
            Ph::Confirm
        ))
        .await
    );
    assert!(
        b.wait_until(Duration::from_secs(5), |p| p.calls(&gid, "2", Ph::Confirm)
            == 1)
            .await
    );
    coord.crash();

    let fresh = TestCoordinator::start(&db).await;
    let mut c = fresh.client().await;
    wait_status(&mut c, &gid, S::Confirmed, Duration::from_secs(10)).await;
    // The round was not written before the crash, so branch 1 is confirmed
    // again; the barrier keeps its effect single.
    assert_eq!(a.calls(&gid, "1", Ph::Confirm), 2);
    assert_eq!(a.effects(Ph::Confirm), 1);
    assert_eq!(b.effects(Ph::Confirm), 1);
}

async fn graceful_shutdown_releases_leases_for_immediate_takeover(db: TestDb) {
    let coord = TestCoordinator::start_with(&db, |c| {
        c.lease = Duration::from_secs(30);
        c.shutdown_grace = Duration::from_millis(300);
    })
    .await;
    let (a, _b) = bank_participants(&db, &coord).await;
    let hold = Arc::new(Notify::new());
    a.script(
        Ph::Confirm,
        vec![Behavior::Block(hold.clone())],
        Behavior::Ok,
    );
    let mut c = coord.client().await;
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    c.r#try(try_req(&gid, "bank-a", "debit")).await.unwrap();
    commit_tx(&mut c, &gid, false).await.unwrap();
    assert!(
        a.wait_until(Duration::from_secs(5), |p| p.calls(&gid, "1", Ph::Confirm)
            == 1)
            .await
    );
    coord.shutdown();
    let owner = db
        .text_of("SELECT owner FROM global_transactions WHERE gid = $1", &gid)
        .await;
    assert_eq!(owner, None, "lease released at shutdown, not left for 30 s");
    let fresh = TestCoordinator::start(&db).await;
    let mut c = fresh.client().await;
    wait_status(&mut c, &gid, S::Confirmed, Duration::from_secs(5)).await;
    hold.notify_waiters();
}

/// PostgreSQL only: two instances share the database.
#[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
async fn two_instances_racing_never_drive_a_branch_twice(pool: PgPool) {
    let one = TestCoordinator::start(&pool).await;
    let two = TestCoordinator::start(&pool).await;
    let (a, b) = bank_participants(&pool, &one).await;
    a.script(Ph::Confirm, vec![], Behavior::FailFirstPerBranch(2));
    b.script(Ph::Cancel, vec![], Behavior::FailFirstPerBranch(2));
    let mut c1 = one.client().await;
    let mut c2 = two.client().await;
    let mut gids = Vec::new();
    for i in 0..30 {
        let c = if i % 2 == 0 { &mut c1 } else { &mut c2 };
        let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
        c.r#try(try_req(&gid, "bank-a", "debit")).await.unwrap();
        c.r#try(try_req(&gid, "bank-b", "credit")).await.unwrap();
        if i % 3 == 0 {
            rollback_tx(c, &gid, "r", false).await.unwrap();
        } else {
            commit_tx(c, &gid, false).await.unwrap();
        }
        gids.push((gid, i % 3 != 0));
    }
    for (gid, committed) in &gids {
        let want = if *committed {
            S::Confirmed
        } else {
            S::Cancelled
        };
        wait_status(&mut c1, gid, want, Duration::from_secs(20)).await;
        if *committed {
            assert_eq!(
                a.calls(gid, "1", Ph::Confirm),
                3,
                "2 failures then 1 success, never more"
            );
            assert_eq!(b.calls(gid, "2", Ph::Confirm), 1);
        } else {
            assert_eq!(a.calls(gid, "1", Ph::Cancel), 1);
            assert_eq!(b.calls(gid, "2", Ph::Cancel), 3);
        }
    }
    assert_eq!(a.concurrent_violations() + b.concurrent_violations(), 0);
    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT actor FROM transaction_events WHERE kind = 'call' AND phase IN ('confirm', 'cancel')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        owners.len(),
        2,
        "both instances did phase-2 work: {owners:?}"
    );
}

/// The instance that takes over does not wait for its next poll: it reads
/// when the dead owner's lease ends and claims the transaction then. With a
/// 30 s poll interval, only that makes the takeover come within seconds.
async fn a_takeover_follows_the_leases_expiry_not_the_next_poll(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let (a, b) = bank_participants(&db, &coord).await;
    let gid =
        committed_with_a_confirm_out(&coord, &a, &[("bank-a", "debit"), ("bank-b", "credit")])
            .await;
    // The decision's lease covers the blocked Confirm's deadline (2 s in
    // the tests' configuration) plus the margins.
    coord.crash();
    let crashed = Instant::now();

    let fresh = TestCoordinator::start_with(&db, |c| {
        c.poll_interval = Duration::from_secs(30);
    })
    .await;
    let mut c = fresh.client().await;
    wait_status(&mut c, &gid, S::Confirmed, Duration::from_secs(10)).await;
    let took = crashed.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "confirmed {took:?} after the crash: the takeover waited for a poll"
    );
    assert_eq!(a.effects(Ph::Confirm), 1);
    assert_eq!(b.effects(Ph::Confirm), 1);
    assert_eq!(a.branch_overlaps(), 0);
}

/// A `concord serve` process killed with SIGKILL while a Confirm is out: on
/// PostgreSQL another instance, running beside it, takes over; on SQLite the
/// one instance restarts on the file (the OS let go of the file's lock) and
/// takes over once the dead process's lease has run out.
async fn sigkilled_process_is_taken_over_within_seconds(db: TestDb) {
    let url = db.url();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // Default lease and poll interval: this measures the shipped settings.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--no-migrate",
            "true",
            // Not under test; their default ports may be taken (this test
            // runs on both stores at once: both took the metrics port and
            // one failed to start).
            "--dtm-listen",
            "off",
            "--metrics-listen",
            "off",
        ])
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let spawned = Instant::now();
    let mut c = loop {
        match tonic::transport::Channel::from_shared(endpoint.clone())
            .unwrap()
            .connect()
            .await
        {
            Ok(channel) => {
                break concord_proto::v1::coordinator_client::CoordinatorClient::with_interceptor(
                    channel,
                    concord::cli::Bearer::new(None).unwrap(),
                );
            }
            Err(e) => {
                // A process that died at start (say its port was taken
                // between the probe and its bind) fails the test at once
                // instead of leaving it waiting forever.
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("concord serve exited before it listened: {status}");
                }
                assert!(
                    spawned.elapsed() < Duration::from_secs(60),
                    "concord serve did not listen on {endpoint} within 60 s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await
            }
        }
    };
    let a = TestParticipant::start_on("bank-a", &db).await;
    concord_proto::v1::registry_client::RegistryClient::connect(endpoint.clone())
        .await
        .unwrap()
        .register_participant(pb::RegisterParticipantRequest {
            protocol: Default::default(),
            name: "bank-a".into(),
            endpoint: a.endpoint(),
            actions: vec![pb::Action {
                name: "debit".into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    let hold = Arc::new(Notify::new());
    a.script(
        Ph::Confirm,
        vec![Behavior::Block(hold.clone())],
        Behavior::Ok,
    );
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    c.r#try(try_req(&gid, "bank-a", "debit")).await.unwrap();
    commit_tx(&mut c, &gid, false).await.unwrap();
    assert!(
        a.wait_until(Duration::from_secs(5), |p| p.calls(&gid, "1", Ph::Confirm)
            == 1)
            .await
    );
    let start_other = || {
        TestCoordinator::start_with(&db, |c| {
            let d = concord::config::Config::with_database("");
            c.lease = d.lease;
            c.poll_interval = d.poll_interval;
        })
    };
    let beside = match db {
        TestDb::Postgres(_) => Some(start_other().await),
        TestDb::Sqlite(_) => None,
    };
    // SIGKILL: no chance to release anything.
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    let other = match beside {
        Some(other) => other,
        None => start_other().await,
    };
    assert!(
        a.wait_until(Duration::from_secs(15), |p| p.has_effect(
            &gid,
            "1",
            Ph::Confirm
        ))
        .await
    );
    let takeover = killed.elapsed();
    eprintln!("takeover after SIGKILL: {} ms", takeover.as_millis());
    assert!(
        takeover < Duration::from_secs(6),
        "took {takeover:?}, target is 5 s"
    );
    let mut c = other.client().await;
    wait_status(&mut c, &gid, S::Confirmed, Duration::from_secs(5)).await;
}

/// PostgreSQL only: two instances share the database.
#[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
async fn a_commit_sees_branches_tried_through_another_instance(pool: PgPool) {
    // The instance that served Begin remembers what it wrote; a Try served
    // by another instance must still be part of the decision.
    let one = TestCoordinator::start(&pool).await;
    let two = TestCoordinator::start(&pool).await;
    let (a, b) = bank_participants(&pool, &one).await;
    let mut c1 = one.client().await;
    let mut c2 = two.client().await;

    let gid = c1
        .begin(begin_req("", None))
        .await
        .unwrap()
        .into_inner()
        .gid;
    c1.r#try(try_req(&gid, "bank-a", "debit")).await.unwrap();
    c2.r#try(try_req(&gid, "bank-b", "credit")).await.unwrap();
    let reply = commit_tx(&mut c1, &gid, true).await.unwrap();
    assert_eq!(reply.status, S::Confirmed as i32);
    assert_eq!(a.calls(&gid, "1", Ph::Confirm), 1);
    assert_eq!(
        b.calls(&gid, "2", Ph::Confirm),
        1,
        "the branch tried elsewhere is confirmed"
    );

    // A rejected Try served elsewhere makes the commit refused, not a
    // confirm of the other branch.
    b.script(Ph::Try, vec![Behavior::Abort("no")], Behavior::Ok);
    let gid = c1
        .begin(begin_req("", None))
        .await
        .unwrap()
        .into_inner()
        .gid;
    c1.r#try(try_req(&gid, "bank-a", "debit")).await.unwrap();
    assert!(c2.r#try(try_req(&gid, "bank-b", "credit")).await.is_err());
    let err = commit_tx(&mut c1, &gid, false).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("branch 2 (bank-b.credit)"),
        "{}",
        err.message()
    );
    assert_eq!(a.calls(&gid, "1", Ph::Confirm), 0);
}

/// PostgreSQL only: the branches come from a second store beside the running
/// instance (another instance's Try); a SQLite file admits one instance.
#[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
async fn a_commit_waits_for_a_try_record_on_its_way_and_refuses_a_lost_one(pool: PgPool) {
    use concord::domain::{ActionName, BranchId, Gid, ParticipantName};
    use concord::machine::{Outcome, Phase};
    use concord::store::postgres::PgStore;
    use concord::store::{CallRecord, NewBranch, Store};

    // The record of a successful Try is written after the Try's reply. A
    // branch whose participant said yes but whose record never landed (its
    // coordinator died in between) is what these branches, inserted
    // straight into the store, look like to the instance that gets Commit.
    let coord = TestCoordinator::start(&pool).await;
    let (a, _b) = bank_participants(&pool, &coord).await;
    let mut c = coord.client().await;
    let store = PgStore::from_pool(pool.clone()).await.unwrap();
    let branch = |gid: &str| NewBranch {
        gid: Gid::parse(gid).unwrap(),
        branch_id: None,
        participant: ParticipantName::parse("bank-a").unwrap(),
        action: ActionName::parse("debit").unwrap(),
        payload: b"{}".to_vec(),
        call_timeout: None,
        policy: Default::default(),
        // Its Try's deadline long passed (no call out).
        call_cover: concord::clock::Countdown::start(std::time::Duration::ZERO),
        now: chrono::Utc::now(),
        actor: "gone".into(),
        url_call: None,
        tried_by_initiator: false,
    };

    // Lost: the commit waits for it, then refuses; nothing is confirmed and
    // the rollback cancels the branch.
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    store.add_branch(branch(&gid)).await.unwrap();
    let started = Instant::now();
    let err = commit_tx(&mut c, &gid, true).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("pending"), "{}", err.message());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "refused only after waiting for the record: {:?}",
        started.elapsed()
    );
    assert_eq!(status_of(&get_tx(&mut c, &gid).await), S::Trying);
    let reply = rollback_tx(&mut c, &gid, "try outcome unknown", true)
        .await
        .unwrap();
    assert_eq!(reply.status, S::Cancelled as i32);
    assert_eq!(a.calls(&gid, "1", Ph::Cancel), 1);
    assert_eq!(a.calls(&gid, "1", Ph::Confirm), 0);

    // On its way: the record lands while the commit waits, and the commit
    // goes through.
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    store.add_branch(branch(&gid)).await.unwrap();
    let late = {
        let gid = Gid::parse(&gid).unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let call = CallRecord {
                branch_id: BranchId::parse("1").unwrap(),
                phase: Phase::Try,
                attempt: 1,
                outcome: Outcome::Succeeded,
            };
            store
                .record_try(
                    &gid,
                    &call,
                    concord::machine::tcc::try_record_applies(),
                    chrono::Utc::now(),
                    "other",
                )
                .await
                .unwrap();
        })
    };
    let reply = commit_tx(&mut c, &gid, true).await.unwrap();
    late.await.unwrap();
    assert_eq!(reply.status, S::Confirmed as i32);
    assert_eq!(a.calls(&gid, "1", Ph::Confirm), 1);
}

on_both_stores!(
    a_takeover_follows_the_leases_expiry_not_the_next_poll,
    sigkilled_process_is_taken_over_within_seconds,
    graceful_shutdown_releases_leases_for_immediate_takeover,
    crash_between_two_confirms_confirms_each_effect_once,
    crash_after_decision_is_finished_by_a_fresh_instance,
    crash_after_branch_insert_rolls_back_on_a_fresh_instance,
);
