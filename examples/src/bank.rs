//! Bank transfer over TCC: account services and an initiator.
//!
//! Each bank is one participant with its own schema and two TCC actions:
//!
//! | action         | Try                                  | Confirm                         | Cancel            |
//! |----------------|--------------------------------------|---------------------------------|-------------------|
//! | `transfer_out` | freeze the amount (rejects if the available balance is short) | debit balance and frozen, journal `-amount` | unfreeze |
//! | `transfer_in`  | check the account exists             | credit balance, journal `+amount` | nothing         |
//!
//! Balances never go negative (`balance >= frozen >= 0` is a table
//! constraint) and every applied leg leaves one journal row, written in the
//! same transaction as the balance change, so an audit can tell which
//! transfers were applied. Every handler runs inside [`Barrier::run`](concord_sdk::Barrier::run).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use concord_sdk::initiator::Error;
use concord_sdk::{
    ActionError, ActionResult, Barrier, BeginOptions, BranchContext, BuildError, Coordinator, Op,
    ParticipantService, PgBarrier, TccAction, TryOptions,
};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use tonic::Code;

/// The action debiting an account.
pub const TRANSFER_OUT: &str = "transfer_out";
/// The action crediting an account.
pub const TRANSFER_IN: &str = "transfer_in";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS account (
    id      bigint PRIMARY KEY,
    balance bigint NOT NULL,
    -- Reserved by tries of outgoing transfers not yet confirmed or cancelled.
    frozen  bigint NOT NULL DEFAULT 0,
    CHECK (frozen >= 0 AND balance >= frozen)
);
-- One row per applied leg, written with the balance change.
CREATE TABLE IF NOT EXISTS journal (
    gid        text        NOT NULL,
    branch_id  text        NOT NULL,
    account    bigint      NOT NULL,
    delta      bigint      NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gid, branch_id)
);
";

/// The payload of both actions: which account of this bank, how much.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    /// Account id within the bank.
    pub account: i64,
    /// Amount moved, > 0.
    pub amount: i64,
}

/// One bank: its name (the participant name) and its database.
#[derive(Clone, Debug)]
pub struct Bank {
    name: Arc<str>,
    pool: PgPool,
}

/// One account as stored.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Account {
    /// Account id within the bank.
    pub id: i64,
    /// Money on the account, frozen or not.
    pub balance: i64,
    /// Money reserved by open tries.
    pub frozen: i64,
}

/// One applied leg.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct JournalEntry {
    /// The transfer's transaction id.
    pub gid: String,
    /// The branch that applied it.
    pub branch_id: String,
    /// Account id within the bank.
    pub account: i64,
    /// Signed amount applied to the balance.
    pub delta: i64,
}

impl Bank {
    /// Opens the bank `name` on `pool` (whose `search_path` is the bank's
    /// schema, see [`crate::db`]), creating its tables and the barrier table
    /// if missing.
    pub async fn open(name: &str, pool: PgPool) -> Result<Self, sqlx::Error> {
        Barrier::postgres(pool.clone()).migrate().await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        Ok(Self {
            name: name.into(),
            pool,
        })
    }

    /// The participant name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bank's database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates accounts `1..=accounts` with `balance` each, leaving existing
    /// accounts as they are.
    pub async fn seed(&self, accounts: i64, balance: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO account (id, balance) SELECT id, $2 FROM generate_series(1, $1) AS id \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(accounts)
        .bind(balance)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The participant service with [`TRANSFER_OUT`] and [`TRANSFER_IN`];
    /// fails if the bank's name is not a valid participant name.
    pub fn service(&self) -> Result<ParticipantService, BuildError> {
        ParticipantService::builder(&*self.name)
            .tcc(
                TRANSFER_OUT,
                TransferOut {
                    barrier: Barrier::postgres(self.pool.clone()),
                },
            )
            .tcc(
                TRANSFER_IN,
                TransferIn {
                    barrier: Barrier::postgres(self.pool.clone()),
                },
            )
            .build()
    }

    /// Every account, by id.
    pub async fn accounts(&self) -> Result<Vec<Account>, sqlx::Error> {
        sqlx::query_as("SELECT id, balance, frozen FROM account ORDER BY id")
            .fetch_all(&self.pool)
            .await
    }

    /// Every applied leg.
    pub async fn journal(&self) -> Result<Vec<JournalEntry>, sqlx::Error> {
        sqlx::query_as("SELECT gid, branch_id, account, delta FROM journal ORDER BY gid, branch_id")
            .fetch_all(&self.pool)
            .await
    }
}

struct TransferOut {
    barrier: PgBarrier,
}

struct TransferIn {
    barrier: PgBarrier,
}

fn leg(ctx: &BranchContext) -> Result<Leg, ActionError> {
    let leg: Leg = ctx.json()?;
    if leg.amount <= 0 {
        return Err(ActionError::rejected("amount must be positive"));
    }
    Ok(leg)
}

async fn account_exists(conn: &mut PgConnection, id: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM account WHERE id = $1)")
        .bind(id)
        .fetch_one(conn)
        .await
}

async fn journal(
    conn: &mut PgConnection,
    ctx: &BranchContext,
    account: i64,
    delta: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO journal (gid, branch_id, account, delta) VALUES ($1, $2, $3, $4)")
        .bind(&ctx.gid)
        .bind(&ctx.branch_id)
        .bind(account)
        .bind(delta)
        .execute(conn)
        .await?;
    Ok(())
}

/// A phase-2 update that finds no row means the data is not what the try
/// left: retrying (and so alerting an operator) beats silently succeeding.
fn expect_one(rows: u64, what: &str) -> Result<(), ActionError> {
    if rows == 1 {
        Ok(())
    } else {
        Err(ActionError::failed(format!("{what}: {rows} rows updated")))
    }
}

#[concord_sdk::async_trait]
impl TccAction for TransferOut {
    async fn try_(&self, ctx: BranchContext) -> ActionResult {
        let leg = leg(&ctx)?;
        self.barrier
            .run(&ctx, Op::Try, async |conn| {
                // One statement checks and reserves, so concurrent tries on the
                // same account cannot both pass the check.
                let frozen = sqlx::query(
                "UPDATE account SET frozen = frozen + $2 WHERE id = $1 AND balance - frozen >= $2",
            )
            .bind(leg.account)
            .bind(leg.amount)
            .execute(&mut *conn)
            .await?;
                if frozen.rows_affected() == 1 {
                    return Ok(());
                }
                if account_exists(conn, leg.account).await? {
                    Err(ActionError::rejected("insufficient funds"))
                } else {
                    Err(ActionError::rejected("unknown account"))
                }
            })
            .await?;
        Ok(Vec::new())
    }

    async fn confirm(&self, ctx: BranchContext) -> ActionResult {
        let leg = leg(&ctx)?;
        self.barrier
            .run(&ctx, Op::Confirm, async |conn| {
                let moved = sqlx::query(
                    "UPDATE account SET balance = balance - $2, frozen = frozen - $2 WHERE id = $1",
                )
                .bind(leg.account)
                .bind(leg.amount)
                .execute(&mut *conn)
                .await?;
                expect_one(moved.rows_affected(), "debit")?;
                journal(conn, &ctx, leg.account, -leg.amount).await?;
                Ok(())
            })
            .await?;
        Ok(Vec::new())
    }

    async fn cancel(&self, ctx: BranchContext) -> ActionResult {
        let leg = leg(&ctx)?;
        self.barrier
            .run(&ctx, Op::Cancel, async |conn| {
                let released = sqlx::query("UPDATE account SET frozen = frozen - $2 WHERE id = $1")
                    .bind(leg.account)
                    .bind(leg.amount)
                    .execute(&mut *conn)
                    .await?;
                expect_one(released.rows_affected(), "unfreeze")
            })
            .await?;
        Ok(Vec::new())
    }
}

#[concord_sdk::async_trait]
impl TccAction for TransferIn {
    async fn try_(&self, ctx: BranchContext) -> ActionResult {
        let leg = leg(&ctx)?;
        self.barrier
            .run(&ctx, Op::Try, async |conn| {
                if account_exists(conn, leg.account).await? {
                    Ok(())
                } else {
                    Err(ActionError::rejected("unknown account"))
                }
            })
            .await?;
        Ok(Vec::new())
    }

    async fn confirm(&self, ctx: BranchContext) -> ActionResult {
        let leg = leg(&ctx)?;
        self.barrier
            .run(&ctx, Op::Confirm, async |conn| {
                let credited =
                    sqlx::query("UPDATE account SET balance = balance + $2 WHERE id = $1")
                        .bind(leg.account)
                        .bind(leg.amount)
                        .execute(&mut *conn)
                        .await?;
                expect_one(credited.rows_affected(), "credit")?;
                journal(conn, &ctx, leg.account, leg.amount).await?;
                Ok(())
            })
            .await?;
        Ok(Vec::new())
    }

    async fn cancel(&self, ctx: BranchContext) -> ActionResult {
        // Nothing was reserved; the barrier still records the cancel so a
        // late try is refused.
        self.barrier
            .run(&ctx, Op::Cancel, async |_conn| Ok(()))
            .await?;
        Ok(Vec::new())
    }
}

/// An account of a given bank.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AccountRef {
    /// The bank's participant name.
    pub bank: String,
    /// Account id within the bank.
    pub account: i64,
}

/// One planned transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The transaction id it runs under.
    pub gid: String,
    /// Debited account.
    pub from: AccountRef,
    /// Credited account.
    pub to: AccountRef,
    /// Amount, > 0.
    pub amount: i64,
}

/// `n` transfers between random distinct accounts `1..=accounts` of the
/// given banks, of `1..=max_amount` each, with gids `{prefix}-{i}`.
pub fn random_transfers(
    prefix: &str,
    n: usize,
    banks: &[&str],
    accounts: i64,
    max_amount: i64,
) -> Vec<Transfer> {
    let mut rng = rand::rng();
    let mut pick = || AccountRef {
        bank: banks[rng.random_range(0..banks.len())].to_owned(),
        account: rng.random_range(1..=accounts),
    };
    (0..n)
        .map(|i| {
            let from = pick();
            let to = loop {
                let to = pick();
                if to != from {
                    break to;
                }
            };
            Transfer {
                gid: format!("{prefix}-{i}"),
                from,
                to,
                amount: rand::rng().random_range(1..=max_amount),
            }
        })
        .collect()
}

/// How [`transfer`] runs each transaction.
#[derive(Clone, Debug)]
pub struct TransferOptions {
    /// The transaction's timeout: past it, the coordinator rolls back
    /// transactions the initiator left open (it crashed, or lost its
    /// connection).
    pub timeout: Duration,
    /// Whether commit and rollback wait for phase 2 to finish.
    pub wait: bool,
    /// Deadline of each Try call, if not the coordinator's default.
    pub call_timeout: Option<Duration>,
}

impl Default for TransferOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            wait: true,
            call_timeout: None,
        }
    }
}

/// What the initiator saw of one transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferOutcome {
    /// Both tries succeeded and the commit decision was accepted.
    Committed,
    /// A try was rejected (insufficient funds...), so it was rolled back.
    Rejected(String),
    /// Some call failed with an unknown outcome (a lost reply, the
    /// coordinator restarting); the coordinator decides: a commit already
    /// recorded is carried out, anything else is rolled back at the latest
    /// at the timeout.
    Unknown(String),
}

/// Runs one transfer: a TCC transaction with a `transfer_out` branch on the
/// debited bank and a `transfer_in` branch on the credited one, tried
/// concurrently; committed if both tries succeed, rolled back otherwise.
///
/// Begin and commit are retried for a few seconds while the coordinator is
/// unreachable (restarting, say): both are idempotent for a given gid.
pub async fn transfer(
    coordinator: &Coordinator,
    t: &Transfer,
    opts: &TransferOptions,
) -> TransferOutcome {
    let begin = BeginOptions::default()
        .gid(&t.gid)
        .timeout(opts.timeout)
        .wait(opts.wait);
    let tx = match retry_transient(|| coordinator.begin(begin.clone())).await {
        Ok(tx) => tx,
        Err(e) => return TransferOutcome::Unknown(e.to_string()),
    };
    let out = serde_json::to_vec(&Leg {
        account: t.from.account,
        amount: t.amount,
    })
    .expect("a leg serializes");
    let into = serde_json::to_vec(&Leg {
        account: t.to.account,
        amount: t.amount,
    })
    .expect("a leg serializes");
    let try_opts = |branch_id: &str| TryOptions {
        branch_id: Some(branch_id.to_owned()),
        call_timeout: opts.call_timeout,
        ..Default::default()
    };
    let tried = tokio::try_join!(
        tx.try_branch_with(&t.from.bank, TRANSFER_OUT, out, try_opts("out")),
        tx.try_branch_with(&t.to.bank, TRANSFER_IN, into, try_opts("in")),
    );
    if let Err(e) = tried {
        // Best effort: if the rollback is lost too, the coordinator rolls
        // back at the timeout.
        if let Err(rollback) = tx.rollback(e.to_string(), opts.wait).await {
            tracing::debug!(gid = %t.gid, error = %rollback, "rollback failed");
        }
        return if e.is_rejected() {
            TransferOutcome::Rejected(e.to_string())
        } else {
            TransferOutcome::Unknown(e.to_string())
        };
    }
    match retry_transient(|| tx.commit(opts.wait)).await {
        Ok(_) => TransferOutcome::Committed,
        // The transaction was already rolling back (its deadline passed).
        Err(e) if e.is_rejected() => TransferOutcome::Rejected(e.to_string()),
        Err(e) => TransferOutcome::Unknown(e.to_string()),
    }
}

/// Retries `call` for up to 5 s while the coordinator cannot be reached.
async fn retry_transient<T, F, Fut>(mut call: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match call().await {
            Err(e) if is_transient(&e) && tokio::time::Instant::now() < until => {
                tracing::debug!(error = %e, "coordinator unreachable, retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            result => return result,
        }
    }
}

/// Errors that say the coordinator was not reached (or the connection
/// broke), as opposed to an answer.
fn is_transient(e: &Error) -> bool {
    matches!(
        e.code(),
        None | Some(Code::Unavailable | Code::Unknown | Code::Cancelled)
    )
}

/// Counts of what the initiator saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Transfers committed.
    pub committed: u64,
    /// Transfers rolled back after a rejected try.
    pub rejected: u64,
    /// Transfers whose outcome the coordinator decides.
    pub unknown: u64,
    /// Each transfer's outcome, by gid.
    pub outcomes: HashMap<String, TransferOutcome>,
}

/// Runs `transfers`, at most `concurrency` at once.
pub async fn run_transfers(
    coordinator: &Coordinator,
    transfers: Vec<Transfer>,
    concurrency: usize,
    opts: &TransferOptions,
) -> RunSummary {
    let total = transfers.len();
    let queue = Arc::new(std::sync::Mutex::new(transfers.into_iter()));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let queue = queue.clone();
        let done = done.clone();
        let coordinator = coordinator.clone();
        let opts = opts.clone();
        workers.spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                let next = queue.lock().expect("queue lock").next();
                let Some(t) = next else { break };
                let outcome = transfer(&coordinator, &t, &opts).await;
                tracing::debug!(gid = %t.gid, ?outcome, "transfer done");
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(100) {
                    tracing::info!(done = n, total, "transfers");
                }
                outcomes.push((t.gid, outcome));
            }
            outcomes
        });
    }
    let mut summary = RunSummary::default();
    while let Some(outcomes) = workers.join_next().await {
        for (gid, outcome) in outcomes.expect("transfer worker panicked") {
            match &outcome {
                TransferOutcome::Committed => summary.committed += 1,
                TransferOutcome::Rejected(_) => summary.rejected += 1,
                TransferOutcome::Unknown(_) => summary.unknown += 1,
            }
            summary.outcomes.insert(gid, outcome);
        }
    }
    summary
}
