//! The one writer of the SQLite file, with group commit. SQLite takes one
//! writer at a time, and every commit with `synchronous=FULL` is an fsync;
//! so every write of the store, whatever its kind, queues into one
//! [`GroupWriter`] on the single write connection and a batch runs as one
//! SQLite transaction: one fsync for all the writes that queued up while
//! the previous batch committed. A writer still returns only once its own
//! write is durable.
//!
//! A write is a few statements, not one as on PostgreSQL (SQLite has no
//! arrays to `unnest`); the events of a whole batch go in one statement at
//! its end (see `events`). If any write of
//! a batch fails, the batch is rolled back and its writes run again one
//! transaction each, so a write that cannot be applied fails alone, as its
//! own row's refusal does on PostgreSQL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection, SqliteConnection, SqlitePool};

use super::events::Events;
use super::{admin, alerts, drive, housekeeping, leases, msg, redrive};
use crate::domain::{ActionName, BranchId, Endpoint, Gid, ParticipantName};
use crate::machine::CallStatus;
use crate::store::admin::AdminWrite;
use crate::store::batch::GroupWriter;
use crate::store::progress::Progress;
use crate::store::{
    CallRecord, Claimed, Decision, Lease, MsgDecision, NewBranch, NewMsg, NewSaga, NewTransaction,
    StoreResult,
};

/// A write of any kind.
pub(super) enum Write {
    Begin(NewTransaction),
    Branch(NewBranch),
    Decide(Decision),
    Try {
        gid: Gid,
        call: CallRecord,
        expected_second_phase: CallStatus,
        now: DateTime<Utc>,
        actor: String,
    },
    Progress(Progress),
    Saga(NewSaga),
    Msg(NewMsg),
    DecideMsg(MsgDecision),
    Redrive {
        participant: ParticipantName,
        actor: String,
    },
    Claim {
        owner: String,
        limit: i64,
        lease: Duration,
    },
    Renew {
        owner: String,
        leases: Vec<Lease>,
        lease: Duration,
    },
    Release {
        owner: String,
        leases: Vec<Lease>,
    },
    ExtendLease {
        owner: String,
        lease: Lease,
        cover: Duration,
    },
    ClaimTryCall {
        gid: Gid,
        branch_id: BranchId,
        cover: Duration,
    },
    Register {
        name: ParticipantName,
        endpoint: Endpoint,
        actions: Vec<ActionName>,
        now: DateTime<Utc>,
    },
    ClaimAlerts {
        owner: String,
        limit: u32,
        lease: Duration,
    },
    AlertAttempt(crate::store::admin::AlertAttempt),
    ActionPolicies {
        name: ParticipantName,
        policies: Vec<(ActionName, crate::machine::policy::ActionPolicy)>,
    },
    Admin(AdminWrite),
    AdminEvent {
        gid: Gid,
        kind: String,
        message: Option<String>,
        actor: String,
        now: DateTime<Utc>,
    },
    DeleteFinished {
        older_than: Duration,
        batch: u32,
    },
}

/// What a write found, by kind.
pub(super) enum Done {
    /// Nothing to report.
    Unit,
    /// Begin, a saga, a fenced or compare-and-set write: applied or not.
    Applied(bool),
    Branch(drive::BranchInsert),
    /// A decision: the new fence if it applied.
    Fence(Option<i64>),
    Claimed(Vec<Claimed>),
    Renewed(Vec<Gid>),
    Count(u64),
    Alerts(Vec<crate::store::admin::AlertRecord>),
}

/// A write in the queue; `n` only keeps each write its own batch key (two
/// writes to one row may share a batch here: they run in order).
pub(super) struct Queued {
    n: u64,
    write: Write,
}

pub(super) struct Writer {
    queue: GroupWriter<Queued, StoreResult<Done>>,
    next: AtomicU64,
}

impl Writer {
    /// Starts the writer on `pool`, a pool of one connection; needs a
    /// Tokio runtime.
    pub(super) fn start(pool: SqlitePool) -> Self {
        Self {
            queue: GroupWriter::on_pool(pool, |q: &Queued| q.n, flush),
            next: AtomicU64::new(0),
        }
    }

    /// Queues one write and waits until its batch is committed.
    pub(super) async fn write(&self, write: Write) -> StoreResult<Done> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.queue.write(Queued { n, write }).await?
    }
}

async fn flush(pool: SqlitePool, items: Vec<Queued>) -> StoreResult<Vec<StoreResult<Done>>> {
    let mut conn = pool.acquire().await?;
    // The clock of leases and claims ("the database clock" on PostgreSQL):
    // one process, one clock.
    let now = Utc::now();
    match transaction(&mut conn, &items, now).await {
        Ok(done) => Ok(done.into_iter().map(Ok).collect()),
        Err(e) if items.len() == 1 => Ok(vec![Err(e)]),
        Err(_) => {
            let mut out = Vec::with_capacity(items.len());
            for item in &items {
                let one = transaction(&mut conn, std::slice::from_ref(item), now).await;
                out.push(one.and_then(|mut d| {
                    d.pop().ok_or_else(|| {
                        crate::store::StoreError::Database("write without result".into())
                    })
                }));
            }
            Ok(out)
        }
    }
}

/// Applies `items` in one transaction; nothing of it stays on error.
async fn transaction(
    conn: &mut SqliteConnection,
    items: &[Queued],
    now: DateTime<Utc>,
) -> StoreResult<Vec<Done>> {
    // IMMEDIATE: take the write lock at once rather than on the first
    // write, so that a batch never has to give up half-way on a lock.
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let mut done = Vec::with_capacity(items.len());
    let mut events = Events::default();
    for item in items {
        done.push(apply(&mut tx, &item.write, now, &mut events).await?);
    }
    events.insert(&mut tx).await?;
    tx.commit().await?;
    Ok(done)
}

async fn apply(
    c: &mut SqliteConnection,
    w: &Write,
    now: DateTime<Utc>,
    ev: &mut Events,
) -> StoreResult<Done> {
    Ok(match w {
        Write::Begin(t) => Done::Applied(drive::begin(c, t, ev).await?),
        Write::Branch(b) => Done::Branch(drive::add_branch(c, b, now, ev).await?),
        Write::Decide(d) => Done::Fence(drive::decide(c, d, now, ev).await?),
        Write::Try {
            gid,
            call,
            expected_second_phase,
            now: at,
            actor,
        } => {
            drive::record_try(c, gid, call, *expected_second_phase, *at, actor, ev).await?;
            Done::Unit
        }
        Write::Progress(p) => Done::Applied(drive::progress(c, p, ev).await?),
        Write::Saga(s) => Done::Applied(drive::submit_saga(c, s, now, ev).await?),
        Write::Msg(m) => Done::Applied(msg::prepare(c, m, ev).await?),
        Write::DecideMsg(d) => Done::Fence(msg::decide(c, d, now, ev).await?),
        Write::Redrive { participant, actor } => {
            Done::Count(redrive::redrive(c, participant, actor, now, ev).await?)
        }
        Write::Claim {
            owner,
            limit,
            lease,
        } => Done::Claimed(leases::claim_due(c, owner, *limit, *lease, now).await?),
        Write::Renew {
            owner,
            leases: held,
            lease,
        } => Done::Renewed(leases::renew(c, owner, held, *lease, now).await?),
        Write::Release {
            owner,
            leases: held,
        } => Done::Count(leases::release(c, owner, held).await?),
        Write::ExtendLease {
            owner,
            lease,
            cover,
        } => Done::Applied(leases::extend(c, owner, lease, *cover, now).await?),
        Write::ClaimTryCall {
            gid,
            branch_id,
            cover,
        } => Done::Applied(leases::claim_try_call(c, gid, branch_id, *cover, now).await?),
        Write::Register {
            name,
            endpoint,
            actions,
            now: at,
        } => {
            housekeeping::register_participant(c, name, endpoint, actions, *at).await?;
            Done::Unit
        }
        Write::ClaimAlerts {
            owner,
            limit,
            lease,
        } => Done::Alerts(alerts::claim(c, owner, *limit, *lease, now).await?),
        Write::AlertAttempt(a) => Done::Applied(alerts::attempted(c, a).await?),
        Write::ActionPolicies { name, policies } => {
            housekeeping::set_action_policies(c, name, policies).await?;
            Done::Unit
        }
        Write::Admin(a) => Done::Applied(admin::apply(c, a, now).await?),
        Write::AdminEvent {
            gid,
            kind,
            message,
            actor,
            now: at,
        } => {
            admin::event(c, gid, kind, message.as_deref(), actor, *at).await?;
            Done::Unit
        }
        Write::DeleteFinished { older_than, batch } => {
            Done::Count(housekeeping::delete_finished(c, *older_than, *batch, now).await?)
        }
    })
}
