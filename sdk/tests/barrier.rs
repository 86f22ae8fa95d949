//! Barrier tests against a real PostgreSQL: one fresh database per test
//! (`#[sqlx::test]`; `concord-testdb` finds or starts the server and sets
//! `DATABASE_URL` before the first test). Effects of the business logic are
//! counted in an `effects` table written in the barrier's transaction.

use std::sync::Arc;
use std::time::Duration;

use concord_sdk::{ActionError, Barrier, BarrierOutcome, BranchContext, Op, PgBarrier};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

const EFFECTS: &str = "CREATE TABLE effects (
    seq bigserial PRIMARY KEY,
    gid text NOT NULL,
    branch_id text NOT NULL,
    op text NOT NULL
)";

concord_testdb::database_for_tests!();

fn barrier(pool: &PgPool) -> PgBarrier {
    Barrier::postgres(pool.clone())
}

async fn setup(pool: &PgPool) {
    barrier(pool).migrate().await.unwrap();
    sqlx::query(EFFECTS).execute(pool).await.unwrap();
}

/// A pool larger than `#[sqlx::test]`'s default of 5, so races have more
/// transactions in flight at once. Tests close it at the end so that
/// `#[sqlx::test]` can drop the database.
async fn race_pool(opts: PgPoolOptions, connect: PgConnectOptions) -> PgPool {
    let pool = opts
        .max_connections(16)
        .connect_with(connect)
        .await
        .unwrap();
    setup(&pool).await;
    pool
}

fn branch(gid: &str, branch_id: &str) -> BranchContext {
    BranchContext {
        gid: gid.into(),
        branch_id: branch_id.into(),
        action: "transfer_out".into(),
        attempt: 1,
        ..Default::default()
    }
}

async fn record(conn: &mut PgConnection, ctx: &BranchContext, op: Op) -> Result<(), ActionError> {
    sqlx::query("INSERT INTO effects (gid, branch_id, op) VALUES ($1, $2, $3)")
        .bind(&ctx.gid)
        .bind(&ctx.branch_id)
        .bind(op.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// Runs `op` through the barrier with a body that records one effect.
async fn run(
    pool: &PgPool,
    ctx: &BranchContext,
    op: Op,
) -> Result<BarrierOutcome<()>, ActionError> {
    barrier(pool)
        .run(ctx, op, async |conn| {
            record(conn, ctx, op).await?;
            // Widens the window in which a racing request finds this
            // transaction open.
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok(())
        })
        .await
}

async fn effects(pool: &PgPool, ctx: &BranchContext, op: Op) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM effects WHERE gid = $1 AND branch_id = $2 AND op = $3")
        .bind(&ctx.gid)
        .bind(&ctx.branch_id)
        .bind(op.as_str())
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn barrier_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM concord_barrier")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn migrate_is_idempotent_and_safe_concurrently(pool: PgPool) {
    // Several replicas starting at once.
    let runs: Vec<_> = (0..5)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { barrier(&pool).migrate().await })
        })
        .collect();
    for r in runs {
        r.await.unwrap().unwrap();
    }
    barrier(&pool).migrate().await.unwrap();
    assert_eq!(barrier_rows(&pool).await, 0);
}

#[sqlx::test(migrations = false)]
async fn repeated_ops_run_once(pool: PgPool) {
    setup(&pool).await;
    let ctx = branch("g", "1");
    for op in [Op::Try, Op::Confirm, Op::Execute] {
        assert_eq!(run(&pool, &ctx, op).await.unwrap(), BarrierOutcome::Ran(()));
        assert_eq!(
            run(&pool, &ctx, op).await.unwrap(),
            BarrierOutcome::Duplicate
        );
        assert_eq!(
            run(&pool, &ctx, op).await.unwrap(),
            BarrierOutcome::Duplicate
        );
        assert_eq!(effects(&pool, &ctx, op).await, 1, "{op}");
    }
}

#[sqlx::test(migrations = false)]
async fn the_body_value_is_returned_when_it_runs(pool: PgPool) {
    setup(&pool).await;
    let ctx = branch("g", "1");
    let out = barrier(&pool)
        .run(&ctx, Op::Try, async |_| Ok(42))
        .await
        .unwrap();
    assert_eq!(out.ran(), Some(42));
    let again = barrier(&pool)
        .run(&ctx, Op::Try, async |_| Ok(43))
        .await
        .unwrap();
    assert_eq!(again.ran(), None);
}

#[sqlx::test(migrations = false)]
async fn try_then_cancel_both_run(pool: PgPool) {
    setup(&pool).await;
    let ctx = branch("g", "1");
    assert_eq!(
        run(&pool, &ctx, Op::Try).await.unwrap(),
        BarrierOutcome::Ran(())
    );
    assert_eq!(
        run(&pool, &ctx, Op::Cancel).await.unwrap(),
        BarrierOutcome::Ran(())
    );
    assert_eq!(
        run(&pool, &ctx, Op::Cancel).await.unwrap(),
        BarrierOutcome::Duplicate
    );
    // A try retried after its cancel already happened once: a duplicate.
    assert_eq!(
        run(&pool, &ctx, Op::Try).await.unwrap(),
        BarrierOutcome::Duplicate
    );
    assert_eq!(effects(&pool, &ctx, Op::Try).await, 1);
    assert_eq!(effects(&pool, &ctx, Op::Cancel).await, 1);
}

#[sqlx::test(migrations = false)]
async fn cancel_without_try_is_a_null_compensation_and_blocks_a_late_try(pool: PgPool) {
    setup(&pool).await;
    for (forward, undo) in [(Op::Try, Op::Cancel), (Op::Execute, Op::Compensate)] {
        let ctx = branch("g", forward.as_str());
        assert_eq!(
            run(&pool, &ctx, undo).await.unwrap(),
            BarrierOutcome::NullCompensated
        );
        assert_eq!(
            run(&pool, &ctx, undo).await.unwrap(),
            BarrierOutcome::Duplicate
        );

        // Anti-hanging: the delayed forward op must not reserve anything.
        let late = run(&pool, &ctx, forward).await.unwrap_err();
        assert!(late.is_rejected(), "{late:?}");
        assert!(run(&pool, &ctx, forward).await.unwrap_err().is_rejected());

        assert_eq!(effects(&pool, &ctx, forward).await, 0);
        assert_eq!(effects(&pool, &ctx, undo).await, 0);
    }
}

#[sqlx::test(migrations = false)]
async fn a_business_error_rolls_back_the_change_and_the_barrier_row(pool: PgPool) {
    setup(&pool).await;
    let ctx = branch("g", "1");

    let failed = barrier(&pool)
        .run(&ctx, Op::Try, async |conn| {
            record(conn, &ctx, Op::Try).await?;
            Err::<(), _>(ActionError::failed("downstream timeout"))
        })
        .await
        .unwrap_err();
    assert!(!failed.is_rejected());

    let rejected = barrier(&pool)
        .run(&ctx, Op::Try, async |conn| {
            record(conn, &ctx, Op::Try).await?;
            Err::<(), _>(ActionError::rejected("insufficient funds"))
        })
        .await
        .unwrap_err();
    assert!(rejected.is_rejected());

    // An SQL error inside the body aborts the transaction; still no trace.
    let broken = barrier(&pool)
        .run(&ctx, Op::Try, async |conn| {
            record(conn, &ctx, Op::Try).await?;
            sqlx::query("SELECT * FROM no_such_table")
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(matches!(broken, ActionError::Failed(_)));

    assert_eq!(effects(&pool, &ctx, Op::Try).await, 0);
    assert_eq!(barrier_rows(&pool).await, 0);

    // Nothing was recorded, so the retry runs for real.
    assert_eq!(
        run(&pool, &ctx, Op::Try).await.unwrap(),
        BarrierOutcome::Ran(())
    );
    assert_eq!(effects(&pool, &ctx, Op::Try).await, 1);
}

#[sqlx::test(migrations = false)]
async fn a_failed_cancel_is_rolled_back_and_runs_on_retry(pool: PgPool) {
    setup(&pool).await;
    let ctx = branch("g", "1");
    run(&pool, &ctx, Op::Try).await.unwrap();
    let failed = barrier(&pool)
        .run(&ctx, Op::Cancel, async |conn| {
            record(conn, &ctx, Op::Cancel).await?;
            Err::<(), _>(ActionError::failed("db hiccup"))
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(effects(&pool, &ctx, Op::Cancel).await, 0);
    assert_eq!(
        run(&pool, &ctx, Op::Cancel).await.unwrap(),
        BarrierOutcome::Ran(())
    );
    assert_eq!(effects(&pool, &ctx, Op::Cancel).await, 1);
}

/// What one request of a race ended with, in comparable form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Seen {
    Ran,
    Duplicate,
    NullCompensated,
    Rejected,
}

fn seen(r: Result<BarrierOutcome<()>, ActionError>) -> Seen {
    match r {
        Ok(BarrierOutcome::Ran(())) => Seen::Ran,
        Ok(BarrierOutcome::Duplicate) => Seen::Duplicate,
        Ok(BarrierOutcome::NullCompensated) => Seen::NullCompensated,
        Err(e) if e.is_rejected() => Seen::Rejected,
        Err(e) => panic!("unexpected failure: {e:?}"),
    }
}

/// Starts all `requests` at once (released by a shared barrier so they
/// really overlap) and returns each one's outcome, in order.
async fn race(pool: &PgPool, requests: Vec<(BranchContext, Op)>) -> Vec<Seen> {
    let start = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(ctx, op)| {
            let (pool, start) = (pool.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                seen(run(&pool, &ctx, op).await)
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[sqlx::test(migrations = false)]
async fn try_racing_cancel_has_exactly_one_consistent_outcome(
    opts: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let pool = race_pool(opts, connect).await;
    // 50 branches, each with its try and its cancel sent at the same time:
    // 100 concurrent requests.
    let branches: Vec<BranchContext> = (0..50).map(|i| branch("race", &i.to_string())).collect();
    let requests = branches
        .iter()
        .flat_map(|b| [(b.clone(), Op::Try), (b.clone(), Op::Cancel)])
        .collect();
    let seen = race(&pool, requests).await;

    let (mut normal, mut null) = (0, 0);
    for (b, pair) in branches.iter().zip(seen.chunks(2)) {
        let (try_, cancel) = (
            effects(&pool, b, Op::Try).await,
            effects(&pool, b, Op::Cancel).await,
        );
        match (pair[0], pair[1]) {
            (Seen::Ran, Seen::Ran) => {
                assert_eq!((try_, cancel), (1, 1), "branch {}", b.branch_id);
                // The cancel queued behind the try's commit, so it
                // compensated something that existed.
                let order: Vec<String> =
                    sqlx::query_scalar("SELECT op FROM effects WHERE branch_id = $1 ORDER BY seq")
                        .bind(&b.branch_id)
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                assert_eq!(order, ["try", "cancel"]);
                normal += 1;
            }
            (Seen::Rejected, Seen::NullCompensated) => {
                assert_eq!((try_, cancel), (0, 0), "branch {}", b.branch_id);
                null += 1;
            }
            other => panic!("branch {}: inconsistent outcome {other:?}", b.branch_id),
        }
    }
    assert_eq!(normal + null, 50);
    println!("try-vs-cancel: {normal} normal, {null} null compensations");
    pool.close().await;
}

#[sqlx::test(migrations = false)]
async fn many_tries_and_cancels_of_one_branch_agree(
    opts: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let pool = race_pool(opts, connect).await;
    let b = branch("race", "1");
    let requests = (0..60)
        .map(|i| (b.clone(), if i % 2 == 0 { Op::Try } else { Op::Cancel }))
        .collect();
    let seen = race(&pool, requests).await;
    let count = |op_index: usize, s: Seen| {
        seen.iter()
            .skip(op_index)
            .step_by(2)
            .filter(|&&x| x == s)
            .count()
    };

    let (try_ran, cancel_ran) = (count(0, Seen::Ran), count(1, Seen::Ran));
    let null = count(1, Seen::NullCompensated);
    assert_eq!(effects(&pool, &b, Op::Try).await as usize, try_ran);
    assert_eq!(effects(&pool, &b, Op::Cancel).await as usize, cancel_ran);
    assert_eq!(cancel_ran + null, 1, "exactly one cancel acted: {seen:?}");
    if null == 1 {
        // Cancel won: no try may have run, all were refused.
        assert_eq!(count(0, Seen::Rejected), 30, "{seen:?}");
    } else {
        // Try won: it ran once, its duplicates (even after the cancel) are
        // harmless successes.
        assert_eq!(try_ran, 1, "{seen:?}");
        assert_eq!(count(0, Seen::Duplicate), 29, "{seen:?}");
    }
    assert_eq!(count(1, Seen::Duplicate), 29, "{seen:?}");
    pool.close().await;
}

#[sqlx::test(migrations = false)]
async fn duplicate_confirms_racing_run_the_logic_once(
    opts: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let pool = race_pool(opts, connect).await;
    let b = branch("race", "1");
    assert_eq!(
        run(&pool, &b, Op::Try).await.unwrap(),
        BarrierOutcome::Ran(())
    );

    let seen = race(&pool, vec![(b.clone(), Op::Confirm); 50]).await;
    assert_eq!(
        seen.iter().filter(|&&s| s == Seen::Ran).count(),
        1,
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|&&s| s == Seen::Duplicate).count(),
        49,
        "{seen:?}"
    );
    assert_eq!(effects(&pool, &b, Op::Confirm).await, 1);
    pool.close().await;
}

#[sqlx::test(migrations = false)]
async fn cleanup_deletes_only_old_rows_in_batches(pool: PgPool) {
    setup(&pool).await;
    for i in 0..7 {
        run(&pool, &branch("old", &i.to_string()), Op::Try)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE concord_barrier SET created_at = now() - interval '2 hours'")
        .execute(&pool)
        .await
        .unwrap();
    run(&pool, &branch("new", "1"), Op::Try).await.unwrap();

    assert_eq!(
        barrier(&pool)
            .cleanup(Duration::from_secs(3600), 3)
            .await
            .unwrap(),
        7
    );
    assert_eq!(barrier_rows(&pool).await, 1);
    assert_eq!(
        barrier(&pool)
            .cleanup(Duration::from_secs(3600), 3)
            .await
            .unwrap(),
        0
    );
    assert_eq!(barrier(&pool).cleanup(Duration::ZERO, 0).await.unwrap(), 0);
}

#[sqlx::test(migrations = false)]
async fn a_context_without_ids_is_refused(pool: PgPool) {
    setup(&pool).await;
    for ctx in [branch("", "1"), branch("g", "")] {
        let err = run(&pool, &ctx, Op::Confirm).await.unwrap_err();
        assert!(err.is_rejected(), "{err:?}");
    }
    assert_eq!(barrier_rows(&pool).await, 0);
}

/// Issue 11: the participant server enforces the deadline it receives
/// (`grpc-timeout`): at the deadline the handler is dropped, so the
/// barrier's local transaction rolls back instead of committing late, when
/// the coordinator may already have sent the next call.
#[sqlx::test(migrations = false)]
async fn a_call_past_its_deadline_is_dropped_and_its_barrier_rolls_back(pool: PgPool) {
    use concord_sdk::proto::participant::v1::BranchRequest;
    use concord_sdk::proto::participant::v1::participant_client::ParticipantClient;
    use concord_sdk::{ParticipantServer, ParticipantService};

    setup(&pool).await;
    let slow = |b: PgBarrier, ctx: BranchContext| async move {
        b.run(&ctx, Op::Try, async |conn| {
            record(conn, &ctx, Op::Try).await?;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok(())
        })
        .await
    };
    let quick = |b: PgBarrier, ctx: BranchContext, op: Op| async move {
        b.run(&ctx, op, async |conn| record(conn, &ctx, op).await).await
    };
    let service = ParticipantService::builder("slow")
        .tcc_with(
            "hold",
            barrier(&pool),
            slow,
            move |b, ctx| quick(b, ctx, Op::Confirm),
            move |b, ctx| quick(b, ctx, Op::Cancel),
        )
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ParticipantServer::new(service).serve(listener, std::future::pending()));
    let mut client = ParticipantClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let mut call = tonic::Request::new(BranchRequest {
        gid: "late".into(),
        branch_id: "1".into(),
        action: "hold".into(),
        attempt: 1,
        ..Default::default()
    });
    call.set_timeout(Duration::from_millis(300));
    let sent = std::time::Instant::now();
    let refused = client.r#try(call).await.unwrap_err();
    assert!(
        sent.elapsed() < Duration::from_millis(1200),
        "answered after {:?}: {refused:?}",
        sent.elapsed()
    );
    // Well after the body would have committed had it run on.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let ctx = branch("late", "1");
    assert_eq!(effects(&pool, &ctx, Op::Try).await, 0);
    let barrier_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM concord_barrier WHERE gid = 'late'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(barrier_rows, 0, "the barrier's transaction committed after the deadline");
}
