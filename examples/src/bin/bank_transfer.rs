//! Bank transfer over TCC, in one process: two account services (`bank-a`
//! and `bank-b`, each in its own schema) registered with a running
//! coordinator, and an initiator running transfers between random accounts.
//! Prints what happened on stdout; logs go to stderr.
//!
//! ```text
//! cargo run -p concord-examples --bin bank_transfer -- \
//!     --coordinator http://127.0.0.1:50051 \
//!     --database-url postgres://postgres@127.0.0.1:5432/concord_examples
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use concord_examples::bank::{Bank, TransferOptions, random_transfers, run_transfers};
use concord_examples::db::{ensure_database, schema_pool_from_url};
use concord_examples::faults::Faults;
use concord_examples::host::host;

#[derive(Parser)]
#[command(about = "Transfers money between two banks through Concord (TCC)")]
struct Args {
    /// The coordinator's gRPC URL.
    #[arg(long, env = "CONCORD_URL", default_value = "http://127.0.0.1:50051")]
    coordinator: String,
    /// Database of the two banks (created if missing; one schema per bank).
    #[arg(
        long,
        env = "EXAMPLES_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/concord_examples"
    )]
    database_url: String,
    /// Address the bank services listen on; the coordinator must reach it.
    #[arg(long, default_value = "127.0.0.1")]
    listen_host: IpAddr,
    /// Ports of bank-a and bank-b (0: any free port). Fixed by default so
    /// that runs do not pile up dead endpoints in the coordinator's registry.
    #[arg(long, num_args = 2, default_values_t = [50061, 50062])]
    ports: Vec<u16>,
    /// How many transfers to run.
    #[arg(long, default_value_t = 200)]
    transfers: usize,
    /// How many transfers run at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Accounts per bank.
    #[arg(long, default_value_t = 10)]
    accounts: i64,
    /// Balance of each new account.
    #[arg(long, default_value_t = 1_000)]
    initial_balance: i64,
    /// Largest transfer.
    #[arg(long, default_value_t = 300)]
    max_amount: i64,
    /// Fraction of participant calls that suffer an injected fault (lost
    /// request or reply, late reply, duplicate, redelivery).
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Late replies arrive this many milliseconds late; keep it above the
    /// coordinator's call timeout.
    #[arg(long, default_value_t = 6_000)]
    late_ms: u64,
    /// Seconds each transaction may stay open before the coordinator rolls
    /// it back.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,concord_sdk=warn".into()),
        )
        .init();
    let args = Args::parse();

    ensure_database(&args.database_url)
        .await
        .context("cannot create the database")?;
    let names = ["bank-a", "bank-b"];
    let mut banks = Vec::new();
    for name in names {
        let schema = name.replace('-', "_");
        let pool = schema_pool_from_url(&args.database_url, &schema, 8)
            .await
            .with_context(|| format!("cannot open schema {schema}"))?;
        let bank = Bank::open(name, pool).await?;
        bank.seed(args.accounts, args.initial_balance).await?;
        banks.push(bank);
    }
    let before = total(&banks).await?;

    let faults = (args.fault_rate > 0.0)
        .then(|| Faults::mixed(args.fault_rate, Duration::from_millis(args.late_ms)));
    let mut hosted = Vec::new();
    for (bank, port) in banks.iter().zip(&args.ports) {
        let listen = SocketAddr::new(args.listen_host, *port);
        hosted.push(host(bank.service()?, listen, &args.coordinator, faults.clone()).await?);
    }

    let coordinator = concord_examples::host::coordinator(&args.coordinator)
        .await
        .context("cannot reach the coordinator")?;
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let transfers = random_transfers(
        &format!("transfer-{run_id}"),
        args.transfers,
        &names,
        args.accounts,
        args.max_amount,
    );
    let opts = TransferOptions {
        timeout: Duration::from_secs(args.timeout_secs),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let summary = run_transfers(&coordinator, transfers, args.concurrency, &opts).await;
    let elapsed = started.elapsed();

    // Unknown outcomes are settled by the coordinator in the background:
    // wait until no money is frozen any more.
    let settle_until = std::time::Instant::now() + opts.timeout + Duration::from_secs(30);
    while frozen(&banks).await? > 0 && std::time::Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    println!(
        "{} transfers in {:.1}s: {} committed, {} rolled back (rejected), {} decided by the coordinator",
        args.transfers,
        elapsed.as_secs_f64(),
        summary.committed,
        summary.rejected,
        summary.unknown,
    );
    for h in &hosted {
        if let Some(f) = &h.faults {
            println!("faults injected at {}: {}", h.name, f.report());
        }
    }
    for bank in &banks {
        let accounts = bank.accounts().await?;
        let line: Vec<String> = accounts
            .iter()
            .map(|a| match a.frozen {
                0 => format!("{}={}", a.id, a.balance),
                f => format!("{}={} ({f} frozen)", a.id, a.balance),
            })
            .collect();
        println!("{}: {}", bank.name(), line.join(" "));
    }
    let after = total(&banks).await?;
    let still_frozen = frozen(&banks).await?;
    println!("total before {before}, after {after}, frozen {still_frozen}");
    for h in hosted {
        h.stop().await;
    }
    if before != after || still_frozen != 0 {
        anyhow::bail!("money was not conserved");
    }
    println!("money conserved");
    Ok(())
}

async fn total(banks: &[Bank]) -> anyhow::Result<i64> {
    let mut sum = 0;
    for b in banks {
        sum += b.accounts().await?.iter().map(|a| a.balance).sum::<i64>();
    }
    Ok(sum)
}

async fn frozen(banks: &[Bank]) -> anyhow::Result<i64> {
    let mut sum = 0;
    for b in banks {
        sum += b.accounts().await?.iter().map(|a| a.frozen).sum::<i64>();
    }
    Ok(sum)
}
