//! What a run found, and the lines BENCHMARKS.md quotes.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::cpu::CpuReport;
use crate::load::Measured;
use crate::{BenchArgs, BenchMode};

/// Results of one run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub transactions: u64,
    pub failed: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Time until every committed transaction was CONFIRMED.
    pub drained: Duration,
    /// Latency of each call an initiator makes, in call order: where the
    /// time of a transaction goes.
    pub calls: Vec<(&'static str, CallLatency)>,
    /// CPU per transaction of each part, from the start of the measured
    /// run until every transaction finished.
    pub cpu: CpuReport,
    /// `--pg-stats`: what PostgreSQL executed per transaction.
    pub pg_stats: Vec<String>,
    /// Per coordinator process: its resident memory before any load and
    /// the most it held by the end of the run (warm-up included), in bytes;
    /// `None` when it is not visible or runs inside the bench.
    pub memory: Vec<Option<(u64, u64)>>,
}

/// Latency percentiles of one kind of call.
#[derive(Debug, Clone, Copy)]
pub struct CallLatency {
    pub p50: Duration,
    pub p99: Duration,
}

/// The latency at quantile `q` of a histogram of microseconds.
fn at(h: &Histogram<u64>, q: f64) -> Duration {
    Duration::from_micros(h.value_at_quantile(q))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl BenchReport {
    pub(crate) fn new(
        m: Measured,
        elapsed: Duration,
        drained: Duration,
        cpu: CpuReport,
        pg_stats: Vec<String>,
        memory: Vec<Option<(u64, u64)>>,
    ) -> Self {
        let h = &m.transactions;
        Self {
            transactions: h.len(),
            failed: m.failed,
            elapsed,
            p50: at(h, 0.5),
            p90: at(h, 0.9),
            p99: at(h, 0.99),
            max: Duration::from_micros(h.max()),
            drained,
            calls: m
                .calls
                .0
                .iter()
                .map(|(name, h)| {
                    let latency = CallLatency {
                        p50: at(h, 0.5),
                        p99: at(h, 0.99),
                    };
                    (*name, latency)
                })
                .collect(),
            cpu,
            pg_stats,
            memory,
        }
    }

    pub fn per_second(&self) -> f64 {
        self.transactions as f64 / self.elapsed.as_secs_f64()
    }

    /// Prints the report as the lines quoted in BENCHMARKS.md.
    pub fn print(&self, args: &BenchArgs) {
        let what = match args.mode {
            BenchMode::Tcc => "tcc, 2 branches",
            BenchMode::Saga => "saga, 2 sequential steps",
            BenchMode::Msg => "msg, prepare + submit, 2 steps",
        };
        let over = match args.participants {
            crate::ParticipantProtocol::Grpc => "grpc",
            crate::ParticipantProtocol::Http => "http",
        };
        println!(
            "mode               {what}, zero-work {over} participants, wait={}",
            args.wait
        );
        println!("concurrency        {}", args.concurrency);
        println!(
            "transactions       {} ok, {} failed",
            self.transactions, self.failed
        );
        println!("elapsed            {:.2} s", self.elapsed.as_secs_f64());
        println!("throughput         {:.0} transactions/s", self.per_second());
        println!(
            "latency            p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max)
        );
        println!(
            "all finished in    {:.2} s ({:.0} transactions/s end to end)",
            self.drained.as_secs_f64(),
            self.transactions as f64 / self.drained.as_secs_f64()
        );
        let calls: Vec<String> = self
            .calls
            .iter()
            .map(|(name, l)| format!("{name} {:.1}/{:.1}", ms(l.p50), ms(l.p99)))
            .collect();
        println!("per call p50/p99   {} ms", calls.join(", "));
        for line in self.cpu.lines() {
            println!("{line}");
        }
        if let Some(line) = self.memory_line() {
            println!("{line}");
        }
        for line in &self.pg_stats {
            println!("{line}");
        }
        // One line per run for scripts that interleave builds: key=value.
        let opt = |x: Option<f64>| x.map_or("na".to_string(), |v| format!("{v:.3}"));
        let coordinator = if self.cpu.coordinator_in_process {
            None
        } else {
            self.cpu.coordinator_total()
        };
        println!(
            "summary            tps={:.0} p50_ms={:.1} p99_ms={:.1} coordinator_cpu_ms={} postgres_cpu_ms={} bench_cpu_ms={:.3} others_cpu_ms={} coordinator_idle_mb={} coordinator_peak_mb={} failed={}",
            self.per_second(),
            ms(self.p50),
            ms(self.p99),
            opt(coordinator),
            opt(self.cpu.postgres),
            self.cpu.bench,
            opt(self.cpu.others),
            opt(self.memory_mb(|(idle, _)| idle)),
            opt(self.memory_mb(|(_, peak)| peak)),
            self.failed
        );
    }
}

impl BenchReport {
    /// The largest of one memory figure over the coordinator processes, in
    /// MiB; `None` unless every one was visible.
    fn memory_mb(&self, pick: impl Fn((u64, u64)) -> u64) -> Option<f64> {
        if self.memory.is_empty() {
            return None;
        }
        let each: Option<Vec<u64>> = self.memory.iter().map(|m| m.map(&pick)).collect();
        each?
            .into_iter()
            .max()
            .map(|b| b as f64 / (1024.0 * 1024.0))
    }

    /// `memory ...`: each coordinator's resident memory idle and at its peak.
    fn memory_line(&self) -> Option<String> {
        if self.cpu.coordinator_in_process {
            return None;
        }
        let mb = |b: u64| format!("{:.1} MB", b as f64 / (1024.0 * 1024.0));
        let each: Vec<String> = self
            .memory
            .iter()
            .map(|m| match m {
                Some((idle, peak)) => format!("idle {}, peak {}", mb(*idle), mb(*peak)),
                None => "not visible".into(),
            })
            .collect();
        Some(format!(
            "memory             coordinator resident (before the load; most held by the end): {}",
            each.join("; ")
        ))
    }
}
