//! An order placed as a saga across three services, each with its own
//! schema:
//!
//! | participant | action → compensation | effect                                   |
//! |-------------|-----------------------|------------------------------------------|
//! | `orders`    | `create` → `cancel`   | the order row, `placed` then `cancelled` |
//! | `inventory` | `reserve` → `release` | takes the quantity from stock            |
//! | `payment`   | `charge` → `refund`   | debits the customer's wallet             |
//!
//! The order is created first; reserving and charging then run at once.
//! Out of stock or short of funds rejects, and the coordinator compensates
//! whatever ran. Every handler runs inside [`Barrier::run`](concord_sdk::Barrier::run).

use std::time::Duration;

use concord_sdk::initiator::Error;
use concord_sdk::{
    ActionError, ActionResult, Barrier, BranchContext, BuildError, Coordinator, Op,
    ParticipantService, PgBarrier, SagaAction, SagaOutcome,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

const ORDERS: &str = "
CREATE TABLE IF NOT EXISTS orders (
    id       text   PRIMARY KEY,
    customer bigint NOT NULL,
    sku      text   NOT NULL,
    qty      int    NOT NULL,
    amount   bigint NOT NULL,
    status   text   NOT NULL CHECK (status IN ('placed', 'cancelled'))
)";
const STOCK: &str = "
CREATE TABLE IF NOT EXISTS stock (
    sku       text PRIMARY KEY,
    available int  NOT NULL CHECK (available >= 0)
)";
const WALLETS: &str = "
CREATE TABLE IF NOT EXISTS wallet (
    customer bigint PRIMARY KEY,
    balance  bigint NOT NULL CHECK (balance >= 0)
)";

/// The payload every step of an order saga gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Order id; also used as the saga's gid.
    pub id: String,
    /// Paying customer.
    pub customer: i64,
    /// Product ordered.
    pub sku: String,
    /// Quantity, > 0.
    pub qty: i32,
    /// Price to charge, > 0.
    pub amount: i64,
}

/// The three services' databases.
#[derive(Clone, Debug)]
pub struct Shop {
    orders: PgPool,
    inventory: PgPool,
    payment: PgPool,
}

/// What the three services hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShopState {
    /// `(order id, status)`.
    pub orders: Vec<(String, String)>,
    /// `(sku, available)`.
    pub stock: Vec<(String, i32)>,
    /// `(customer, balance)`.
    pub wallets: Vec<(i64, i64)>,
}

impl Shop {
    /// Opens the services on their pools (each with its own `search_path`,
    /// see [`crate::db`]), creating tables and barrier tables if missing.
    pub async fn open(
        orders: PgPool,
        inventory: PgPool,
        payment: PgPool,
    ) -> Result<Self, sqlx::Error> {
        for (pool, table) in [(&orders, ORDERS), (&inventory, STOCK), (&payment, WALLETS)] {
            Barrier::postgres(pool.clone()).migrate().await?;
            sqlx::query(table).execute(pool).await?;
        }
        Ok(Self {
            orders,
            inventory,
            payment,
        })
    }

    /// Sets stock levels and wallet balances (overwriting existing ones).
    pub async fn seed(
        &self,
        stock: &[(&str, i32)],
        wallets: &[(i64, i64)],
    ) -> Result<(), sqlx::Error> {
        for (sku, available) in stock {
            sqlx::query(
                "INSERT INTO stock (sku, available) VALUES ($1, $2) \
                 ON CONFLICT (sku) DO UPDATE SET available = $2",
            )
            .bind(sku)
            .bind(available)
            .execute(&self.inventory)
            .await?;
        }
        for (customer, balance) in wallets {
            sqlx::query(
                "INSERT INTO wallet (customer, balance) VALUES ($1, $2) \
                 ON CONFLICT (customer) DO UPDATE SET balance = $2",
            )
            .bind(customer)
            .bind(balance)
            .execute(&self.payment)
            .await?;
        }
        Ok(())
    }

    /// The `orders`, `inventory` and `payment` participant services.
    pub fn services(&self) -> Result<[ParticipantService; 3], BuildError> {
        Ok([
            ParticipantService::builder("orders")
                .saga_pair(
                    "create",
                    "cancel",
                    Orders {
                        barrier: Barrier::postgres(self.orders.clone()),
                    },
                )
                .build()?,
            ParticipantService::builder("inventory")
                .saga_pair(
                    "reserve",
                    "release",
                    Inventory {
                        barrier: Barrier::postgres(self.inventory.clone()),
                    },
                )
                .build()?,
            ParticipantService::builder("payment")
                .saga_pair(
                    "charge",
                    "refund",
                    Payment {
                        barrier: Barrier::postgres(self.payment.clone()),
                    },
                )
                .build()?,
        ])
    }

    /// Reads what the three services hold.
    pub async fn state(&self) -> Result<ShopState, sqlx::Error> {
        Ok(ShopState {
            orders: sqlx::query_as("SELECT id, status FROM orders ORDER BY id")
                .fetch_all(&self.orders)
                .await?,
            stock: sqlx::query_as("SELECT sku, available FROM stock ORDER BY sku")
                .fetch_all(&self.inventory)
                .await?,
            wallets: sqlx::query_as("SELECT customer, balance FROM wallet ORDER BY customer")
                .fetch_all(&self.payment)
                .await?,
        })
    }
}

/// Places `order` as a saga (gid = order id) and waits for its outcome.
pub async fn place_order(
    coordinator: &Coordinator,
    order: &Order,
    timeout: Duration,
) -> Result<SagaOutcome, Error> {
    let payload = serde_json::to_vec(order).expect("an order serializes");
    coordinator
        .saga(Some(&order.id))
        .step("orders", "create", "cancel", payload.clone())
        .step("inventory", "reserve", "release", payload.clone())
        .after(&[0])
        .step("payment", "charge", "refund", payload)
        .after(&[0])
        .timeout(timeout)
        .submit(true)
        .await
}

fn order(ctx: &BranchContext) -> Result<Order, ActionError> {
    let order: Order = ctx.json()?;
    if order.qty <= 0 || order.amount <= 0 {
        return Err(ActionError::rejected(
            "quantity and amount must be positive",
        ));
    }
    Ok(order)
}

struct Orders {
    barrier: PgBarrier,
}

#[concord_sdk::async_trait]
impl SagaAction for Orders {
    async fn execute(&self, ctx: BranchContext) -> ActionResult {
        let o = order(&ctx)?;
        self.barrier
            .run(&ctx, Op::Execute, async |conn| {
                let created = sqlx::query(
                    "INSERT INTO orders (id, customer, sku, qty, amount, status) \
                 VALUES ($1, $2, $3, $4, $5, 'placed') ON CONFLICT (id) DO NOTHING",
                )
                .bind(&o.id)
                .bind(o.customer)
                .bind(&o.sku)
                .bind(o.qty)
                .bind(o.amount)
                .execute(conn)
                .await?;
                if created.rows_affected() == 0 {
                    return Err(ActionError::rejected("order already exists"));
                }
                Ok(())
            })
            .await?;
        Ok(Vec::new())
    }

    async fn compensate(&self, ctx: BranchContext) -> ActionResult {
        let o = order(&ctx)?;
        self.barrier
            .run(&ctx, Op::Compensate, async |conn| {
                sqlx::query("UPDATE orders SET status = 'cancelled' WHERE id = $1")
                    .bind(&o.id)
                    .execute(conn)
                    .await?;
                Ok(())
            })
            .await?;
        Ok(Vec::new())
    }
}

struct Inventory {
    barrier: PgBarrier,
}

#[concord_sdk::async_trait]
impl SagaAction for Inventory {
    async fn execute(&self, ctx: BranchContext) -> ActionResult {
        let o = order(&ctx)?;
        self.barrier
            .run(&ctx, Op::Execute, async |conn| {
                let taken = sqlx::query(
                "UPDATE stock SET available = available - $2 WHERE sku = $1 AND available >= $2",
            )
            .bind(&o.sku)
            .bind(o.qty)
            .execute(conn)
            .await?;
                if taken.rows_affected() == 0 {
                    return Err(ActionError::rejected(format!("{} is out of stock", o.sku)));
                }
                Ok(())
            })
            .await?;
        Ok(Vec::new())
    }

    async fn compensate(&self, ctx: BranchContext) -> ActionResult {
        let o = order(&ctx)?;
        self.barrier
            .run(&ctx, Op::Compensate, async |conn| {
                sqlx::query("UPDATE stock SET available = available + $2 WHERE sku = $1")
                    .bind(&o.sku)
                    .bind(o.qty)
                    .execute(conn)
                    .await?;
                Ok(())
            })
            .await?;
        Ok(Vec::new())
    }
}

struct Payment {
    barrier: PgBarrier,
}

#[concord_sdk::async_trait]
impl SagaAction for Payment {
    async fn execute(&self, ctx: BranchContext) -> ActionResult {
        let o = order(&ctx)?;
        self.barrier
            .run(&ctx, Op::Execute, async |conn| {
                let charged = sqlx::query(
                "UPDATE wallet SET balance = balance - $2 WHERE customer = $1 AND balance >= $2",
            )
            .bind(o.customer)
            .bind(o.amount)
            .execute(conn)
            .await?;
                if charged.rows_affected() == 0 {
                    return Err(ActionError::rejected("insufficient funds"));
                }
                Ok(())
            })
            .await?;
        Ok(Vec::new())
    }

    async fn compensate(&self, ctx: BranchContext) -> ActionResult {
        let o = order(&ctx)?;
        self.barrier
            .run(&ctx, Op::Compensate, async |conn| {
                sqlx::query("UPDATE wallet SET balance = balance + $2 WHERE customer = $1")
                    .bind(o.customer)
                    .bind(o.amount)
                    .execute(conn)
                    .await?;
                Ok(())
            })
            .await?;
        Ok(Vec::new())
    }
}
