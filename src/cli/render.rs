//! Text output of the CLI: aligned tables, relative times ("3m ago",
//! "in 40s"), colour only when asked (on a terminal), and the one line that
//! says why a transaction is not finished. Pure: every function takes the
//! time and returns a string.

use chrono::{DateTime, Utc};

use super::model::{ActionResult, Participants, Stats, TxDetail, TxSummary};

/// Colours used, sparingly: red for trouble, yellow for waiting, green for
/// done, magenta for a human's hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Red,
    Yellow,
    Green,
    Magenta,
    Dim,
    Bold,
}

/// Applies styles when enabled (stdout is a terminal and NO_COLOR unset).
#[derive(Debug, Clone, Copy)]
pub struct Paint(pub bool);

impl Paint {
    pub fn paint(self, style: Option<Style>, text: &str) -> String {
        let Some(style) = style.filter(|_| self.0) else {
            return text.to_string();
        };
        let code = match style {
            Style::Red => "31",
            Style::Yellow => "33",
            Style::Green => "32",
            Style::Magenta => "35",
            Style::Dim => "2",
            Style::Bold => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// One table cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub style: Option<Style>,
}

impl Cell {
    pub fn plain(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            style: None,
        }
    }

    pub fn styled(text: impl Into<String>, style: Option<Style>) -> Self {
        Self {
            text: text.into(),
            style,
        }
    }
}

/// Columns aligned on the text's width (styles do not count), two spaces
/// apart, the last column unpadded.
pub fn table(headers: &[&str], rows: &[Vec<Cell>], paint: Paint) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.text.chars().count());
            }
        }
    }
    let line = |cells: Vec<(String, Option<Style>)>| -> String {
        let n = cells.len();
        let mut out = String::new();
        for (i, (text, style)) in cells.into_iter().enumerate() {
            let pad = if i + 1 < n {
                widths[i].saturating_sub(text.chars().count()) + 2
            } else {
                0
            };
            out.push_str(&paint.paint(style, &text));
            out.push_str(&" ".repeat(pad));
        }
        out.trim_end().to_string()
    };
    let mut out = line(
        headers
            .iter()
            .map(|h| (h.to_string(), Some(Style::Bold)))
            .collect(),
    );
    out.push('\n');
    for row in rows {
        out.push_str(&line(
            row.iter().map(|c| (c.text.clone(), c.style)).collect(),
        ));
        out.push('\n');
    }
    out
}

/// A length of time in its largest unit: "40s", "14m", "3h", "2d".
pub fn span(d: chrono::Duration) -> String {
    let s = d.num_seconds().abs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// "3m ago", "in 40s", "now".
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let d = now - t;
    if d.num_milliseconds().abs() < 1000 {
        "now".into()
    } else if d > chrono::Duration::zero() {
        format!("{} ago", span(d))
    } else {
        format!("in {}", span(d))
    }
}

fn rel(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    t.map(|t| relative(t, now)).unwrap_or_else(|| "-".into())
}

/// The status as an operator should read it: a resolved transaction is
/// shown as resolved, never as finished.
pub fn shown_status(t: &TxSummary) -> (String, Option<Style>) {
    if t.resolution.is_some() {
        return ("resolved".into(), Some(Style::Magenta));
    }
    let style = match t.status.as_str() {
        _ if t.is_final() => Some(Style::Green),
        _ if t.needs_attention => Some(Style::Red),
        _ => Some(Style::Yellow),
    };
    (t.status.clone(), style)
}

fn flags(t: &TxSummary) -> String {
    let mut f = Vec::new();
    // A finished transaction keeps the flag it had; it needs nobody now.
    if t.needs_attention && !t.is_final() && t.resolution.is_none() {
        f.push("attention");
    }
    if t.paused {
        f.push("paused");
    }
    if t.resolution.is_some() {
        f.push("resolved");
    }
    if t.lease_owner.is_some() {
        f.push("leased");
    }
    f.join(",")
}

pub fn tx_list(list: &[TxSummary], now: DateTime<Utc>, paint: Paint) -> String {
    let rows: Vec<Vec<Cell>> = list
        .iter()
        .map(|t| {
            let (status, style) = shown_status(t);
            vec![
                Cell::plain(&t.gid),
                Cell::styled(status, style),
                Cell::styled(
                    flags(t),
                    Some(if flags(t).contains("attention") {
                        Style::Red
                    } else {
                        Style::Dim
                    }),
                ),
                Cell::plain(rel(t.created_at, now)),
                Cell::plain(rel(t.updated_at, now)),
                Cell::plain(t.attempts.to_string()),
                Cell::plain(rel(t.next_attempt_at, now)),
                Cell::plain(t.participants.join(",")),
            ]
        })
        .collect();
    table(
        &[
            "GID",
            "STATUS",
            "FLAGS",
            "CREATED",
            "UPDATED",
            "ROUNDS",
            "NEXT RETRY",
            "PARTICIPANTS",
        ],
        &rows,
        paint,
    )
}

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
        return Some(format!(
            "retries paused{by}; resume with: concord tx resume {}",
            t.gid
        ));
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
    let next = match t.next_attempt_at {
        Some(at) if at > now => format!("next retry {}", relative(at, now)),
        Some(_) => "retry due now".into(),
        None => "no retry scheduled".into(),
    };
    let next = match &t.lease_owner {
        Some(owner) => format!("being driven by {owner} now"),
        None => next,
    };
    // The first branch whose owed phase is failing, and how many more.
    let failing: Vec<String> = d
        .branches
        .iter()
        .filter_map(|b| {
            let p = b
                .phases
                .iter()
                .rev()
                .find(|p| p.phase != "try" && p.status != "succeeded")?;
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
        })
        .collect();
    Some(match failing.as_slice() {
        [] => format!("{}: {next}", t.status),
        [one] => format!("{one}, {next}"),
        [first, rest @ ..] => format!("{first} (and {} more), {next}", rest.len()),
    })
}

pub fn tx_detail(d: &TxDetail, now: DateTime<Utc>, paint: Paint) -> String {
    let t = &d.transaction;
    let mut out = String::new();
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
    out.push_str(&head);
    out.push('\n');
    let mut facts: Vec<(&str, String)> = vec![
        ("mode", t.mode.clone()),
        ("created", rel(t.created_at, now)),
        ("deadline", rel(t.deadline, now)),
    ];
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
    for (k, v) in facts {
        out.push_str(&format!("  {k:<16} {v}\n"));
    }
    if let Some(why) = &d.blocked_by {
        out.push_str(&format!(
            "  {:<16} {}\n",
            "why",
            paint.paint(
                Some(if t.resolution.is_some() {
                    Style::Magenta
                } else {
                    Style::Red
                }),
                why
            )
        ));
    }
    out.push('\n');
    let mut rows = Vec::new();
    for b in &d.branches {
        for (i, p) in b.phases.iter().enumerate() {
            let style = match p.status.as_str() {
                "succeeded" => Some(Style::Green),
                "pending" | "not_required" => None,
                _ => Some(Style::Red),
            };
            let first = i == 0;
            let error = match (&p.last_code, &p.last_error) {
                (Some(c), Some(e)) => format!("{c} {e}"),
                (Some(c), None) => c.clone(),
                _ => String::new(),
            };
            let is_owed = p.phase != "try" && p.status != "succeeded";
            rows.push(vec![
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
            ]);
        }
    }
    out.push_str(&table(
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
    ));
    out.push('\n');
    out.push_str(&paint.paint(Some(Style::Bold), "history"));
    out.push('\n');
    let rows: Vec<Vec<Cell>> = d
        .events
        .iter()
        .map(|e| {
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
            if e.kind != "call"
                && let Some(s) = &e.status
            {
                what.push(format!("[{s}]"));
            }
            if let Some(m) = &e.message {
                what.push(m.clone());
            }
            let style = if e.kind.starts_with("operator_") {
                Some(Style::Magenta)
            } else if e.kind == "needs_attention" || e.code.as_deref().is_some_and(|c| c != "OK") {
                Some(Style::Red)
            } else {
                None
            };
            vec![
                Cell::styled(
                    e.at.map(|t| t.format("%H:%M:%S%.3f").to_string())
                        .unwrap_or_default(),
                    Some(Style::Dim),
                ),
                Cell::plain(rel(e.at, now)),
                Cell::styled(&e.kind, style),
                Cell::plain(e.actor.clone().unwrap_or_default()),
                Cell::plain(what.join(" ")),
            ]
        })
        .collect();
    out.push_str(&table(
        &["TIME (UTC)", "WHEN", "EVENT", "BY", "DETAIL"],
        &rows,
        paint,
    ));
    out
}

pub fn action(r: &ActionResult, paint: Paint) -> String {
    let style = if r.changed {
        Some(Style::Green)
    } else {
        Some(Style::Dim)
    };
    let mut out = format!("{}: {}", r.gid, paint.paint(style, &r.message));
    if let Some(t) = &r.transaction {
        let (status, style) = shown_status(t);
        out.push_str(&format!(" (now {}", paint.paint(style, &status)));
        if t.paused {
            out.push_str(", paused");
        }
        out.push(')');
    }
    out.push('\n');
    out
}

pub fn participants(p: &Participants, now: DateTime<Utc>, paint: Paint) -> String {
    let mut rows = Vec::new();
    for part in &p.participants {
        let endpoints: Vec<Option<&super::model::EndpointView>> = if part.endpoints.is_empty() {
            vec![None]
        } else {
            part.endpoints.iter().map(Some).collect()
        };
        for (i, e) in endpoints.into_iter().enumerate() {
            let first = i == 0;
            let (breaker, style) = match e.map(|e| e.breaker.as_str()) {
                Some("closed") => ("closed", Some(Style::Green)),
                Some("open") => ("open", Some(Style::Red)),
                Some("half_open") => ("half_open", Some(Style::Yellow)),
                Some(other) => (other, Some(Style::Dim)),
                None => ("-", None),
            };
            let failures = match e {
                Some(e) if e.recent_calls > 0 => format!(
                    "{}/{} ({:.0}%)",
                    e.recent_failures,
                    e.recent_calls,
                    e.failure_rate.unwrap_or(0.0) * 100.0
                ),
                _ => "-".into(),
            };
            let fail_style = e.filter(|e| e.recent_failures > 0).map(|_| Style::Red);
            rows.push(vec![
                Cell::plain(if first { part.name.as_str() } else { "" }),
                Cell::plain(e.map_or("(no endpoint)", |e| e.url.as_str())),
                Cell::styled(breaker, style),
                Cell::styled(failures, fail_style),
                Cell::plain(rel(e.and_then(|e| e.last_success_at), now)),
                Cell::plain(rel(e.and_then(|e| e.last_seen_at), now)),
                Cell::plain(if first {
                    part.actions.join(",")
                } else {
                    String::new()
                }),
                Cell::styled(
                    // Only while the last failure is newer than the last
                    // success.
                    e.filter(|e| e.last_failure_at > e.last_success_at)
                        .and_then(|e| e.last_error.clone())
                        .unwrap_or_default(),
                    Some(Style::Red),
                ),
            ]);
        }
    }
    table(
        &[
            "PARTICIPANT",
            "ENDPOINT",
            "BREAKER",
            "FAILED (RECENT)",
            "LAST SUCCESS",
            "REGISTERED",
            "ACTIONS",
            "LAST ERROR",
        ],
        &rows,
        paint,
    )
}

pub fn stats(s: &Stats, now: DateTime<Utc>, paint: Paint) -> String {
    let mut rows = vec![
        vec![Cell::plain("total"), Cell::plain(s.total.to_string())],
        vec![
            Cell::plain("unfinished"),
            Cell::plain(s.unfinished.to_string()),
        ],
    ];
    // In the state machine's order.
    let mut keys: Vec<&String> = s.by_status.keys().collect();
    keys.sort_by_key(|k| {
        crate::machine::Status::ALL
            .iter()
            .position(|s| s.as_str() == k.as_str())
    });
    for k in keys {
        rows.push(vec![
            Cell::plain(format!("  {k}")),
            Cell::plain(s.by_status[k].to_string()),
        ]);
    }
    let attention_style = (s.needs_attention > 0).then_some(Style::Red);
    rows.push(vec![
        Cell::plain("needs attention"),
        Cell::styled(s.needs_attention.to_string(), attention_style),
    ]);
    rows.push(vec![
        Cell::plain("retry backlog"),
        Cell::plain(format!("{} ({} due now)", s.retry_backlog, s.retry_due)),
    ]);
    rows.push(vec![
        Cell::plain("paused"),
        Cell::plain(s.paused.to_string()),
    ]);
    rows.push(vec![
        Cell::plain("resolved by hand"),
        Cell::plain(s.resolved.to_string()),
    ]);
    rows.push(vec![
        Cell::plain("oldest unfinished"),
        Cell::plain(match &s.oldest_unfinished {
            Some(t) => format!(
                "{} ({}, created {})",
                t.gid,
                t.status,
                rel(t.created_at, now)
            ),
            None => "-".into(),
        }),
    ]);
    table(&["", ""], &rows, paint)
        .split_once('\n')
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::super::model::{BranchView, PhaseView};
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn relative_times() {
        assert_eq!(relative(now() - Duration::minutes(3), now()), "3m ago");
        assert_eq!(relative(now() + Duration::seconds(40), now()), "in 40s");
        assert_eq!(relative(now(), now()), "now");
        assert_eq!(relative(now() - Duration::hours(26), now()), "1d ago");
        assert_eq!(span(Duration::minutes(14)), "14m");
        assert_eq!(span(Duration::seconds(7200)), "2h");
    }

    #[test]
    fn tables_align_on_text_not_colour_codes() {
        let rows = vec![
            vec![Cell::styled("a", Some(Style::Red)), Cell::plain("x")],
            vec![Cell::plain("long"), Cell::plain("y")],
        ];
        let plain = table(&["H", "V"], &rows, Paint(false));
        assert_eq!(plain, "H     V\na     x\nlong  y\n");
        let coloured = table(&["H", "V"], &rows, Paint(true));
        assert!(coloured.contains("\x1b[31ma\x1b[0m     x"), "{coloured:?}");
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
        d.transaction.resolution = Some(super::super::model::Resolution {
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
        assert_eq!(blocked_by(&detail("cancelled"), now()), None);
    }
}
