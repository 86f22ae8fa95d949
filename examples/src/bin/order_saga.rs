//! Orders placed as sagas, in one process: `orders`, `inventory` and
//! `payment` services (each in its own schema) registered with a running
//! coordinator, and a few orders, some of which cannot be paid or served so
//! that the coordinator compensates them. Prints each outcome on stdout;
//! logs go to stderr.
//!
//! ```text
//! cargo run -p concord-examples --bin order_saga -- \
//!     --coordinator http://127.0.0.1:50051 \
//!     --database-url postgres://postgres@127.0.0.1:5432/concord_examples
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use concord_examples::db::{ensure_database, schema_pool_from_url};
use concord_examples::host::host;
use concord_examples::shop::{Order, Shop, place_order};
use rand::Rng;

#[derive(Parser)]
#[command(about = "Places orders as sagas through Concord")]
struct Args {
    /// The coordinator's gRPC URL.
    #[arg(long, env = "CONCORD_URL", default_value = "http://127.0.0.1:50051")]
    coordinator: String,
    /// Database of the three services (created if missing; one schema each).
    #[arg(
        long,
        env = "EXAMPLES_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/concord_examples"
    )]
    database_url: String,
    /// Address the services listen on; the coordinator must reach it.
    #[arg(long, default_value = "127.0.0.1")]
    listen_host: IpAddr,
    /// Ports of orders, inventory and payment (0: any free port).
    #[arg(long, num_args = 3, default_values_t = [50071, 50072, 50073])]
    ports: Vec<u16>,
    /// How many orders to place.
    #[arg(long, default_value_t = 12)]
    orders: usize,
}

/// Product, price, stock at start.
const CATALOG: [(&str, i64, i32); 3] = [("tea", 4, 20), ("coffee", 6, 10), ("cake", 3, 5)];
/// Customer, wallet at start: customer 3 can barely pay for anything.
const WALLETS: [(i64, i64); 3] = [(1, 100), (2, 60), (3, 5)];

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
    let mut pools = Vec::new();
    for schema in ["shop_orders", "shop_inventory", "shop_payment"] {
        pools.push(
            schema_pool_from_url(&args.database_url, schema, 4)
                .await
                .with_context(|| format!("cannot open schema {schema}"))?,
        );
    }
    let [orders, inventory, payment] = <[_; 3]>::try_from(pools).expect("three pools");
    let shop = Shop::open(orders, inventory, payment).await?;
    let stock: Vec<(&str, i32)> = CATALOG.iter().map(|(s, _, q)| (*s, *q)).collect();
    shop.seed(&stock, &WALLETS).await?;

    let mut hosted = Vec::new();
    for (service, port) in shop.services()?.into_iter().zip(&args.ports) {
        let listen = SocketAddr::new(args.listen_host, *port);
        hosted.push(host(service, listen, &args.coordinator, None).await?);
    }

    let coordinator = concord_examples::host::coordinator(&args.coordinator)
        .await
        .context("cannot reach the coordinator")?;
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let orders: Vec<Order> = (0..args.orders)
        .map(|i| {
            let mut rng = rand::rng();
            let (sku, price, _) = CATALOG[rng.random_range(0..CATALOG.len())];
            let qty = rng.random_range(1..=4);
            Order {
                id: format!("order-{run_id}-{i}"),
                customer: WALLETS[rng.random_range(0..WALLETS.len())].0,
                sku: sku.to_owned(),
                qty,
                amount: price * i64::from(qty),
            }
        })
        .collect();

    let (mut succeeded, mut compensated) = (0, 0);
    // All at once: the coordinator runs the sagas concurrently, and orders
    // compete for the same stock and wallets.
    let placed: Vec<_> = orders
        .iter()
        .map(|o| {
            let (coordinator, o) = (coordinator.clone(), o.clone());
            tokio::spawn(
                async move { place_order(&coordinator, &o, Duration::from_secs(60)).await },
            )
        })
        .collect();
    for (order, placed) in orders.iter().zip(placed) {
        let outcome = placed
            .await?
            .with_context(|| format!("order {}", order.id))?;
        if outcome.succeeded() {
            succeeded += 1;
        } else {
            compensated += 1;
        }
        println!(
            "{}: customer {} buys {} x{} for {} -> {:?}{}",
            order.id,
            order.customer,
            order.sku,
            order.qty,
            order.amount,
            outcome.status,
            outcome
                .reason
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
        );
    }
    println!("{succeeded} orders succeeded, {compensated} compensated");

    let state = shop.state().await?;
    let mine: Vec<String> = state
        .orders
        .iter()
        .filter(|(id, _)| id.starts_with(&format!("order-{run_id}-")))
        .map(|(id, status)| format!("{id}={status}"))
        .collect();
    println!("orders: {}", mine.join(" "));
    let stock: Vec<String> = state
        .stock
        .iter()
        .map(|(s, n)| format!("{s}={n}"))
        .collect();
    println!("stock: {}", stock.join(" "));
    let wallets: Vec<String> = state
        .wallets
        .iter()
        .map(|(c, b)| format!("{c}={b}"))
        .collect();
    println!("wallets: {}", wallets.join(" "));
    for h in hosted {
        h.stop().await;
    }
    Ok(())
}
