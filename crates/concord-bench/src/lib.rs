//! The Concord benchmark: runs TCC transactions with two branches (or
//! sagas or 2-phase messages with two steps) against zero-work
//! participants over loopback gRPC or HTTP/JSON, at a given concurrency,
//! and reports throughput and latency.
//! Everything (coordinator, participants, initiators) shares this process
//! and the machine with PostgreSQL (or, with `--store sqlite`, the
//! coordinator keeps its state in a SQLite file), as on a small
//! production box.
//!
//! [`run`] sets the stage (a fresh database, a coordinator, the
//! participants), `load` is the closed-loop load of the initiators,
//! [`BenchReport`] what gets printed. Kept out of the coordinator so that
//! the server has no benchmark-only dependency.

mod load;
mod participants;
mod report;

use std::time::{Duration, Instant};

use concord::config::{Config, DEFAULT_DATABASE_URL};
use concord::server::Server;
use concord::store::location::SQLITE_FILE;
use concord::store::postgres::PgStore;
use concord_proto::v1::registry_client::RegistryClient;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

pub use self::report::{BenchReport, CallLatency};

/// Which kind of transaction to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    /// Begin, Try on two participants, Commit.
    Tcc,
    /// SubmitSaga with two sequential steps.
    Saga,
    /// PrepareMessage with two steps, then SubmitMessage.
    Msg,
}

/// How the participants are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ParticipantProtocol {
    /// `concord.participant.v1.Participant` over gRPC.
    Grpc,
    /// HTTP/JSON (`POST {endpoint}/{action}/{phase}`).
    Http,
}

/// Which store the coordinator keeps its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchStore {
    /// A fresh database on the PostgreSQL server of `--database-url`.
    Postgres,
    /// A fresh SQLite file in a temporary directory (WAL, synchronous=FULL,
    /// as `concord serve` opens it).
    Sqlite,
}

/// What to run.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "concord-bench",
    version,
    about = "Measure throughput and latency of Concord transactions"
)]
pub struct BenchArgs {
    /// Transaction kind.
    #[arg(long, value_enum, default_value = "tcc")]
    pub mode: BenchMode,
    /// How the coordinator calls the participants.
    #[arg(long, value_enum, default_value = "grpc")]
    pub participants: ParticipantProtocol,
    /// Transactions to run (after the warm-up).
    #[arg(long, default_value_t = 10_000)]
    pub transactions: u64,
    /// Concurrent initiators.
    #[arg(long, default_value_t = 50)]
    pub concurrency: u64,
    /// Transactions run first and not measured.
    #[arg(long, default_value_t = 1_000)]
    pub warmup: u64,
    /// Commit (or submit the saga) with wait=true: latency includes phase 2
    /// (every step, for sagas).
    #[arg(long)]
    pub wait: bool,
    /// Where the coordinator keeps its state.
    #[arg(long, value_enum, default_value = "postgres")]
    pub store: BenchStore,
    /// Database server (`--store postgres`); a fresh database
    /// `concord_bench_<pid>` is created on it and dropped afterwards.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Connections of the coordinator's durable pool (SQLite: its readers).
    #[arg(long, default_value_t = 32)]
    pub pool_size: u32,
}

/// Runs the benchmark: warm-up, measured run, then waits until phase 2 of
/// every transaction is done; the database is dropped at the end.
pub async fn run(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let state = State::create(args).await?;
    let stop = CancellationToken::new();
    let mut config = Config::with_database(state.url());
    config.listen = "127.0.0.1:0".parse()?;
    config.pool_size = args.pool_size;
    let server = Server::build(config).await?;
    let endpoint = format!("http://{}", server.local_addr());
    let engine = server.engine();
    let server_task = tokio::spawn(server.run(stop.clone().cancelled_owned()));

    let mut registry = RegistryClient::connect(endpoint.clone()).await?;
    participants::start_and_register(&mut registry, args.participants, &stop).await?;
    let load = load::Load::connect(&endpoint, args).await?;

    eprintln!("bench: warm-up, {} transactions", args.warmup);
    load.run(args.warmup, false).await;
    eprintln!(
        "bench: measuring {} {:?} transactions (2 branches, {:?} participants) at concurrency {} on {:?}",
        args.transactions, args.mode, args.participants, args.concurrency, args.store
    );
    let started = Instant::now();
    let measured = load.run(args.transactions, true).await;
    let elapsed = started.elapsed();
    // Phase 2 may still be running in the background: wait for it.
    loop {
        let open = state.unfinished().await?;
        if open == 0 || started.elapsed() > elapsed + Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = started.elapsed();
    drop(engine);
    stop.cancel();
    let _ = server_task.await;
    let report = BenchReport::new(measured, elapsed, drained);
    state.remove().await;
    Ok(report)
}

/// The fresh database of one run.
enum State {
    Postgres(String),
    /// The directory is removed with it.
    Sqlite(std::path::PathBuf),
}

impl State {
    async fn create(args: &BenchArgs) -> anyhow::Result<Self> {
        Ok(match args.store {
            BenchStore::Postgres => {
                let url = bench_database(&args.database_url);
                PgStore::ensure_database(&url).await?;
                Self::Postgres(url)
            }
            BenchStore::Sqlite => {
                let dir =
                    std::env::temp_dir().join(format!("concord_bench_{}", std::process::id()));
                std::fs::create_dir_all(&dir)?;
                Self::Sqlite(dir)
            }
        })
    }

    fn url(&self) -> String {
        match self {
            Self::Postgres(url) => url.clone(),
            Self::Sqlite(dir) => format!("sqlite://{}", dir.join(SQLITE_FILE).display()),
        }
    }

    /// Transactions not yet confirmed (or succeeded), read beside the
    /// coordinator.
    async fn unfinished(&self) -> anyhow::Result<i64> {
        const SQL: &str = "SELECT count(*) FROM global_transactions WHERE status NOT IN ('confirmed', 'succeeded')";
        Ok(match self {
            Self::Postgres(url) => {
                let pool = sqlx::PgPool::connect(url).await?;
                let n = sqlx::query_scalar(SQL).fetch_one(&pool).await?;
                pool.close().await;
                n
            }
            Self::Sqlite(dir) => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.join(SQLITE_FILE))
                    .read_only(true);
                let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
                let n = sqlx::query_scalar(SQL).fetch_one(&mut conn).await?;
                conn.close().await?;
                n
            }
        })
    }

    async fn remove(self) {
        match self {
            Self::Postgres(url) => drop_database(&url).await,
            Self::Sqlite(dir) => {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    eprintln!("bench: could not remove {}: {e}", dir.display());
                }
            }
        }
    }
}

/// `concord_bench_<pid>` on the server of `url`.
fn bench_database(url: &str) -> String {
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    format!("{base}/concord_bench_{}", std::process::id())
}

async fn drop_database(url: &str) {
    use sqlx::migrate::MigrateDatabase;
    if let Err(e) = sqlx::Postgres::force_drop_database(url).await {
        eprintln!("bench: could not drop {url}: {e}");
    }
}
