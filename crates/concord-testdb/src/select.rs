//! Which PostgreSQL the tests use, decided once per test process before
//! any test runs:
//!
//! 1. `DATABASE_URL` exported by the user: that server, and nothing else
//!    (if it does not answer, the run stops with one message saying so).
//! 2. The repository's `.env` default (127.0.0.1:5432): used when a server
//!    answers there; it is a default, not the user's choice, so when none
//!    answers the search goes on.
//! 3. One throwaway cluster for the whole `cargo test` run, made with
//!    `initdb`/`pg_ctl` when the server binaries are installed, else a
//!    container when a Docker daemon answers. The first test binary of the
//!    run starts it; the others find it through a directory named after the
//!    `cargo` process, and a reaper removes it once `cargo` has exited.
//! 4. Nothing: one message naming the three ways to get a PostgreSQL.
//!
//! Every attempt to reach a server is bounded by a few seconds.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::Error;
use crate::cluster::{self, Cluster, Durability};
use crate::docker::{self, Container};
use crate::reaper::Reaper;

/// The database sqlx's test support creates the test databases from.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// How long a server may take to answer before it counts as absent.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a fresh container may take to accept connections.
const CONTAINER_READY: Duration = Duration::from_secs(60);

/// Where the tests' PostgreSQL came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `DATABASE_URL` from the environment.
    Exported,
    /// The repository's `.env` (or the built-in default).
    Default,
    /// A throwaway cluster this run started, or found started by an earlier
    /// test binary of the same run.
    Throwaway {
        /// Whether this process started it.
        started: bool,
    },
}

/// The chosen server.
#[derive(Debug, Clone)]
pub struct Selected {
    /// What `DATABASE_URL` is set to for the tests.
    pub url: String,
    /// Where it came from.
    pub source: Source,
}

/// Why no PostgreSQL could be had.
#[derive(Debug, thiserror::Error)]
pub enum NoDatabase {
    #[error(
        "DATABASE_URL={url} is exported but that server does not answer ({why}).\n\
         Start it, point DATABASE_URL at a server that runs, or unset DATABASE_URL to let \
         the tests start a throwaway PostgreSQL of their own."
    )]
    ExportedDown { url: String, why: String },
    #[error(
        "the tests need a PostgreSQL and none could be found or started:\n\
         - nothing answers at {default} ({why});\n\
         - no PostgreSQL server binaries (initdb, pg_ctl) on the PATH or under /usr/lib/postgresql/*/bin;\n\
         - no Docker daemon answers.\n\
         Any one of these is enough: export DATABASE_URL=postgres://user@host:port/database of a \
         server you run; install the server binaries (Debian: apt-get install postgresql), and the \
         tests start and remove a throwaway cluster; or start Docker, and they run one in a container."
    )]
    NothingFound { default: String, why: String },
    #[error("the tests could not start a throwaway PostgreSQL: {0}")]
    StartFailed(#[from] Error),
}

/// Chooses the server, starting one if need be.
pub fn select() -> Result<Selected, NoDatabase> {
    if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        return match probe(&url) {
            Ok(()) => Ok(Selected {
                url,
                source: Source::Exported,
            }),
            Err(why) => Err(NoDatabase::ExportedDown {
                url: redact(&url),
                why,
            }),
        };
    }
    let default = dotenv_url().unwrap_or_else(|| DEFAULT_URL.to_string());
    let why = match probe(&default) {
        Ok(()) => {
            return Ok(Selected {
                url: default,
                source: Source::Default,
            });
        }
        Err(why) => why,
    };
    match throwaway(&why)? {
        Some(selected) => Ok(selected),
        None => Err(NoDatabase::NothingFound {
            default: redact(&default),
            why,
        }),
    }
}

/// Connects and runs `SELECT 1`, within [`PROBE_TIMEOUT`].
pub fn probe(url: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let attempt = async {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            sqlx::query("SELECT 1").execute(&mut conn).await?;
            conn.close().await
        };
        match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        }
    })
}

/// `DATABASE_URL` from the nearest `.env` above the working directory.
fn dotenv_url() -> Option<String> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors().find_map(|dir| {
        let text = std::fs::read_to_string(dir.join(".env")).ok()?;
        text.lines().find_map(|line| {
            let value = line.trim().strip_prefix("DATABASE_URL=")?;
            Some(value.trim_matches(|c| c == '"' || c == '\'').to_string())
        })
    })
}

/// The password of a URL replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// The process whose lifetime bounds the throwaway cluster: the nearest
/// `cargo` (or `cargo-nextest`) above us, so that every test binary of one
/// run shares it; ourselves when run directly.
fn run_owner() -> u32 {
    let me = std::process::id();
    let mut pid = me;
    for _ in 0..16 {
        let Some((comm, parent)) = proc_stat(pid) else {
            break;
        };
        if pid != me && (comm == "cargo" || comm == "cargo-nextest") {
            return pid;
        }
        if parent <= 1 {
            break;
        }
        pid = parent;
    }
    me
}

/// The command name and parent pid of a process.
fn proc_stat(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may itself hold spaces or ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let parent = stat[close + 1..].split_whitespace().nth(1)?.parse().ok()?;
    Some((comm, parent))
}

/// Finds the run's throwaway server or starts it; `None` if neither the
/// binaries nor Docker are there.
fn throwaway(why_not_default: &str) -> Result<Option<Selected>, NoDatabase> {
    let owner = run_owner();
    let dir = std::env::temp_dir().join(format!("concord-testdb-{owner}"));
    let lock_path = dir.with_extension("lock");
    // Test binaries of one run may start at once (nextest): one starts the
    // server, the others wait for it and find its URL.
    let lock = File::create(&lock_path).map_err(|e| Error::io("create", &lock_path, e))?;
    lock.lock().map_err(|e| Error::io("lock", &lock_path, e))?;
    let url_file = dir.join("url");
    if let Ok(url) = std::fs::read_to_string(&url_file)
        && probe(&url).is_ok()
    {
        return Ok(Some(Selected {
            url,
            source: Source::Throwaway { started: false },
        }));
    }
    let Some(url) = start(owner, &dir, why_not_default)? else {
        // Nothing was started, so no reaper will remove the lock file.
        let _ = std::fs::remove_file(&lock_path);
        return Ok(None);
    };
    std::fs::write(&url_file, &url).map_err(|e| Error::io("write", &url_file, e))?;
    Ok(Some(Selected {
        url,
        source: Source::Throwaway { started: true },
    }))
}

fn start(owner: u32, dir: &Path, why_not_default: &str) -> Result<Option<String>, Error> {
    if let Some(bindir) = cluster::find_binaries() {
        let started = Instant::now();
        let mut cluster = Cluster::new(dir, &bindir, Durability::Throwaway)?;
        // The reaper comes first, so that a failed or interrupted start is
        // cleaned up too.
        Reaper::spawn(owner, dir, &cluster.stop_command())?;
        cluster.init()?;
        cluster.start()?;
        let url = cluster.url("postgres");
        eprintln!(
            "concord-testdb: DATABASE_URL is not exported and the default server does not answer \
             ({why_not_default}); started a throwaway PostgreSQL ({}) on 127.0.0.1:{} in {:.1}s, \
             in {}, removed when process {owner} exits",
            bindir.display(),
            cluster.port(),
            started.elapsed().as_secs_f64(),
            dir.display(),
        );
        return Ok(Some(url));
    }
    if docker::daemon_answers() {
        let started = Instant::now();
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let port = cluster::free_port()?;
        eprintln!(
            "concord-testdb: starting PostgreSQL in a Docker container (the image may be pulled first)"
        );
        let container = Container::start(&format!("concord-testdb-{owner}"), port)?;
        Reaper::spawn(owner, dir, &container.remove_command())?;
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", container.port);
        wait_ready(&url)?;
        eprintln!(
            "concord-testdb: started a throwaway PostgreSQL in container {} on 127.0.0.1:{port} in \
             {:.1}s, removed when process {owner} exits",
            &container.id[..container.id.len().min(12)],
            started.elapsed().as_secs_f64(),
        );
        return Ok(Some(url));
    }
    Ok(None)
}

/// Polls until the server at `url` answers, within [`CONTAINER_READY`].
fn wait_ready(url: &str) -> Result<(), Error> {
    let until = Instant::now() + CONTAINER_READY;
    loop {
        match probe(url) {
            Ok(()) => return Ok(()),
            Err(why) if Instant::now() >= until => {
                return Err(Error::Tool {
                    tool: "docker".into(),
                    output: format!("the container does not accept connections: {why}"),
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn the_test_process_finds_its_cargo() {
        // Under `cargo test` the owner is cargo itself, not this process.
        let owner = run_owner();
        let (comm, _) = proc_stat(owner).expect("the owner is alive");
        if std::env::var_os("CARGO").is_some() {
            assert!(comm.starts_with("cargo"), "owner {owner} is {comm}");
        } else {
            assert_eq!(owner, std::process::id());
        }
    }
}
