//! The embedded store: [`Store`] and [`AdminStore`] on one SQLite file, for
//! a single instance with nothing to install. The guarantees are those of
//! the PostgreSQL store: a write returns once it is durable (WAL mode,
//! `synchronous=FULL`: committed means on disk, power loss included), every
//! write made while driving a transaction is fenced by the lease, and a
//! restarted instance takes over the leases of the one that crashed once
//! they expire.
//!
//! Three ways into the file: the writer's connection, on a thread of its
//! own, through which every write goes in batches (see `writer`: group
//! commit, one SQLite transaction and one fsync per batch); `readers`, a
//! pool that WAL mode lets read while a batch commits; and `writer_pool`,
//! one sqlx connection for the migrations (and tests' raw statements). An OS lock on a sidecar file (`lock`) keeps
//! a second instance off the file.
//!
//! The statements live by concern: `drive` (what the engine writes while
//! driving a transaction), `leases`, `admin` (operator queries and writes),
//! `housekeeping` (registry, gauges, retention); reads of one transaction
//! are here.

mod admin;
mod alerts;
mod drive;
mod events;
mod housekeeping;
mod leases;
mod lock;
mod msg;
mod redrive;
mod rows;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use self::rows::{BranchRow, EventRow, TxRow};
use self::writer::{Done, Write, Writer};
use super::admin::{
    AdminStats, AdminStore, AdminTx, AdminWrite, FinishedInMinute, ListCursor, TxFilter,
};
use super::*;
pub use lock::InstanceLock;

/// The migrations in `migrations/sqlite/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for SQLite's file lock before it fails as
/// unavailable (only a checkpoint or a reader's start can hold it briefly:
/// this process is the only writer).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite-backed store.
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    writer_pool: SqlitePool,
    readers: SqlitePool,
    writer: Arc<Writer>,
    /// Held for the store's lifetime; shared by its clones.
    _lock: Arc<InstanceLock>,
}

/// A transaction and its branches in creation order, on `conn` (a read
/// transaction, so that the branches are those of the row).
async fn rows_of(
    conn: &mut sqlx::SqliteConnection,
    gid: &Gid,
) -> StoreResult<Option<(TxRecord, Vec<BranchRecord>)>> {
    let row: Option<TxRow> = sqlx::query_as("SELECT * FROM global_transactions WHERE gid = ?")
        .bind(gid.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some((row.into(), branches_of(conn, gid).await?)))
}

/// The branches of `gid`, in the order they were registered.
async fn branches_of(
    conn: &mut sqlx::SqliteConnection,
    gid: &Gid,
) -> StoreResult<Vec<BranchRecord>> {
    let branches: Vec<BranchRow> =
        sqlx::query_as("SELECT * FROM branches WHERE gid = ? ORDER BY created_at, branch_id")
            .bind(gid.as_str())
            .fetch_all(&mut *conn)
            .await?;
    Ok(branches.into_iter().map(BranchRecord::from).collect())
}

fn unexpected(what: &str) -> StoreError {
    StoreError::Database(format!("unexpected result of {what}"))
}

impl SqliteStore {
    /// Locks and opens (creating it if needed) the database at `path`;
    /// `readers` is the size of the read pool. Fails with
    /// [`StoreError::Conflict`] when another instance has the file.
    pub async fn open(path: &Path, readers: u32, acquire_timeout: Duration) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let lock = InstanceLock::acquire(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let writer_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(acquire_timeout)
            .connect_with(options.clone())
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(readers.max(1))
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await?;
        // After the pools: they create the file and put it in WAL mode.
        let writer = Arc::new(Writer::start(path, BUSY_TIMEOUT)?);
        Ok(Self {
            path: path.to_path_buf(),
            writer_pool,
            readers,
            writer,
            _lock: Arc::new(lock),
        })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.writer_pool)
            .await
            .map_err(|e| StoreError::Database(format!("migration failed: {e}")))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The read pool, for callers that need raw access (tests, bench).
    pub fn pool(&self) -> &SqlitePool {
        &self.readers
    }

    /// Runs one statement on the write connection (tests: move a lease or
    /// a deadline into the past).
    pub async fn execute_raw(&self, sql: &'static str) -> StoreResult<u64> {
        Ok(sqlx::query(sql)
            .execute(&self.writer_pool)
            .await?
            .rows_affected())
    }

    async fn write(&self, w: Write) -> StoreResult<Done> {
        self.writer.write(w).await
    }

    async fn load_tx(&self, gid: &Gid) -> StoreResult<Option<TxRecord>> {
        let row: Option<TxRow> = sqlx::query_as("SELECT * FROM global_transactions WHERE gid = ?")
            .bind(gid.as_str())
            .fetch_optional(&self.readers)
            .await?;
        Ok(row.map(TxRecord::from))
    }

    async fn load_branch(&self, gid: &Gid, id: &str) -> StoreResult<Option<BranchRecord>> {
        let row: Option<BranchRow> =
            sqlx::query_as("SELECT * FROM branches WHERE gid = ? AND branch_id = ?")
                .bind(gid.as_str())
                .bind(id)
                .fetch_optional(&self.readers)
                .await?;
        Ok(row.map(BranchRecord::from))
    }

    /// What `add_branch` returns, from what the insert found; reads back
    /// only what it could not tell (as the PostgreSQL store does).
    async fn branch_added(
        &self,
        b: NewBranch,
        found: drive::BranchInsert,
        busy_until: std::time::Instant,
    ) -> StoreResult<BranchAdded> {
        let metadata: Metadata = match &found.metadata {
            Some(m) => serde_json::from_str(m)
                .map_err(|e| StoreError::Corrupt(format!("metadata: {e}")))?,
            None => Metadata::default(),
        };
        match (found.seq, found.inserted) {
            (None, _) => Ok(BranchAdded::NotAccepted(self.load_tx(&b.gid).await?)),
            (Some(seq), Some(id)) => Ok(BranchAdded::Added {
                branch: BranchRecord::inserted(b, id, busy_until),
                metadata,
                seq,
            }),
            (Some(seq), None) => {
                let id = b
                    .branch_id
                    .as_ref()
                    .map_or_else(|| seq.to_string(), |id| id.as_str().to_string());
                let branch = self.load_branch(&b.gid, &id).await?.ok_or_else(|| {
                    StoreError::Database("conflicting branch not readable".into())
                })?;
                Ok(BranchAdded::Existing { branch, metadata })
            }
        }
    }
}

#[tonic::async_trait]
impl Store for SqliteStore {
    async fn begin(&self, tx: NewTransaction) -> StoreResult<Begun> {
        let gid = tx.gid.clone();
        let Done::Applied(created) = self.write(Write::Begin(tx)).await? else {
            return Err(unexpected("begin"));
        };
        if created {
            return Ok(Begun::Created);
        }
        match self.load_tx(&gid).await? {
            Some(existing) => Ok(Begun::Existing(Box::new(existing))),
            None => Err(StoreError::Conflict(format!("gid {gid} vanished"))),
        }
    }

    async fn add_branch(&self, b: NewBranch) -> StoreResult<BranchAdded> {
        let Done::Branch(found) = self.write(Write::Branch(b.clone())).await? else {
            return Err(unexpected("add_branch"));
        };
        // The Try's call ends, margin included, by the cover's end.
        let busy_until = b.call_cover.end();
        self.branch_added(b, found, busy_until).await
    }

    async fn record_try(
        &self,
        gid: &Gid,
        call: &CallRecord,
        expected_second_phase: CallStatus,
        now: DateTime<Utc>,
        actor: &str,
    ) -> StoreResult<()> {
        self.write(Write::Try {
            gid: gid.clone(),
            call: call.clone(),
            expected_second_phase,
            now,
            actor: actor.to_string(),
        })
        .await
        .map(|_| ())
    }

    async fn load(&self, gid: &Gid) -> StoreResult<Option<(TxRecord, Vec<BranchRecord>)>> {
        // One read transaction, so that the branches are those of the row.
        let mut tx = self.readers.begin().await?;
        let found = rows_of(&mut tx, gid).await?;
        tx.commit().await?;
        Ok(found)
    }

    /// The stored events with those the rows tell (`history`), read in
    /// one transaction so the two agree.
    async fn events(&self, gid: &Gid) -> StoreResult<Vec<EventRecord>> {
        let mut tx = self.readers.begin().await?;
        let found = rows_of(&mut tx, gid).await?;
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT id, at, kind, status, branch_id, phase, attempt, code, message, actor
               FROM transaction_events WHERE gid = ? ORDER BY id",
        )
        .bind(gid.as_str())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let stored = rows.into_iter().map(EventRecord::from).collect();
        Ok(match found {
            Some((row, branches)) => crate::store::history::complete(&row, &branches, stored),
            None => stored,
        })
    }

    async fn decide(&self, d: Decision) -> StoreResult<Option<Lease>> {
        let gid = d.gid.clone();
        let Done::Fence(fence) = self.write(Write::Decide(d)).await? else {
            return Err(unexpected("decide"));
        };
        Ok(fence.map(|fence| Lease { gid, fence }))
    }

    async fn write_round(&self, r: RoundWrite) -> StoreResult<bool> {
        match self.write(Write::Progress(r.into())).await? {
            Done::Applied(written) => Ok(written),
            _ => Err(unexpected("write_round")),
        }
    }

    async fn submit_saga(&self, saga: NewSaga) -> StoreResult<SagaSubmitted> {
        let gid = saga.gid.clone();
        let Done::Applied(created) = self.write(Write::Saga(saga)).await? else {
            return Err(unexpected("submit_saga"));
        };
        if created {
            return Ok(SagaSubmitted::Created(Lease { gid, fence: 1 }));
        }
        match Store::load(self, &gid).await? {
            Some(found) => Ok(SagaSubmitted::Existing(Box::new(found))),
            None => Err(StoreError::Conflict(format!("gid {gid} vanished"))),
        }
    }

    async fn write_saga(&self, w: SagaWrite) -> StoreResult<bool> {
        match self.write(Write::Progress(w.into())).await? {
            Done::Applied(written) => Ok(written),
            _ => Err(unexpected("write_saga")),
        }
    }

    async fn claim_due(
        &self,
        owner: &str,
        limit: i64,
        lease: Duration,
    ) -> StoreResult<Vec<Claimed>> {
        let claim = Write::Claim {
            owner: owner.to_string(),
            limit,
            lease,
        };
        match self.write(claim).await? {
            Done::Claimed(claimed) => Ok(claimed),
            _ => Err(unexpected("claim_due")),
        }
    }

    async fn next_due(&self, horizon: Duration) -> StoreResult<Option<Duration>> {
        leases::next_due(&self.readers, horizon).await
    }

    async fn renew(&self, owner: &str, leases: &[Lease], lease: Duration) -> StoreResult<Vec<Gid>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let renew = Write::Renew {
            owner: owner.to_string(),
            leases: leases.to_vec(),
            lease,
        };
        match self.write(renew).await? {
            Done::Renewed(gids) => Ok(gids),
            _ => Err(unexpected("renew")),
        }
    }

    async fn extend_lease(
        &self,
        owner: &str,
        lease: &Lease,
        cover: Countdown,
    ) -> StoreResult<bool> {
        let extend = Write::ExtendLease {
            owner: owner.to_string(),
            lease: lease.clone(),
            cover,
        };
        match self.write(extend).await? {
            Done::Applied(held) => Ok(held),
            _ => Err(unexpected("extend_lease")),
        }
    }

    async fn claim_try_call(
        &self,
        gid: &Gid,
        branch_id: &BranchId,
        cover: Countdown,
    ) -> StoreResult<bool> {
        let claim = Write::ClaimTryCall {
            gid: gid.clone(),
            branch_id: branch_id.clone(),
            cover,
        };
        match self.write(claim).await? {
            Done::Applied(claimed) => Ok(claimed),
            _ => Err(unexpected("claim_try_call")),
        }
    }

    async fn release(&self, owner: &str, leases: &[Lease]) -> StoreResult<u64> {
        if leases.is_empty() {
            return Ok(0);
        }
        let release = Write::Release {
            owner: owner.to_string(),
            leases: leases.to_vec(),
        };
        match self.write(release).await? {
            Done::Count(n) => Ok(n),
            _ => Err(unexpected("release")),
        }
    }

    async fn register_participant(
        &self,
        name: &ParticipantName,
        endpoint: &Endpoint,
        actions: &[ActionName],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.write(Write::Register {
            name: name.clone(),
            endpoint: endpoint.clone(),
            actions: actions.to_vec(),
            now,
        })
        .await
        .map(|_| ())
    }

    async fn list_participants(&self) -> StoreResult<Vec<ParticipantRecord>> {
        housekeeping::list_participants(&self.readers).await
    }

    async fn redrive(&self, participant: &ParticipantName, actor: &str) -> StoreResult<u64> {
        let redrive = Write::Redrive {
            participant: participant.clone(),
            actor: actor.to_string(),
        };
        match self.write(redrive).await? {
            Done::Count(n) => Ok(n),
            _ => Err(unexpected("redrive")),
        }
    }

    async fn prepare_msg(&self, m: NewMsg) -> StoreResult<MsgPrepared> {
        let gid = m.gid.clone();
        let Done::Applied(created) = self.write(Write::Msg(m)).await? else {
            return Err(unexpected("prepare_msg"));
        };
        if created {
            return Ok(MsgPrepared::Created);
        }
        let Some((tx, branches)) = Store::load(self, &gid).await? else {
            return Err(StoreError::Conflict(format!("gid {gid} vanished")));
        };
        let query = self.msg_query(&gid).await?;
        Ok(MsgPrepared::Existing(Box::new((tx, branches, query))))
    }

    async fn decide_msg(&self, d: MsgDecision) -> StoreResult<Option<Lease>> {
        let gid = d.gid.clone();
        let Done::Fence(fence) = self.write(Write::DecideMsg(d)).await? else {
            return Err(unexpected("decide_msg"));
        };
        Ok(fence.map(|fence| Lease { gid, fence }))
    }

    async fn msg_query(&self, gid: &Gid) -> StoreResult<Option<Endpoint>> {
        msg::query(&self.readers, gid).await
    }

    async fn set_action_policies(
        &self,
        name: &ParticipantName,
        policies: &[(ActionName, crate::machine::policy::ActionPolicy)],
    ) -> StoreResult<()> {
        self.write(Write::ActionPolicies {
            name: name.clone(),
            policies: policies.to_vec(),
        })
        .await
        .map(|_| ())
    }

    /// The file answers and every migration of this build is applied.
    async fn ready(&self) -> StoreResult<()> {
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.readers)
                .await?;
        let expected = MIGRATOR.iter().count() as i64;
        if applied < expected {
            return Err(StoreError::Unavailable(format!(
                "{applied} of {expected} migrations applied"
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl AdminStore for SqliteStore {
    async fn admin_list(
        &self,
        filter: &TxFilter,
    ) -> StoreResult<(Vec<AdminTx>, Option<ListCursor>)> {
        admin::list(&self.readers, filter).await
    }

    async fn admin_get(&self, gid: &Gid) -> StoreResult<Option<(AdminTx, Vec<BranchRecord>)>> {
        admin::get(&self.readers, gid).await
    }

    async fn admin_apply(&self, write: AdminWrite) -> StoreResult<bool> {
        match self.write(Write::Admin(write)).await? {
            Done::Applied(applied) => Ok(applied),
            _ => Err(unexpected("admin_apply")),
        }
    }

    async fn admin_event(
        &self,
        gid: &Gid,
        kind: &str,
        message: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.write(Write::AdminEvent {
            gid: gid.clone(),
            kind: kind.to_string(),
            message: message.map(str::to_string),
            actor: actor.to_string(),
            now,
        })
        .await
        .map(|_| ())
    }

    async fn admin_stats(&self) -> StoreResult<AdminStats> {
        admin::stats(&self.readers, Utc::now()).await
    }

    async fn admin_finished_per_minute(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<FinishedInMinute>> {
        admin::finished_per_minute(&self.readers, since).await
    }

    async fn open_counts(&self) -> StoreResult<OpenCounts> {
        housekeeping::open_counts(&self.readers, Utc::now()).await
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        let stats = |name, pool: &SqlitePool| PoolStats {
            name,
            size: pool.size(),
            idle: pool.num_idle() as u32,
            max: pool.options().get_max_connections(),
        };
        // The writer is one connection on a thread of its own (`writer`),
        // in use while a batch runs.
        let writer = PoolStats {
            name: "writer",
            size: 1,
            idle: u32::from(!self.writer.busy()),
            max: 1,
        };
        vec![writer, stats("readers", &self.readers)]
    }

    async fn delete_finished(&self, older_than: Duration, batch: u32) -> StoreResult<u64> {
        match self
            .write(Write::DeleteFinished { older_than, batch })
            .await?
        {
            Done::Count(n) => Ok(n),
            _ => Err(unexpected("delete_finished")),
        }
    }

    async fn close(&self) {
        self.writer.close().await;
        self.writer_pool.close().await;
        self.readers.close().await;
    }

    async fn claim_alerts(
        &self,
        owner: &str,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<crate::store::admin::AlertRecord>> {
        let claim = Write::ClaimAlerts {
            owner: owner.to_string(),
            limit,
            lease,
        };
        match self.write(claim).await? {
            Done::Alerts(alerts) => Ok(alerts),
            _ => Err(unexpected("claim_alerts")),
        }
    }

    async fn record_alert_attempt(
        &self,
        attempt: crate::store::admin::AlertAttempt,
    ) -> StoreResult<bool> {
        match self.write(Write::AlertAttempt(attempt)).await? {
            Done::Applied(applied) => Ok(applied),
            _ => Err(unexpected("record_alert_attempt")),
        }
    }
}
