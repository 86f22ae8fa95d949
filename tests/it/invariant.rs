//! Money conservation under faults: the bank-transfer example (two SDK
//! account services behind the barrier) runs many concurrent transfers
//! while participant calls fail, replies are lost or arrive past the call
//! deadline, requests are delivered twice or again later, and the
//! coordinator crashes and restarts on the same database (on each store;
//! the banks keep their accounts in PostgreSQL). At the end:
//! balances sum to what they started at, nothing is frozen, each transfer
//! is applied on both banks or on neither, and every transaction is
//! CONFIRMED or CANCELLED.
//!
//! The longer version:
//! `CONCORD_INVARIANT_TRANSFERS=10000 cargo test --test it invariant -- --ignored`

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use concord::config::Config;
use concord_examples::bank::{
    Bank, TransferOptions, TransferOutcome, random_transfers, run_transfers,
};
use concord_examples::db::{drop_schema, schema_pool};
use concord_examples::faults::{Fault, FaultReport, Faults};
use concord_examples::host::host;
use concord_sdk::Coordinator;
use sqlx::PgPool;
use tokio::sync::Mutex;

use crate::harness::{TestCoordinator, TestDb, on_both_stores_beside_postgres};

const BANKS: [&str; 2] = ["bank-a", "bank-b"];
const CALL_TIMEOUT: Duration = Duration::from_millis(500);

struct Params {
    transfers: usize,
    concurrency: usize,
    accounts: i64,
    balance: i64,
    max_amount: i64,
    restarts: usize,
}

fn transfers_from_env(default: usize) -> usize {
    std::env::var("CONCORD_INVARIANT_TRANSFERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The banks keep their accounts in PostgreSQL (schemas of `pool`); the
/// coordinator runs on `db`.
async fn money_is_conserved_under_faults_and_restarts(db: TestDb, pool: PgPool) {
    conserve(
        db,
        pool,
        Params {
            transfers: 500,
            concurrency: 24,
            accounts: 6,
            balance: 1_000,
            max_amount: 400,
            restarts: 2,
        },
    )
    .await;
}

#[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
#[ignore = "long: CONCORD_INVARIANT_TRANSFERS=10000 cargo test --test it invariant -- --ignored"]
async fn money_is_conserved_under_faults_and_restarts_long(pool: PgPool) {
    let transfers = transfers_from_env(10_000);
    conserve(
        pool.clone().into(),
        pool,
        Params {
            transfers,
            concurrency: 32,
            accounts: 20,
            balance: 1_000,
            max_amount: 400,
            restarts: (transfers / 2_000).clamp(2, 10),
        },
    )
    .await;
}

fn tweak(c: &mut Config) {
    c.pool_size = 8;
    c.call_timeout = CALL_TIMEOUT;
}

/// Faults on about a fifth of the participant calls.
fn faults() -> Faults {
    let mut f = Faults::mixed(0.0, CALL_TIMEOUT + Duration::from_millis(300));
    f.rates[Fault::Unavailable as usize] = 0.05;
    f.rates[Fault::LostReply as usize] = 0.04;
    f.rates[Fault::LateReply as usize] = 0.03;
    f.rates[Fault::Duplicate as usize] = 0.04;
    f.rates[Fault::Redeliver as usize] = 0.04;
    f.redeliver_within = Duration::from_millis(1500);
    f
}

async fn conserve(db: TestDb, pool: PgPool, p: Params) {
    let started = Instant::now();
    let coord = TestCoordinator::start_with(&db, tweak).await;
    let addr = coord.addr;

    // Each bank gets a schema of the test database, standing for a database
    // of its own.
    let mut banks = Vec::new();
    for name in BANKS {
        let schema = format!("invariant_{}", name.replace('-', "_"));
        let bank_pool = schema_pool((*pool.connect_options()).clone(), &schema, 8)
            .await
            .unwrap();
        let bank = Bank::open(name, bank_pool).await.unwrap();
        bank.seed(p.accounts, p.balance).await.unwrap();
        banks.push((bank, schema));
    }
    let mut hosted = Vec::new();
    for (bank, _) in &banks {
        let service = bank.service().unwrap();
        let listen = "127.0.0.1:0".parse().unwrap();
        hosted.push(
            host(service, listen, &coord.url(), Some(faults()))
                .await
                .unwrap(),
        );
    }

    // Crashes the coordinator each time another share of the transactions
    // has begun, and starts a fresh instance on the same address and
    // database.
    let coord = Arc::new(Mutex::new(Some(coord)));
    let running = Arc::new(AtomicBool::new(true));
    let chaos = {
        let (coord, running, db) = (coord.clone(), running.clone(), db.clone());
        let share = (p.transfers / (p.restarts + 1)) as i64;
        tokio::spawn(async move {
            let mut restarts = 0;
            while restarts < p.restarts && running.load(Ordering::Relaxed) {
                let begun = db.number("SELECT count(*) FROM global_transactions").await;
                if begun < share * (restarts as i64 + 1) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let old = coord.lock().await.take().expect("a coordinator runs");
                tokio::task::spawn_blocking(move || old.crash())
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                let fresh = TestCoordinator::start_with(&db, |c| {
                    tweak(c);
                    c.listen = addr;
                })
                .await;
                *coord.lock().await = Some(fresh);
                restarts += 1;
                eprintln!("invariant: coordinator crashed and restarted ({restarts})");
            }
            restarts
        })
    };

    let coordinator = Coordinator::connect_lazy(format!("http://{addr}")).unwrap();
    let transfers = random_transfers("t", p.transfers, &BANKS, p.accounts, p.max_amount);
    let amounts: HashMap<String, i64> = transfers
        .iter()
        .map(|t| (t.gid.clone(), t.amount))
        .collect();
    let opts = TransferOptions {
        timeout: Duration::from_secs(4),
        wait: false,
        call_timeout: None,
    };
    let summary = run_transfers(&coordinator, transfers, p.concurrency, &opts).await;
    let ran_for = started.elapsed();
    running.store(false, Ordering::Relaxed);
    let restarts = chaos.await.unwrap();

    // Whatever the initiators left open, the coordinator finishes: commits
    // it heard are confirmed, the rest is rolled back at the deadline.
    let settle_until = Instant::now() + Duration::from_secs(60);
    loop {
        let open = db
            .number(
                "SELECT count(*) FROM global_transactions WHERE status NOT IN ('confirmed', 'cancelled')",
            )
            .await;
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < settle_until,
            "{open} transactions still unfinished 60s after the last transfer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Late redeliveries may still be on their way: let them land, so that
    // a hanging try they would cause shows in the balances.
    let mut faults = FaultReport::default();
    for h in hosted {
        if let Some(f) = &h.faults {
            faults.add(f.report());
        }
        h.stop().await;
    }

    let statuses: HashMap<String, String> = db
        .pairs("SELECT gid, status FROM global_transactions")
        .await
        .into_iter()
        .collect();
    let attention = db
        .number("SELECT count(*) FROM global_transactions WHERE needs_attention")
        .await;

    let mut total = 0;
    let mut frozen = 0;
    let mut applied: HashMap<String, Vec<i64>> = HashMap::new();
    for (bank, _) in &banks {
        for a in bank.accounts().await.unwrap() {
            total += a.balance;
            frozen += a.frozen;
        }
        for j in bank.journal().await.unwrap() {
            applied.entry(j.gid).or_default().push(j.delta);
        }
    }

    let mut problems = Vec::new();
    let (mut confirmed, mut cancelled, mut absent) = (0, 0, 0);
    for (gid, amount) in &amounts {
        let legs = applied.remove(gid).unwrap_or_default();
        let status = statuses.get(gid).map(String::as_str);
        match status {
            Some("confirmed") => confirmed += 1,
            Some("cancelled") => cancelled += 1,
            None => absent += 1,
            Some(other) => problems.push(format!("{gid}: status {other}")),
        }
        let mut legs_sorted = legs.clone();
        legs_sorted.sort_unstable();
        let full = legs_sorted == [-amount, *amount];
        match (status, legs.is_empty(), full) {
            (Some("confirmed"), _, true) | (Some("cancelled") | None, true, _) => {}
            _ => problems.push(format!(
                "{gid} ({status:?}, amount {amount}): applied legs {legs:?}"
            )),
        }
        // The initiator's view must agree with the coordinator's.
        match (&summary.outcomes[gid], status) {
            (TransferOutcome::Committed, Some("confirmed"))
            | (TransferOutcome::Rejected(_), Some("cancelled"))
            | (TransferOutcome::Unknown(_), _) => {}
            (seen, status) => problems.push(format!(
                "{gid}: the initiator saw {seen:?} but the transaction is {status:?}"
            )),
        }
    }
    problems.extend(
        applied
            .keys()
            .map(|gid| format!("{gid}: journal entries of no transfer")),
    );

    let initial = p.balance * p.accounts * BANKS.len() as i64;
    eprintln!(
        "invariant: {} transfers in {:.1}s, {restarts} coordinator restarts\n  \
         initiator: {} committed, {} rejected, {} unknown\n  \
         coordinator: {confirmed} confirmed, {cancelled} cancelled, {absent} never begun, \
         {attention} flagged for attention\n  \
         faults: {faults}\n  \
         balances: {total} (initially {initial}), frozen {frozen}",
        p.transfers,
        ran_for.as_secs_f64(),
        summary.committed,
        summary.rejected,
        summary.unknown,
    );

    for (bank, schema) in &banks {
        drop_schema(bank.pool(), schema).await.unwrap();
        bank.pool().close().await;
    }
    if let Some(c) = coord.lock().await.take() {
        tokio::task::spawn_blocking(move || c.shutdown())
            .await
            .unwrap();
    }

    assert!(
        problems.is_empty(),
        "{} problems, first ones: {:#?}",
        problems.len(),
        &problems[..problems.len().min(20)]
    );
    assert_eq!(total, initial, "the sum of balances changed");
    assert_eq!(frozen, 0, "money stays frozen");
    assert_eq!(restarts, p.restarts, "every planned restart happened");
    assert!(
        confirmed > 0 && cancelled > 0,
        "both outcomes are exercised"
    );
    assert!(
        faults.injected.iter().all(|&n| n > 0),
        "every kind of fault was injected: {faults}"
    );
}

on_both_stores_beside_postgres!(money_is_conserved_under_faults_and_restarts,);
