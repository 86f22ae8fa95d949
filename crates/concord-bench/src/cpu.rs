//! CPU time of the processes under test, read from `/proc`: the
//! coordinator processes (found by the port they listen on, or known
//! because the bench started them), every process of the PostgreSQL
//! cluster (the postmaster that listens on the database port, and its
//! children), this process, and the whole machine. CPU per transaction is
//! robust to a loaded machine where throughput is not: a busy neighbour
//! slows a run down but does not make the coordinator's own work heavier.
//!
//! Linux only; where a process cannot be seen (another machine, another
//! container, no permission), the report says so instead of a figure.

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

/// Ticks of `utime`/`stime` per second (`USER_HZ`).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a constant of the running kernel.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// Fields of `/proc/PID/stat` after the command name: state is field 3.
struct Stat {
    ppid: u32,
    /// utime + stime, in ticks.
    own: u64,
    /// cutime + cstime: children that exited and were waited for.
    children: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14.
    let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    Some(Stat {
        ppid: field(4)? as u32,
        own: field(14)? + field(15)?,
        children: field(16)? + field(17)?,
    })
}

/// Every process's parent, one pass over `/proc`.
fn parents() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return map;
    };
    for entry in dir.flatten() {
        if let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
            && let Some(s) = stat(pid)
        {
            map.insert(pid, s.ppid);
        }
    }
    map
}

/// The process that listens on TCP `port` (any local address), found
/// through the socket's inode in `/proc/net/tcp{,6}` and the processes'
/// descriptors. `None` when it is not on this machine or not visible.
pub fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is "HEXIP:HEXPORT"; state 0A is LISTEN.
            let Some(local) = f.get(1) else { continue };
            let listening = f.get(3) == Some(&"0A");
            let on_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if listening
                && on_port
                && let Some(inode) = f.get(9)
            {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// Resident memory of a process, from `/proc/PID/status`: now (`VmRSS`)
/// and the most it ever held (`VmHWM`), in bytes.
pub fn memory(pid: u32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// What is watched; each `None` is a process that could not be found.
#[derive(Debug, Clone)]
pub struct Watch {
    pub coordinators: Vec<Option<u32>>,
    /// The postmaster: its children (backends, WAL writer, checkpointer...)
    /// count with it, and so do children that exited (its `cutime`).
    pub postmaster: Option<u32>,
    /// Set when the coordinator runs inside this process.
    pub coordinator_in_process: bool,
    /// Set when the state is in a SQLite file (no database server).
    pub sqlite: bool,
}

impl Watch {
    /// Resident memory of each coordinator process (see [`memory`]);
    /// `None` for one that is not visible or runs inside the bench.
    pub fn memory(&self) -> Vec<Option<(u64, u64)>> {
        self.coordinators
            .iter()
            .map(|pid| pid.and_then(memory))
            .collect()
    }
}

/// CPU seconds consumed so far by each watched part.
#[derive(Debug, Clone)]
pub struct Sample {
    pub coordinators: Vec<Option<f64>>,
    pub postgres: Option<f64>,
    pub postgres_processes: usize,
    pub bench: f64,
    /// Busy time of all CPUs (everything but idle and iowait).
    pub machine: Option<f64>,
    pub cores: usize,
}

fn machine_busy() -> Option<(f64, usize)> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let cores = text
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    let first = text.lines().next()?;
    let v: Vec<u64> = first
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let busy: u64 = v.iter().take(8).sum::<u64>() - v.get(3)? - v.get(4)?;
    Some((busy as f64 / ticks_per_second(), cores))
}

impl Watch {
    pub fn sample(&self) -> Sample {
        let hz = ticks_per_second();
        let own = |pid: u32| stat(pid).map(|s| s.own as f64 / hz);
        let (postgres, postgres_processes) = match self.postmaster {
            Some(pm) => match stat(pm) {
                Some(s) => {
                    let mut ticks = s.own + s.children;
                    let mut n = 1;
                    for (pid, parent) in parents() {
                        if parent == pm
                            && let Some(c) = stat(pid)
                        {
                            ticks += c.own;
                            n += 1;
                        }
                    }
                    (Some(ticks as f64 / hz), n)
                }
                None => (None, 0),
            },
            None => (None, 0),
        };
        let (machine, cores) = match machine_busy() {
            Some((busy, cores)) => (Some(busy), cores),
            None => (None, 0),
        };
        Sample {
            coordinators: self.coordinators.iter().map(|p| p.and_then(own)).collect(),
            postgres,
            postgres_processes,
            bench: own(std::process::id()).unwrap_or_default(),
            machine,
            cores,
        }
    }
}

/// CPU per transaction between two samples, in milliseconds.
#[derive(Debug, Clone)]
pub struct CpuReport {
    pub coordinators: Vec<Option<f64>>,
    pub postgres: Option<f64>,
    pub postgres_processes: usize,
    pub bench: f64,
    /// Machine busy time not accounted for by the parts above: other
    /// tenants of the machine (builds, tests), per transaction.
    pub others: Option<f64>,
    /// Cores busy on average over the window, and how many there are.
    pub machine_load: Option<(f64, usize)>,
    pub coordinator_in_process: bool,
    pub watch: Watch,
}

impl CpuReport {
    pub fn between(watch: &Watch, a: &Sample, b: &Sample, wall: Duration, n: u64) -> Self {
        let per = |x: f64| x * 1e3 / n.max(1) as f64;
        let coordinators: Vec<Option<f64>> = a
            .coordinators
            .iter()
            .zip(&b.coordinators)
            .map(|(x, y)| Some(per(y.as_ref()? - x.as_ref()?)))
            .collect();
        let postgres = match (a.postgres, b.postgres) {
            (Some(x), Some(y)) => Some(per(y - x)),
            _ => None,
        };
        let bench = per(b.bench - a.bench);
        let (others, machine_load) = match (a.machine, b.machine) {
            (Some(x), Some(y)) => {
                let known =
                    bench + postgres.unwrap_or(0.0) + coordinators.iter().flatten().sum::<f64>();
                (
                    Some((per(y - x) - known).max(0.0)),
                    Some(((y - x) / wall.as_secs_f64(), b.cores)),
                )
            }
            _ => (None, None),
        };
        Self {
            coordinators,
            postgres,
            postgres_processes: b.postgres_processes,
            bench,
            others,
            machine_load,
            coordinator_in_process: watch.coordinator_in_process,
            watch: watch.clone(),
        }
    }

    /// Sum over the coordinator processes, when every one was seen.
    pub fn coordinator_total(&self) -> Option<f64> {
        self.coordinators.iter().copied().sum()
    }

    /// The lines of the report.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let ms = |x: f64| format!("{x:.3} ms");
        if self.coordinator_in_process {
            out.push(format!(
                "cpu per tx         coordinator, participants and initiators (one process) {}",
                ms(self.bench)
            ));
        } else {
            let each: Vec<String> = self
                .coordinators
                .iter()
                .zip(&self.watch.coordinators)
                .map(|(c, pid)| match (c, pid) {
                    (Some(c), Some(pid)) => format!("{} (pid {pid})", ms(*c)),
                    _ => "not visible (not on this machine, or no permission on /proc)".into(),
                })
                .collect();
            let total = match self.coordinator_total() {
                Some(t) if self.coordinators.len() > 1 => {
                    format!("{} in all: {}", ms(t), each.join(", "))
                }
                _ => each.join(", "),
            };
            out.push(format!("cpu per tx         coordinator {total}"));
            out.push(format!(
                "                   bench (initiators and participants) {}",
                ms(self.bench)
            ));
        }
        match (self.postgres, self.watch.postmaster) {
            _ if self.watch.sqlite => out.push(
                "                   state in a sqlite file: its cost is in the coordinator's figure".into(),
            ),
            (Some(p), Some(pm)) => out.push(format!(
                "                   postgresql {} (postmaster {pm} and {} other processes)",
                ms(p),
                self.postgres_processes.saturating_sub(1)
            )),
            _ => out.push(
                "                   postgresql not visible (not listening on this machine, or no permission on /proc)"
                    .into(),
            ),
        }
        if let (Some(o), Some((busy, cores))) = (self.others, self.machine_load) {
            out.push(format!(
                "                   everything else on the machine {} (machine busy {busy:.2} of {cores} cores)",
                ms(o)
            ));
        }
        out
    }
}
