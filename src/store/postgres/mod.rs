//! PostgreSQL implementation of [`Store`] and [`AdminStore`].
//!
//! Two pools share one database. `durable` commits wait for the WAL flush:
//! it carries the writes the durability rules depend on (a transaction, a
//! branch before its Try, a decision). `relaxed` runs with
//! `synchronous_commit = off`: it carries call outcomes and round results,
//! whose loss in a database crash only means a call is made again (the
//! participant's barrier makes that harmless). WAL order still holds, so a
//! later durable commit also makes every earlier relaxed one durable.
//!
//! The statements live by concern: `hot` (batched durable writes of the
//! TCC hot path), `writes` (batched relaxed writes), `reads`, `leases`,
//! `saga` (submission), `msg` (messages: prepare, submit or abort), `redrive`, `admin`, `gauges`, `retention`. This module only
//! connects and routes the traits' methods to them.

mod admin;
mod alerts;
mod gauges;
mod hot;
mod leases;
mod msg;
mod participants;
mod reads;
mod redrive;
mod retention;
mod saga;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Executor;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use self::hot::{DecisionWrite, HotPath};
use self::writes::{HeldTries, TryWrite, Writers};
use super::admin::{
    AdminStats, AdminStore, AdminTx, AdminWrite, FinishedInMinute, ListCursor, TxFilter,
};
use super::*;

/// The migrations in `migrations/postgres/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// PostgreSQL-backed store.
#[derive(Clone)]
pub struct PgStore {
    durable: PgPool,
    relaxed: PgPool,
    writers: Arc<Writers>,
    hot: Arc<HotPath>,
    /// Successful Try records waiting for their decision to carry them.
    held: Arc<HeldTries>,
}

/// The pool whose sessions commit without waiting for the WAL flush.
async fn relaxed_pool(
    options: PgConnectOptions,
    max: u32,
    acquire_timeout: Duration,
) -> StoreResult<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(acquire_timeout)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET synchronous_commit = off").await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await?)
}

impl PgStore {
    /// Connects both pools; `pool_size` is the durable pool's size.
    pub async fn connect(
        url: &str,
        pool_size: u32,
        acquire_timeout: Duration,
    ) -> StoreResult<Self> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Unavailable(format!("bad database url: {e}")))?;
        // Every statement here is a keyed lookup or a short range on an
        // index. A plan cached while a table was still small (a fresh
        // deployment) would keep scanning the whole table once it has grown.
        // No JIT: disabling sequential scans adds 10^10 to the cost of any
        // plan that still needs one (the readiness probe's count over the
        // migrations table), which puts it over `jit_above_cost` and had
        // PostgreSQL compile and optimise it with LLVM on every probe:
        // 50-700 ms of database CPU four times a second per instance
        // (pg_stat_statements: jit_inlining_time), which is what made two
        // instances slower than one (BENCHMARKS.md, issue 16). Short
        // statements never gain from JIT.
        let options = options
            .application_name("concord")
            .options([("enable_seqscan", "off"), ("jit", "off")]);
        let durable = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(acquire_timeout)
            .connect_with(options.clone())
            .await?;
        let relaxed = relaxed_pool(options, (pool_size / 2).max(1), acquire_timeout).await?;
        Ok(Self::with_pools(durable, relaxed))
    }

    /// The URL of the database a pool points at (tests hand it to instances
    /// running in other runtimes).
    pub fn url_of(pool: &PgPool) -> String {
        let o = pool.connect_options();
        format!(
            "postgres://{}@{}:{}/{}",
            o.get_username(),
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("postgres")
        )
    }

    /// Wraps an existing pool (tests); the relaxed pool is a second pool on
    /// the same options.
    pub async fn from_pool(pool: PgPool) -> StoreResult<Self> {
        let options = pool.connect_options().as_ref().clone();
        // sqlx's default acquire timeout, as the test pool has.
        let relaxed = relaxed_pool(options, 4, Duration::from_secs(30)).await?;
        Ok(Self::with_pools(pool, relaxed))
    }

    /// Starts the batch writers on the two pools.
    fn with_pools(durable: PgPool, relaxed: PgPool) -> Self {
        let writers = Arc::new(Writers::start(relaxed.clone()));
        let hot = Arc::new(HotPath::start(durable.clone()));
        Self {
            durable,
            relaxed,
            writers,
            hot,
            held: Arc::default(),
        }
    }

    /// Creates the database named in `url` if it does not exist, so that
    /// a first `concord serve` on a fresh PostgreSQL just works.
    pub async fn ensure_database(url: &str) -> StoreResult<()> {
        use sqlx::migrate::MigrateDatabase;
        if !sqlx::Postgres::database_exists(url).await? {
            sqlx::Postgres::create_database(url).await?;
            tracing::info!("database created");
        }
        Ok(())
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.durable)
            .await
            .map_err(|e| StoreError::Database(format!("migration failed: {e}")))
    }

    /// The durable pool, for callers that need raw access (tests, bench).
    pub fn pool(&self) -> &PgPool {
        &self.durable
    }
}

#[tonic::async_trait]
impl Store for PgStore {
    async fn begin(&self, tx: NewTransaction) -> StoreResult<Begun> {
        let gid = tx.gid.clone();
        if self.hot.begin(tx).await? {
            return Ok(Begun::Created);
        }
        match self.load_tx(&gid).await? {
            Some(existing) => Ok(Begun::Existing(Box::new(existing))),
            // Deleted between the two statements (retention): report as a
            // conflict rather than pretend it was created.
            None => Err(StoreError::Conflict(format!("gid {gid} vanished"))),
        }
    }

    async fn add_branch(&self, b: NewBranch) -> StoreResult<BranchAdded> {
        self.add_branch(b).await
    }

    async fn record_try(
        &self,
        gid: &Gid,
        call: &CallRecord,
        expected_second_phase: CallStatus,
        now: DateTime<Utc>,
        actor: &str,
    ) -> StoreResult<()> {
        let write = TryWrite {
            gid: gid.as_str().to_string(),
            branch_id: call.branch_id.as_str().to_string(),
            outcome: call.outcome.clone(),
            expected_second_phase,
            attempt: call.attempt,
            at: now,
            actor: actor.to_string(),
        };
        // A failure is recorded before the Try's reply (a Commit anywhere
        // must see it); a success can wait for the decision to carry it.
        match call.outcome {
            Outcome::Succeeded => self.held.record(write, &self.writers).await,
            _ => self.writers.record_try(write).await,
        }
    }

    async fn load(&self, gid: &Gid) -> StoreResult<Option<(TxRecord, Vec<BranchRecord>)>> {
        self.load(gid).await
    }

    async fn events(&self, gid: &Gid) -> StoreResult<Vec<EventRecord>> {
        self.events(gid).await
    }

    async fn decide(&self, d: Decision) -> StoreResult<Option<Lease>> {
        let gid = d.gid.clone();
        let (tries, taken) = self.held.take(gid.as_str());
        let fence = self.hot.decide(DecisionWrite { decision: d, tries }).await;
        taken.settle(&fence);
        Ok(fence?.map(|fence| Lease { gid, fence }))
    }

    async fn write_round(&self, r: RoundWrite) -> StoreResult<bool> {
        self.writers.progress(r.into()).await
    }

    async fn submit_saga(&self, saga: NewSaga) -> StoreResult<SagaSubmitted> {
        self.submit_saga(saga).await
    }

    async fn write_saga(&self, w: SagaWrite) -> StoreResult<bool> {
        self.writers.progress(w.into()).await
    }

    async fn claim_due(
        &self,
        owner: &str,
        limit: i64,
        lease: Duration,
    ) -> StoreResult<Vec<Claimed>> {
        self.claim_due(owner, limit, lease).await
    }

    async fn next_due(&self, horizon: Duration) -> StoreResult<Option<Duration>> {
        self.next_due(horizon).await
    }

    async fn renew(&self, owner: &str, leases: &[Lease], lease: Duration) -> StoreResult<Vec<Gid>> {
        self.renew(owner, leases, lease).await
    }

    async fn extend_lease(
        &self,
        owner: &str,
        lease: &Lease,
        cover: Countdown,
    ) -> StoreResult<bool> {
        self.extend_lease(owner, lease, cover).await
    }

    async fn claim_try_call(
        &self,
        gid: &Gid,
        branch_id: &BranchId,
        cover: Countdown,
    ) -> StoreResult<bool> {
        self.claim_try_call(gid, branch_id, cover).await
    }

    async fn release(&self, owner: &str, leases: &[Lease]) -> StoreResult<u64> {
        self.release(owner, leases).await
    }

    async fn redrive(&self, participant: &ParticipantName, actor: &str) -> StoreResult<u64> {
        self.redrive(participant, actor).await
    }

    async fn register_participant(
        &self,
        name: &ParticipantName,
        endpoint: &Endpoint,
        actions: &[ActionName],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.register_participant(name, endpoint, actions, now)
            .await
    }

    async fn list_participants(&self) -> StoreResult<Vec<ParticipantRecord>> {
        self.list_participants().await
    }

    async fn prepare_msg(&self, msg: NewMsg) -> StoreResult<MsgPrepared> {
        self.prepare_msg(msg).await
    }

    async fn decide_msg(&self, decision: MsgDecision) -> StoreResult<Option<Lease>> {
        self.decide_msg(decision).await
    }

    async fn msg_query(&self, gid: &Gid) -> StoreResult<Option<Endpoint>> {
        self.msg_query(gid).await
    }

    async fn ready(&self) -> StoreResult<()> {
        self.ready().await
    }

    async fn set_action_policies(
        &self,
        name: &ParticipantName,
        policies: &[(ActionName, crate::machine::policy::ActionPolicy)],
    ) -> StoreResult<()> {
        self.set_action_policies(name, policies).await
    }
}

#[tonic::async_trait]
impl AdminStore for PgStore {
    async fn admin_list(
        &self,
        filter: &TxFilter,
    ) -> StoreResult<(Vec<AdminTx>, Option<ListCursor>)> {
        self.admin_list(filter).await
    }

    async fn admin_get(&self, gid: &Gid) -> StoreResult<Option<(AdminTx, Vec<BranchRecord>)>> {
        self.admin_get(gid).await
    }

    async fn admin_apply(&self, write: AdminWrite) -> StoreResult<bool> {
        self.admin_apply(write).await
    }

    async fn admin_event(
        &self,
        gid: &Gid,
        kind: &str,
        message: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.admin_event(gid, kind, message, actor, now).await
    }

    async fn admin_stats(&self) -> StoreResult<AdminStats> {
        self.admin_stats().await
    }

    async fn admin_finished_per_minute(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<FinishedInMinute>> {
        self.admin_finished_per_minute(since).await
    }

    async fn open_counts(&self) -> StoreResult<OpenCounts> {
        self.open_counts().await
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        self.pool_stats()
    }

    async fn delete_finished(&self, older_than: Duration, batch: u32) -> StoreResult<u64> {
        self.delete_finished(older_than, batch).await
    }

    async fn close(&self) {
        self.durable.close().await;
        self.relaxed.close().await;
    }

    async fn claim_alerts(
        &self,
        owner: &str,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<crate::store::admin::AlertRecord>> {
        self.claim_alerts(owner, limit, lease).await
    }

    async fn record_alert_attempt(
        &self,
        attempt: crate::store::admin::AlertAttempt,
    ) -> StoreResult<bool> {
        self.record_alert_attempt(attempt).await
    }
}
