//! The coordinator instances of the chaos run: real `concord serve`
//! processes, each on a fixed loopback port so that its initiators find it
//! again after a restart, killed with SIGKILL and started again with a new
//! instance id (`chaos-<index>-<generation>`), so that the database tells
//! which incarnation owned what.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use concord_testdb::Reaper;
use tokio::process::{Child, Command};

/// Settings every instance runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub lease: Duration,
    pub call_timeout: Duration,
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// One instance slot.
struct Slot {
    port: u16,
    /// The HTTP listener (/healthz, /readyz, /metrics).
    http_port: u16,
    database_url: String,
    generation: u32,
    child: Option<Child>,
    log: PathBuf,
}

/// The instances.
pub struct Fleet {
    binary: PathBuf,
    settings: Settings,
    reaper: Reaper,
    slots: Vec<Slot>,
    /// Instances that exited without being killed (and were restarted).
    pub unexpected_exits: u32,
}

/// How long a starting instance may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(30);

impl Fleet {
    /// Slots for instances on the given ports and database URLs; none runs
    /// yet. Instance logs go to `log_dir/coordinator-<index>.log`.
    pub fn new(
        binary: &Path,
        settings: Settings,
        reaper: Reaper,
        log_dir: &Path,
        slots: Vec<(u16, String)>,
    ) -> Self {
        let slots = slots
            .into_iter()
            .enumerate()
            .map(|(i, (port, database_url))| Slot {
                port,
                http_port: concord_testdb::free_port().expect("a free port"),
                database_url,
                generation: 0,
                child: None,
                log: log_dir.join(format!("coordinator-{i}.log")),
            })
            .collect();
        Self {
            binary: binary.to_path_buf(),
            settings,
            reaper,
            slots,
            unexpected_exits: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The gRPC URL of instance `i`.
    pub fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.slots[i].port)
    }

    /// The HTTP address (/healthz, /readyz) of instance `i`.
    pub fn http_addr(&self, i: usize) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.slots[i].http_port))
    }

    /// The instance id instance `i` runs (or last ran) under.
    pub fn instance_id(&self, i: usize) -> String {
        format!("chaos-{i}-{}", self.slots[i].generation)
    }

    /// The log file of instance `i`.
    pub fn log(&self, i: usize) -> &Path {
        &self.slots[i].log
    }

    /// Starts instance `i` under a new generation and waits until it
    /// accepts connections; an instance that exits while starting (the
    /// database is being restarted, say) is started again.
    pub async fn start(&mut self, i: usize) -> Result<(), String> {
        let until = Instant::now() + READY_WITHIN * 2;
        loop {
            match self.start_once(i).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= until => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    async fn start_once(&mut self, i: usize) -> Result<(), String> {
        let slot = &mut self.slots[i];
        slot.generation += 1;
        let id = format!("chaos-{i}-{}", slot.generation);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&slot.log)
            .map_err(|e| format!("cannot open {}: {e}", slot.log.display()))?;
        let stderr = log
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", slot.log.display()))?;
        let s = &self.settings;
        let mut child = Command::new(&self.binary)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", slot.port)])
            .args(["--database-url", &slot.database_url])
            .args(["--instance-id", &id])
            .args(["--lease", &millis(s.lease)])
            .args(["--call-timeout", &millis(s.call_timeout)])
            .args(["--poll-interval", "200ms"])
            .args(["--retry-initial", "200ms", "--retry-max", "2s"])
            .args(["--pool-size", "8"])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", slot.http_port)])
            // Three instances on one host: DTM's default port only once.
            .args(["--dtm-listen", "off"])
            .args(["--no-migrate", "true"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        if let Some(pid) = child.id() {
            // If the test process dies, the reaper kills the instance.
            let _ = self.reaper.kill_on_exit(pid);
        }
        let addr = format!("127.0.0.1:{}", slot.port);
        let until = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("instance {id} exited while starting: {status}"));
            }
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                slot.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= until {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(format!(
                    "instance {id} not listening after {READY_WITHIN:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs instance `i` and waits until it is gone.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.slots[i].child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts again every instance that exited by itself; how many did.
    pub async fn revive(&mut self) -> Result<u32, String> {
        let mut revived = 0;
        for i in 0..self.slots.len() {
            let exited = match &mut self.slots[i].child {
                Some(child) => child.try_wait().ok().flatten().is_some(),
                None => false,
            };
            if exited {
                self.slots[i].child = None;
                self.unexpected_exits += 1;
                revived += 1;
                self.start(i).await?;
            }
        }
        Ok(revived)
    }

    /// Kills every instance.
    pub async fn stop_all(&mut self) {
        for i in 0..self.slots.len() {
            self.kill(i).await;
        }
    }
}
