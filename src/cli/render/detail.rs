//! `tx show` as text: a heading, the facts and why it is not finished,
//! the branches with each phase, then the history.

use chrono::{DateTime, Utc};

use super::shown_status;
use super::table::{Cell, Paint, Style, table};
use crate::cli::model::{BranchView, EventView, TxDetail, TxSummary};
use crate::cli::when::{rel, relative};

pub fn tx_detail(d: &TxDetail, now: DateTime<Utc>, paint: Paint) -> String {
    let mut out = heading(&d.transaction, paint);
    out.push_str(&facts(d, now, paint));
    out.push('\n');
    out.push_str(&branches(d, now, paint));
    out.push_str(&policies(d));
    out.push('\n');
    out.push_str(&paint.paint(Some(Style::Bold), "history"));
    out.push('\n');
    out.push_str(&history(d, now, paint));
    out
}

/// "transaction GID  status" and the flags that matter, one line.
fn heading(t: &TxSummary, paint: Paint) -> String {
    let (status, style) = shown_status(t);
    let mut head = format!(
        "{} {}  {}",
        paint.paint(Some(Style::Bold), "transaction"),
        paint.paint(Some(Style::Bold), &t.gid),
        paint.paint(style, &status)
    );
    if t.resolution.is_some() {
        head.push_str(&format!(" (was {})", t.status));
    }
    if t.needs_attention && !t.is_final() {
        head.push_str(&format!(
            "  {}",
            paint.paint(Some(Style::Red), "needs attention")
        ));
    }
    if t.paused {
        head.push_str(&format!("  {}", paint.paint(Some(Style::Yellow), "paused")));
    }
    head.push('\n');
    head
}

/// Indented `name  value` lines, ending with "why" when it is not finished.
fn facts(d: &TxDetail, now: DateTime<Utc>, paint: Paint) -> String {
    let t = &d.transaction;
    let mut facts: Vec<(&str, String)> = vec![
        ("mode", t.mode.clone()),
        ("created", rel(t.created_at, now)),
    ];
    if let Some(who) = &t.initiator {
        facts.push(("begun by", who.clone()));
    }
    // Once it is finished (or resolved by hand) the deadline counts for
    // nothing.
    if !t.is_final() && t.resolution.is_none() {
        let deadline = t
            .deadline
            .map_or_else(|| "none".into(), |at| relative(at, now));
        facts.push(("deadline", deadline));
    }
    if let Some(at) = t.decided_at {
        facts.push(("decided", relative(at, now)));
    }
    if let Some(at) = t.finished_at {
        facts.push(("finished", relative(at, now)));
    }
    facts.push(("rounds", t.attempts.to_string()));
    if let Some(r) = &t.rollback_reason {
        facts.push(("rollback reason", r.clone()));
    }
    if let Some(r) = &t.attention_reason {
        facts.push(("attention", r.clone()));
    }
    if let Some(o) = &t.lease_owner {
        facts.push(("lease", format!("{o} until {}", rel(t.lease_until, now))));
    }
    let mut out = String::new();
    for (k, v) in facts {
        out.push_str(&format!("  {k:<16} {v}\n"));
    }
    if let Some(why) = &d.blocked_by {
        let style = if t.resolution.is_some() {
            Style::Magenta
        } else {
            Style::Red
        };
        out.push_str(&format!(
            "  {:<16} {}\n",
            "why",
            paint.paint(Some(style), why)
        ));
    }
    out
}

/// The branches with a policy of their own (the request's or their
/// action's), one line each, and the branches an operator skipped.
fn policies(d: &TxDetail) -> String {
    let policies = d.branches.iter().filter_map(|b| {
        let p = b.policy.as_ref()?;
        Some(format!("  policy of branch {}: {p}\n", b.branch_id))
    });
    let skips = d.branches.iter().filter_map(|b| {
        let k = b.skipped.as_ref()?;
        Some(format!(
            "  branch {} skipped by {}: {}\n",
            b.branch_id, k.by, k.note
        ))
    });
    policies.chain(skips).collect()
}

/// One row per phase of each branch; the branch is named on its first.
fn branches(d: &TxDetail, now: DateTime<Utc>, paint: Paint) -> String {
    let rows: Vec<Vec<Cell>> = d
        .branches
        .iter()
        .flat_map(|b| branch_rows(b, now))
        .collect();
    table(
        &[
            "BRANCH",
            "PARTICIPANT.ACTION",
            "PHASE",
            "STATUS",
            "CALLS",
            "LAST CALL",
            "NEXT RETRY",
            "LAST ERROR",
        ],
        &rows,
        paint,
    )
}

fn branch_rows(b: &BranchView, now: DateTime<Utc>) -> Vec<Vec<Cell>> {
    b.phases
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let first = i == 0;
            let style = match p.status.as_str() {
                "succeeded" => Some(Style::Green),
                "pending" | "not_required" => None,
                _ => Some(Style::Red),
            };
            let error = match (&p.last_code, &p.last_error) {
                (Some(c), Some(e)) => format!("{c} {e}"),
                (Some(c), None) => c.clone(),
                _ => String::new(),
            };
            let is_owed = p.phase != "try" && p.status != "succeeded";
            vec![
                Cell::plain(if first { b.branch_id.as_str() } else { "" }),
                Cell::plain(if first {
                    format!("{}.{}", b.participant, b.action)
                } else {
                    String::new()
                }),
                Cell::plain(&p.phase),
                Cell::styled(&p.status, style),
                Cell::plain(p.attempts.to_string()),
                Cell::plain(rel(p.last_attempt_at, now)),
                Cell::plain(if is_owed {
                    rel(b.next_attempt_at, now)
                } else {
                    String::new()
                }),
                Cell::styled(error, Some(Style::Red)),
            ]
        })
        .collect()
}

/// The events, oldest first.
fn history(d: &TxDetail, now: DateTime<Utc>, paint: Paint) -> String {
    let rows: Vec<Vec<Cell>> = d
        .events
        .iter()
        .map(|e| {
            vec![
                Cell::styled(
                    e.at.map(|t| t.format("%H:%M:%S%.3f").to_string())
                        .unwrap_or_default(),
                    Some(Style::Dim),
                ),
                Cell::plain(rel(e.at, now)),
                Cell::styled(&e.kind, event_style(e)),
                Cell::plain(e.actor.clone().unwrap_or_default()),
                Cell::plain(event_detail(e)),
            ]
        })
        .collect();
    table(
        &["TIME (UTC)", "WHEN", "EVENT", "BY", "DETAIL"],
        &rows,
        paint,
    )
}

/// "branch 2 cancel #3 UNAVAILABLE connection refused", "[cancelling] why".
fn event_detail(e: &EventView) -> String {
    let mut what = Vec::new();
    if let Some(b) = &e.branch_id {
        what.push(format!("branch {b}"));
    }
    if let Some(p) = &e.phase {
        what.push(p.clone());
    }
    if let Some(a) = e.attempt {
        what.push(format!("#{a}"));
    }
    if let Some(c) = &e.code {
        what.push(c.clone());
    }
    // A call's status is its code, already shown.
    if e.kind != "call"
        && let Some(s) = &e.status
    {
        what.push(format!("[{s}]"));
    }
    if let Some(m) = &e.message {
        what.push(m.clone());
    }
    what.join(" ")
}

/// Magenta for a human's hand, red for trouble.
fn event_style(e: &EventView) -> Option<Style> {
    if e.kind.starts_with("operator_") {
        Some(Style::Magenta)
    } else if e.kind == "needs_attention" || e.code.as_deref().is_some_and(|c| c != "OK") {
        Some(Style::Red)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
    }

    fn saga(status: &str, deadline: Option<DateTime<Utc>>) -> TxDetail {
        TxDetail {
            transaction: TxSummary {
                gid: "g1".into(),
                mode: "saga".into(),
                status: status.into(),
                created_at: Some(now() - Duration::minutes(2)),
                updated_at: None,
                deadline,
                decided_at: None,
                finished_at: None,
                attempts: 0,
                needs_attention: false,
                attention_reason: None,
                rollback_reason: None,
                paused: false,
                next_attempt_at: None,
                lease_owner: None,
                lease_until: None,
                branch_count: 0,
                participants: vec![],
                resolution: None,
                initiator: None,
            },
            blocked_by: None,
            branches: vec![],
            events: vec![],
            metadata: Default::default(),
        }
    }

    fn fact(text: &str, name: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(name))
            .map(|v| v.trim().to_string())
    }

    #[test]
    fn a_saga_without_deadline_shows_none() {
        let text = tx_detail(&saga("running", None), now(), Paint(false));
        assert_eq!(fact(&text, "deadline").as_deref(), Some("none"), "{text}");
    }

    #[test]
    fn the_deadline_shows_until_it_is_finished() {
        let soon = Some(now() + Duration::seconds(25));
        let text = tx_detail(&saga("running", soon), now(), Paint(false));
        assert_eq!(fact(&text, "deadline").as_deref(), Some("in 25s"), "{text}");
        for status in ["succeeded", "compensated"] {
            let text = tx_detail(&saga(status, soon), now(), Paint(false));
            assert_eq!(fact(&text, "deadline"), None, "{text}");
        }
        let mut resolved = saga("compensating", soon);
        resolved.transaction.resolution = Some(crate::cli::model::Resolution {
            resolved_at: Some(now()),
            resolved_by: "alice".into(),
            note: "done by hand".into(),
        });
        let text = tx_detail(&resolved, now(), Paint(false));
        assert_eq!(fact(&text, "deadline"), None, "{text}");
    }
}
