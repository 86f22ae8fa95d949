//! One chaos run: sets the stage (cluster, coordinators, participants),
//! runs the transfers while the chaos loop kills, restarts and cuts off,
//! lets the coordinators settle what is left, then hands over to
//! [`verdict`](crate::verdict) for the checks and the report.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concord_examples::bank::{Bank, TransferOptions, random_transfers, run_transfers};
use concord_examples::db::schema_pool_from_url;
use concord_examples::faults::{Fault, Faults, FaultyParticipant};
use concord_sdk::proto::participant::v1::participant_server::ParticipantServer;
use concord_sdk::proto::v1::registry_client::RegistryClient;
use concord_sdk::proto::v1::{Action, RegisterParticipantRequest};
use concord_sdk::{Coordinator, ParticipantService};
use concord_testdb::{Cluster, Durability, Reaper, StopMode};
use rand::Rng;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::fleet::{Fleet, Settings};
use crate::recorder::{Calls, Recorder, SlowCalls};
use crate::verdict::Takeover;
use crate::verdict::{self, Chaos, Outcome};
use concord_testdb::Proxy;

const BANKS: [&str; 2] = ["bank-a", "bank-b"];
const INSTANCES: usize = 3;
/// How long the coordinators get to finish what the initiators left.
const SETTLE_WITHIN: Duration = Duration::from_secs(90);

/// The size and timing of a run.
pub struct Params {
    pub transfers: usize,
    pub concurrency_per_instance: usize,
    pub accounts: i64,
    pub balance: i64,
    pub max_amount: i64,
    pub lease: Duration,
    pub call_timeout: Duration,
    pub slow_rate: f64,
    pub slow_by: Duration,
    pub kill_every: (Duration, Duration),
}

/// The participants' fault injection: about a fifth of the calls fail,
/// lose their reply, answer past the deadline or arrive twice.
fn faults(call_timeout: Duration) -> Faults {
    let mut f = Faults::mixed(0.0, call_timeout + Duration::from_secs(1));
    f.rates[Fault::Unavailable as usize] = 0.05;
    f.rates[Fault::LostReply as usize] = 0.04;
    f.rates[Fault::LateReply as usize] = 0.02;
    f.rates[Fault::Duplicate as usize] = 0.04;
    f.rates[Fault::Redeliver as usize] = 0.04;
    f.redeliver_within = Duration::from_secs(2);
    f
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// Runs the whole scenario and panics with the verdict if a check fails.
pub async fn run(p: Params) {
    let began = Instant::now();
    let bindir = concord_testdb::find_binaries().expect(
        "the chaos run starts and restarts its own PostgreSQL and needs the server binaries \
         (initdb, pg_ctl) on the PATH or under /usr/lib/postgresql/*/bin: apt-get install postgresql",
    );
    let dir = std::env::temp_dir().join(format!("concord-chaos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (cluster, reaper) = {
        let dir = dir.clone();
        blocking(move || {
            let mut cluster = Cluster::new(&dir, &bindir, Durability::Default)?;
            // Before initdb, so that a failed or interrupted start is
            // cleaned up too.
            let reaper = Reaper::spawn(std::process::id(), &dir, &cluster.stop_command())?;
            cluster.init()?;
            cluster.start()?;
            Ok::<_, concord_testdb::Error>((cluster, reaper))
        })
        .await
        .expect("the chaos cluster starts")
    };
    let port = cluster.port();
    let coordinator_db = cluster.url("concord");
    let banks_db = cluster.url("banks");
    let cluster = Arc::new(Mutex::new(cluster));
    create_databases(&cluster_url(port, "postgres"), &["concord", "banks"]).await;
    migrate(&coordinator_db).await;

    // Instance 0 reaches the database through a proxy the run can sever.
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("proxy starts");
    let proxied_db = format!("postgres://postgres@{}/concord", proxy.addr);
    let slots = (0..INSTANCES)
        .map(|i| {
            let port = concord_testdb::free_port().expect("a free port");
            let url = if i == 0 {
                proxied_db.clone()
            } else {
                coordinator_db.clone()
            };
            (port, url)
        })
        .collect();
    let settings = Settings {
        lease: p.lease,
        call_timeout: p.call_timeout,
    };
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_concord"));
    let mut fleet = Fleet::new(&binary, settings, reaper, &dir, slots);
    for i in 0..INSTANCES {
        fleet.start(i).await.expect("coordinator starts");
    }
    let monitor = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(&coordinator_db)
        .expect("monitor pool");

    let mut banks = Vec::new();
    for name in BANKS {
        let pool = schema_pool_from_url(&banks_db, &name.replace('-', "_"), 8)
            .await
            .expect("bank pool");
        let bank = Bank::open(name, pool).await.expect("bank opens");
        bank.seed(p.accounts, p.balance)
            .await
            .expect("accounts seeded");
        banks.push(bank);
    }
    let calls = Calls::new(began);
    let slow = SlowCalls {
        rate: p.slow_rate,
        delay: p.slow_by,
    };
    let stop_participants = CancellationToken::new();
    let mut faulty = Vec::new();
    for bank in &banks {
        let service = bank.service().expect("bank service");
        let f = FaultyParticipant::new(service, faults(p.call_timeout));
        let recorder = Recorder::new(f.clone(), calls.clone(), slow, p.call_timeout);
        let endpoint = serve(recorder, stop_participants.clone()).await;
        register(&fleet.url(0), bank.name(), &endpoint).await;
        faulty.push(f);
    }

    // Initiators: each instance gets every third transfer.
    let transfers = random_transfers("chaos", p.transfers, &BANKS, p.accounts, p.max_amount);
    let amounts = transfers
        .iter()
        .map(|t| (t.gid.clone(), t.amount))
        .collect();
    let opts = TransferOptions {
        timeout: Duration::from_secs(20),
        wait: false,
        call_timeout: None,
    };
    let mut groups: Vec<Vec<_>> = vec![Vec::new(); INSTANCES];
    for (i, t) in transfers.into_iter().enumerate() {
        groups[i % INSTANCES].push(t);
    }
    let mut initiators = tokio::task::JoinSet::new();
    for (i, group) in groups.into_iter().enumerate() {
        let coordinator = Coordinator::connect_lazy(fleet.url(i)).expect("coordinator url");
        let (opts, n) = (opts.clone(), p.concurrency_per_instance);
        initiators.spawn(async move { run_transfers(&coordinator, group, n, &opts).await });
    }
    let transfers_began = Instant::now();

    let done = CancellationToken::new();
    let chaos = tokio::spawn(chaos_loop(
        fleet,
        cluster.clone(),
        proxy,
        monitor.clone(),
        p.transfers,
        p.kill_every,
        p.lease,
        calls.clone(),
        done.clone(),
    ));
    // A run that hangs must still end (and say so) well inside CI's time.
    let transfers_within =
        Duration::from_secs(60) + Duration::from_millis(250) * p.transfers as u32;
    let mut summaries = Vec::new();
    let mut hung = false;
    loop {
        match tokio::time::timeout_at(
            (transfers_began + transfers_within).into(),
            initiators.join_next(),
        )
        .await
        {
            Ok(Some(summary)) => summaries.push(summary.expect("initiator task")),
            Ok(None) => break,
            Err(_) => {
                hung = true;
                initiators.abort_all();
                break;
            }
        }
    }
    let transfers_took = transfers_began.elapsed();
    done.cancel();
    let (mut fleet, mut chaos) = chaos.await.expect("chaos loop");
    if hung {
        chaos.errors.push(format!(
            "the initiators had not finished after {transfers_within:?}; the rest were abandoned"
        ));
    }

    // No more chaos: every instance runs, and they finish what is open.
    chaos.unexpected_exits += fleet.revive().await.unwrap_or(0);
    let settled = settle(&monitor).await;
    let in_flight_until = Instant::now() + p.call_timeout * 2;
    while calls.tally().in_flight > 0 && Instant::now() < in_flight_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for f in &faulty {
        f.drain().await;
    }
    let outcome = Outcome::gather(&monitor, &banks, amounts, summaries, &calls, &faulty).await;
    let logs = keep_logs(&fleet);

    stop_participants.cancel();
    fleet.stop_all().await;
    monitor.close().await;
    for bank in &banks {
        bank.pool().close().await;
    }
    {
        let cluster = cluster.clone();
        let _ = blocking(move || cluster.lock().unwrap().stop(StopMode::Fast)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);

    let verdict = verdict::judge(
        &p,
        &chaos,
        &outcome,
        settled,
        transfers_took,
        began.elapsed(),
    );
    if !verdict.passed() {
        eprintln!("chaos: coordinator logs kept in {}", logs.display());
    }
    verdict.assert();
}

fn cluster_url(port: u16, database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/{database}")
}

async fn create_databases(admin_url: &str, names: &[&str]) {
    let mut conn = PgConnection::connect(admin_url)
        .await
        .expect("connect to the chaos cluster");
    for name in names {
        // Plain lowercase names of ours.
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
    }
    let _ = conn.close().await;
}

/// Applies the coordinator's schema once, so that the three instances do
/// not race for it at start.
async fn migrate(database_url: &str) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["migrate", "--database-url", database_url])
        .output()
        .await
        .expect("concord migrate runs");
    assert!(
        out.status.success(),
        "concord migrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Serves a recorded participant on a loopback port; its endpoint URL.
async fn serve(
    recorder: Recorder<FaultyParticipant<ParticipantService>>,
    stop: CancellationToken,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(ParticipantServer::new(recorder))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop.cancelled_owned(),
            )
            .await;
        if let Err(e) = served {
            eprintln!("chaos: participant server failed: {e}");
        }
    });
    endpoint
}

/// Registers a bank's actions and endpoint (the registry is shared by the
/// instances through the database).
async fn register(coordinator_url: &str, name: &str, endpoint: &str) {
    let request = RegisterParticipantRequest {
        protocol: Default::default(),
        name: name.to_string(),
        endpoint: endpoint.to_string(),
        actions: [
            concord_examples::bank::TRANSFER_OUT,
            concord_examples::bank::TRANSFER_IN,
        ]
        .map(|a| Action {
            name: a.into(),
            ..Default::default()
        })
        .to_vec(),
    };
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let mut client = RegistryClient::connect(coordinator_url.to_string()).await?;
            client
                .register_participant(request.clone())
                .await
                .map_err(|e| e.into())
                .map(|_| ())
        };
        let result: Result<(), Box<dyn std::error::Error + Send + Sync>> = attempt.await;
        match result {
            Ok(()) => return,
            Err(e) if Instant::now() >= until => panic!("cannot register {name}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Kills, restarts and cuts off until `done`; returns the fleet and what
/// it did.
#[allow(clippy::too_many_arguments)]
async fn chaos_loop(
    mut fleet: Fleet,
    cluster: Arc<Mutex<Cluster>>,
    proxy: Proxy,
    monitor: PgPool,
    total: usize,
    kill_every: (Duration, Duration),
    lease: Duration,
    calls: Calls,
    done: CancellationToken,
) -> (Fleet, Chaos) {
    let mut chaos = Chaos::default();
    let mut takeovers = tokio::task::JoinSet::new();
    let next_kill_in = || rand::rng().random_range(kill_every.0..=kill_every.1);
    let mut next_kill = Instant::now() + next_kill_in();
    let mut begun = 0.0;
    // When the cut began and when it ends.
    let mut cut: Option<(Instant, Instant)> = None;
    while !done.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(n) = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM global_transactions")
            .fetch_one(&monitor)
            .await
        {
            begun = n as f64 / total as f64;
        }
        match fleet.revive().await {
            Ok(n) => chaos.unexpected_exits += n,
            Err(e) => chaos.errors.push(e),
        }
        if let Some((began, until)) = cut
            && Instant::now() >= until
        {
            proxy.restore();
            cut = None;
            chaos.cut_for = Some(began.elapsed());
        }
        // PostgreSQL restarts: a crash at a third of the run, a clean
        // restart at two thirds.
        let restart = match chaos.pg_restarts {
            0 if begun >= 0.3 => Some(StopMode::Immediate),
            1 if begun >= 0.7 => Some(StopMode::Fast),
            _ => None,
        };
        if let Some(mode) = restart {
            let down_from = Instant::now();
            let stopped = {
                let cluster = cluster.clone();
                blocking(move || cluster.lock().unwrap().stop(mode)).await
            };
            if let Err(e) = stopped {
                chaos.errors.push(format!("PostgreSQL stop: {e}"));
            }
            // While it is down, an instance answers at once and says why
            // (checked on the first restart, on an instance not cut off).
            if chaos.pg_restarts == 0 {
                let down = while_database_down(&fleet, fleet.len() - 1).await;
                chaos.db_down_checks.extend(down);
            } else {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let result = {
                let cluster = cluster.clone();
                blocking(move || cluster.lock().unwrap().start()).await
            };
            // Until it answers again.
            let answers_within = Instant::now() + Duration::from_secs(30);
            while sqlx::query("SELECT 1").execute(&monitor).await.is_err()
                && Instant::now() < answers_within
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            chaos.outages.push((down_from, Instant::now()));
            // And it serves again without a restart.
            if chaos.pg_restarts == 0
                && let Err(e) = serves_again(&fleet, fleet.len() - 1).await
            {
                chaos.db_down_checks.push(e);
            }
            match result {
                Ok(()) => chaos.pg_restarts += 1,
                Err(e) => {
                    chaos.errors.push(format!("PostgreSQL restart: {e}"));
                    chaos.pg_restarts += 1;
                }
            }
            continue;
        }
        // Instance 0 loses the database for longer than the lease, once,
        // halfway.
        if chaos.cut_for.is_none() && cut.is_none() && begun >= 0.5 {
            proxy.sever();
            let now = Instant::now();
            cut = Some((now, now + lease + Duration::from_secs(2)));
            continue;
        }
        if Instant::now() >= next_kill {
            // The instance cut off stays alive: its calls in flight are
            // the point of the cut.
            let first = usize::from(cut.is_some());
            let victim = rand::rng().random_range(first..fleet.len());
            let old_id = fleet.instance_id(victim);
            let now_before_kill = Instant::now();
            let owned = owned_in_phase_two(&monitor, &old_id).await;
            fleet.kill(victim).await;
            let killed_at = Instant::now();
            // Each transaction it held, with the deadline of its call still
            // at a participant, if one was.
            let owned: Vec<Owned> = owned
                .into_iter()
                .map(|(gid, lease_left)| Owned {
                    call_until: calls.in_flight_until(&gid),
                    calls: calls.in_flight_detail(&gid),
                    lease_until: lease_left.map(|ms| now_before_kill + Duration::from_millis(ms)),
                    gid,
                })
                .collect();
            chaos.kills += 1;
            let down = Duration::from_millis(rand::rng().random_range(200..800));
            tokio::time::sleep(down).await;
            if let Err(e) = fleet.start(victim).await {
                chaos.errors.push(e);
            }
            let monitor = monitor.clone();
            takeovers.spawn(async move { takeover(&monitor, &old_id, owned, killed_at).await });
            next_kill = Instant::now() + next_kill_in();
        }
    }
    if let Some((began, _)) = cut {
        proxy.restore();
        chaos.cut_for = Some(began.elapsed());
    }
    while let Some(t) = takeovers.join_next().await {
        if let Ok(t) = t {
            chaos.takeovers.extend(t);
        }
    }
    (fleet, chaos)
}

/// A transaction in phase 2 that a killed instance held.
struct Owned {
    gid: String,
    /// The deadline of its call still at a participant at the kill, if one
    /// was.
    call_until: Option<Instant>,
    /// Those calls, for the report.
    calls: String,
    /// When its lease ended by the database's clock, on the local one (read
    /// just before the kill).
    lease_until: Option<Instant>,
}

/// Transactions in phase 2 whose lease `owner` holds, with how many
/// milliseconds their lease has left by the database's clock (`None` when
/// it has already expired).
async fn owned_in_phase_two(monitor: &PgPool, owner: &str) -> Vec<(String, Option<u64>)> {
    let rows: Vec<(String, Option<f64>)> = sqlx::query_as(
        "SELECT gid, (extract(epoch FROM lease_until - clock_timestamp()) * 1000)::float8
           FROM global_transactions
          WHERE owner = $1 AND status IN ('confirming', 'cancelling')",
    )
    .bind(owner)
    .fetch_all(monitor)
    .await
    .unwrap_or_default();
    rows.into_iter()
        .map(|(gid, ms)| (gid, ms.filter(|ms| *ms > 0.0).map(|ms| ms as u64)))
        .collect()
}

/// What a client of instance `i` sees while PostgreSQL is stopped: a Begin
/// refused within a second with UNAVAILABLE saying the database is
/// unreachable, `/readyz` failing and `/healthz` answering. Returns what
/// did not hold.
async fn while_database_down(fleet: &Fleet, i: usize) -> Vec<String> {
    use concord_sdk::proto::v1::BeginRequest;
    use concord_sdk::proto::v1::coordinator_client::CoordinatorClient;
    let mut wrong = Vec::new();
    // The instance's probe notices within half a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    match CoordinatorClient::connect(fleet.url(i)).await {
        Ok(mut client) => {
            let mut request = tonic::Request::new(BeginRequest::default());
            request.set_timeout(Duration::from_secs(10));
            let asked = Instant::now();
            let answer = client.begin(request).await;
            let took = asked.elapsed();
            match answer {
                Err(s)
                    if s.code() == tonic::Code::Unavailable
                        && s.message().contains("database unreachable")
                        && took <= Duration::from_secs(1) => {}
                other => wrong.push(format!(
                    "Begin with the database down answered after {took:?}: {:?}",
                    other.map(|r| r.into_inner().gid)
                )),
            }
        }
        Err(e) => wrong.push(format!("cannot connect to instance {i}: {e}")),
    }
    let addr = fleet.http_addr(i);
    if concord::api::http::check(addr, "/readyz").await.is_ok() {
        wrong.push("/readyz answered ready with the database down".into());
    }
    if let Err(e) = concord::api::http::check(addr, "/healthz").await {
        wrong.push(format!("/healthz failed with the database down: {e}"));
    }
    wrong
}

/// Whether instance `i` accepts a Begin again within 15 s of PostgreSQL
/// answering, without having been restarted.
async fn serves_again(fleet: &Fleet, i: usize) -> Result<(), String> {
    use concord_sdk::proto::v1::GetTransactionRequest;
    use concord_sdk::proto::v1::coordinator_client::CoordinatorClient;
    let until = Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    while Instant::now() < until {
        if let Ok(mut client) = CoordinatorClient::connect(fleet.url(i)).await {
            // An unknown gid: NOT_FOUND is the database's answer.
            let ask = GetTransactionRequest {
                gid: "chaos-probe".into(),
                include_events: false,
            };
            match client.get_transaction(ask).await {
                Err(s) if s.code() == tonic::Code::NotFound => return Ok(()),
                Ok(_) => return Ok(()),
                Err(s) => last = s.message().to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "instance {i} did not serve again within 15 s of PostgreSQL's return: {last}"
    ))
}

/// Per transaction the killed `owner` held: how long after the kill
/// another instance held it (or it was final), when the call of it still
/// at a participant at the kill had its deadline, if one was, and when its
/// lease ended.
async fn takeover(
    monitor: &PgPool,
    owner: &str,
    owned: Vec<Owned>,
    killed_at: Instant,
) -> Vec<Takeover> {
    let since_kill = |at: Option<Instant>| at.map(|u| u.saturating_duration_since(killed_at));
    let taken = |o: &Owned, after: Duration| Takeover {
        gid: o.gid.clone(),
        killed_at,
        after,
        call_deadline: since_kill(o.call_until),
        lease_end: since_kill(o.lease_until),
        calls: o.calls.clone(),
    };
    let mut waiting = owned;
    let mut took = Vec::new();
    let until = killed_at + Duration::from_secs(120);
    while !waiting.is_empty() && Instant::now() < until {
        let gids: Vec<&str> = waiting.iter().map(|o| o.gid.as_str()).collect();
        let held: Result<Vec<String>, _> = sqlx::query_scalar(
            "SELECT gid FROM global_transactions
              WHERE gid = ANY($1) AND owner = $2 AND status NOT IN ('confirmed', 'cancelled')",
        )
        .bind(&gids)
        .bind(owner)
        .fetch_all(monitor)
        .await;
        if let Ok(held) = held {
            let now = killed_at.elapsed();
            waiting.retain(|o| {
                let still = held.contains(&o.gid);
                if !still {
                    took.push(taken(o, now));
                }
                still
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    took.extend(waiting.iter().map(|o| taken(o, until - killed_at)));
    took
}

/// Waits until every transaction is final or flagged; whether that
/// happened within [`SETTLE_WITHIN`].
async fn settle(monitor: &PgPool) -> bool {
    let until = Instant::now() + SETTLE_WITHIN;
    while Instant::now() < until {
        let open: Result<i64, _> = sqlx::query_scalar(
            "SELECT count(*) FROM global_transactions
              WHERE status NOT IN ('confirmed', 'cancelled') AND NOT needs_attention",
        )
        .fetch_one(monitor)
        .await;
        if open.is_ok_and(|n| n == 0) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Copies the coordinators' logs out of the run directory (which is
/// removed) to cargo's scratch directory for tests.
fn keep_logs(fleet: &Fleet) -> PathBuf {
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos-logs");
    let _ = std::fs::create_dir_all(&keep);
    for i in 0..fleet.len() {
        let log = fleet.log(i);
        if let Some(name) = log.file_name() {
            let _ = std::fs::copy(log, keep.join(name));
        }
    }
    keep
}
