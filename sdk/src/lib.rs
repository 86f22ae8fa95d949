//! Client SDK for Concord, a distributed-transaction coordinator (TCC and
//! Saga over gRPC).
//!
//! - Participants implement [`TccAction`] or [`SagaAction`], register them on
//!   a [`ParticipantService`] and serve it with [`ParticipantServer`].
//! - [`Barrier`] makes those actions idempotent and safe against null
//!   compensation and hanging tries, in the participant's own PostgreSQL
//!   (or any [`BarrierStore`](barrier::BarrierStore)).
//! - [`Coordinator::continue_tcc`] lets a participant's Try add branches to
//!   the transaction it was called in.
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
//! // Participant side: each op runs once per branch, in the transaction of
//! // its barrier row.
//! let barrier = Barrier::postgres(pool);
//! barrier.migrate().await?;
//! let service = ParticipantService::builder("bank")
//!     .tcc_with(
//!         "transfer_out",
//!         barrier,
//!         |b, ctx| async move {
//!             let amount: i64 = ctx.json()?;
//!             b.run(&ctx, Op::Try, async |conn| {
//!                 let frozen = sqlx::query(
//!                     "UPDATE account SET frozen = frozen + $1 WHERE balance - frozen >= $1",
//!                 )
//!                 .bind(amount)
//!                 .execute(conn)
//!                 .await?;
//!                 if frozen.rows_affected() == 0 {
//!                     return Err(ActionError::rejected("insufficient funds"));
//!                 }
//!                 Ok(())
//!             })
//!             .await
//!         },
//!         |b, ctx| async move { b.run(&ctx, Op::Confirm, async |_conn| Ok(())).await },
//!         |b, ctx| async move { b.run(&ctx, Op::Cancel, async |_conn| Ok(())).await },
//!     )
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:50061").await?;
//! let running = ParticipantServer::new(service)
//!     .register_with("http://127.0.0.1:50051")
//!     .start(listener, async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await?; // registered from here on
//!
//! // Initiator side: commit if every try succeeds, roll back otherwise.
//! let coordinator = Coordinator::connect("http://127.0.0.1:50051").await?;
//! let done = coordinator
//!     .tcc(BeginOptions::default().gid("order-42"), |tx| async move {
//!         tx.try_branch_json("bank", "transfer_out", &30).await
//!     })
//!     .await?;
//! println!("{} is {:?}", done.gid, done.status);
//! running.wait().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! `postgres` (default): [`PgBarrier`] and the re-exported [`sqlx`].
//! Without it the SDK compiles no sqlx; [`MemoryBarrier`] and
//! [`BarrierStore`](barrier::BarrierStore) remain.

#![warn(missing_docs)]

pub mod barrier;
pub mod credential;
pub mod initiator;
pub mod participant;
pub mod policy;

#[cfg(feature = "postgres")]
pub use barrier::PgBarrier;
pub use barrier::{Barrier, BarrierOutcome, MemoryBarrier};
pub use credential::{Credential, RequireToken};
pub use initiator::{
    BeginOptions, Coordinator, SagaBuilder, SagaOutcome, SubTransaction, TccOutcome,
    TccTransaction, TryOptions, TryOutcome,
};
pub use participant::{
    ActionError, ActionResult, BoxError, BranchContext, BuildError, IntoReply, Json, Op,
    ParseOpError, ParticipantServer, ParticipantService, ParticipantServiceBuilder,
    RunningParticipant, SagaAction, ServeError, TccAction,
};
pub use policy::CallPolicy;

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
