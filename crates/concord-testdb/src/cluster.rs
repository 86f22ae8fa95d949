//! A throwaway PostgreSQL cluster made with the server's own tools
//! (`initdb`, `pg_ctl`): a data directory of its own under a directory the
//! caller owns, a free loopback port, trust authentication for the user
//! `postgres`. The chaos run stops and restarts it; the test selection
//! starts one for a whole `cargo test` run when no server answers.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root every
//! tool runs as the user `postgres` (through `runuser`), which owns the
//! directory.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::Error;

/// Where Debian's `postgresql` packages put the server binaries, one
/// directory per major version.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// Overrides [`DEBIAN_ROOT`] (an empty or missing directory hides it), so
/// that a machine with the binaries can be made to look like one without.
pub const PG_ROOT_ENV: &str = "CONCORD_TESTDB_PG_ROOT";

/// How long `pg_ctl` may wait for the server to start or stop.
const PG_CTL_WAIT: Duration = Duration::from_secs(60);

/// The directory holding `initdb` and `pg_ctl`: the one on the `PATH`
/// first, else the newest version under `/usr/lib/postgresql/*/bin`.
pub fn find_binaries() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| has_server_tools(dir)));
    if let Some(dir) = on_path {
        // Debian links only some tools into the PATH; keep the directory
        // that holds the real ones, so `postgres` is found next to them.
        let real = std::fs::canonicalize(dir.join("initdb"))
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        return Some(real.filter(|d| has_server_tools(d)).unwrap_or(dir));
    }
    let root = std::env::var_os(PG_ROOT_ENV).unwrap_or_else(|| DEBIAN_ROOT.into());
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(&root)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_server_tools(&bin).then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn has_server_tools(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

/// How a cluster trades durability for speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `fsync` and friends off: for test databases that die with the run.
    Throwaway,
    /// PostgreSQL's defaults: for runs that crash the server on purpose and
    /// check what survived.
    Default,
}

/// How [`Cluster::stop`] stops the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Clients are disconnected, a checkpoint is written.
    Fast,
    /// Every server process quits at once, as in a crash; the next start
    /// replays the WAL.
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// One cluster: `dir/data` (the data directory) and `dir/postgres.log`,
/// served on 127.0.0.1 at [`port`](Self::port) and on a socket in `dir`.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    durability: Durability,
    as_postgres: bool,
}

impl Cluster {
    /// A cluster to be made in `dir/data` (`dir` is created if missing and
    /// must not hold a cluster yet) with the binaries of `bindir`; nothing
    /// runs until [`init`](Self::init). Spawn the [`Reaper`](crate::Reaper)
    /// between the two, so that a test killed during `initdb` leaves
    /// nothing behind either.
    pub fn new(dir: &Path, bindir: &Path, durability: Durability) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let as_postgres = running_as_root();
        if as_postgres {
            let (uid, gid) = postgres_user().ok_or(Error::NoPostgresUser)?;
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|e| Error::io("chown", dir, e))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            bindir: bindir.to_path_buf(),
            port: 0,
            durability,
            as_postgres,
        })
    }

    /// Runs `initdb`.
    pub fn init(&self) -> Result<(), Error> {
        let data = self.data_dir();
        // C locale: works on any machine, whatever LANG says.
        self.tool(
            "initdb",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("--auth=trust"),
                OsStr::new("-E"),
                OsStr::new("UTF8"),
                OsStr::new("--locale=C"),
                OsStr::new("--no-sync"),
            ],
        )
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The directory of the cluster (data, log, socket).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the server binaries it runs.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Whether its tools run as the user `postgres` (the tests run as root).
    pub fn as_postgres(&self) -> bool {
        self.as_postgres
    }

    /// The loopback port it listens on (0 before the first start).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server and waits until it accepts connections. The first
    /// start picks a free port (trying again if another process takes it
    /// meanwhile); later starts reuse it, so clients find the server again.
    pub fn start(&mut self) -> Result<(), Error> {
        if self.port != 0 {
            return self.start_on(self.port);
        }
        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            match self.start_on(port) {
                Ok(()) => {
                    self.port = port;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("three attempts were made"))
    }

    fn start_on(&self, port: u16) -> Result<(), Error> {
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
            self.dir.display()
        );
        if self.durability == Durability::Throwaway {
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let data = self.data_dir();
        let log = self.dir.join("postgres.log");
        let wait = PG_CTL_WAIT.as_secs().to_string();
        self.tool(
            "pg_ctl",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-l"),
                log.as_os_str(),
                OsStr::new("-o"),
                OsStr::new(&options),
                OsStr::new("-w"),
                OsStr::new("-t"),
                OsStr::new(&wait),
                OsStr::new("start"),
            ],
        )
        .map_err(|e| match e {
            Error::Tool { tool, output } => Error::Tool {
                tool,
                output: format!("{output}\n{}", tail(&log, 10)),
            },
            other => other,
        })
    }

    /// Stops the server and waits until it is gone.
    pub fn stop(&self, mode: StopMode) -> Result<(), Error> {
        let data = self.data_dir();
        let wait = PG_CTL_WAIT.as_secs().to_string();
        self.tool(
            "pg_ctl",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-m"),
                OsStr::new(mode.as_arg()),
                OsStr::new("-w"),
                OsStr::new("-t"),
                OsStr::new(&wait),
                OsStr::new("stop"),
            ],
        )
    }

    /// The command line that stops the server at once, as the reaper runs
    /// it when the tests are gone.
    pub fn stop_command(&self) -> Vec<String> {
        let mut cmd = Vec::new();
        if self.as_postgres {
            cmd.extend(["runuser", "-u", "postgres", "--"].map(String::from));
        }
        cmd.push(self.bindir.join("pg_ctl").display().to_string());
        cmd.extend(["-D".to_string(), self.data_dir().display().to_string()]);
        cmd.extend(["-m", "immediate", "-w", "stop"].map(String::from));
        cmd
    }

    /// Runs one server tool, as `postgres` when we are root; its output
    /// goes into the error if it fails.
    fn tool<I, S>(&self, name: &str, args: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let exe = self.bindir.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            // Its own process group: a Ctrl-C meant for `cargo test` must
            // not take the server down under the reaper's feet.
            .process_group(0);
        let out = cmd.output().map_err(|e| Error::io("run", &exe, e))?;
        if out.status.success() {
            return Ok(());
        }
        let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stdout));
        Err(Error::Tool {
            tool: format!("{} ({})", exe.display(), out.status),
            output: output.trim().to_string(),
        })
    }
}

/// The last `lines` lines of a file, or nothing.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("bind", Path::new("127.0.0.1:0"), e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("bind", Path::new("127.0.0.1:0"), e))
}

/// Whether this process runs as root (the owner of `/proc/self` is the
/// effective user).
pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Uid and gid of the user `postgres`, from `/etc/passwd`.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != "postgres" {
            return None;
        }
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}
