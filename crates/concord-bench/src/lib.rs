//! The Concord benchmark: runs TCC transactions with two branches (or
//! sagas or 2-phase messages with two steps) against zero-work
//! participants over loopback gRPC or HTTP/JSON, at a given concurrency,
//! and reports throughput, latency and the CPU each part spent per
//! transaction.
//!
//! The coordinator under test is one of (see [`stage`]): in this process
//! (the default, as on a small production box where everything shares the
//! machine), `--spawn N` `concord serve` processes on a fresh database, or
//! `--coordinator URL` instances already running elsewhere. The
//! participants and the initiators always run here.
//!
//! [`run`] sets the stage, `load` is the closed-loop load of the
//! initiators, `cpu` reads what each process spent from `/proc`,
//! `pgstats` what PostgreSQL executed, `prefill` fills the history, and
//! [`BenchReport`] is what gets printed. Kept out of the coordinator so
//! that the server has no benchmark-only dependency.

mod cpu;
mod load;
mod participants;
mod pgstats;
mod prefill;
mod report;
mod sizes;
mod stage;

use std::time::{Duration, Instant};

use concord::config::DEFAULT_DATABASE_URL;
use concord_proto::v1::registry_client::RegistryClient;
use tokio_util::sync::CancellationToken;

pub use self::report::{BenchReport, CallLatency};
use self::stage::Stage;

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

impl BenchMode {
    /// The `mode` column of its transactions.
    fn stored(self) -> &'static str {
        match self {
            Self::Tcc => "tcc",
            Self::Saga => "saga",
            Self::Msg => "msg",
        }
    }
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
    about = "Measure throughput, latency and CPU per transaction of Concord"
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
    /// Where the coordinator keeps its state (in-process and --spawn).
    #[arg(long, value_enum, default_value = "postgres")]
    pub store: BenchStore,
    /// Database server (`--store postgres`); a fresh database
    /// `concord_bench_<pid>` is created on it and dropped afterwards. With
    /// `--coordinator`: the coordinators' own database, used as it is.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Connections of the coordinator's durable pool (SQLite: its readers).
    #[arg(long, default_value_t = 32)]
    pub pool_size: u32,
    /// Drive a coordinator already running at this gRPC URL instead of one
    /// in this process (repeat, or separate with commas, for several
    /// instances: client i talks to the (i mod n)-th). `--database-url`
    /// must name the database they use. Its CPU is read from /proc when it
    /// listens on this machine.
    #[arg(long = "coordinator", value_delimiter = ',', conflicts_with = "spawn")]
    pub coordinators: Vec<String>,
    /// Start this many `concord serve` processes on the fresh database and
    /// drive them (client i talks to the (i mod n)-th), so that the
    /// coordinator's CPU is its own.
    #[arg(long, default_value_t = 0)]
    pub spawn: u32,
    /// The `concord` binary `--spawn` starts (default: the one next to
    /// this binary).
    #[arg(long)]
    pub concord: Option<std::path::PathBuf>,
    /// An extra argument for every spawned `concord serve`, for example
    /// `--serve-arg=--retention=10s` (repeat for several).
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    pub serve_args: Vec<String>,
    /// Before the measured run (after the warm-up), copy a finished
    /// transaction of the warm-up this many times into the tables, with
    /// its branches and events (PostgreSQL only).
    #[arg(long, default_value_t = 0)]
    pub prefill: u64,
    /// Report what PostgreSQL executed per transaction during the measured
    /// run (pg_stat_statements; the cluster must preload it).
    #[arg(long)]
    pub pg_stats: bool,
    /// After the run, report the live data per finished transaction (every
    /// table keyed by gid rewritten with VACUUM FULL first; PostgreSQL only).
    #[arg(long)]
    pub sizes: bool,
}

/// Runs the benchmark: warm-up, measured run, then waits until phase 2 of
/// every transaction is done; a database or file the bench created is
/// removed at the end, and processes it started are stopped.
pub async fn run(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let stage = Stage::set_up(args).await?;
    let result = measure(args, &stage).await;
    stage.tear_down().await;
    result
}

async fn measure(args: &BenchArgs, stage: &Stage) -> anyhow::Result<BenchReport> {
    // Before any load: the coordinators' idle memory.
    let idle = stage.watch.memory();
    let stop = CancellationToken::new();
    let _stop_participants = stop.clone().drop_guard();
    let mut registry = RegistryClient::connect(stage.endpoints[0].clone()).await?;
    participants::start_and_register(&mut registry, args.participants, &stop).await?;
    let load = load::Load::connect(&stage.endpoints, args).await?;

    eprintln!("bench: warm-up, {} transactions", args.warmup);
    load.run(args.warmup, false).await;
    if args.prefill > 0 {
        let Some(pool) = stage.db.postgres() else {
            anyhow::bail!("--prefill works on PostgreSQL only");
        };
        prefill::prefill(pool, args.mode.stored(), args.prefill).await?;
    }
    // Transactions left open before the run (an external coordinator's
    // database may have some) are not waited for.
    let open_before = stage.db.open().await?;
    let pg_stats = match (args.pg_stats, stage.db.postgres()) {
        (false, _) => None,
        (true, None) => Some(Err("--pg-stats: not a PostgreSQL store".to_string())),
        (true, Some(pool)) => Some(pgstats::reset(pool).await),
    };
    eprintln!(
        "bench: measuring {} {:?} transactions (2 branches, {:?} participants) at concurrency {} on {}",
        args.transactions,
        args.mode,
        args.participants,
        args.concurrency,
        stage.describe()
    );
    let before = stage.watch.sample();
    let started = Instant::now();
    let measured = load.run(args.transactions, true).await;
    let elapsed = started.elapsed();
    // Phase 2 may still be running in the background: wait for it.
    loop {
        let open = stage.db.open().await?;
        if open <= open_before || started.elapsed() > elapsed + Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = started.elapsed();
    let after = stage.watch.sample();
    let done = measured.transactions.len();
    let cpu = cpu::CpuReport::between(&stage.watch, &before, &after, drained, done);
    let mut pg = match (pg_stats, stage.db.postgres()) {
        (Some(Ok(())), Some(pool)) => pgstats::report(pool, done, 10).await,
        (Some(Err(why)), _) => vec![why],
        _ => Vec::new(),
    };
    match (args.sizes, stage.db.postgres()) {
        (true, Some(pool)) => pg.extend(sizes::report(pool).await),
        (true, None) => pg.push("--sizes: not a PostgreSQL store".into()),
        (false, _) => {}
    }
    let memory = idle
        .into_iter()
        .zip(stage.watch.memory())
        .map(|(idle, end)| Some((idle?.0, end?.1)))
        .collect();
    Ok(BenchReport::new(
        measured, elapsed, drained, cpu, pg, memory,
    ))
}
