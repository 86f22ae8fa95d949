//! Where the coordinator under test runs and keeps its state: in this
//! process on a fresh database (the default), `--spawn N` `concord serve`
//! processes on a fresh database, or `--coordinator URL` instances already
//! running on their own database. Knows which processes to watch for CPU,
//! and removes what it created.

use std::path::PathBuf;
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use concord::config::Config;
use concord::server::Server;
use concord::store::location::SQLITE_FILE;
use concord::store::postgres::PgStore;
use concord_proto::v1::registry_client::RegistryClient;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{ConnectOptions, PgPool, SqlitePool};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cpu::{self, Watch};
use crate::{BenchArgs, BenchStore};

/// A connection to the coordinators' database, beside them.
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Open (not finished, not resolved) transactions: the partial index
/// `global_transactions_open` serves it on both stores.
const OPEN: &str =
    "SELECT count(*) FROM global_transactions WHERE finished_at IS NULL AND resolved_at IS NULL";

impl Db {
    pub async fn open(&self) -> anyhow::Result<i64> {
        Ok(match self {
            Self::Postgres(p) => sqlx::query_scalar(OPEN).fetch_one(p).await?,
            Self::Sqlite(p) => sqlx::query_scalar(OPEN).fetch_one(p).await?,
        })
    }

    pub fn postgres(&self) -> Option<&PgPool> {
        match self {
            Self::Postgres(p) => Some(p),
            Self::Sqlite(_) => None,
        }
    }
}

/// What the bench created and must remove.
enum Fresh {
    Postgres(String),
    /// The directory is removed with it.
    Sqlite(PathBuf),
    None,
}

pub struct Stage {
    /// The coordinators' gRPC URLs.
    pub endpoints: Vec<String>,
    pub watch: Watch,
    pub db: Db,
    fresh: Fresh,
    in_process: Option<(CancellationToken, JoinHandle<()>)>,
    children: Vec<Child>,
}

impl Stage {
    pub async fn set_up(args: &BenchArgs) -> anyhow::Result<Self> {
        if !args.coordinators.is_empty() {
            return Self::external(args).await;
        }
        let (fresh, url) = match args.store {
            BenchStore::Postgres => {
                let url = bench_database(&args.database_url);
                PgStore::ensure_database(&url).await?;
                (Fresh::Postgres(url.clone()), url)
            }
            BenchStore::Sqlite => {
                let dir =
                    std::env::temp_dir().join(format!("concord_bench_{}", std::process::id()));
                std::fs::create_dir_all(&dir)?;
                let url = format!("sqlite://{}", dir.join(SQLITE_FILE).display());
                (Fresh::Sqlite(dir), url)
            }
        };
        let mut stage = Self {
            endpoints: Vec::new(),
            watch: Watch {
                coordinators: Vec::new(),
                postmaster: None,
                coordinator_in_process: args.spawn == 0,
                sqlite: args.store == BenchStore::Sqlite,
            },
            db: Db::Postgres(PgPoolOptions::new().connect_lazy(&args.database_url)?),
            fresh,
            in_process: None,
            children: Vec::new(),
        };
        // Set up step by step so that a failure still tears down what was made.
        if let Err(e) = stage.start(args, &url).await {
            stage.tear_down().await;
            return Err(e);
        }
        Ok(stage)
    }

    async fn start(&mut self, args: &BenchArgs, url: &str) -> anyhow::Result<()> {
        if args.spawn == 0 {
            let stop = CancellationToken::new();
            let mut config = Config::with_database(url.to_string());
            config.listen = "127.0.0.1:0".parse()?;
            config.pool_size = args.pool_size;
            let server = Server::build(config).await?;
            self.endpoints
                .push(format!("http://{}", server.local_addr()));
            let task = tokio::spawn({
                let stop = stop.clone();
                async move {
                    let _ = server.run(stop.cancelled_owned()).await;
                }
            });
            self.in_process = Some((stop, task));
        } else {
            let concord = match &args.concord {
                Some(path) => path.clone(),
                None => std::env::current_exe()?.with_file_name("concord"),
            };
            let status = Command::new(&concord)
                .args(["migrate", "--database-url", url])
                .stdout(Stdio::null())
                .status()
                .await
                .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", concord.display()))?;
            anyhow::ensure!(status.success(), "concord migrate failed: {status}");
            for k in 0..args.spawn {
                let port = std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port();
                let log = std::env::temp_dir().join(format!(
                    "concord_bench_{}_serve_{k}.log",
                    std::process::id()
                ));
                let child = Command::new(&concord)
                    .arg("serve")
                    .args(["--listen", &format!("127.0.0.1:{port}")])
                    .args(["--database-url", url])
                    .args(["--pool-size", &args.pool_size.to_string()])
                    .args([
                        "--metrics-listen",
                        "off",
                        "--dtm-listen",
                        "off",
                        "--no-migrate",
                        "true",
                    ])
                    .args(&args.serve_args)
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log)?)
                    .kill_on_drop(true)
                    .spawn()?;
                self.watch.coordinators.push(child.id());
                self.children.push(child);
                let endpoint = format!("http://127.0.0.1:{port}");
                wait_ready(&endpoint, self.children.last_mut().expect("pushed"), &log).await?;
                self.endpoints.push(endpoint);
            }
        }
        self.db = connect(url).await?;
        self.watch.postmaster = postmaster_of(url);
        Ok(())
    }

    async fn external(args: &BenchArgs) -> anyhow::Result<Self> {
        let coordinators = args
            .coordinators
            .iter()
            .map(|url| local_port(url).and_then(cpu::listener_pid))
            .collect();
        Ok(Self {
            endpoints: args.coordinators.clone(),
            watch: Watch {
                coordinators,
                postmaster: postmaster_of(&args.database_url),
                coordinator_in_process: false,
                sqlite: args.database_url.starts_with("sqlite:"),
            },
            db: connect(&args.database_url).await?,
            fresh: Fresh::None,
            in_process: None,
            children: Vec::new(),
        })
    }

    pub fn describe(&self) -> String {
        let store = match &self.db {
            Db::Postgres(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        };
        if self.in_process.is_some() {
            format!("{store}, coordinator in this process")
        } else if !self.children.is_empty() {
            format!("{store}, {} spawned concord serve", self.children.len())
        } else {
            format!(
                "{store}, external coordinators {}",
                self.endpoints.join(" ")
            )
        }
    }

    pub async fn tear_down(mut self) {
        if let Some((stop, task)) = self.in_process.take() {
            stop.cancel();
            let _ = task.await;
        }
        for child in &mut self.children {
            if let Some(pid) = child.id() {
                // SAFETY: a signal to a child this process started and
                // has not yet waited for, so the pid is still its own.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
        }
        for child in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(15), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        match &self.db {
            Db::Postgres(p) => p.close().await,
            Db::Sqlite(p) => p.close().await,
        }
        match &self.fresh {
            Fresh::Postgres(url) => drop_database(url).await,
            Fresh::Sqlite(dir) => {
                if let Err(e) = std::fs::remove_dir_all(dir) {
                    eprintln!("bench: could not remove {}: {e}", dir.display());
                }
            }
            Fresh::None => {}
        }
    }
}

/// Waits until a spawned coordinator answers, or fails with its log.
async fn wait_ready(
    endpoint: &str,
    child: &mut Child,
    log: &std::path::Path,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if RegistryClient::connect(endpoint.to_string()).await.is_ok() {
            return Ok(());
        }
        let log_text = || std::fs::read_to_string(log).unwrap_or_default();
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("concord serve exited ({status}):\n{}", log_text());
        }
        if started.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("concord serve did not answer in 30 s:\n{}", log_text());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect(url: &str) -> anyhow::Result<Db> {
    Ok(if let Some(path) = url.strip_prefix("sqlite://") {
        let options = SqliteConnectOptions::new().filename(path).read_only(true);
        Db::Sqlite(
            SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?,
        )
    } else {
        // The prefill's statements run for seconds by design: no slow
        // statement warnings for them.
        let options = PgConnectOptions::from_str(url)?.disable_statement_logging();
        Db::Postgres(
            PgPoolOptions::new()
                .max_connections(2)
                .connect_with(options)
                .await?,
        )
    })
}

/// The port of a URL whose host is this machine.
fn local_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    let local = matches!(
        host,
        "127.0.0.1" | "localhost" | "[::1]" | "0.0.0.0" | "[::]"
    ) || host.starts_with("127.");
    local.then(|| port.parse().ok()).flatten()
}

/// The postmaster of the PostgreSQL server at `url`, when it listens on
/// this machine.
fn postmaster_of(url: &str) -> Option<u32> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return None;
    }
    let options = PgConnectOptions::from_str(url).ok()?;
    let host = options.get_host();
    let local =
        host.starts_with('/') || matches!(host, "localhost" | "::1") || host.starts_with("127.");
    if !local {
        return None;
    }
    cpu::listener_pid(options.get_port())
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
