//! The reaper: a small shell process that outlives the tests and cleans up
//! after them, however they end. A test that fails, panics, is killed with
//! SIGKILL or interrupted with Ctrl-C never runs its destructors, so the
//! cleanup cannot live in the test process; the reaper waits for the
//! process it watches to exit, then kills the processes listed in
//! `dir/pids` (coordinators a test started), runs the stop command (the
//! server or the container) and removes `dir`.
//!
//! It ignores SIGINT, SIGHUP and SIGTERM and sits in a process group of its
//! own, so the Ctrl-C that stops `cargo test` does not stop it too.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;

/// `$1`: pid to watch, `$2`: directory to remove, `$3...`: stop command.
const SCRIPT: &str = r#"
trap '' INT HUP TERM
watch=$1; dir=$2; shift 2
while kill -0 "$watch" 2>/dev/null; do sleep 0.5; done
if [ -f "$dir/pids" ]; then
    for pid in $(cat "$dir/pids"); do kill -9 "$pid" 2>/dev/null; done
fi
"$@" >/dev/null 2>&1
rm -rf "$dir" "$dir.lock"
"#;

/// A started reaper; the handle only knows where to list more processes.
#[derive(Debug, Clone)]
pub struct Reaper {
    dir: PathBuf,
}

impl Reaper {
    /// Starts a reaper that waits for process `watch` to exit, then runs
    /// `stop` (program and arguments; may be empty) and removes `dir`.
    pub fn spawn(watch: u32, dir: &Path, stop: &[String]) -> Result<Self, Error> {
        Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("concord-testdb-reaper")
            .arg(watch.to_string())
            .arg(dir)
            .args(stop)
            .stdin(Stdio::null())
            // Holding the test's stdout or stderr open would keep whoever
            // reads them (CI) waiting for the reaper.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io("spawn the reaper", Path::new("sh"), e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Adds `pid` to the processes killed when the watched process is gone
    /// (a coordinator the test started: it would otherwise run on against a
    /// removed cluster).
    pub fn kill_on_exit(&self, pid: u32) -> Result<(), Error> {
        let path = self.dir.join("pids");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        writeln!(file, "{pid}").map_err(|e| Error::io("write", &path, e))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn gone_within(path: &Path, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if !path.exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    #[test]
    fn cleans_up_after_the_watched_process_and_not_before() {
        let dir =
            std::env::temp_dir().join(format!("concord-testdb-reaper-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.with_extension("stopped");
        let _ = std::fs::remove_file(&marker);
        let mut watched = Command::new("sleep").arg("1").spawn().unwrap();
        let mut listed = Command::new("sleep").arg("60").spawn().unwrap();
        let stop = ["touch".to_string(), marker.display().to_string()];
        let reaper = Reaper::spawn(watched.id(), &dir, &stop).unwrap();
        reaper.kill_on_exit(listed.id()).unwrap();

        std::thread::sleep(Duration::from_millis(300));
        assert!(dir.exists(), "removed while the watched process runs");
        watched.wait().unwrap();
        assert!(
            gone_within(&dir, Duration::from_secs(5)),
            "directory left behind"
        );
        assert!(marker.exists(), "the stop command did not run");
        let status = listed.wait().unwrap();
        assert!(!status.success(), "the listed process was not killed");
        std::fs::remove_file(&marker).unwrap();
    }
}
