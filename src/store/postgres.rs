//! PostgreSQL implementation of [`Store`].
//!
//! Two pools share one database. `durable` commits wait for the WAL flush:
//! it carries the writes the durability rules depend on (a transaction, a
//! branch before its Try, a decision). `relaxed` runs with
//! `synchronous_commit = off`: it carries call outcomes and round results,
//! whose loss in a database crash only means a call is made again (the
//! participant's barrier makes that harmless). WAL order still holds, so a
//! later durable commit also makes every earlier relaxed one durable.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Executor, Row};

use std::sync::Arc;

use super::hot::HotPath;
use super::writes::{TryWrite, Writers};
use super::*;
use crate::machine::{CallStatus, Mode};

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// PostgreSQL-backed store.
#[derive(Clone)]
pub struct PgStore {
    durable: PgPool,
    relaxed: PgPool,
    writers: Arc<Writers>,
    hot: Arc<HotPath>,
}

/// The pool whose sessions commit without waiting for the WAL flush.
async fn relaxed_pool(
    options: PgConnectOptions,
    max: u32,
    acquire_timeout: Duration,
) -> StoreResult<PgPool> {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(acquire_timeout)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET synchronous_commit = off").await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .map_err(map_sqlx)
}

pub(super) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn u32_of(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
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
        let options = options
            .application_name("concord")
            .options([("enable_seqscan", "off")]);
        let durable = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(map_sqlx)?;
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
        }
    }

    /// Creates the database named in `url` if it does not exist, so that
    /// a first `concord serve` on a fresh PostgreSQL just works.
    pub async fn ensure_database(url: &str) -> StoreResult<()> {
        use sqlx::migrate::MigrateDatabase;
        if !sqlx::Postgres::database_exists(url)
            .await
            .map_err(map_sqlx)?
        {
            sqlx::Postgres::create_database(url)
                .await
                .map_err(map_sqlx)?;
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

    /// The durable pool, for callers that need raw access (bench, admin).
    pub fn pool(&self) -> &PgPool {
        &self.durable
    }

    /// The pool of writes that do not wait for the WAL flush (metrics).
    pub(crate) fn relaxed_pool(&self) -> &PgPool {
        &self.relaxed
    }

    /// Closes both pools.
    pub async fn close(&self) {
        self.durable.close().await;
        self.relaxed.close().await;
    }
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {value:?}"))
}

pub(super) fn tx_from_row(row: &PgRow) -> StoreResult<TxRecord> {
    let mode: String = row.try_get("mode").map_err(map_sqlx)?;
    let status: String = row.try_get("status").map_err(map_sqlx)?;
    let metadata: serde_json::Value = row.try_get("metadata").map_err(map_sqlx)?;
    let metadata: Metadata = serde_json::from_value(metadata)
        .map_err(|e| StoreError::Corrupt(format!("metadata: {e}")))?;
    let timeout_ms: i64 = row.try_get("timeout_ms").map_err(map_sqlx)?;
    Ok(TxRecord {
        gid: Gid::from_trusted(row.try_get("gid").map_err(map_sqlx)?),
        mode: Mode::parse(&mode).ok_or_else(|| corrupt("mode", &mode))?,
        status: Status::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        metadata,
        timeout: Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0)),
        deadline: row.try_get("deadline").map_err(map_sqlx)?,
        branch_seq: row.try_get("branch_seq").map_err(map_sqlx)?,
        rollback_reason: row.try_get("rollback_reason").map_err(map_sqlx)?,
        decided_at: row.try_get("decided_at").map_err(map_sqlx)?,
        attempts: u32_of(row.try_get("attempts").map_err(map_sqlx)?),
        needs_attention: row.try_get("needs_attention").map_err(map_sqlx)?,
        attention_reason: row.try_get("attention_reason").map_err(map_sqlx)?,
        paused: row.try_get("paused").map_err(map_sqlx)?,
        next_attempt_at: row.try_get("next_attempt_at").map_err(map_sqlx)?,
        owner: row.try_get("owner").map_err(map_sqlx)?,
        lease_until: row.try_get("lease_until").map_err(map_sqlx)?,
        fence: row.try_get("fence").map_err(map_sqlx)?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        updated_at: row.try_get("updated_at").map_err(map_sqlx)?,
        finished_at: row.try_get("finished_at").map_err(map_sqlx)?,
        concurrency: u32_of(row.try_get("concurrency").map_err(map_sqlx)?),
    })
}

fn call_status(row: &PgRow, col: &str) -> StoreResult<CallStatus> {
    let v: String = row.try_get(col).map_err(map_sqlx)?;
    CallStatus::parse(&v).ok_or_else(|| corrupt(col, &v))
}

pub(super) fn branch_from_row(row: &PgRow) -> StoreResult<BranchRecord> {
    let timeout: Option<i64> = row.try_get("call_timeout_ms").map_err(map_sqlx)?;
    Ok(BranchRecord {
        branch_id: BranchId::from_trusted(row.try_get("branch_id").map_err(map_sqlx)?),
        participant: ParticipantName::from_trusted(row.try_get("participant").map_err(map_sqlx)?),
        action: ActionName::from_trusted(row.try_get("action").map_err(map_sqlx)?),
        payload: row.try_get("payload").map_err(map_sqlx)?,
        call_timeout: timeout.map(|t| Duration::from_millis(u64::try_from(t).unwrap_or(0))),
        first_phase: call_status(row, "first_phase")?,
        second_phase: call_status(row, "second_phase")?,
        attempts: u32_of(row.try_get("attempts").map_err(map_sqlx)?),
        last_code: row.try_get("last_code").map_err(map_sqlx)?,
        last_error: row.try_get("last_error").map_err(map_sqlx)?,
        last_attempt_at: row.try_get("last_attempt_at").map_err(map_sqlx)?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        updated_at: row.try_get("updated_at").map_err(map_sqlx)?,
        compensation: row
            .try_get::<Option<String>, _>("compensation")
            .map_err(map_sqlx)?
            .map(ActionName::from_trusted),
        depends_on: row
            .try_get::<Vec<i32>, _>("depends_on")
            .map_err(map_sqlx)?
            .into_iter()
            .map(|d| usize::try_from(d).unwrap_or(0))
            .collect(),
        compensate_rejected: row.try_get("compensate_rejected").map_err(map_sqlx)?,
    })
}

impl PgStore {
    async fn load_tx(&self, gid: &Gid) -> StoreResult<Option<TxRecord>> {
        let sql = concat!(
            "SELECT ",
            tx_columns!(),
            " FROM global_transactions WHERE gid = $1"
        );
        let row = sqlx::query(sql)
            .bind(gid.as_str())
            .fetch_optional(&self.durable)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(tx_from_row).transpose()
    }

    async fn load_branch(&self, gid: &Gid, id: &str) -> StoreResult<Option<BranchRecord>> {
        let sql = concat!(
            "SELECT ",
            branch_columns!(),
            " FROM branches WHERE gid = $1 AND branch_id = $2"
        );
        let row = sqlx::query(sql)
            .bind(gid.as_str())
            .bind(id)
            .fetch_optional(&self.durable)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(branch_from_row).transpose()
    }
}

/// Leases as two parallel arrays, the shape `unnest` wants.
/// Sorted by gid: multi-row statements lock in gid order, so they never
/// deadlock with each other.
fn lease_arrays(leases: &[Lease]) -> (Vec<String>, Vec<i64>) {
    let mut pairs: Vec<(String, i64)> = leases
        .iter()
        .map(|l| (l.gid.as_str().to_string(), l.fence))
        .collect();
    pairs.sort();
    pairs.into_iter().unzip()
}

#[tonic::async_trait]
impl Store for PgStore {
    async fn begin(&self, tx: NewTransaction) -> StoreResult<Begun> {
        let gid = tx.gid.clone();
        let created = self.hot.begin(tx).await?;
        if created {
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
        let found = self.hot.add_branch(b.clone()).await?;
        let (seq, inserted) = (found.seq, found.inserted);
        let metadata: Metadata = match found.metadata {
            Some(v) => serde_json::from_str(&v)
                .map_err(|e| StoreError::Corrupt(format!("metadata: {e}")))?,
            None => Metadata::new(),
        };
        match (seq, inserted) {
            (None, _) => Ok(BranchAdded::NotAccepted(self.load_tx(&b.gid).await?)),
            // Everything in the new row is known here; no need to read it back.
            (Some(seq), Some(id)) => Ok(BranchAdded::Added {
                branch: BranchRecord {
                    branch_id: BranchId::from_trusted(id),
                    participant: b.participant,
                    action: b.action,
                    payload: b.payload,
                    call_timeout: b.call_timeout.map(|t| Duration::from_millis(ms(t) as u64)),
                    first_phase: CallStatus::Pending,
                    second_phase: CallStatus::NotRequired,
                    attempts: 0,
                    last_code: None,
                    last_error: None,
                    last_attempt_at: None,
                    created_at: b.now,
                    updated_at: b.now,
                    compensation: None,
                    depends_on: Vec::new(),
                    compensate_rejected: true,
                },
                metadata,
                seq,
            }),
            (Some(seq), None) => {
                let id = b
                    .branch_id
                    .as_ref()
                    .map(|id| id.as_str().to_string())
                    .unwrap_or_else(|| seq.to_string());
                let record = self.load_branch(&b.gid, &id).await?.ok_or_else(|| {
                    StoreError::Database("conflicting branch not readable".into())
                })?;
                Ok(BranchAdded::Existing {
                    branch: record,
                    metadata,
                })
            }
        }
    }

    async fn record_try(
        &self,
        gid: &Gid,
        call: &CallRecord,
        now: DateTime<Utc>,
        actor: &str,
    ) -> StoreResult<()> {
        self.writers
            .record_try(TryWrite {
                gid: gid.as_str().to_string(),
                branch_id: call.branch_id.as_str().to_string(),
                outcome: call.outcome.clone(),
                attempt: call.attempt,
                at: now,
                actor: actor.to_string(),
            })
            .await
    }

    async fn load(&self, gid: &Gid) -> StoreResult<Option<(TxRecord, Vec<BranchRecord>)>> {
        self.hot.load(gid.as_str()).await
    }

    async fn events(&self, gid: &Gid) -> StoreResult<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT id, at, kind, status, branch_id, phase, attempt, code, message, actor
               FROM transaction_events WHERE gid = $1 ORDER BY id",
        )
        .bind(gid.as_str())
        .fetch_all(&self.durable)
        .await
        .map_err(map_sqlx)?;
        rows.iter()
            .map(|r| {
                Ok(EventRecord {
                    id: r.try_get("id").map_err(map_sqlx)?,
                    at: r.try_get("at").map_err(map_sqlx)?,
                    kind: r.try_get("kind").map_err(map_sqlx)?,
                    status: r.try_get("status").map_err(map_sqlx)?,
                    branch_id: r.try_get("branch_id").map_err(map_sqlx)?,
                    phase: r.try_get("phase").map_err(map_sqlx)?,
                    attempt: r.try_get("attempt").map_err(map_sqlx)?,
                    code: r.try_get("code").map_err(map_sqlx)?,
                    message: r.try_get("message").map_err(map_sqlx)?,
                    actor: r.try_get("actor").map_err(map_sqlx)?,
                })
            })
            .collect()
    }

    async fn decide(&self, d: Decision) -> StoreResult<Option<Lease>> {
        let gid = d.gid.clone();
        let fence = self.hot.decide(d).await?;
        Ok(fence.map(|fence| Lease { gid, fence }))
    }

    async fn write_round(&self, r: RoundWrite) -> StoreResult<bool> {
        self.writers.progress(r.into()).await
    }

    async fn submit_saga(&self, saga: NewSaga) -> StoreResult<SagaSubmitted> {
        let metadata = serde_json::to_value(&saga.metadata)
            .map_err(|e| StoreError::Database(format!("metadata: {e}")))?;
        let n = saga.steps.len();
        let mut ids = Vec::with_capacity(n);
        let mut participants = Vec::with_capacity(n);
        let mut actions = Vec::with_capacity(n);
        let mut compensations = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        let mut timeouts = Vec::with_capacity(n);
        let mut deps = Vec::with_capacity(n);
        let mut compensate_rejected = Vec::with_capacity(n);
        for (i, step) in saga.steps.iter().enumerate() {
            ids.push((i + 1).to_string());
            participants.push(step.participant.as_str());
            actions.push(step.action.as_str());
            compensations.push(step.compensation.as_str());
            payloads.push(step.payload.as_slice());
            timeouts.push(step.call_timeout.map(ms));
            deps.push(
                step.depends_on
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
            compensate_rejected.push(step.compensate_rejected);
        }
        let created: i64 = sqlx::query_scalar(
            "WITH g AS (
                INSERT INTO global_transactions
                    (gid, mode, status, metadata, timeout_ms, deadline, concurrency, next_attempt_at,
                     owner, lease_until, fence, created_at, updated_at)
                VALUES ($1, 'saga', 'running', $2, $3, $4, $5, $6,
                        $7, now() + $8 * interval '1 millisecond', 1, $6, $6)
                ON CONFLICT (gid) DO NOTHING
                RETURNING gid
            ), b AS (
                INSERT INTO branches
                    (gid, branch_id, participant, action, compensation, payload, call_timeout_ms,
                     depends_on, compensate_rejected, created_at, updated_at)
                SELECT g.gid, s.id, s.participant, s.action, s.compensation, s.payload, s.timeout,
                       string_to_array(s.deps, ',')::integer[], s.compensate_rejected, $6, $6
                  FROM g, unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[],
                                 $14::bigint[], $15::text[], $16::boolean[])
                       AS s(id, participant, action, compensation, payload, timeout, deps, compensate_rejected)
            ), ev AS (
                INSERT INTO transaction_events (gid, at, kind, status, message, actor)
                SELECT gid, $6, 'submitted', 'running', $17, $7 FROM g
            )
            SELECT count(*) FROM g",
        )
        .bind(saga.gid.as_str())
        .bind(metadata)
        .bind(saga.timeout.map_or(0, ms))
        .bind(saga.deadline)
        .bind(i32::try_from(saga.concurrency).unwrap_or(i32::MAX))
        .bind(saga.now)
        .bind(&saga.owner)
        .bind(ms(saga.lease))
        .bind(ids)
        .bind(participants)
        .bind(actions)
        .bind(compensations)
        .bind(payloads)
        .bind(timeouts)
        .bind(deps)
        .bind(compensate_rejected)
        .bind(format!("{n} steps"))
        .fetch_one(&self.durable)
        .await
        .map_err(map_sqlx)?;
        if created == 1 {
            return Ok(SagaSubmitted::Created(Lease {
                gid: saga.gid,
                fence: 1,
            }));
        }
        match self.load(&saga.gid).await? {
            Some(found) => Ok(SagaSubmitted::Existing(Box::new(found))),
            None => Err(StoreError::Conflict(format!("gid {} vanished", saga.gid))),
        }
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
        let rows = sqlx::query(
            "WITH due AS (
                SELECT gid, owner AS previous_owner
                  FROM global_transactions
                 WHERE next_attempt_at <= now() AND NOT paused
                   AND (owner IS NULL OR lease_until < now())
                 ORDER BY next_attempt_at
                 LIMIT $2
                   FOR UPDATE SKIP LOCKED
            )
            UPDATE global_transactions g
               SET owner = $1, lease_until = now() + $3 * interval '1 millisecond', fence = g.fence + 1
              FROM due
             WHERE g.gid = due.gid
            RETURNING g.gid, g.fence, due.previous_owner",
        )
        .bind(owner)
        .bind(limit)
        .bind(ms(lease))
        .fetch_all(&self.durable)
        .await
        .map_err(map_sqlx)?;
        rows.iter()
            .map(|r| {
                Ok(Claimed {
                    lease: Lease {
                        gid: Gid::from_trusted(r.try_get("gid").map_err(map_sqlx)?),
                        fence: r.try_get("fence").map_err(map_sqlx)?,
                    },
                    previous_owner: r.try_get("previous_owner").map_err(map_sqlx)?,
                })
            })
            .collect()
    }

    async fn renew(&self, owner: &str, leases: &[Lease], lease: Duration) -> StoreResult<Vec<Gid>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let (gids, fences) = lease_arrays(leases);
        let renewed: Vec<String> = sqlx::query_scalar(
            "UPDATE global_transactions g
                SET lease_until = now() + $4 * interval '1 millisecond'
               FROM unnest($2::text[], $3::bigint[]) AS l(gid, fence)
              -- The ANY makes the planner look the rows up by key instead
              -- of hashing the whole table against the array.
              WHERE g.gid = ANY($2) AND g.gid = l.gid AND g.fence = l.fence AND g.owner = $1
             RETURNING g.gid",
        )
        .bind(owner)
        .bind(gids)
        .bind(fences)
        .bind(ms(lease))
        .fetch_all(&self.durable)
        .await
        .map_err(map_sqlx)?;
        Ok(renewed.into_iter().map(Gid::from_trusted).collect())
    }

    async fn release(&self, owner: &str, leases: &[Lease]) -> StoreResult<u64> {
        if leases.is_empty() {
            return Ok(0);
        }
        let (gids, fences) = lease_arrays(leases);
        let done = sqlx::query(
            "UPDATE global_transactions g
                SET owner = NULL, lease_until = NULL
               FROM unnest($2::text[], $3::bigint[]) AS l(gid, fence)
              -- The ANY makes the planner look the rows up by key instead
              -- of hashing the whole table against the array.
              WHERE g.gid = ANY($2) AND g.gid = l.gid AND g.fence = l.fence AND g.owner = $1",
        )
        .bind(owner)
        .bind(gids)
        .bind(fences)
        .execute(&self.durable)
        .await
        .map_err(map_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn register_participant(
        &self,
        name: &ParticipantName,
        endpoint: &EndpointUrl,
        actions: &[ActionName],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let actions: Vec<&str> = actions.iter().map(ActionName::as_str).collect();
        sqlx::query(
            "WITH p AS (
                INSERT INTO participants (name, created_at, updated_at) VALUES ($1, $4, $4)
                ON CONFLICT (name) DO UPDATE SET updated_at = $4
                RETURNING name
            ), a AS (
                INSERT INTO participant_actions (participant, action, created_at)
                SELECT p.name, x.action, $4 FROM p, unnest($3::text[]) AS x(action)
                ON CONFLICT DO NOTHING
            )
            INSERT INTO participant_endpoints (participant, url, registered_at, last_seen_at)
            SELECT name, $2, $4, $4 FROM p
            ON CONFLICT (participant, url) DO UPDATE SET last_seen_at = $4",
        )
        .bind(name.as_str())
        .bind(endpoint.as_str())
        .bind(actions)
        .bind(now)
        .execute(&self.durable)
        .await
        .map_err(map_sqlx)?;
        Ok(())
    }

    async fn list_participants(&self) -> StoreResult<Vec<ParticipantRecord>> {
        let rows = sqlx::query(
            "SELECT p.name,
                    COALESCE((SELECT array_agg(a.action ORDER BY a.action) FROM participant_actions a
                               WHERE a.participant = p.name), '{}') AS actions,
                    COALESCE((SELECT array_agg(e.url ORDER BY e.url) FROM participant_endpoints e
                               WHERE e.participant = p.name), '{}') AS urls,
                    COALESCE((SELECT array_agg(e.registered_at ORDER BY e.url) FROM participant_endpoints e
                               WHERE e.participant = p.name), '{}') AS registered,
                    COALESCE((SELECT array_agg(e.last_seen_at ORDER BY e.url) FROM participant_endpoints e
                               WHERE e.participant = p.name), '{}') AS seen
               FROM participants p ORDER BY p.name",
        )
        .fetch_all(&self.durable)
        .await
        .map_err(map_sqlx)?;
        rows.iter()
            .map(|r| {
                let actions: Vec<String> = r.try_get("actions").map_err(map_sqlx)?;
                let urls: Vec<String> = r.try_get("urls").map_err(map_sqlx)?;
                let registered: Vec<DateTime<Utc>> = r.try_get("registered").map_err(map_sqlx)?;
                let seen: Vec<DateTime<Utc>> = r.try_get("seen").map_err(map_sqlx)?;
                Ok(ParticipantRecord {
                    name: ParticipantName::from_trusted(r.try_get("name").map_err(map_sqlx)?),
                    actions: actions.into_iter().map(ActionName::from_trusted).collect(),
                    endpoints: urls
                        .into_iter()
                        .zip(registered)
                        .zip(seen)
                        .map(|((url, registered_at), last_seen_at)| EndpointRecord {
                            url: EndpointUrl::from_trusted(url),
                            registered_at,
                            last_seen_at,
                        })
                        .collect(),
                })
            })
            .collect()
    }

    async fn ready(&self) -> StoreResult<()> {
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.durable)
                .await
                .map_err(map_sqlx)?;
        let expected = MIGRATOR.iter().count() as i64;
        if applied < expected {
            return Err(StoreError::Unavailable(format!(
                "{applied} of {expected} migrations applied"
            )));
        }
        Ok(())
    }
}
