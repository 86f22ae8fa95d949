//! The one writer of the SQLite file, with group commit. SQLite takes one
//! writer at a time, and every commit with `synchronous=FULL` is an fsync;
//! so every write of the store, whatever its kind, queues into one
//! [`GroupWriter`] and a batch runs as one SQLite transaction: one fsync
//! for all the writes that queued up while the previous batch committed. A
//! writer still returns only once its own write is durable.
//!
//! The write connection belongs to a thread of its own, which runs a whole
//! batch synchronously (rusqlite, statements cached prepared) and answers
//! through a oneshot: one hand-over per batch. Through sqlx every statement
//! was a round trip to its SQLite worker thread (a channel send and a
//! wake-up each, a dozen per TCC transaction), which profiles showed as the
//! writer's main cost; see BENCHMARKS.md (issue 18, 2026-12-01). Reads stay
//! on sqlx's pool. rusqlite links the libsqlite3-sys that sqlx uses (Cargo
//! allows one crate linking `sqlite3`), so one SQLite library, with its
//! one table of POSIX locks, handles the file.
//!
//! A write is a few statements, not one as on PostgreSQL (SQLite has no
//! arrays to `unnest`). If any write of a batch fails, the batch is rolled
//! back and its writes run again one transaction each, so a write that
//! cannot be applied fails alone, as its own row's refusal does on
//! PostgreSQL.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

use super::events::Events;
use super::{admin, alerts, drive, housekeeping, leases, msg, redrive};
use crate::clock::Countdown;
use crate::domain::{ActionName, BranchId, Endpoint, Gid, ParticipantName};
use crate::machine::CallStatus;
use crate::store::admin::AdminWrite;
use crate::store::batch::GroupWriter;
use crate::store::progress::Progress;
use crate::store::{
    CallRecord, Claimed, Decision, Lease, MsgDecision, NewBranch, NewMsg, NewSaga, NewTransaction,
    StoreError, StoreResult,
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
        cover: Countdown,
    },
    ClaimTryCall {
        gid: Gid,
        branch_id: BranchId,
        cover: Countdown,
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
    /// To the connection's thread, for [`Writer::close`].
    jobs: mpsc::Sender<Job>,
    /// True while the thread runs a batch: the `writer` pool's one
    /// connection is in use (`concord_db_pool_*`).
    busy: Arc<AtomicBool>,
}

/// What the connection's thread is handed.
enum Job {
    /// A batch, and where its results go.
    Batch(Vec<Queued>, oneshot::Sender<Vec<StoreResult<Done>>>),
    /// Close the connection and stop; answers once it is closed.
    Close(oneshot::Sender<()>),
}

/// Statements the connection keeps prepared: every statement of the
/// writes above, with room to spare (rusqlite's default is 16).
const STATEMENT_CACHE: usize = 64;

impl Writer {
    /// Opens the write connection to the database at `path` (created and in
    /// WAL mode already), gives it a thread of its own and starts the queue;
    /// needs a Tokio runtime. `busy_timeout`: how long a batch waits for
    /// SQLite's file lock (a migration or a test's raw statement on another
    /// connection) before it fails as unavailable.
    pub(super) fn start(path: &Path, busy_timeout: Duration) -> StoreResult<Self> {
        let conn = open(path, busy_timeout)?;
        let (jobs, batches) = mpsc::channel::<Job>();
        let busy = Arc::new(AtomicBool::new(false));
        let running = Arc::clone(&busy);
        std::thread::Builder::new()
            .name("concord-sqlite-writer".into())
            .spawn(move || run(conn, batches, &running))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        let queue = GroupWriter::on_pool(jobs.clone(), |q: &Queued| q.n, handover);
        Ok(Self {
            queue,
            next: AtomicU64::new(0),
            jobs,
            busy,
        })
    }

    /// Whether a batch is running now.
    pub(super) fn busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    /// Closes the write connection once the batches handed over before are
    /// done; later writes fail as unavailable.
    pub(super) async fn close(&self) {
        let (closed, done) = oneshot::channel();
        if self.jobs.send(Job::Close(closed)).is_ok() {
            let _ = done.await;
        }
    }

    /// Queues one write and waits until its batch is committed.
    pub(super) async fn write(&self, write: Write) -> StoreResult<Done> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.queue.write(Queued { n, write }).await?
    }
}

/// The write connection, set up as sqlx sets up the store's others
/// (`SqliteStore::open`): WAL, `synchronous=FULL` (a commit is on disk),
/// foreign keys enforced. The last two are per connection.
fn open(path: &Path, busy_timeout: Duration) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = Connection::open_with_flags(path, flags)?;
    c.busy_timeout(busy_timeout)?;
    let mode: String = c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "{} is in journal mode {mode}, not WAL",
            path.display()
        )));
    }
    c.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(c)
}

/// The connection's thread: one batch at a time until the store is closed
/// or gone (every sender dropped); the connection closes with the thread.
fn run(mut conn: Connection, jobs: mpsc::Receiver<Job>, busy: &AtomicBool) {
    while let Ok(job) = jobs.recv() {
        match job {
            // The writer may have stopped waiting (its task was dropped):
            // the batch is committed or not all the same.
            Job::Batch(items, reply) => {
                busy.store(true, Ordering::Relaxed);
                let done = flush(&mut conn, &items);
                busy.store(false, Ordering::Relaxed);
                let _ = reply.send(done);
            }
            Job::Close(closed) => {
                drop(conn);
                let _ = closed.send(());
                return;
            }
        }
    }
}

/// Hands a batch to the connection's thread and waits for its results.
async fn handover(
    jobs: mpsc::Sender<Job>,
    items: Vec<Queued>,
) -> StoreResult<Vec<StoreResult<Done>>> {
    let stopped = || StoreError::Unavailable("store is closed".into());
    let (reply, done) = oneshot::channel();
    jobs.send(Job::Batch(items, reply)).map_err(|_| stopped())?;
    done.await.map_err(|_| stopped())
}

fn flush(conn: &mut Connection, items: &[Queued]) -> Vec<StoreResult<Done>> {
    // The clock of leases and claims ("the database clock" on PostgreSQL):
    // one process, one clock. Read once for the batch, with the monotonic
    // moment of that reading: a lease asked as a `Countdown` is granted
    // what is left of it then, so that it ends when the engine counts.
    let now = Utc::now();
    let at = Instant::now();
    match transaction(conn, items, now, at) {
        Ok(done) => done.into_iter().map(Ok).collect(),
        Err(e) if items.len() == 1 => vec![Err(e)],
        Err(_) => items
            .iter()
            .map(|item| {
                transaction(conn, std::slice::from_ref(item), now, at).and_then(|mut d| {
                    d.pop()
                        .ok_or_else(|| StoreError::Database("write without result".into()))
                })
            })
            .collect(),
    }
}

/// Applies `items` in one transaction; nothing of it stays on error.
fn transaction(
    conn: &mut Connection,
    items: &[Queued],
    now: DateTime<Utc>,
    at: Instant,
) -> StoreResult<Vec<Done>> {
    // IMMEDIATE: take the write lock at once rather than on the first
    // write, so that a batch never has to give up half-way on a lock.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut done = Vec::with_capacity(items.len());
    let mut events = Events::default();
    for item in items {
        done.push(apply(&tx, &item.write, now, at, &mut events)?);
    }
    events.insert(&tx)?;
    tx.commit()?;
    Ok(done)
}

fn apply(
    c: &Connection,
    w: &Write,
    now: DateTime<Utc>,
    at: Instant,
    ev: &mut Events,
) -> StoreResult<Done> {
    Ok(match w {
        Write::Begin(t) => Done::Applied(drive::begin(c, t, ev)?),
        Write::Branch(b) => Done::Branch(drive::add_branch(c, b, now, at, ev)?),
        Write::Decide(d) => Done::Fence(drive::decide(c, d, now, at, ev)?),
        Write::Try {
            gid,
            call,
            expected_second_phase,
            now: at,
            actor,
        } => {
            drive::record_try(c, gid, call, *expected_second_phase, *at, actor, ev)?;
            Done::Unit
        }
        Write::Progress(p) => Done::Applied(drive::progress(c, p, ev)?),
        Write::Saga(s) => Done::Applied(drive::submit_saga(c, s, now, at)?),
        Write::Msg(m) => Done::Applied(msg::prepare(c, m, ev)?),
        Write::DecideMsg(d) => Done::Fence(msg::decide(c, d, now, at, ev)?),
        Write::Redrive { participant, actor } => {
            Done::Count(redrive::redrive(c, participant, actor, now, ev)?)
        }
        Write::Claim {
            owner,
            limit,
            lease,
        } => Done::Claimed(leases::claim_due(c, owner, *limit, *lease, now, ev)?),
        Write::Renew {
            owner,
            leases: held,
            lease,
        } => Done::Renewed(leases::renew(c, owner, held, *lease, now)?),
        Write::Release {
            owner,
            leases: held,
        } => Done::Count(leases::release(c, owner, held)?),
        Write::ExtendLease {
            owner,
            lease,
            cover,
        } => Done::Applied(leases::extend(c, owner, lease, cover.left_at(at), now)?),
        Write::ClaimTryCall {
            gid,
            branch_id,
            cover,
        } => Done::Applied(leases::claim_try_call(
            c,
            gid,
            branch_id,
            cover.left_at(at),
            now,
        )?),
        Write::Register {
            name,
            endpoint,
            actions,
            now: at,
        } => {
            housekeeping::register_participant(c, name, endpoint, actions, *at)?;
            Done::Unit
        }
        Write::ClaimAlerts {
            owner,
            limit,
            lease,
        } => Done::Alerts(alerts::claim(c, owner, *limit, *lease, now)?),
        Write::AlertAttempt(a) => Done::Applied(alerts::attempted(c, a)?),
        Write::ActionPolicies { name, policies } => {
            housekeeping::set_action_policies(c, name, policies)?;
            Done::Unit
        }
        Write::Admin(a) => Done::Applied(admin::apply(c, a, now)?),
        Write::AdminEvent {
            gid,
            kind,
            message,
            actor,
            now: at,
        } => {
            admin::event(c, gid, kind, message.as_deref(), actor, *at)?;
            Done::Unit
        }
        Write::DeleteFinished { older_than, batch } => {
            Done::Count(housekeeping::delete_finished(c, *older_than, *batch, now)?)
        }
    })
}
