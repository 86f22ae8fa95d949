//! Test support for Concord: the PostgreSQL the tests run against.
//!
//! `cargo test --workspace` has to pass on a machine where nothing runs
//! yet. A test binary that needs a database puts
//! [`database_for_tests!()`](database_for_tests) at its root; before the
//! first test starts, the selection in [`select`] sets `DATABASE_URL` to a
//! server that answers (the exported one, the `.env` default, or a
//! throwaway cluster it starts), or stops the run with one message that
//! says how to get one. `#[sqlx::test]` then makes a fresh database per
//! test from there, as before, and drops it when the test passes.
//!
//! [`Cluster`] is also used on its own by the chaos run, which needs a
//! server it may stop and restart; [`Reaper`] removes what a test started
//! however the test process ends.

mod cluster;
mod docker;
mod proxy;
mod reaper;
pub mod select;

use std::path::{Path, PathBuf};

pub use cluster::{Cluster, Durability, PG_ROOT_ENV, StopMode, find_binaries, free_port};
pub use docker::IMAGE_ENV;
pub use proxy::Proxy;
pub use reaper::Reaper;

/// Why a cluster could not be made, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{tool} failed:\n{output}")]
    Tool { tool: String, output: String },
    #[error(
        "running as root, the PostgreSQL tools must run as the user postgres, which does not exist"
    )]
    NoPostgresUser,
}

impl Error {
    fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Selects the tests' PostgreSQL and exports it as `DATABASE_URL`, or ends
/// the process with the one message that says what is missing. Called by
/// [`database_for_tests!`] before `main`.
pub fn select_before_tests() {
    // Listing the tests (IDEs, nextest) needs no database.
    if listing_only() {
        return;
    }
    match select::select() {
        Ok(selected) => {
            // SAFETY: runs before `main`, when no other thread reads the
            // environment (the probe's runtime is gone).
            unsafe { std::env::set_var("DATABASE_URL", &selected.url) };
        }
        Err(e) => {
            eprintln!("\nerror: {e}\n");
            std::process::exit(1);
        }
    }
}

/// Whether the test binary was asked only to list its tests. Read from
/// `/proc`, since `std::env::args` may not be set up yet before `main`.
fn listing_only() -> bool {
    std::fs::read("/proc/self/cmdline")
        .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == b"--list"))
}

/// Runs [`select_before_tests`] when the test binary starts, before any
/// test, so that `#[sqlx::test]` (which reads `DATABASE_URL` itself) finds
/// a server. Put it once at the root of a test binary:
///
/// ```ignore
/// concord_testdb::database_for_tests!();
/// ```
///
/// It expands to a function in the binary's own `.init_array` (ELF) or
/// `__mod_init_func` (Mach-O) section, which the loader calls before
/// `main`; elsewhere it does nothing and `DATABASE_URL` must be set.
#[macro_export]
macro_rules! database_for_tests {
    () => {
        #[used]
        #[cfg_attr(
            any(target_os = "linux", target_os = "android", target_os = "freebsd"),
            unsafe(link_section = ".init_array")
        )]
        #[cfg_attr(
            target_vendor = "apple",
            unsafe(link_section = "__DATA,__mod_init_func")
        )]
        static CONCORD_TESTDB_SELECT: extern "C" fn() = {
            extern "C" fn select() {
                $crate::select_before_tests();
            }
            select
        };
    };
}
