//! The last resort before giving up: PostgreSQL in a Docker container,
//! when a Docker daemon answers. Driven through the `docker` command line
//! rather than a client library, so that the reaper (a shell script) can
//! remove the container with the same tool after the tests are gone, and
//! the test build does not pull in an HTTP client for a path most machines
//! never take.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// The image to run; override to use a mirror or a local build.
pub const IMAGE_ENV: &str = "CONCORD_TESTDB_IMAGE";
const DEFAULT_IMAGE: &str = "postgres:17-alpine";

/// Whether a Docker daemon answers within a few seconds.
pub fn daemon_answers() -> bool {
    let mut cmd = Command::new("docker");
    cmd.args(["version", "--format", "{{.Server.Version}}"]);
    run_bounded(cmd, Duration::from_secs(5)).is_ok_and(|out| !out.trim().is_empty())
}

/// A running container: its id and the loopback port mapped to 5432.
#[derive(Debug)]
pub struct Container {
    /// The container id.
    pub id: String,
    /// The host port on 127.0.0.1.
    pub port: u16,
}

impl Container {
    /// Starts PostgreSQL (trust authentication, user `postgres`) on a free
    /// loopback port; the image is pulled first if missing, which may take
    /// a while.
    pub fn start(name: &str, port: u16) -> Result<Self, Error> {
        let image = std::env::var(IMAGE_ENV).unwrap_or_else(|_| DEFAULT_IMAGE.to_string());
        let mut cmd = Command::new("docker");
        cmd.args(["run", "-d", "--rm", "--name", name])
            .args(["-p", &format!("127.0.0.1:{port}:5432")])
            .args(["-e", "POSTGRES_HOST_AUTH_METHOD=trust"])
            .arg(&image)
            .args(["-c", "max_connections=300", "-c", "fsync=off"]);
        let id = run_bounded(cmd, Duration::from_secs(600))?
            .trim()
            .to_string();
        Ok(Self { id, port })
    }

    /// The command line that removes the container, as the reaper runs it.
    pub fn remove_command(&self) -> Vec<String> {
        ["docker", "rm", "-f", &self.id].map(String::from).to_vec()
    }
}

/// Runs `cmd` and returns its stdout, killing it after `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> Result<String, Error> {
    let program = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Tool {
            tool: program.clone(),
            output: e.to_string(),
        })?;
    let until = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Tool {
                    tool: program,
                    output: format!("no answer within {limit:?}"),
                });
            }
        }
    }
    let out = child.wait_with_output().map_err(|e| Error::Tool {
        tool: program.clone(),
        output: e.to_string(),
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Tool {
            tool: program,
            output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}
