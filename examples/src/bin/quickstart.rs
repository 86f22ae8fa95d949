//! README's participant and initiator in one process: serves `shop`
//! (schema `quickstart` of the examples' database), registers it with a
//! running coordinator, runs the seven transactions and prints what
//! happened. Logs go to stderr.
//!
//! ```text
//! cargo run -p concord-examples --bin quickstart -- \
//!     --coordinator http://127.0.0.1:50051 \
//!     --database-url postgres://postgres@127.0.0.1:5432/concord_examples
//! ```

use anyhow::Context;
use clap::Parser;
use concord_examples::db::{ensure_database, schema_pool_from_url};
use concord_examples::quickstart::{self, initiator, participant};
use concord_sdk::ParticipantServer;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "Runs the README's participant and initiator against a coordinator")]
struct Args {
    /// The coordinator's gRPC URL.
    #[arg(long, env = "CONCORD_URL", default_value = "http://127.0.0.1:50051")]
    coordinator: String,
    /// Database of the participant (created if missing; schema `quickstart`).
    #[arg(
        long,
        env = "EXAMPLES_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/concord_examples"
    )]
    database_url: String,
    /// Where `shop` listens; advertised to the coordinator as is.
    #[arg(long, default_value = "127.0.0.1:50071")]
    listen: std::net::SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    ensure_database(&args.database_url).await?;
    let pool = schema_pool_from_url(&args.database_url, "quickstart", 4).await?;
    quickstart::setup(&pool).await?;

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let stop = CancellationToken::new();
    let service = participant::service(pool.clone())
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let mut server = ParticipantServer::new(service);
    if let Some(t) = concord_examples::host::token() {
        server = server.token(&t);
    }
    let running = server
        .register_with(&args.coordinator)
        .start(listener, stop.clone().cancelled_owned())
        .await
        .context("cannot start the participant")?;

    let coordinator = concord_examples::host::coordinator(&args.coordinator).await?;
    for line in initiator::run(&coordinator).await? {
        println!("{line}");
    }
    let (available, held, balance) = quickstart::state(&pool).await?;
    println!("tea: {available} available, {held} held; alice: {balance}");
    stop.cancel();
    running.wait().await?;
    Ok(())
}
