//! Client SDK for Concord, a distributed-transaction coordinator (TCC and
//! Saga over gRPC).
//!
//! - Participants implement [`TccAction`] or [`SagaAction`], register them on
//!   a [`ParticipantService`] and serve it with [`ParticipantServer`].
//! - [`Barrier`] makes those actions idempotent and safe against null
//!   compensation and hanging tries, in the participant's own PostgreSQL.
//! - Initiators open and drive TCC transactions, or submit sagas (see
//!   [`Coordinator::saga`]), through [`Coordinator`].
//!
//! The outcome contract of participant calls: success is `Ok`;
//! [`ActionError::Rejected`] is a final business refusal (`ABORTED`);
//! anything else leaves the outcome unknown and the coordinator retries.
//!
//! # Example
//!
//! A participant with one TCC action, made idempotent by the barrier, and an
//! initiator running a transaction against it:
//!
//! ```no_run
//! use concord_sdk::{
//!     ActionError, Barrier, BeginOptions, Coordinator, Op, ParticipantServer, ParticipantService,
//! };
//!
//! # async fn example(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! // Participant side.
//! Barrier::migrate(&pool).await?;
//! let (p1, p2, p3) = (pool.clone(), pool.clone(), pool.clone());
//! let service = ParticipantService::builder("bank")
//!     .tcc_fn(
//!         "transfer_out",
//!         move |ctx| {
//!             let pool = p1.clone();
//!             async move {
//!                 let amount: i64 = ctx.json()?;
//!                 Barrier::run(&pool, &ctx, Op::Try, async |conn| {
//!                     let ok = sqlx::query(
//!                         "UPDATE account SET frozen = frozen + $1 WHERE balance - frozen >= $1",
//!                     )
//!                     .bind(amount)
//!                     .execute(conn)
//!                     .await?;
//!                     if ok.rows_affected() == 0 {
//!                         return Err(ActionError::rejected("insufficient funds"));
//!                     }
//!                     Ok(())
//!                 })
//!                 .await?;
//!                 Ok(Vec::new())
//!             }
//!         },
//!         move |ctx| {
//!             let pool = p2.clone();
//!             async move {
//!                 Barrier::run(&pool, &ctx, Op::Confirm, async |_conn| Ok(())).await?;
//!                 Ok(Vec::new())
//!             }
//!         },
//!         move |ctx| {
//!             let pool = p3.clone();
//!             async move {
//!                 Barrier::run(&pool, &ctx, Op::Cancel, async |_conn| Ok(())).await?;
//!                 Ok(Vec::new())
//!             }
//!         },
//!     )
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:50061").await?;
//! tokio::spawn(
//!     ParticipantServer::new(service)
//!         .register_with("http://concord:50051", "http://bank-1:50061")
//!         .serve(listener, async {
//!             let _ = tokio::signal::ctrl_c().await;
//!         }),
//! );
//!
//! // Initiator side: commit if every try succeeds, roll back otherwise.
//! let coordinator = Coordinator::connect("http://concord:50051").await?;
//! coordinator
//!     .tcc(BeginOptions::default().gid("order-42"), |tx| async move {
//!         tx.try_branch("bank", "transfer_out", br#"30"#.to_vec()).await?;
//!         Ok::<_, concord_sdk::initiator::Error>(())
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod barrier;
pub mod initiator;
pub mod participant;

#[cfg(feature = "postgres")]
pub use barrier::PgBarrier;
pub use barrier::{Barrier, BarrierOutcome, MemoryBarrier};
pub use initiator::{
    BeginOptions, Coordinator, SagaBuilder, SagaOutcome, SubTransaction, TccOutcome,
    TccTransaction, TryOptions, TryOutcome,
};
pub use participant::{
    ActionError, ActionResult, BoxError, BranchContext, BuildError, IntoReply, Json, Op,
    ParseOpError, ParticipantServer, ParticipantService, ParticipantServiceBuilder,
    RunningParticipant, SagaAction, ServeError, TccAction,
};

/// The attribute `impl TccAction for ...` and `impl SagaAction for ...`
/// blocks need, re-exported so participants need no dependency of their own.
///
/// ```
/// use concord_sdk::{ActionResult, BranchContext, SagaAction};
///
/// struct Ship;
///
/// #[concord_sdk::async_trait]
/// impl SagaAction for Ship {
///     async fn execute(&self, _ctx: BranchContext) -> ActionResult { Ok(Vec::new()) }
///     async fn compensate(&self, _ctx: BranchContext) -> ActionResult { Ok(Vec::new()) }
/// }
/// ```
pub use tonic::async_trait;

/// The sqlx the PostgreSQL barrier is built on (feature `postgres`),
/// re-exported so a participant's `PgPool` and queries match its version.
///
/// ```no_run
/// # async fn run() -> Result<(), concord_sdk::sqlx::Error> {
/// let pool = concord_sdk::sqlx::PgPool::connect("postgres://localhost/shop").await?;
/// # let _ = pool;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "postgres")]
pub use sqlx;

/// Generated wire types, re-exported so users need no direct dependency on
/// `concord-proto` (for example for [`TransactionStatus`](proto::v1::TransactionStatus)).
pub use concord_proto as proto;
