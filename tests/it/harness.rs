//! Test harness: a `TestDb` (PostgreSQL or a SQLite file) with
//! `on_both_stores!` to run a test on each (`on_both_stores_beside_postgres!` when
//! a participant keeps its own state in PostgreSQL), a `TestCoordinator` running in its own runtime (so that a
//! crash drops every task it had, as a killed process would), and a
//! scriptable `TestParticipant` gRPC server on a loopback port that counts
//! calls, checks durability preconditions in the database and applies each
//! effect once per (gid, branch, phase) like a barrier would.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concord::cli::Bearer;
use concord::config::Config;
use concord::server::Server;
use concord_proto::participant::v1::participant_server::{Participant, ParticipantServer};
use concord_proto::participant::v1::{BranchRequest, BranchResponse};
use concord_proto::v1::coordinator_client::CoordinatorClient;
use concord_proto::v1::registry_client::RegistryClient;
use concord_proto::v1::{self as pb};
use sqlx::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// A Coordinator client presenting the test coordinator's token, if any.
pub type Coord = CoordinatorClient<InterceptedService<Channel, Bearer>>;
/// A Registry client presenting the test coordinator's token, if any.
pub type Reg = RegistryClient<InterceptedService<Channel, Bearer>>;

/// Config with short delays so that retries and recovery happen quickly.
pub fn fast_config(database_url: &str) -> Config {
    let mut c = Config::with_database(database_url);
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.pool_size = 4;
    c.migrate = false;
    c.retry.initial = Duration::from_millis(100);
    c.retry.max = Duration::from_millis(400);
    c.poll_interval = Duration::from_millis(100);
    c.lease = Duration::from_millis(1000);
    c.call_timeout = Duration::from_secs(2);
    c.shutdown_grace = Duration::from_secs(2);
    c.breaker_cooldown = Duration::from_millis(200);
    c
}

enum Stop {
    Crash,
    Graceful,
}

/// One coordinator instance in a runtime of its own.
pub struct TestCoordinator {
    pub addr: SocketAddr,
    /// The /metrics listener, when the config asked for one.
    pub metrics_addr: Option<SocketAddr>,
    /// The DTM-compatible API's listener, when the config asked for one.
    pub dtm_addr: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<Stop>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// What its clients present (see [`TestCoordinator::with_token`]).
    token: Option<String>,
}

/// The coordinator's database in a test: a fresh PostgreSQL database from
/// `#[sqlx::test]`, or a fresh SQLite file (migrated) in a directory that
/// lives as long as the value.
#[derive(Clone)]
pub enum TestDb {
    Postgres(PgPool),
    Sqlite(Arc<SqliteFile>),
}

pub struct SqliteFile {
    path: std::path::PathBuf,
    /// Read-only connections beside the coordinator's, for checks.
    pool: SqlitePool,
    _dir: tempfile::TempDir,
}

impl From<&PgPool> for TestDb {
    fn from(pool: &PgPool) -> Self {
        Self::Postgres(pool.clone())
    }
}

impl From<PgPool> for TestDb {
    fn from(pool: PgPool) -> Self {
        Self::Postgres(pool)
    }
}

impl From<&TestDb> for TestDb {
    fn from(db: &TestDb) -> Self {
        db.clone()
    }
}

impl TestDb {
    /// A migrated SQLite file of its own.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("concord.db");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        concord::store::sqlite::MIGRATOR.run(&pool).await.unwrap();
        Self::Sqlite(Arc::new(SqliteFile {
            path,
            pool,
            _dir: dir,
        }))
    }

    /// The `database_url` of a coordinator on this database.
    pub fn url(&self) -> String {
        match self {
            Self::Postgres(pool) => concord::store::postgres::PgStore::url_of(pool),
            Self::Sqlite(f) => format!("sqlite://{}", f.path.display()),
        }
    }

    /// One number from the coordinator's database (a count), read beside it.
    pub async fn number(&self, sql: &'static str) -> i64 {
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Self::Sqlite(f) => sqlx::query_scalar(sql).fetch_one(&f.pool).await,
        }
        .unwrap()
    }

    /// One optional text (a column of one transaction) by its gid, read
    /// beside the coordinator.
    pub async fn text_of(&self, sql: &'static str, gid: &str) -> Option<String> {
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(sql).bind(gid).fetch_one(pool).await,
            Self::Sqlite(f) => sqlx::query_scalar(sql).bind(gid).fetch_one(&f.pool).await,
        }
        .unwrap()
    }

    /// How many rows of `table` belong to `gid`, read beside the
    /// coordinator.
    pub async fn rows_of(&self, table: &'static str, gid: &str) -> i64 {
        self.count_by_gid(format!("SELECT count(*) FROM {table} WHERE gid = $1"), gid)
            .await
    }

    /// A count from built SQL whose one parameter is a gid.
    async fn count_by_gid(&self, sql: String, gid: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql);
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(sql).bind(gid).fetch_one(pool).await,
            Self::Sqlite(f) => sqlx::query_scalar(sql).bind(gid).fetch_one(&f.pool).await,
        }
        .unwrap()
    }

    /// One number (a count) from a query about one transaction, by its gid.
    pub async fn number_of(&self, sql: &'static str, gid: &str) -> i64 {
        self.count_by_gid(sql.to_string(), gid).await
    }

    /// Whether transaction `gid` satisfies `condition` (SQL both stores
    /// read alike, say a flag: `paused`).
    pub async fn holds(&self, gid: &str, condition: &'static str) -> bool {
        let sql =
            format!("SELECT count(*) FROM global_transactions WHERE gid = $1 AND {condition}");
        self.count_by_gid(sql, gid).await == 1
    }

    /// Every row of a query for two texts (say gid and status).
    pub async fn pairs(&self, sql: &'static str) -> Vec<(String, String)> {
        match self {
            Self::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await,
            Self::Sqlite(f) => sqlx::query_as(sql).fetch_all(&f.pool).await,
        }
        .unwrap()
    }

    /// Every value of a query for one text.
    pub async fn texts(&self, sql: &'static str) -> Vec<String> {
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
            Self::Sqlite(f) => sqlx::query_scalar(sql).fetch_all(&f.pool).await,
        }
        .unwrap()
    }

    /// Transactions in `status`, tried at least once, whose next attempt
    /// is more than `beyond` away (waiting on a retry backoff).
    pub async fn waiting_beyond(&self, status: &str, beyond: Duration) -> i64 {
        const SQL: &str = "SELECT count(*) FROM global_transactions
            WHERE status = $1 AND attempts >= 1 AND next_attempt_at > $2";
        let at = chrono::Utc::now() + chrono::Duration::from_std(beyond).unwrap();
        match self {
            Self::Postgres(pool) => {
                sqlx::query_scalar(SQL)
                    .bind(status)
                    .bind(at)
                    .fetch_one(pool)
                    .await
            }
            Self::Sqlite(f) => {
                sqlx::query_scalar(SQL)
                    .bind(status)
                    .bind(at.timestamp_micros())
                    .fetch_one(&f.pool)
                    .await
            }
        }
        .unwrap()
    }

    /// Moves an instant of `gid` (a column of `global_transactions`, say
    /// `finished_at`) to `ago` before now, as if that much time had passed.
    pub async fn set_ago(&self, gid: &str, column: &'static str, ago: Duration) {
        let sql = format!("UPDATE global_transactions SET {column} = $1 WHERE gid = $2");
        let at = chrono::Utc::now() - chrono::Duration::from_std(ago).unwrap();
        let updated = match self {
            Self::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(at)
                .bind(gid)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
            // The SQLite schema keeps instants as microseconds.
            Self::Sqlite(f) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(at.timestamp_micros())
                .bind(gid)
                .execute(&f.pool)
                .await
                .map(|r| r.rows_affected()),
        }
        .unwrap();
        assert_eq!(updated, 1, "{gid} exists");
    }

    /// A store of its own on this database, for a test that calls the
    /// store or the engine directly. On SQLite it holds the file's lock:
    /// drop it before a coordinator starts on the file.
    pub async fn store(&self) -> Box<dyn concord::store::admin::AdminStore> {
        match self {
            Self::Postgres(pool) => Box::new(
                concord::store::postgres::PgStore::from_pool(pool.clone())
                    .await
                    .unwrap(),
            ),
            Self::Sqlite(f) => Box::new(
                concord::store::sqlite::SqliteStore::open(&f.path, 2, Duration::from_secs(5))
                    .await
                    .unwrap(),
            ),
        }
    }

    /// A transaction's status and whether one of its branches exists.
    async fn status_and_branch(
        &self,
        gid: &str,
        branch: &str,
    ) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
        const SQL: &str = "SELECT g.status, b.branch_id FROM global_transactions g
               LEFT JOIN branches b ON b.gid = g.gid AND b.branch_id = $2
              WHERE g.gid = $1";
        match self {
            Self::Postgres(pool) => {
                sqlx::query_as(SQL)
                    .bind(gid)
                    .bind(branch)
                    .fetch_optional(pool)
                    .await
            }
            Self::Sqlite(f) => {
                sqlx::query_as(SQL)
                    .bind(gid)
                    .bind(branch)
                    .fetch_optional(&f.pool)
                    .await
            }
        }
    }
}

/// An end-to-end test run once on each store: `$name` is an `async fn`
/// taking a [`TestDb`]; the tests are `$name::postgres` and `$name::sqlite`.
macro_rules! on_both_stores {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
                async fn postgres(pool: sqlx::PgPool) {
                    super::$name(pool.into()).await
                }

                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::harness::TestDb::sqlite().await).await
                }
            }
        )+
    };
}
pub(crate) use on_both_stores;

/// As [`on_both_stores!`], for a test whose participant or initiator keeps
/// its own state in PostgreSQL (an SDK barrier, a bank's accounts): `$name`
/// takes the coordinator's [`TestDb`] and that `PgPool`. On the PostgreSQL
/// run both are the one database, as before; on the SQLite run the
/// participant's is a PostgreSQL database of its own (the store under test
/// is the coordinator's; the SDK's barrier is PostgreSQL's).
macro_rules! on_both_stores_beside_postgres {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
                async fn postgres(pool: sqlx::PgPool) {
                    super::$name(pool.clone().into(), pool).await
                }

                #[sqlx::test(migrations = false)]
                async fn sqlite(pool: sqlx::PgPool) {
                    super::$name($crate::harness::TestDb::sqlite().await, pool).await
                }
            }
        )+
    };
}
pub(crate) use on_both_stores_beside_postgres;

impl TestCoordinator {
    pub async fn start(db: impl Into<TestDb>) -> Self {
        Self::start_with(db, |_| {}).await
    }

    pub async fn start_with(db: impl Into<TestDb>, tweak: impl FnOnce(&mut Config)) -> Self {
        let db = db.into();
        let mut config = fast_config(&db.url());
        tweak(&mut config);
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<Stop>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let graceful = rt.block_on(async move {
                let server = build(config).await;
                addr_tx
                    .send((
                        server.local_addr(),
                        server.metrics_addr(),
                        server.dtm_addr(),
                    ))
                    .unwrap();
                let shutdown = CancellationToken::new();
                let run = tokio::spawn(server.run(shutdown.clone().cancelled_owned()));
                match stop_rx.await {
                    Ok(Stop::Graceful) => {
                        shutdown.cancel();
                        let _ = run.await;
                        true
                    }
                    _ => false,
                }
            });
            if graceful {
                drop(rt);
            } else {
                // A crash: every task is dropped where it stands.
                rt.shutdown_background();
            }
        });
        let (addr, metrics_addr, dtm_addr) =
            addr_rx.await.expect("coordinator reports its address");
        Self {
            addr,
            metrics_addr,
            dtm_addr,
            stop: Some(stop_tx),
            thread: Some(thread),
            token: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every client of this coordinator presents `token` from now on
    /// (a coordinator with identities refuses calls without one).
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    pub async fn client(&self) -> Coord {
        self.client_as(self.token.as_deref()).await
    }

    pub async fn registry(&self) -> Reg {
        self.registry_as(self.token.as_deref()).await
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A Coordinator client presenting `token` (none: no credential).
    pub async fn client_as(&self, token: Option<&str>) -> Coord {
        CoordinatorClient::with_interceptor(self.channel().await, Bearer::new(token).unwrap())
    }

    /// A Registry client presenting `token` (none: no credential).
    pub async fn registry_as(&self, token: Option<&str>) -> Reg {
        RegistryClient::with_interceptor(self.channel().await, Bearer::new(token).unwrap())
    }

    /// Drops the instance abruptly: no lease release, no finishing.
    pub fn crash(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Stop::Crash);
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    /// SIGTERM-like shutdown.
    pub fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Stop::Graceful);
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for TestCoordinator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Stop::Crash);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Builds a server; on SQLite, waits (a little) for the lock of an
/// instance that was just crashed: its runtime drops the store on its own
/// threads, as the OS would reap a killed process.
async fn build(config: Config) -> Server {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match Server::build(config.clone()).await {
            Ok(server) => return server,
            Err(e) if e.to_string().contains("in use") && tokio::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("coordinator starts: {e}"),
        }
    }
}

/// What the participant does for one call.
#[derive(Clone)]
pub enum Behavior {
    Ok,
    Abort(&'static str),
    Unavailable,
    /// UNAVAILABLE with this message (what a failing participant says).
    UnavailableWith(&'static str),
    /// Do the work, then answer after this long (past the call deadline the
    /// coordinator never hears it).
    Slow(Duration),
    /// Wait until released (or forever).
    Block(Arc<Notify>),
    /// UNAVAILABLE for the first n calls of each branch, then OK.
    FailFirstPerBranch(u32),
    /// Work for this long, then succeed. The work runs on even if the
    /// caller goes away (a killed coordinator), as a participant's database
    /// transaction does, and stops at the call's deadline (`grpc-timeout`),
    /// as a participant that honours deadlines does; the call is in flight
    /// until then.
    Busy(Duration),
    /// Never finishes, and stays in flight until the call's deadline plus
    /// this lag: a request that took this long to arrive (a slow network)
    /// counts its deadline from its arrival, past the caller's timeout.
    PastDeadline(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ph {
    Try,
    Confirm,
    Cancel,
    Execute,
    Compensate,
}

#[derive(Default)]
pub(crate) struct State {
    scripts: HashMap<Ph, (VecDeque<Behavior>, Option<Behavior>)>,
    calls: HashMap<(String, String, Ph), u32>,
    effects: HashSet<(String, String, Ph)>,
    in_flight: HashSet<(String, String, Ph)>,
    concurrent_violations: u32,
    /// Calls of one branch in flight, whatever their phase (a Cancel while
    /// the Try is still running counts).
    branch_in_flight: HashMap<(String, String), u32>,
    branch_overlaps: u32,
    precondition_violations: Vec<String>,
    metadata_seen: Vec<HashMap<String, String>>,
    /// Every call in arrival order.
    log: Vec<(String, String, Ph)>,
    /// Most calls in flight at once.
    max_in_flight: usize,
}

/// A participant service with scripted behaviour and call accounting.
#[derive(Clone)]
pub struct TestParticipant {
    pub name: String,
    pub addr: SocketAddr,
    /// How it registers: gRPC, or HTTP/JSON (see `harness_http`).
    pub protocol: pb::Protocol,
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) arrived: Arc<Notify>,
    pub(crate) stop: CancellationToken,
}

pub(crate) struct Service {
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) arrived: Arc<Notify>,
    pub(crate) db: Option<TestDb>,
}

impl TestParticipant {
    /// Serves on a loopback port. With `db`, every call checks in the
    /// coordinator's database that what must be durable before it is.
    pub async fn start(name: &str, db: Option<PgPool>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve_on(name, listener, db.map(TestDb::Postgres)).await
    }

    /// Serves on a loopback port, checking durability in `db`.
    pub async fn start_on(name: &str, db: &TestDb) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve_on(name, listener, Some(db.clone())).await
    }

    pub async fn serve_on(name: &str, listener: TcpListener, db: Option<TestDb>) -> Self {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let arrived = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let svc = Service {
            state: state.clone(),
            arrived: arrived.clone(),
            db,
        };
        let s = stop.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(ParticipantServer::new(svc))
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    s.cancelled_owned(),
                )
                .await
                .unwrap();
        });
        Self {
            name: name.to_string(),
            addr,
            protocol: pb::Protocol::Grpc,
            state,
            arrived,
            stop,
        }
    }

    pub fn endpoint(&self) -> String {
        match self.protocol {
            // Under a base path, as HTTP participants may register.
            pb::Protocol::Http => format!("http://{}/concord", self.addr),
            _ => format!("http://{}", self.addr),
        }
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Registers with the coordinator under `self.name` with `actions`.
    pub async fn register(&self, coordinator: &TestCoordinator, actions: &[&str]) {
        let actions = actions
            .iter()
            .map(|a| pb::Action {
                name: a.to_string(),
                ..Default::default()
            })
            .collect();
        self.register_actions(coordinator, actions).await.unwrap();
    }

    /// Registers with `actions` as given (with their policies).
    pub async fn register_actions(
        &self,
        coordinator: &TestCoordinator,
        actions: Vec<pb::Action>,
    ) -> Result<(), tonic::Status> {
        coordinator
            .registry()
            .await
            .register_participant(pb::RegisterParticipantRequest {
                protocol: self.protocol as i32,
                name: self.name.clone(),
                endpoint: self.endpoint(),
                actions,
            })
            .await
            .map(drop)
    }

    /// The next calls of `phase` behave as listed, then as `then`.
    pub fn script(&self, phase: Ph, first: Vec<Behavior>, then: Behavior) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert(phase, (first.into(), Some(then)));
    }

    pub fn calls(&self, gid: &str, branch: &str, phase: Ph) -> u32 {
        let s = self.state.lock().unwrap();
        s.calls
            .get(&(gid.to_string(), branch.to_string(), phase))
            .copied()
            .unwrap_or(0)
    }

    pub fn total_calls(&self, phase: Ph) -> u32 {
        let s = self.state.lock().unwrap();
        s.calls
            .iter()
            .filter(|(k, _)| k.2 == phase)
            .map(|(_, v)| v)
            .sum()
    }

    pub fn effects(&self, phase: Ph) -> usize {
        self.state
            .lock()
            .unwrap()
            .effects
            .iter()
            .filter(|k| k.2 == phase)
            .count()
    }

    pub fn has_effect(&self, gid: &str, branch: &str, phase: Ph) -> bool {
        self.state
            .lock()
            .unwrap()
            .effects
            .contains(&(gid.to_string(), branch.to_string(), phase))
    }

    pub fn concurrent_violations(&self) -> u32 {
        self.state.lock().unwrap().concurrent_violations
    }

    /// Calls that arrived while another call of the same branch, of any
    /// phase, was in flight.
    pub fn branch_overlaps(&self) -> u32 {
        self.state.lock().unwrap().branch_overlaps
    }

    pub fn precondition_violations(&self) -> Vec<String> {
        self.state.lock().unwrap().precondition_violations.clone()
    }

    /// Calls of `gid` in arrival order, as (branch, phase).
    pub fn log(&self, gid: &str) -> Vec<(String, Ph)> {
        let s = self.state.lock().unwrap();
        s.log
            .iter()
            .filter(|k| k.0 == gid)
            .map(|k| (k.1.clone(), k.2))
            .collect()
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    pub fn metadata_seen(&self) -> Vec<HashMap<String, String>> {
        self.state.lock().unwrap().metadata_seen.clone()
    }

    /// Waits until `check` holds, re-checking after every call.
    pub async fn wait_until(&self, timeout: Duration, check: impl Fn(&Self) -> bool) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            if check(self) {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return false;
            }
            let _ =
                tokio::time::timeout((until - now).min(Duration::from_millis(50)), notified).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {}
}

impl Service {
    async fn check_durable(&self, req: &BranchRequest, phase: Ph) -> Option<String> {
        let db = self.db.as_ref()?;
        let row = db.status_and_branch(&req.gid, &req.branch_id).await.ok()?;
        let Some((status, branch)) = row else {
            return Some(format!(
                "{phase:?} {}: transaction not in the database",
                req.gid
            ));
        };
        if branch.is_none() {
            return Some(format!(
                "{phase:?} {}/{}: branch not committed before the call",
                req.gid, req.branch_id
            ));
        }
        let ok = match phase {
            Ph::Try => true,
            Ph::Confirm => status == "confirming" || status == "confirmed",
            Ph::Cancel => status == "cancelling" || status == "cancelled",
            // A message's steps run once its submission is durable.
            Ph::Execute => status == "running" || status == "compensating" || status == "submitted",
            Ph::Compensate => status == "compensating" || status == "compensated",
        };
        (!ok).then(|| {
            format!(
                "{phase:?} {}: decision not durable (status {status})",
                req.gid
            )
        })
    }

    pub(crate) async fn handle(
        &self,
        req: BranchRequest,
        phase: Ph,
        deadline: Option<Duration>,
    ) -> Result<Response<BranchResponse>, Status> {
        let key = (req.gid.clone(), req.branch_id.clone(), phase);
        let violation = self.check_durable(&req, phase).await;
        let (n, behavior) = {
            let mut s = self.state.lock().unwrap();
            let n = {
                let c = s.calls.entry(key.clone()).or_default();
                *c += 1;
                *c
            };
            if !s.in_flight.insert(key.clone()) {
                s.concurrent_violations += 1;
            }
            let branch = s
                .branch_in_flight
                .entry((key.0.clone(), key.1.clone()))
                .or_default();
            *branch += 1;
            if *branch > 1 {
                s.branch_overlaps += 1;
            }
            s.max_in_flight = s.max_in_flight.max(s.in_flight.len());
            s.log.push(key.clone());
            if let Some(v) = violation {
                s.precondition_violations.push(v);
            }
            s.metadata_seen.push(req.metadata.clone());
            let behavior = match s.scripts.get_mut(&phase) {
                Some((queue, then)) => queue
                    .pop_front()
                    .or_else(|| then.clone())
                    .unwrap_or(Behavior::Ok),
                None => Behavior::Ok,
            };
            (n, behavior)
        };
        let behavior = match behavior {
            Behavior::FailFirstPerBranch(k) if n <= k => Behavior::Unavailable,
            Behavior::FailFirstPerBranch(_) => Behavior::Ok,
            other => other,
        };
        self.arrived.notify_waiters();
        let key_for_effect = key.clone();
        let state = self.state.clone();
        let arrived = self.arrived.clone();
        let done = move |applied: bool| {
            let mut s = state.lock().unwrap();
            s.in_flight.remove(&key);
            let branch = (key.0.clone(), key.1.clone());
            if let Some(n) = s.branch_in_flight.get_mut(&branch) {
                *n -= 1;
                if *n == 0 {
                    s.branch_in_flight.remove(&branch);
                }
            }
            if applied {
                s.effects.insert(key.clone());
            }
            drop(s);
            arrived.notify_waiters();
        };
        match behavior {
            Behavior::Ok => {
                done(true);
                Ok(Response::new(BranchResponse {
                    payload: format!("{}:{}", req.branch_id, req.payload.len()).into_bytes(),
                }))
            }
            Behavior::Abort(m) => {
                done(false);
                Err(Status::aborted(m))
            }
            Behavior::Unavailable => {
                done(false);
                Err(Status::unavailable("participant is down"))
            }
            Behavior::UnavailableWith(m) => {
                done(false);
                Err(Status::unavailable(m))
            }
            Behavior::Slow(d) => {
                // The work is done at once; only the reply is late.
                self.state.lock().unwrap().effects.insert(key_for_effect);
                let guard = scopeguard(done);
                tokio::time::sleep(d).await;
                guard.finish(false);
                Ok(Response::new(BranchResponse::default()))
            }
            Behavior::FailFirstPerBranch(_) => unreachable!("resolved above"),
            Behavior::Busy(d) => {
                let deadline = deadline.unwrap_or(Duration::from_secs(60));
                let work = tokio::spawn(async move {
                    let guard = scopeguard(done);
                    let finished = tokio::time::timeout(deadline, tokio::time::sleep(d))
                        .await
                        .is_ok();
                    guard.finish(finished);
                    finished
                });
                match work.await {
                    Ok(true) => Ok(Response::new(BranchResponse::default())),
                    _ => Err(Status::deadline_exceeded("dropped at the call's deadline")),
                }
            }
            Behavior::PastDeadline(lag) => {
                let until = deadline.unwrap_or(Duration::from_secs(60)) + lag;
                tokio::spawn(async move {
                    let guard = scopeguard(done);
                    tokio::time::sleep(until).await;
                    guard.finish(false);
                });
                // No reply: the caller's deadline ends the call.
                std::future::pending().await
            }
            Behavior::Block(release) => {
                // Leaves in_flight set while blocked; cleared when released.
                let guard = scopeguard(done);
                release.notified().await;
                guard.finish(true);
                Ok(Response::new(BranchResponse::default()))
            }
        }
    }
}

/// Runs `f(false)` on drop unless finished, so that a call abandoned by the
/// client (dropped future) leaves the in-flight set.
struct ScopeGuard<F: FnOnce(bool)>(Option<F>);

fn scopeguard<F: FnOnce(bool)>(f: F) -> ScopeGuard<F> {
    ScopeGuard(Some(f))
}

impl<F: FnOnce(bool)> ScopeGuard<F> {
    fn finish(mut self, applied: bool) {
        if let Some(f) = self.0.take() {
            f(applied);
        }
    }
}

impl<F: FnOnce(bool)> Drop for ScopeGuard<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(false);
        }
    }
}

#[tonic::async_trait]
impl Participant for Service {
    async fn r#try(&self, r: Request<BranchRequest>) -> Result<Response<BranchResponse>, Status> {
        let deadline = concord::api::grpc_timeout(r.metadata());
        self.handle(r.into_inner(), Ph::Try, deadline).await
    }
    async fn confirm(&self, r: Request<BranchRequest>) -> Result<Response<BranchResponse>, Status> {
        let deadline = concord::api::grpc_timeout(r.metadata());
        self.handle(r.into_inner(), Ph::Confirm, deadline).await
    }
    async fn cancel(&self, r: Request<BranchRequest>) -> Result<Response<BranchResponse>, Status> {
        let deadline = concord::api::grpc_timeout(r.metadata());
        self.handle(r.into_inner(), Ph::Cancel, deadline).await
    }
    async fn execute(&self, r: Request<BranchRequest>) -> Result<Response<BranchResponse>, Status> {
        let deadline = concord::api::grpc_timeout(r.metadata());
        self.handle(r.into_inner(), Ph::Execute, deadline).await
    }
    async fn compensate(
        &self,
        r: Request<BranchRequest>,
    ) -> Result<Response<BranchResponse>, Status> {
        let deadline = concord::api::grpc_timeout(r.metadata());
        self.handle(r.into_inner(), Ph::Compensate, deadline).await
    }
}

/// Reads a transaction through the public API.
pub async fn get_tx(c: &mut Coord, gid: &str) -> pb::Transaction {
    c.get_transaction(pb::GetTransactionRequest {
        gid: gid.to_string(),
        include_events: true,
    })
    .await
    .unwrap()
    .into_inner()
}

pub fn status_of(tx: &pb::Transaction) -> pb::TransactionStatus {
    pb::TransactionStatus::try_from(tx.status).unwrap()
}

/// Polls the transaction until its status is `want` or the time runs out.
pub async fn wait_status(
    c: &mut Coord,
    gid: &str,
    want: pb::TransactionStatus,
    timeout: Duration,
) -> pb::Transaction {
    let until = tokio::time::Instant::now() + timeout;
    loop {
        let tx = get_tx(c, gid).await;
        if status_of(&tx) == want {
            return tx;
        }
        if tokio::time::Instant::now() >= until {
            panic!(
                "transaction {gid} is {:?}, expected {want:?}: {tx:#?}",
                status_of(&tx)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn begin_req(gid: &str, timeout: Option<Duration>) -> pb::BeginRequest {
    pb::BeginRequest {
        gid: gid.to_string(),
        timeout: timeout.map(|d| prost_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }),
        metadata: Default::default(),
    }
}

pub fn try_req(gid: &str, participant: &str, action: &str) -> pb::TryRequest {
    pb::TryRequest {
        gid: gid.to_string(),
        participant: participant.to_string(),
        action: action.to_string(),
        payload: b"{\"amount\":10}".to_vec(),
        branch_id: String::new(),
        call_timeout: None,
        policy: None,
    }
}

/// Commit through the public API; the reply's body or the refusal.
pub async fn commit_tx(
    c: &mut Coord,
    gid: &str,
    wait: bool,
) -> Result<pb::CommitResponse, tonic::Status> {
    c.commit(pb::CommitRequest {
        gid: gid.into(),
        wait,
    })
    .await
    .map(tonic::Response::into_inner)
}

/// Rollback through the public API; the reply's body or the refusal.
pub async fn rollback_tx(
    c: &mut Coord,
    gid: &str,
    reason: &str,
    wait: bool,
) -> Result<pb::RollbackResponse, tonic::Status> {
    c.rollback(pb::RollbackRequest {
        gid: gid.into(),
        reason: reason.into(),
        wait,
    })
    .await
    .map(tonic::Response::into_inner)
}

/// The two banks of the transfer tests: `bank-a` offers `debit`,
/// `bank-b` `credit`, both registered with `coord`.
pub async fn bank_participants(
    db: impl Into<TestDb>,
    coord: &TestCoordinator,
) -> (TestParticipant, TestParticipant) {
    let db = db.into();
    let a = TestParticipant::start_on("bank-a", &db).await;
    let b = TestParticipant::start_on("bank-b", &db).await;
    a.register(coord, &["debit"]).await;
    b.register(coord, &["credit"]).await;
    (a, b)
}
