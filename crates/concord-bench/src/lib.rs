//! The Concord benchmark: runs TCC transactions with two branches (or
//! sagas or 2-phase messages with two steps) against zero-work
//! participants over loopback gRPC or HTTP/JSON, at a given concurrency,
//! and reports throughput and latency.
//! Everything (coordinator, participants, initiators) shares this process
//! and the machine with PostgreSQL, as on a small production box.
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
use concord::store::postgres::PgStore;
use concord_proto::v1::registry_client::RegistryClient;
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
    /// Database server; a fresh database `concord_bench_<pid>` is created on
    /// it and dropped afterwards.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Connections of the coordinator's durable pool.
    #[arg(long, default_value_t = 32)]
    pub pool_size: u32,
}

/// Runs the benchmark: warm-up, measured run, then waits until phase 2 of
/// every transaction is done; the database is dropped at the end.
pub async fn run(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let url = bench_database(&args.database_url);
    PgStore::ensure_database(&url).await?;
    let stop = CancellationToken::new();
    let mut config = Config::with_database(&url);
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
        "bench: measuring {} {:?} transactions (2 branches, {:?} participants) at concurrency {}",
        args.transactions, args.mode, args.participants, args.concurrency
    );
    let started = Instant::now();
    let measured = load.run(args.transactions, true).await;
    let elapsed = started.elapsed();
    // Phase 2 may still be running in the background: wait for it.
    let pool = sqlx::PgPool::connect(&url).await?;
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM global_transactions WHERE status NOT IN ('confirmed', 'succeeded')",
        )
        .fetch_one(&pool)
        .await?;
        if open == 0 || started.elapsed() > elapsed + Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = started.elapsed();
    pool.close().await;
    drop(engine);
    stop.cancel();
    let _ = server_task.await;
    let report = BenchReport::new(measured, elapsed, drained);
    drop_database(&url).await;
    Ok(report)
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
