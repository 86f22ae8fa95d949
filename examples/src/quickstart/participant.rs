//! The quickstart participant `shop`: a TCC action `hold` on stock and a
//! saga pair `charge`/`refund` on wallets, each op one SQL statement that
//! the barrier runs once per branch, in the statement's transaction.

use concord_sdk::sqlx::{self, PgPool};
use concord_sdk::{ActionError, Barrier, BarrierOutcome, BoxError, BranchContext, Op};
use concord_sdk::{ParticipantService, PgBarrier};
use serde::{Deserialize, Serialize};

/// Every payload: a SKU or a customer, and how many or how much.
#[derive(Debug, Serialize, Deserialize)]
pub struct Line {
    pub id: String,
    pub amount: i64,
}

const HOLD: &str = "UPDATE stock SET held = held + $2 WHERE id = $1 AND available - held >= $2";
const TAKE: &str = "UPDATE stock SET available = available - $2, held = held - $2 WHERE id = $1";
const RELEASE: &str = "UPDATE stock SET held = held - $2 WHERE id = $1";
const CHARGE: &str = "UPDATE wallet SET balance = balance - $2 WHERE id = $1 AND balance >= $2";
const REFUND: &str = "UPDATE wallet SET balance = balance + $2 WHERE id = $1";

type Reply = Result<BarrierOutcome<()>, ActionError>;

/// Runs `sql` with the payload as `$1, $2` once for `op` of the branch; a
/// forward op that changes no row is refused, any other retried.
async fn apply(b: PgBarrier, ctx: BranchContext, op: Op, sql: &'static str) -> Reply {
    let Line { id, amount } = ctx.json()?;
    b.run(&ctx, op, async |db| {
        let query = sqlx::query(sql).bind(&id).bind(amount);
        match query.execute(db).await?.rows_affected() {
            0 if op.is_forward() => Err(ActionError::rejected(format!("not enough {id}"))),
            0 => Err(ActionError::failed(format!("{op}: no row {id}"))),
            _ => Ok(()),
        }
    })
    .await
}

/// The `shop` service; creates the barrier's table if missing.
pub async fn service(pool: PgPool) -> Result<ParticipantService, BoxError> {
    let barrier = Barrier::postgres(pool);
    barrier.migrate().await?;
    Ok(ParticipantService::builder("shop")
        .tcc_with(
            "hold",
            barrier.clone(),
            |b, ctx| apply(b, ctx, Op::Try, HOLD),
            |b, ctx| apply(b, ctx, Op::Confirm, TAKE),
            |b, ctx| apply(b, ctx, Op::Cancel, RELEASE),
        )
        .saga_pair_with(
            "charge",
            "refund",
            barrier,
            |b, ctx| apply(b, ctx, Op::Execute, CHARGE),
            |b, ctx| apply(b, ctx, Op::Compensate, REFUND),
        )
        .build()?)
}
