//! The SDK end to end against a real coordinator: README's quickstart
//! program (participant and initiator of `concord_examples::quickstart`),
//! and a participant that adds branches to the transaction it was called
//! in (`Coordinator::continue_tcc`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use concord_examples::db::{drop_schema, schema_pool};
use concord_examples::quickstart::{self, initiator, participant};
use concord_sdk::proto::v1::{CallStatus, Transaction, TransactionStatus};
use concord_sdk::{
    ActionError, BeginOptions, Coordinator, MemoryBarrier, Op, ParticipantServer,
    ParticipantService, RunningParticipant,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::harness::{
    TestCoordinator, TestDb, on_both_stores, on_both_stores_beside_postgres, wait_status,
};

/// Serves `service` on a free loopback port, registered with `coord`.
async fn serve(
    service: ParticipantService,
    coord: &TestCoordinator,
    stop: &CancellationToken,
) -> RunningParticipant {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    ParticipantServer::new(service)
        .register_with(coord.url())
        .start(listener, stop.clone().cancelled_owned())
        .await
        .expect("participant registered")
}

/// The shop's tables are in PostgreSQL (the quickstart's), the
/// coordinator's on the store under test.
async fn the_quickstart_program_runs_as_the_readme_says(db: TestDb, pool: PgPool) {
    let coord = TestCoordinator::start(&db).await;
    let shop_pool = schema_pool((*pool.connect_options()).clone(), "quickstart", 4)
        .await
        .unwrap();
    quickstart::setup(&shop_pool).await.unwrap();
    let stop = CancellationToken::new();
    // `start` returns once registered: the first transaction, right after,
    // finds the participant on a coordinator that never saw it before.
    let service = participant::service(shop_pool.clone()).await.unwrap();
    let running = serve(service, &coord, &stop).await;

    let coordinator = Coordinator::connect(coord.url()).await.unwrap();
    let lines = initiator::run(&coordinator).await.unwrap();
    assert_eq!(lines.len(), 7, "{lines:#?}");
    for (qty, line) in [1, 2, 3, 1].iter().zip(&lines) {
        assert_eq!(line, &format!("hold {qty} tea: Confirmed"));
    }
    assert!(
        lines[4].starts_with("hold 99 tea: rolled back, rejected:")
            && lines[4].ends_with("not enough tea"),
        "{}",
        lines[4]
    );
    // The rollback the tcc() helper made records the reason worded once.
    let reasons = db
        .texts(
            "SELECT rollback_reason FROM global_transactions WHERE mode = 'tcc' AND status IN ('cancelling', 'cancelled')",
        )
        .await;
    let [reason] = &reasons[..] else {
        panic!("one rolled-back transaction: {reasons:?}")
    };
    assert!(
        !reason.starts_with("rejected:") && reason.matches("rejected").count() == 1,
        "{reason}"
    );
    assert_eq!(lines[5], "charge alice 30: Succeeded");
    assert!(
        lines[6].starts_with("charge alice 500: Compensated, ")
            && lines[6].contains("not enough alice"),
        "{}",
        lines[6]
    );
    // 7 tea taken, none left held; only the first charge stayed (the
    // refused one's compensation was a null compensation, not a refund).
    assert_eq!(quickstart::state(&shop_pool).await.unwrap(), (3, 0, 70));

    stop.cancel();
    running.wait().await.unwrap();
    drop_schema(&shop_pool, "quickstart").await.unwrap();
    shop_pool.close().await;
}

/// What the hotel did: gid, branch id and op of each body that ran.
type Log = Arc<Mutex<Vec<(String, String, Op)>>>;

/// A hotel holding rooms (TCC `hold`): refuses a payload of `"full"`.
fn hotel(log: &Log) -> ParticipantService {
    let record = |op: Op| {
        let log = log.clone();
        move |b: MemoryBarrier, ctx: concord_sdk::BranchContext| {
            let log = log.clone();
            async move {
                b.run(&ctx, op, async |_| {
                    if op == Op::Try && ctx.payload == br#""full""# {
                        return Err(ActionError::rejected("no room left"));
                    }
                    let entry = (ctx.gid.clone(), ctx.branch_id.clone(), op);
                    log.lock().unwrap().push(entry);
                    Ok(())
                })
                .await
            }
        }
    };
    ParticipantService::builder("hotel")
        .tcc_with(
            "hold",
            MemoryBarrier::memory(),
            record(Op::Try),
            record(Op::Confirm),
            record(Op::Cancel),
        )
        .build()
        .unwrap()
}

/// A travel agency whose Try (`book`) holds a hotel room through a branch
/// of the same transaction, then refuses `"fail-after"` itself.
fn travel(coordinator: Coordinator) -> ParticipantService {
    ParticipantService::builder("travel")
        .tcc_with(
            "book",
            coordinator,
            |coordinator, ctx| async move {
                let sub = coordinator.continue_tcc(&ctx);
                sub.try_branch("hotel", "hold", ctx.payload.clone()).await?;
                if ctx.payload == br#""fail-after""# {
                    return Err(ActionError::rejected("no seat left"));
                }
                Ok(())
            },
            |_, _| async { Ok(()) },
            |_, _| async { Ok(()) },
        )
        .build()
        .unwrap()
}

fn phases(tx: &Transaction) -> Vec<(String, String, CallStatus, CallStatus)> {
    tx.branches
        .iter()
        .map(|b| {
            (
                b.branch_id.clone(),
                format!("{}.{}", b.participant, b.action),
                b.first_phase(),
                b.second_phase(),
            )
        })
        .collect()
}

async fn a_participant_continues_the_transaction_it_was_called_in(db: TestDb) {
    let coord = TestCoordinator::start(&db).await;
    let stop = CancellationToken::new();
    let log = Log::default();
    let coordinator = Coordinator::connect(coord.url()).await.unwrap();
    let hotel = serve(hotel(&log), &coord, &stop).await;
    let travel = serve(travel(coordinator.clone()), &coord, &stop).await;
    let mut client = coord.client().await;
    let book = |gid: &str, payload: &'static str| {
        let coordinator = coordinator.clone();
        let opts = BeginOptions::default().gid(gid).wait(true);
        async move {
            coordinator
                .tcc(opts, |tx| async move {
                    tx.try_branch_json("travel", "book", payload).await
                })
                .await
        }
    };
    use CallStatus::{Rejected, Succeeded};

    // Committed: the sub-branch is confirmed with the transaction.
    let done = book("trip-ok", "ok").await.unwrap();
    assert_eq!(done.status, TransactionStatus::Confirmed);
    let tx = coordinator.get_transaction("trip-ok", false).await.unwrap();
    assert_eq!(
        phases(&tx),
        [
            ("1".into(), "travel.book".into(), Succeeded, Succeeded),
            ("1.1".into(), "hotel.hold".into(), Succeeded, Succeeded),
        ]
    );

    // The sub-branch refuses: the calling Try is refused, and everything
    // is cancelled (the hotel's cancel is a null compensation).
    let err = book("trip-full", "full").await.unwrap_err();
    assert!(err.is_rejected(), "{err:?}");
    let tx = wait_status(
        &mut client,
        "trip-full",
        TransactionStatus::Cancelled,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        phases(&tx)
            .iter()
            .map(|(id, _, first, second)| (id.as_str(), *first, *second))
            .collect::<Vec<_>>(),
        [("1", Rejected, Succeeded), ("1.1", Rejected, Succeeded)]
    );

    // The caller refuses after its sub-branch succeeded: the hold is
    // released by the rollback.
    let err = book("trip-late", "fail-after").await.unwrap_err();
    assert!(err.is_rejected(), "{err:?}");
    wait_status(
        &mut client,
        "trip-late",
        TransactionStatus::Cancelled,
        Duration::from_secs(10),
    )
    .await;

    // Each hold ran once and was confirmed or released once; the refused
    // one changed nothing.
    let ran = |gid: &str, op| (gid.to_owned(), "1.1".to_owned(), op);
    assert_eq!(
        *log.lock().unwrap(),
        [
            ran("trip-ok", Op::Try),
            ran("trip-ok", Op::Confirm),
            ran("trip-late", Op::Try),
            ran("trip-late", Op::Cancel),
        ]
    );

    stop.cancel();
    hotel.wait().await.unwrap();
    travel.wait().await.unwrap();
}

on_both_stores!(a_participant_continues_the_transaction_it_was_called_in,);
on_both_stores_beside_postgres!(the_quickstart_program_runs_as_the_readme_says,);
