//! `concord-bench`: see the library's documentation and BENCHMARKS.md.

use std::process::ExitCode;

use clap::Parser;
use concord::telemetry::{self, LogFormat};
use concord_bench::BenchArgs;

// As in `concord serve`: the coordinator under test runs in this process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = BenchArgs::parse();
    // The coordinator's warnings show up as they would under `concord serve`.
    let _otlp = match telemetry::init(LogFormat::Text, None) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match concord_bench::run(&args).await {
        Ok(report) => {
            report.print(&args);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
