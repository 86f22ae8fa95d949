//! 2-phase messages from the initiator's side (feature `postgres`): the
//! transactional outbox without an outbox table.
//!
//! [`Coordinator::message`] describes the steps; [`MessageBuilder::do_and_submit`]
//! prepares the message, runs the initiator's local work **and** inserts a
//! barrier row `(gid, "msg", "msg")` in one local transaction, then submits.
//! If the initiator dies between its commit and the submit, the coordinator
//! asks back through [`MessageQuery`] (serve it on the endpoint given to
//! [`Coordinator::message`]): it inserts the same key with origin
//! `rollback`, so the unique key decides exactly once which came first. The
//! local transaction committed (its row is there): answer OK, the
//! coordinator submits; it rolled back or has not run (the query's row
//! wins, and a local transaction arriving later fails on it): answer
//! ABORTED, the coordinator aborts. A local transaction still open makes
//! the query wait for it, so the answer is never a guess.

use std::time::Duration;

use concord_proto::participant::v1::message_initiator_server::{
    MessageInitiator, MessageInitiatorServer,
};
use concord_proto::participant::v1::{BranchRequest, BranchResponse};
use concord_proto::v1::{
    AbortMessageRequest, MessageStep, PrepareMessageRequest, Protocol, SubmitMessageRequest,
    TransactionStatus,
};
use sqlx::{PgConnection, PgPool};

use super::{Coordinator, Error, Result, proto_duration};
use crate::BoxError;

/// The branch id and op of the barrier row a message's local transaction
/// writes (the table is the participants' `concord_barrier`).
const MSG_BRANCH: &str = "msg";
const MSG_OP: &str = "msg";
/// The origin of the row the query-back writes when it finds none.
const ROLLBACK: &str = "rollback";

impl Coordinator {
    /// Starts describing a message whose initiator answers the query-back
    /// at `query_endpoint` (`http://host:port` serving [`MessageQuery`]).
    /// With `gid`, a retried call lands on the same message.
    ///
    /// ```no_run
    /// # async fn run(coordinator: concord_sdk::Coordinator, pool: sqlx::PgPool) -> Result<(), concord_sdk::initiator::Error> {
    /// let done = coordinator
    ///     .message(Some("order-42"), "http://10.0.0.5:50090")
    ///     .step("stock", "reserve", br#"{"sku":"tea"}"#.to_vec())
    ///     .step("mail", "send", br#"{"to":7}"#.to_vec())
    ///     .do_and_submit(&pool, async |conn| {
    ///         sqlx::query("INSERT INTO orders (id) VALUES (42)").execute(conn).await?;
    ///         Ok(())
    ///     })
    ///     .await?;
    /// # let _ = done;
    /// # Ok(())
    /// # }
    /// ```
    pub fn message(&self, gid: Option<&str>, query_endpoint: impl Into<String>) -> MessageBuilder {
        MessageBuilder {
            client: self.client.clone(),
            request: PrepareMessageRequest {
                gid: gid.unwrap_or_default().to_owned(),
                query_endpoint: query_endpoint.into(),
                query_protocol: Protocol::Grpc as i32,
                ..Default::default()
            },
        }
    }
}

/// A message being described; see [`Coordinator::message`]. Steps run in
/// the order they are added, each until it succeeds (never compensated).
///
/// ```no_run
/// # async fn run(coordinator: concord_sdk::Coordinator) {
/// let msg = coordinator
///     .message(None, "http://10.0.0.5:50090")
///     .step("mail", "send", b"{}".to_vec())
///     .timeout(std::time::Duration::from_secs(10));
/// # let _ = msg;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    client: super::Client,
    request: PrepareMessageRequest,
}

/// A submitted message.
///
/// ```no_run
/// # fn show(done: concord_sdk::initiator::MessageOutcome<()>) {
/// println!("{} is {:?}", done.gid, done.status);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MessageOutcome<T> {
    /// The message's gid.
    pub gid: String,
    /// `Submitted` (its steps run in the background).
    pub status: TransactionStatus,
    /// What the local work returned.
    pub value: T,
}

impl MessageBuilder {
    /// Adds a step: `action` of `participant` with `payload`.
    ///
    /// ```no_run
    /// # fn add(msg: concord_sdk::initiator::MessageBuilder) {
    /// let msg = msg.step("stock", "reserve", br#"{"sku":"tea"}"#.to_vec());
    /// # let _ = msg;
    /// # }
    /// ```
    pub fn step(mut self, participant: &str, action: &str, payload: Vec<u8>) -> Self {
        self.request.steps.push(MessageStep {
            participant: participant.into(),
            action: action.into(),
            payload,
            call_timeout: None,
        });
        self
    }

    /// How long the initiator may take between prepare and submit before
    /// the coordinator asks it back (the coordinator's default otherwise).
    ///
    /// ```no_run
    /// # fn set(msg: concord_sdk::initiator::MessageBuilder) {
    /// let msg = msg.timeout(std::time::Duration::from_secs(5));
    /// # let _ = msg;
    /// # }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.request.timeout = Some(proto_duration(timeout));
        self
    }

    /// Prepares the message, runs `local` and the barrier insert in one
    /// transaction of `pool`, commits, then submits. An error of `local` (or
    /// a commit that fails) rolls the transaction back and aborts the
    /// message; an error of the submit itself is returned but harmless: the
    /// local work is committed and the query-back will submit.
    ///
    /// ```no_run
    /// # async fn run(msg: concord_sdk::initiator::MessageBuilder, pool: sqlx::PgPool) -> Result<(), concord_sdk::initiator::Error> {
    /// let done = msg
    ///     .do_and_submit(&pool, async |conn| {
    ///         sqlx::query("UPDATE account SET balance = balance - 30 WHERE id = 1")
    ///             .execute(conn)
    ///             .await?;
    ///         Ok(())
    ///     })
    ///     .await?;
    /// # let _ = done;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn do_and_submit<T, F>(self, pool: &PgPool, local: F) -> Result<MessageOutcome<T>>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, BoxError>,
    {
        let mut client = self.client;
        let gid = client.prepare_message(self.request).await?.into_inner().gid;
        let committed = async {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO concord_barrier (gid, branch_id, op, origin_op) \
                 VALUES ($1, $2, $3, $3) ON CONFLICT DO NOTHING",
            )
            .bind(&gid)
            .bind(MSG_BRANCH)
            .bind(MSG_OP)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                // The query-back found nothing and decided "rolled back".
                return Err::<T, BoxError>(
                    format!("message {gid} was already answered as rolled back").into(),
                );
            }
            let value = local(&mut tx).await?;
            tx.commit().await?;
            Ok(value)
        }
        .await;
        let value = match committed {
            Ok(value) => value,
            Err(e) => {
                // Best effort: the query-back reaches the same answer.
                let _ = client
                    .abort_message(AbortMessageRequest {
                        gid: gid.clone(),
                        reason: format!("local transaction failed: {e}"),
                    })
                    .await;
                return Err(Error::other(e));
            }
        };
        let status = client
            .submit_message(SubmitMessageRequest {
                gid: gid.clone(),
                wait: false,
            })
            .await?
            .into_inner()
            .status;
        Ok(MessageOutcome {
            gid,
            status: TransactionStatus::try_from(status).unwrap_or(TransactionStatus::Unspecified),
            value,
        })
    }
}

/// The query-back service of an initiator, answering from the barrier rows
/// [`MessageBuilder::do_and_submit`] writes in the same `pool`. Serve
/// [`MessageQuery::service`] on the query endpoint.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// tonic::transport::Server::builder()
///     .add_service(concord_sdk::initiator::MessageQuery::new(pool).service())
///     .serve("127.0.0.1:50090".parse()?)
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MessageQuery {
    pool: PgPool,
}

impl MessageQuery {
    /// Answers from the barrier table of `pool` (see `Barrier::migrate`).
    ///
    /// ```no_run
    /// # fn make(pool: sqlx::PgPool) {
    /// let query = concord_sdk::initiator::MessageQuery::new(pool);
    /// # let _ = query;
    /// # }
    /// ```
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The tonic service to add to a server.
    ///
    /// ```no_run
    /// # fn make(pool: sqlx::PgPool) {
    /// let svc = concord_sdk::initiator::MessageQuery::new(pool).service();
    /// # let _ = svc;
    /// # }
    /// ```
    pub fn service(self) -> MessageInitiatorServer<Self> {
        MessageInitiatorServer::new(self)
    }

    /// Whether the local transaction of message `gid` committed: `true`
    /// committed, `false` rolled back (or never ran, and now never will).
    ///
    /// ```no_run
    /// # async fn run(q: concord_sdk::initiator::MessageQuery) -> Result<(), sqlx::Error> {
    /// let committed = q.committed("order-42").await?;
    /// # let _ = committed;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn committed(&self, gid: &str) -> Result<bool, sqlx::Error> {
        // Waits for an open local transaction holding the key, then either
        // inserts (there was none: rolled back) or finds its row.
        sqlx::query(
            "INSERT INTO concord_barrier (gid, branch_id, op, origin_op) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(gid)
        .bind(MSG_BRANCH)
        .bind(MSG_OP)
        .bind(ROLLBACK)
        .execute(&self.pool)
        .await?;
        let origin: String = sqlx::query_scalar(
            "SELECT origin_op FROM concord_barrier WHERE gid = $1 AND branch_id = $2 AND op = $3",
        )
        .bind(gid)
        .bind(MSG_BRANCH)
        .bind(MSG_OP)
        .fetch_one(&self.pool)
        .await?;
        Ok(origin == MSG_OP)
    }
}

#[tonic::async_trait]
impl MessageInitiator for MessageQuery {
    async fn query_prepared(
        &self,
        request: tonic::Request<BranchRequest>,
    ) -> Result<tonic::Response<BranchResponse>, tonic::Status> {
        let gid = request.into_inner().gid;
        if gid.is_empty() {
            return Err(tonic::Status::invalid_argument("missing gid"));
        }
        match self.committed(&gid).await {
            Ok(true) => Ok(tonic::Response::new(BranchResponse::default())),
            Ok(false) => Err(tonic::Status::aborted(format!(
                "the local transaction of message {gid} did not commit"
            ))),
            // Unknown: the coordinator asks again later.
            Err(e) => Err(tonic::Status::unavailable(format!("barrier: {e}"))),
        }
    }
}
