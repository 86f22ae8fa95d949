//! Logging setup: human-readable on a terminal, JSON for log shippers.
//! Metrics ([`metrics`]), W3C trace context ([`trace`]) and the OTLP
//! export of spans ([`otlp`]) live below. Telemetry imports nothing from
//! the engine or the store: they call into it.

pub mod metrics;
pub mod otlp;
pub mod trace;

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber; `RUST_LOG` overrides the default level.
/// With `otlp_endpoint`, spans are also exported over OTLP/HTTP; keep the
/// returned guard alive until exit so the last spans are flushed.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<Option<otlp::Guard>, String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, Registry};

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,h2=warn,tower=warn,sqlx=warn,hyper=warn,reqwest=warn")
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
    };
    let exporting = otlp::start(otlp_endpoint)?;
    let (otel, guard) = match exporting {
        Some((provider, guard)) => (Some(otlp::layer(&provider).boxed()), Some(guard)),
        None => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .with(filter)
        .try_init();
    Ok(guard)
}
