//! `concord bench`: runs TCC transactions with two branches against
//! in-process zero-work participants over loopback gRPC, at a given
//! concurrency, and reports throughput and latency. Everything (coordinator,
//! participants, clients) shares this process and the machine with
//! PostgreSQL, as on a small production box.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use concord_proto::participant::v1::participant_server::{Participant, ParticipantServer};
use concord_proto::participant::v1::{BranchRequest, BranchResponse};
use concord_proto::v1 as pb;
use concord_proto::v1::coordinator_client::CoordinatorClient;
use concord_proto::v1::registry_client::RegistryClient;
use hdrhistogram::Histogram;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::server::Server;
use crate::store::postgres::PgStore;

/// Which kind of transaction to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    /// Begin, Try on two participants, Commit.
    Tcc,
    /// SubmitSaga with two sequential steps.
    Saga,
}

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Transaction kind.
    #[arg(long, value_enum, default_value = "tcc")]
    pub mode: BenchMode,
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
    #[arg(long, env = "DATABASE_URL", default_value = crate::config::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Connections of the coordinator's durable pool.
    #[arg(long, default_value_t = 32)]
    pub pool_size: u32,
}

/// Results of one run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub transactions: u64,
    pub failed: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Time until every committed transaction was CONFIRMED.
    pub drained: Duration,
    /// Latency of each call an initiator makes, in call order: where the
    /// time of a transaction goes.
    pub calls: Vec<(&'static str, CallLatency)>,
}

/// Latency percentiles of one kind of call.
#[derive(Debug, Clone, Copy)]
pub struct CallLatency {
    pub p50: Duration,
    pub p99: Duration,
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// One histogram per call of a transaction, in call order.
struct Calls(Vec<(&'static str, Histogram<u64>)>);

impl Calls {
    fn new(mode: BenchMode) -> Self {
        let names: &[&'static str] = match mode {
            BenchMode::Tcc => &["Begin", "Try (1st)", "Try (2nd)", "Commit"],
            BenchMode::Saga => &["SubmitSaga"],
        };
        Self(names.iter().map(|&n| (n, histogram())).collect())
    }

    /// Times `call` as the `i`-th call of the transaction.
    async fn time<T>(&mut self, i: usize, call: impl Future<Output = T>) -> T {
        let t = Instant::now();
        let out = call.await;
        let _ = self.0[i].1.record(t.elapsed().as_micros() as u64);
        out
    }

    fn add(&mut self, other: Calls) {
        for ((_, mine), (_, theirs)) in self.0.iter_mut().zip(other.0) {
            mine.add(theirs).expect("same bounds");
        }
    }
}

impl BenchReport {
    pub fn per_second(&self) -> f64 {
        self.transactions as f64 / self.elapsed.as_secs_f64()
    }
}

struct ZeroWork;

#[tonic::async_trait]
impl Participant for ZeroWork {
    async fn r#try(&self, _r: Request<BranchRequest>) -> Result<Response<BranchResponse>, Status> {
        Ok(Response::new(BranchResponse::default()))
    }
    async fn confirm(
        &self,
        _r: Request<BranchRequest>,
    ) -> Result<Response<BranchResponse>, Status> {
        Ok(Response::new(BranchResponse::default()))
    }
    async fn cancel(&self, _r: Request<BranchRequest>) -> Result<Response<BranchResponse>, Status> {
        Ok(Response::new(BranchResponse::default()))
    }
    async fn execute(
        &self,
        _r: Request<BranchRequest>,
    ) -> Result<Response<BranchResponse>, Status> {
        Ok(Response::new(BranchResponse::default()))
    }
    async fn compensate(
        &self,
        _r: Request<BranchRequest>,
    ) -> Result<Response<BranchResponse>, Status> {
        Ok(Response::new(BranchResponse::default()))
    }
}

async fn serve_participant(stop: CancellationToken) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ParticipantServer::new(ZeroWork))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop.cancelled_owned(),
            ),
    );
    Ok(format!("http://{addr}"))
}

fn bench_database(url: &str) -> String {
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    format!("{base}/concord_bench_{}", std::process::id())
}

async fn one_saga(
    c: &mut CoordinatorClient<tonic::transport::Channel>,
    calls: &mut Calls,
    wait: bool,
) -> Result<(), Status> {
    let step = |participant: &str, action: &str, compensation: &str| pb::SagaStep {
        participant: participant.into(),
        action: action.into(),
        compensation: compensation.into(),
        payload: b"{\"amount\":1}".to_vec(),
        ..Default::default()
    };
    let submit = c.submit_saga(pb::SubmitSagaRequest {
        steps: vec![
            step("bench-a", "debit", "debit-undo"),
            step("bench-b", "credit", "credit-undo"),
        ],
        wait,
        ..Default::default()
    });
    calls.time(0, submit).await?;
    Ok(())
}

async fn one_tcc(
    c: &mut CoordinatorClient<tonic::transport::Channel>,
    calls: &mut Calls,
    wait: bool,
) -> Result<(), Status> {
    let gid = calls
        .time(0, c.begin(pb::BeginRequest::default()))
        .await?
        .into_inner()
        .gid;
    for (i, (participant, action)) in [("bench-a", "debit"), ("bench-b", "credit")]
        .into_iter()
        .enumerate()
    {
        let tried = c.r#try(pb::TryRequest {
            gid: gid.clone(),
            participant: participant.into(),
            action: action.into(),
            payload: b"{\"amount\":1}".to_vec(),
            ..Default::default()
        });
        calls.time(1 + i, tried).await?;
    }
    calls
        .time(3, c.commit(pb::CommitRequest { gid, wait }))
        .await?;
    Ok(())
}

/// Runs the benchmark and prints the report.
pub async fn run(args: BenchArgs) -> anyhow::Result<BenchReport> {
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
    for (name, action) in [("bench-a", "debit"), ("bench-b", "credit")] {
        let url = serve_participant(stop.clone()).await?;
        registry
            .register_participant(pb::RegisterParticipantRequest {
                name: name.into(),
                endpoint: url,
                actions: vec![
                    pb::Action {
                        name: action.into(),
                    },
                    pb::Action {
                        name: format!("{action}-undo"),
                    },
                ],
            })
            .await?;
    }

    // One HTTP/2 connection per 10 clients, as initiators of several
    // service instances would have.
    let mut channels = Vec::new();
    for _ in 0..args.concurrency.div_ceil(10).max(1) {
        channels.push(
            tonic::transport::Endpoint::from_shared(endpoint.clone())?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }

    let run_phase = |total: u64, record: bool| {
        let channels = channels.clone();
        let wait = args.wait;
        let mode = args.mode;
        let concurrency = args.concurrency;
        async move {
            let next = Arc::new(AtomicU64::new(0));
            let failed = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for i in 0..concurrency {
                let mut client =
                    CoordinatorClient::new(channels[i as usize % channels.len()].clone());
                let next = Arc::clone(&next);
                let failed = Arc::clone(&failed);
                tasks.push(tokio::spawn(async move {
                    let mut h = histogram();
                    let mut calls = Calls::new(mode);
                    while next.fetch_add(1, Ordering::Relaxed) < total {
                        let t = Instant::now();
                        let result = match mode {
                            BenchMode::Tcc => one_tcc(&mut client, &mut calls, wait).await,
                            BenchMode::Saga => one_saga(&mut client, &mut calls, wait).await,
                        };
                        match result {
                            Ok(()) if record => {
                                let _ = h.record(t.elapsed().as_micros() as u64);
                            }
                            Ok(()) => {}
                            Err(e) => {
                                if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                                    eprintln!(
                                        "bench: transaction failed: {} {}",
                                        e.code(),
                                        e.message()
                                    );
                                }
                            }
                        }
                    }
                    (h, calls)
                }));
            }
            let mut all = histogram();
            let mut all_calls = Calls::new(mode);
            for t in tasks {
                if let Ok((h, calls)) = t.await {
                    all.add(h).expect("same bounds");
                    all_calls.add(calls);
                }
            }
            (all, all_calls, failed.load(Ordering::Relaxed))
        }
    };

    eprintln!("bench: warm-up, {} transactions", args.warmup);
    run_phase(args.warmup, false).await;
    eprintln!(
        "bench: measuring {} {:?} transactions (2 branches) at concurrency {}",
        args.transactions, args.mode, args.concurrency
    );
    let started = Instant::now();
    let (hist, calls, failed) = run_phase(args.transactions, true).await;
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
    let q = |p: f64| Duration::from_micros(hist.value_at_quantile(p));
    let report = BenchReport {
        transactions: hist.len(),
        failed,
        elapsed,
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        max: Duration::from_micros(hist.max()),
        drained,
        calls: calls
            .0
            .iter()
            .map(|(name, h)| {
                let at = |p: f64| Duration::from_micros(h.value_at_quantile(p));
                (
                    *name,
                    CallLatency {
                        p50: at(0.5),
                        p99: at(0.99),
                    },
                )
            })
            .collect(),
    };
    drop_database(&url).await;
    Ok(report)
}

async fn drop_database(url: &str) {
    use sqlx::migrate::MigrateDatabase;
    if let Err(e) = sqlx::Postgres::force_drop_database(url).await {
        eprintln!("bench: could not drop {url}: {e}");
    }
}

/// Prints a report as the lines quoted in BENCHMARKS.md.
pub fn print(args: &BenchArgs, r: &BenchReport) {
    let what = match args.mode {
        BenchMode::Tcc => "tcc, 2 branches",
        BenchMode::Saga => "saga, 2 sequential steps",
    };
    println!(
        "mode               {what}, zero-work participants, wait={}",
        args.wait
    );
    println!("concurrency        {}", args.concurrency);
    println!(
        "transactions       {} ok, {} failed",
        r.transactions, r.failed
    );
    println!("elapsed            {:.2} s", r.elapsed.as_secs_f64());
    println!("throughput         {:.0} transactions/s", r.per_second());
    println!(
        "latency            p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r.p50.as_secs_f64() * 1e3,
        r.p90.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3,
        r.max.as_secs_f64() * 1e3
    );
    println!(
        "all finished in    {:.2} s ({:.0} transactions/s end to end)",
        r.drained.as_secs_f64(),
        r.transactions as f64 / r.drained.as_secs_f64()
    );
    let calls: Vec<String> = r
        .calls
        .iter()
        .map(|(name, l)| {
            format!(
                "{name} {:.1}/{:.1}",
                l.p50.as_secs_f64() * 1e3,
                l.p99.as_secs_f64() * 1e3
            )
        })
        .collect();
    println!("per call p50/p99   {} ms", calls.join(", "));
}
