//! The end of a chaos run: what the database, the banks and the recorder
//! say, the checks that must hold, and the report, printed whether the run
//! passes or not (straight to stderr, past the test harness's capture, so
//! that CI logs show it).

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use concord_examples::bank::{Bank, RunSummary, TransferOutcome};
use concord_examples::faults::{FaultReport, FaultyParticipant};
use concord_sdk::ParticipantService;
use sqlx::PgPool;

use crate::recorder::{Calls, PHASES, Tally};
use crate::run::Params;

/// What the chaos loop did.
#[derive(Debug, Default)]
pub struct Chaos {
    pub kills: u32,
    pub unexpected_exits: u32,
    pub pg_restarts: u32,
    /// How long instance 0 was cut off from the database.
    pub cut_for: Option<Duration>,
    /// Per transaction in phase 2 that a killed instance held.
    pub takeovers: Vec<Takeover>,
    /// What did not hold while PostgreSQL was down (see
    /// `run::while_database_down`).
    pub db_down_checks: Vec<String>,
    /// When PostgreSQL was down (restarts), from stop until it answered.
    pub outages: Vec<(std::time::Instant, std::time::Instant)>,
    /// Things the loop could not do.
    pub errors: Vec<String>,
}

/// How a transaction held by a killed instance was taken over.
#[derive(Clone, Debug)]
pub struct Takeover {
    pub gid: String,
    pub killed_at: std::time::Instant,
    /// From the kill until another instance held it (or it was final).
    pub after: Duration,
    /// From the kill until the deadline of its call that was still at a
    /// participant then, if one was.
    pub call_deadline: Option<Duration>,
    /// From the kill until its lease ended by the database's clock, if it
    /// had not yet: a takeover past a call's deadline is the lease's end
    /// past that deadline plus the claim's delay past the lease's end.
    pub lease_end: Option<Duration>,
    /// The calls in flight at the kill, for the report.
    pub calls: String,
}

/// The longest takeover of transactions with no call in flight at the kill,
/// and the longest time past the in-flight call's deadline of the others,
/// each with how many there were.
fn takeover_summary(
    all: &[Takeover],
    outages: &[(std::time::Instant, std::time::Instant)],
) -> String {
    // A takeover that waited for PostgreSQL to come back says nothing about
    // leases: counted apart.
    let (all, waited): (Vec<Takeover>, Vec<Takeover>) = all.iter().cloned().partition(|t| {
        let end = t.killed_at + t.after;
        !outages
            .iter()
            .any(|(from, to)| t.killed_at <= *to && *from <= end)
    });
    let all = &all[..];
    let idle: Vec<Duration> = all
        .iter()
        .filter(|t| t.call_deadline.is_none())
        .map(|t| t.after)
        .collect();
    let late: Vec<f64> = all
        .iter()
        .filter_map(|t| {
            t.call_deadline
                .map(|d| t.after.as_secs_f64() - d.as_secs_f64())
        })
        .collect();
    if all.is_empty() {
        return "no kill left phase-2 work behind".into();
    }
    let idle_part = match idle.iter().max() {
        Some(d) => format!(
            "with no call in flight longest {:.1}s after the kill ({} transactions)",
            d.as_secs_f64(),
            idle.len()
        ),
        None => "none without a call in flight".into(),
    };
    // Where the time past an in-flight call's deadline went: the lease's
    // end past the deadline (what the lease adds) and the claim past the
    // lease's end (the recovery loop and the machine's load).
    let in_flight = || {
        all.iter()
            .filter_map(|t| Some((t.call_deadline?, t.lease_end?, t.after)))
    };
    let lease_past: Vec<f64> = in_flight()
        .map(|(call, lease, _)| lease.as_secs_f64() - call.as_secs_f64())
        .collect();
    let claim_past: Vec<f64> = in_flight()
        .map(|(_, lease, after)| after.as_secs_f64() - lease.as_secs_f64())
        .collect();
    let late_part = match late.iter().cloned().reduce(f64::max) {
        Some(d) => {
            // Besides the longest, the median and the 99th percentile: on a
            // loaded machine the longest says as much about CPU starvation
            // as about leases.
            format!(
                "with a call in flight longest {d:+.1}s from that call's deadline ({}; {} transactions), of which the lease's end past the deadline {} and the claim past the lease's end {}",
                spread(&late),
                late.len(),
                spread(&lease_past),
                spread(&claim_past),
            )
        }
        None => "none with a call in flight".into(),
    };
    // The latest past their call's deadline, to look up in the logs.
    let mut latest: Vec<&Takeover> = all.iter().filter(|t| t.call_deadline.is_some()).collect();
    latest.sort_by(|a, b| {
        let late = |t: &Takeover| t.after.saturating_sub(t.call_deadline.unwrap_or_default());
        late(b).cmp(&late(a))
    });
    let secs =
        |d: Option<Duration>| d.map_or("?".to_string(), |d| format!("{:.2}s", d.as_secs_f64()));
    let latest: Vec<String> = latest
        .iter()
        .take(5)
        .map(|t| {
            format!(
                "{} (call deadline {}, lease end {}, taken {:.2}s after the kill; in flight: {})",
                t.gid,
                secs(t.call_deadline),
                secs(t.lease_end),
                t.after.as_secs_f64(),
                t.calls
            )
        })
        .collect();
    let mut slowest: Vec<&Takeover> = all.iter().collect();
    slowest.sort_by_key(|t| std::cmp::Reverse(t.after));
    let slowest: Vec<String> = slowest
        .iter()
        .take(3)
        .map(|t| format!("{} {:.1}s", t.gid, t.after.as_secs_f64()))
        .collect();
    format!(
        "{idle_part}; {late_part}; latest past their call's deadline: {}; slowest: {}; {} more waited for a PostgreSQL restart",
        latest.join(", "),
        slowest.join(", "),
        waited.len()
    )
}

/// Median, 99th percentile and longest of `values` (seconds), or "none".
fn spread(values: &[f64]) -> String {
    if values.is_empty() {
        return "none".into();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    format!(
        "median {:+.2}s, 99th percentile {:+.2}s, longest {:+.2}s",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

/// What the run left behind.
pub struct Outcome {
    initiator: RunSummary,
    statuses: HashMap<String, String>,
    /// Transactions neither confirmed nor cancelled: gid, status, reason
    /// of the attention flag.
    open: Vec<(String, String, Option<String>)>,
    flagged: usize,
    total: i64,
    frozen: i64,
    /// Per transfer: its amount and the legs the banks applied.
    legs: HashMap<String, (i64, Vec<i64>)>,
    /// Journal entries of no transfer.
    strays: Vec<String>,
    calls: Tally,
    faults: FaultReport,
}

type OpenRow = (String, String, bool, Option<String>);

impl Outcome {
    pub async fn gather(
        monitor: &PgPool,
        banks: &[Bank],
        amounts: HashMap<String, i64>,
        summaries: Vec<RunSummary>,
        calls: &Calls,
        faulty: &[FaultyParticipant<ParticipantService>],
    ) -> Self {
        let mut initiator = RunSummary::default();
        for s in summaries {
            initiator.committed += s.committed;
            initiator.rejected += s.rejected;
            initiator.unknown += s.unknown;
            initiator.outcomes.extend(s.outcomes);
        }
        let statuses: HashMap<String, String> =
            sqlx::query_as("SELECT gid, status FROM global_transactions")
                .fetch_all(monitor)
                .await
                .expect("read statuses")
                .into_iter()
                .collect();
        let open_rows: Vec<OpenRow> = sqlx::query_as(
            "SELECT gid, status, needs_attention, attention_reason FROM global_transactions
              WHERE status NOT IN ('confirmed', 'cancelled') OR needs_attention ORDER BY gid",
        )
        .fetch_all(monitor)
        .await
        .expect("read open transactions");
        let flagged = open_rows.iter().filter(|r| r.2).count();
        let open = open_rows
            .into_iter()
            .filter(|(_, status, _, _)| status != "confirmed" && status != "cancelled")
            .map(|(gid, status, flagged, reason)| (gid, status, reason.filter(|_| flagged)))
            .collect();
        let (mut total, mut frozen) = (0, 0);
        let mut applied: HashMap<String, Vec<i64>> = HashMap::new();
        for bank in banks {
            for a in bank.accounts().await.expect("read accounts") {
                total += a.balance;
                frozen += a.frozen;
            }
            for j in bank.journal().await.expect("read journal") {
                applied.entry(j.gid).or_default().push(j.delta);
            }
        }
        let legs = amounts
            .into_iter()
            .map(|(gid, amount)| {
                let legs = applied.remove(&gid).unwrap_or_default();
                (gid, (amount, legs))
            })
            .collect();
        let mut faults = FaultReport::default();
        for f in faulty {
            faults.add(f.report());
        }
        Self {
            initiator,
            statuses,
            open,
            flagged,
            total,
            frozen,
            legs,
            strays: applied.into_keys().collect(),
            calls: calls.tally(),
            faults,
        }
    }
}

/// The failed checks.
pub struct Verdict {
    failures: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Panics with the failed checks.
    pub fn assert(self) {
        assert!(
            self.failures.is_empty(),
            "the chaos run failed {} check(s):\n- {}",
            self.failures.len(),
            self.failures.join("\n- ")
        );
    }
}

/// Checks the outcome and prints the report.
pub fn judge(
    p: &Params,
    chaos: &Chaos,
    o: &Outcome,
    settled: bool,
    transfers_took: Duration,
    run_took: Duration,
) -> Verdict {
    let mut failures = Vec::new();

    // Every transaction final, or flagged with a reason.
    let unflagged: Vec<_> = o.open.iter().filter(|(_, _, r)| r.is_none()).collect();
    if !settled || !unflagged.is_empty() {
        failures.push(format!(
            "{} transactions are neither final nor flagged with a reason, e.g. {:?}",
            unflagged.len(),
            &unflagged[..unflagged.len().min(5)]
        ));
    }

    // Money: conserved, nothing left frozen by a final transaction, each
    // transfer applied on both banks or on neither, as its status says.
    let initial = p.balance * p.accounts * 2;
    if o.total != initial {
        failures.push(format!(
            "money not conserved: {} (initially {initial})",
            o.total
        ));
    }
    if o.frozen != 0 && o.open.is_empty() {
        failures.push(format!("{} stays frozen", o.frozen));
    }
    let mut legs_wrong = Vec::new();
    for (gid, (amount, legs)) in &o.legs {
        let status = o.statuses.get(gid).map(String::as_str);
        let mut sorted = legs.clone();
        sorted.sort_unstable();
        let both = sorted == [-amount, *amount];
        let fine = match status {
            Some("confirmed") => both,
            Some("cancelled") | None => legs.is_empty(),
            // Still open and flagged: judged by the flag check above.
            Some(_) => true,
        };
        if !fine {
            legs_wrong.push(format!(
                "{gid} ({status:?}, amount {amount}): legs {legs:?}"
            ));
        }
        let agrees = match (&o.initiator.outcomes.get(gid), status) {
            (Some(TransferOutcome::Committed), Some(s)) => s != "cancelled",
            (Some(TransferOutcome::Rejected(_)), Some(s)) => s != "confirmed",
            _ => true,
        };
        if !agrees {
            legs_wrong.push(format!(
                "{gid}: the initiator saw {:?} but the transaction is {status:?}",
                o.initiator.outcomes.get(gid)
            ));
        }
    }
    legs_wrong.extend(
        o.strays
            .iter()
            .map(|g| format!("{g}: journal entries of no transfer")),
    );
    if !legs_wrong.is_empty() {
        legs_wrong.sort();
        failures.push(format!(
            "{} transfers applied wrongly, e.g. {:#?}",
            legs_wrong.len(),
            &legs_wrong[..legs_wrong.len().min(10)]
        ));
    }

    // The promise under test.
    let overlaps = &o.calls.overlaps;
    if !overlaps.is_empty() {
        let examples: Vec<String> = overlaps
            .iter()
            .take(10)
            .map(|x| {
                format!(
                    "{} {} {}: a call arrived at {:.2}s while the one of {:.2}s was in flight",
                    x.gid,
                    x.branch_id,
                    x.phase.as_str(),
                    x.second.as_secs_f64(),
                    x.first.as_secs_f64()
                )
            })
            .collect();
        failures.push(format!(
            "{} times a branch phase had two calls in flight at once:\n    {}",
            overlaps.len(),
            examples.join("\n    ")
        ));
    }

    // The chaos itself must have happened, or the run proves nothing.
    if chaos.kills == 0 || chaos.pg_restarts < 2 || chaos.cut_for.is_none() {
        failures.push(format!(
            "the run ended before its chaos did: {} kills, {} PostgreSQL restarts, cut off: {}",
            chaos.kills,
            chaos.pg_restarts,
            chaos.cut_for.is_some()
        ));
    }
    failures.extend(chaos.errors.iter().map(|e| format!("chaos loop: {e}")));
    failures.extend(
        chaos
            .db_down_checks
            .iter()
            .map(|e| format!("database down: {e}")),
    );

    let report = report(p, chaos, o, transfers_took, run_took);
    let _ = writeln!(std::io::stderr().lock(), "{report}");
    Verdict { failures }
}

fn report(
    p: &Params,
    chaos: &Chaos,
    o: &Outcome,
    transfers_took: Duration,
    run_took: Duration,
) -> String {
    let per_phase: Vec<String> = PHASES
        .iter()
        .zip(o.calls.calls)
        .filter(|(_, n)| *n > 0)
        .map(|(op, n)| format!("{n} {}", op.as_str()))
        .collect();
    let count = |s: &str| o.statuses.values().filter(|v| *v == s).count();
    let takeover = takeover_summary(&chaos.takeovers, &chaos.outages);
    let db_down = if chaos.db_down_checks.is_empty() {
        "Begin refused at once with UNAVAILABLE (database unreachable), /readyz failing, /healthz ok; served again without a restart".to_string()
    } else {
        chaos.db_down_checks.join("; ")
    };
    let flagged: Vec<String> = o
        .open
        .iter()
        .take(3)
        .map(|(g, s, r)| format!("{g} {s}: {}", r.as_deref().unwrap_or("not flagged")))
        .collect();
    format!(
        "chaos: {} transfers in {:.1}s (whole run {:.1}s), 3 instances, lease {:?}, call deadline {:?}\n  \
         chaos: {} SIGKILLs (each restarted), {} instances exited by themselves, {} PostgreSQL restarts, \
         instance 0 cut off from the database for {}\n  \
         calls: {} ({}), {} slow ({:?}), {} dropped at their deadline\n  \
         faults: {}\n  \
         initiators: {} committed, {} rejected, {} unknown\n  \
         transactions: {} confirmed, {} cancelled, {} flagged needs_attention, {} still open{}\n  \
         takeover: {takeover}\n  \
         database down: {db_down}\n  \
         money: {} (initially {}), {} frozen\n  \
         overlaps: {} branch phases had two calls in flight at once",
        p.transfers,
        transfers_took.as_secs_f64(),
        run_took.as_secs_f64(),
        p.lease,
        p.call_timeout,
        chaos.kills,
        chaos.unexpected_exits,
        chaos.pg_restarts,
        chaos
            .cut_for
            .map_or("-".to_string(), |d| format!("{:.1}s", d.as_secs_f64())),
        o.calls.calls.iter().sum::<u64>(),
        per_phase.join(", "),
        o.calls.slow,
        p.slow_by,
        o.calls.cut_at_deadline,
        o.faults,
        o.initiator.committed,
        o.initiator.rejected,
        o.initiator.unknown,
        count("confirmed"),
        count("cancelled"),
        o.flagged,
        o.open.len(),
        if flagged.is_empty() {
            String::new()
        } else {
            format!(" ({})", flagged.join("; "))
        },
        o.total,
        p.balance * p.accounts * 2,
        o.frozen,
        o.calls.overlaps.len(),
    )
}
