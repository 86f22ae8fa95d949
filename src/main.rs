//! The `concord` binary: `serve` runs the coordinator, `migrate` applies the
//! schema. Errors end here as one line on stderr and a non-zero exit.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use concord::config::{Config, DEFAULT_METRICS_LISTEN, ServeArgs};
use concord::server::{Server, open_store};
use concord::store::location::StoreLocation;
use concord::telemetry::{self, LogFormat};
use tokio_util::sync::CancellationToken;

// glibc's malloc showed up at about 5 % of the coordinator's CPU under load
// (many small, short-lived allocations from gRPC framing and batching);
// mimalloc serves them from per-thread free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "concord",
    version,
    about = "Distributed-transaction coordinator (TCC and Saga over gRPC, state in SQLite or PostgreSQL)"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        env = "CONCORD_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    /// Export the coordinator's spans over OTLP/HTTP to this collector
    /// (for example http://127.0.0.1:4318). Off by default.
    #[arg(long, env = "CONCORD_OTLP_ENDPOINT", global = true)]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator.
    Serve(ServeArgs),
    /// Apply database migrations and exit (PostgreSQL or the SQLite file,
    /// chosen as `serve` chooses).
    Migrate {
        /// postgres://... or sqlite://PATH; none: SQLite in --data-dir.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// Directory of the SQLite file when no database URL is given.
        #[arg(long, env = "CONCORD_DATA_DIR", default_value = ".")]
        data_dir: std::path::PathBuf,
    },
    /// Exit 0 if a local coordinator's /healthz (or /readyz) answers 200:
    /// the container HEALTHCHECK (the image has no curl).
    Healthcheck {
        /// Address of the coordinator's metrics and health listener.
        #[arg(long, env = "CONCORD_METRICS_LISTEN", default_value = DEFAULT_METRICS_LISTEN)]
        addr: std::net::SocketAddr,
        /// Ask /readyz (database reachable) instead of /healthz.
        #[arg(long)]
        ready: bool,
    },
    /// Operator commands: `tx`, `participants`, `stats` (see `concord::cli`).
    #[command(flatten)]
    Admin(Box<concord::cli::AdminCommand>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        // The CLI has its own exit codes and logs nothing.
        Command::Admin(admin) => return concord::cli::main(*admin),
        other => other,
    };
    let _otlp = match telemetry::init(cli.log_format, cli.otlp_endpoint.as_deref()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            let config = Config::resolve(&args)?;
            let server = Server::build(config).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(watch_signals(shutdown.clone()));
            server.run(shutdown.cancelled_owned()).await?;
            Ok(())
        }
        Command::Healthcheck { addr, ready } => {
            let path = if ready { "/readyz" } else { "/healthz" };
            concord::api::http::check(addr, path)
                .await
                .map_err(anyhow::Error::msg)
        }
        Command::Admin(_) => unreachable!("handled in main"),
        Command::Migrate {
            database_url,
            data_dir,
        } => {
            let location = StoreLocation::resolve(database_url.as_deref(), &data_dir)
                .map_err(|m| anyhow::anyhow!("invalid database_url: {m}"))?;
            let store = open_store(&location, 1, true).await?;
            store.close().await;
            eprintln!("migrations applied ({location})");
            Ok(())
        }
    }
}

/// First SIGTERM/SIGINT: graceful shutdown. Second: exit at once.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("error: cannot install signal handlers");
        std::process::exit(1);
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("signal received; shutting down (send again to exit at once)");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal; exiting now");
    std::process::exit(130);
}
