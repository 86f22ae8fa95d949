//! The one line that says why a transaction is not finished (`blocked_by`
//! in `tx show`): part of the document, so the JSON says it too.

use chrono::{DateTime, Utc};

use super::{BranchView, TxDetail};
use crate::cli::when::{rel, relative, span};

/// Why the transaction is not finished, in one line; `None` once final.
pub fn blocked_by(d: &TxDetail, now: DateTime<Utc>) -> Option<String> {
    let t = &d.transaction;
    if let Some(r) = &t.resolution {
        return Some(format!(
            "resolved by hand by {} {}: {}; it is not retried",
            r.resolved_by,
            rel(r.resolved_at, now),
            r.note
        ));
    }
    if t.is_final() {
        return None;
    }
    if t.paused {
        return Some(paused(d, now));
    }
    if t.status == "trying" {
        return Some(match t.deadline {
            Some(dl) if dl <= now => format!(
                "trying past its deadline ({}); the recovery loop rolls it back",
                relative(dl, now)
            ),
            Some(dl) => format!(
                "trying: waiting for the initiator to commit or roll back; deadline {}",
                relative(dl, now)
            ),
            None => "trying: waiting for the initiator to commit or roll back".into(),
        });
    }
    let next = match (&t.lease_owner, t.next_attempt_at) {
        (Some(owner), _) => format!("being driven by {owner} now"),
        (None, Some(at)) if at > now => format!("next retry {}", relative(at, now)),
        (None, Some(_)) => "retry due now".into(),
        (None, None) => "no retry scheduled".into(),
    };
    // The first branch whose owed phase is failing, and how many more.
    let failing: Vec<String> = d
        .branches
        .iter()
        .filter_map(|b| owed_phase(b, now))
        .collect();
    Some(match failing.as_slice() {
        [] => format!("{}: {next}", t.status),
        [one] => format!("{one}, {next}"),
        [first, rest @ ..] => format!("{first} (and {} more), {next}", rest.len()),
    })
}

/// "retries paused by alice 3m ago; resume with: …".
fn paused(d: &TxDetail, now: DateTime<Utc>) -> String {
    let by = d
        .events
        .iter()
        .rev()
        .find(|e| e.kind == "operator_pause")
        .map(|e| {
            format!(
                " by {} {}",
                e.actor.as_deref().unwrap_or("?"),
                rel(e.at, now)
            )
        })
        .unwrap_or_default();
    format!(
        "retries paused{by}; resume with: concord tx resume {}",
        d.transaction.gid
    )
}

/// The phase-2 call a branch still owes, and how it is failing; `None`
/// when it owes none.
fn owed_phase(b: &BranchView, now: DateTime<Utc>) -> Option<String> {
    let p = b
        .phases
        .iter()
        .rev()
        .find(|p| p.phase != "try" && p.status != "succeeded" && p.status != "skipped")?;
    let since = p
        .failing_since
        .map(|s| format!(" for {}", span(now - s)))
        .unwrap_or_default();
    Some(match (&p.last_code, &p.last_error) {
        (Some(code), err) => format!(
            "branch {} ({}.{}) {} failing{since}: {code} {}",
            b.branch_id,
            b.participant,
            b.action,
            p.phase,
            err.as_deref().unwrap_or("")
        )
        .trim_end()
        .to_string(),
        (None, _) => format!(
            "branch {} ({}.{}) {} not done yet",
            b.branch_id, b.participant, b.action, p.phase
        ),
    })
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::super::{PhaseView, Resolution, TxSummary};
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
    }

    fn summary(status: &str) -> TxSummary {
        TxSummary {
            gid: "g1".into(),
            mode: "tcc".into(),
            status: status.into(),
            created_at: Some(now() - Duration::minutes(20)),
            updated_at: None,
            deadline: Some(now() - Duration::minutes(19)),
            decided_at: Some(now() - Duration::minutes(14)),
            finished_at: None,
            attempts: 12,
            needs_attention: true,
            attention_reason: None,
            rollback_reason: None,
            paused: false,
            next_attempt_at: Some(now() + Duration::seconds(40)),
            lease_owner: None,
            lease_until: None,
            branch_count: 2,
            participants: vec![],
            resolution: None,
            initiator: None,
        }
    }

    fn detail(status: &str) -> TxDetail {
        let phase = |phase: &str, status: &str, failing: bool| PhaseView {
            phase: phase.into(),
            status: status.into(),
            attempts: 1,
            last_code: failing.then(|| "UNAVAILABLE".into()),
            last_error: failing.then(|| "connection refused".into()),
            last_attempt_at: None,
            failing_since: failing.then(|| now() - Duration::minutes(14)),
        };
        TxDetail {
            transaction: summary(status),
            blocked_by: None,
            branches: vec![
                BranchView {
                    branch_id: "1".into(),
                    participant: "order".into(),
                    action: "reserve".into(),
                    phases: vec![
                        phase("try", "succeeded", false),
                        phase("cancel", "succeeded", false),
                    ],
                    next_attempt_at: None,
                    lease_owner: None,
                    policy: None,
                    skipped: None,
                },
                BranchView {
                    branch_id: "2".into(),
                    participant: "payment".into(),
                    action: "capture".into(),
                    phases: vec![
                        phase("try", "succeeded", false),
                        phase("cancel", "unknown", true),
                    ],
                    next_attempt_at: None,
                    lease_owner: None,
                    policy: None,
                    skipped: None,
                },
            ],
            events: vec![],
            metadata: Default::default(),
        }
    }

    #[test]
    fn blocked_by_names_the_failing_branch() {
        assert_eq!(
            blocked_by(&detail("cancelling"), now()).as_deref(),
            Some(
                "branch 2 (payment.capture) cancel failing for 14m: UNAVAILABLE connection refused, next retry in 40s"
            )
        );
        let mut driven = detail("cancelling");
        driven.transaction.lease_owner = Some("host-1".into());
        assert!(
            blocked_by(&driven, now())
                .unwrap()
                .ends_with(", being driven by host-1 now")
        );
    }

    #[test]
    fn blocked_by_for_paused_resolved_trying_and_final() {
        let mut d = detail("cancelling");
        d.transaction.paused = true;
        assert!(
            blocked_by(&d, now())
                .unwrap()
                .starts_with("retries paused; resume with: concord tx resume g1")
        );
        d.transaction.resolution = Some(Resolution {
            resolved_at: Some(now() - Duration::minutes(2)),
            resolved_by: "alice".into(),
            note: "refunded by hand".into(),
        });
        assert_eq!(
            blocked_by(&d, now()).as_deref(),
            Some("resolved by hand by alice 2m ago: refunded by hand; it is not retried")
        );
        let mut d = detail("trying");
        d.branches.clear();
        assert!(blocked_by(&d, now()).unwrap().contains("past its deadline"));
        d.transaction.deadline = None;
        assert_eq!(
            blocked_by(&d, now()).as_deref(),
            Some("trying: waiting for the initiator to commit or roll back")
        );
        assert_eq!(blocked_by(&detail("cancelled"), now()), None);
    }
}
