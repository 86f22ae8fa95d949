//! Re-drive when a participant is back: transactions waiting on a
//! participant that was down (their backoff at a 60 s cap) finish within
//! seconds of its return instead of at their backoff time, whether it comes
//! back by registering again or by answering a call.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::net::TcpListener;

use crate::harness::*;

/// Backoff far beyond any wait of these tests: a transaction that finishes
/// in time was re-driven, not retried on schedule.
const CAP: Duration = Duration::from_secs(60);

async fn coordinator(db: &TestDb) -> TestCoordinator {
    TestCoordinator::start_with(db, |c| {
        c.retry.initial = CAP;
        c.retry.max = CAP;
        c.pool_size = 8;
    })
    .await
}

/// Polls `sql` (a count) until it reaches `want`; panics after `timeout`.
async fn wait_count(db: &TestDb, sql: &'static str, want: i64, timeout: Duration) {
    let until = Instant::now() + timeout;
    loop {
        let n = db.number(sql).await;
        if n == want {
            return;
        }
        assert!(Instant::now() < until, "{sql}: {n}, expected {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `n` committed transactions wait on their backoff (their
/// next attempt more than 30 s away); panics after `timeout`.
async fn wait_waiting(db: &TestDb, want: i64, timeout: Duration) {
    let until = Instant::now() + timeout;
    loop {
        let n = db
            .waiting_beyond("confirming", Duration::from_secs(30))
            .await;
        if n == want {
            return;
        }
        assert!(Instant::now() < until, "waiting: {n}, expected {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const CONFIRMED: &str = "SELECT count(*) FROM global_transactions WHERE status = 'confirmed'";

/// `n` committed transactions with one branch on `stock`, whose participant
/// is down: each has had a failed phase-2 round and waits for the cap.
async fn backlog(db: &TestDb, coord: &TestCoordinator, n: usize) -> SocketAddr {
    let p = TestParticipant::start("stock", None).await;
    p.register(coord, &["reserve"]).await;
    let url = coord.url();
    let gids: Vec<String> = futures::stream::iter(0..n)
        .map(|_| {
            let url = url.clone();
            async move {
                let mut c = concord_proto::v1::coordinator_client::CoordinatorClient::connect(url)
                    .await
                    .unwrap();
                let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
                c.r#try(try_req(&gid, "stock", "reserve")).await.unwrap();
                gid
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    p.stop();
    let c = coord.client().await;
    futures::stream::iter(gids)
        .for_each_concurrent(16, |gid| {
            let mut c = c.clone();
            async move {
                commit_tx(&mut c, &gid, false).await.unwrap();
            }
        })
        .await;
    wait_waiting(db, n as i64, Duration::from_secs(30)).await;
    // Nothing finishes by itself: the participant is down.
    assert_eq!(db.number(CONFIRMED).await, 0);
    p.addr
}

/// The participant serves again on its old address.
async fn back_on(addr: SocketAddr) -> TestParticipant {
    let listener = TcpListener::bind(addr).await.unwrap();
    TestParticipant::serve_on("stock", listener, None).await
}

/// The figure of BENCHMARKS.md: from the participant's return (it serves
/// and registers again) to the last of `n` waiting transactions confirmed.
async fn time_to_drain(db: &TestDb, n: usize) -> (Duration, TestParticipant) {
    let coord = coordinator(db).await;
    let addr = backlog(db, &coord, n).await;
    let returned = Instant::now();
    let p = back_on(addr).await;
    p.register(&coord, &["reserve"]).await;
    wait_count(db, CONFIRMED, n as i64, Duration::from_secs(30)).await;
    let took = returned.elapsed();
    eprintln!(
        "re-drive: {n} waiting transactions confirmed {took:?} after the participant returned"
    );
    (took, p)
}

async fn waiting_transactions_are_redriven_when_their_participant_registers_again(db: TestDb) {
    let (took, p) = time_to_drain(&db, 200).await;
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(p.effects(Ph::Confirm), 200);
    let redriven = db
        .number(
            "SELECT count(DISTINCT gid) FROM transaction_events
              WHERE kind = 'redriven' AND message = 'participant stock is back'",
        )
        .await;
    assert_eq!(
        redriven, 200,
        "every transaction's history says why it ran early"
    );
}

/// 1,000 waiting transactions, as in the issue; run for BENCHMARKS.md with
/// `cargo test --test it redrive::figure -- --ignored --nocapture`.
#[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
#[ignore = "a measurement (about 9 s): run it for BENCHMARKS.md"]
async fn figure_1000_waiting_transactions(pool: sqlx::PgPool) {
    let (took, _p) = time_to_drain(&pool.into(), 1000).await;
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

async fn an_answer_after_failures_redrives_without_a_registration(db: TestDb) {
    let coord = coordinator(&db).await;
    let addr = backlog(&db, &coord, 20).await;
    let _p = back_on(addr).await;
    // No registration: a new transaction's Try is the first call to get an
    // answer (after the breaker's cooldown, as a probe).
    let mut c = coord.client().await;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
        if c.r#try(try_req(&gid, "stock", "reserve")).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < until,
            "the participant never answered a try"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_count(&db, CONFIRMED, 20, Duration::from_secs(10)).await;
}

/// The participant registers with one instance; the other, whose breaker
/// saw it fail, learns of it from the registry and re-drives too, so the
/// work it claims is not pushed back to the cap by its open breaker.
/// PostgreSQL only: two instances share the database.
#[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
async fn a_registration_with_another_instance_redrives_everywhere(pool: sqlx::PgPool) {
    // `a` drives one transaction at a time, so `b` claims a share; `b`'s
    // breaker stays open for a minute unless something closes it.
    let a = TestCoordinator::start_with(&pool, |c| {
        c.retry.initial = CAP;
        c.retry.max = CAP;
        c.recovery_concurrency = 1;
    })
    .await;
    let b = TestCoordinator::start_with(&pool, |c| {
        c.retry.initial = CAP;
        c.retry.max = CAP;
        c.breaker_cooldown = CAP;
    })
    .await;
    let db = TestDb::from(&pool);
    let addr = backlog(&db, &b, 50).await;
    let p = back_on(addr).await;
    p.register(&a, &["reserve"]).await;
    // Within the registry's reload (5 s) plus the claims.
    wait_count(&db, CONFIRMED, 50, Duration::from_secs(15)).await;
    assert_eq!(p.effects(Ph::Confirm), 50);
}

on_both_stores!(
    waiting_transactions_are_redriven_when_their_participant_registers_again,
    an_answer_after_failures_redrives_without_a_registration,
);
