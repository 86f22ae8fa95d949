//! Text output of the CLI: aligned tables, relative times ("3m ago",
//! "in 40s"), colour only when asked (on a terminal). Pure: every function
//! takes the time and returns a string; what to say comes from [`model`]
//! (including why a transaction is not finished), this only lays it out.
//!
//! [`model`]: super::model

mod detail;
mod table;

use chrono::{DateTime, Utc};

pub use self::detail::tx_detail;
use self::table::{Cell, table};
pub use self::table::{Paint, Style};
use super::model::{ActionResult, BulkView, EndpointView, Participants, Stats, TxSummary};
use super::when::rel;

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

/// `tx bulk`: one summary line, then a row per transaction.
pub fn bulk(v: &BulkView, paint: Paint) -> String {
    let summary = if v.dry_run {
        format!(
            "{} of {} transactions would change ({} unchanged, {} refused); dry run, nothing changed\n",
            v.count("would_change"),
            v.results.len(),
            v.count("unchanged"),
            v.count("refused")
        )
    } else {
        format!(
            "{}: {} changed, {} unchanged, {} refused, {} failed\n",
            v.action,
            v.count("changed"),
            v.count("unchanged"),
            v.count("refused"),
            v.count("failed")
        )
    };
    let rows: Vec<Vec<Cell>> = v
        .results
        .iter()
        .map(|r| {
            let style = match r.outcome.as_str() {
                "changed" | "would_change" => Some(Style::Green),
                "refused" | "failed" => Some(Style::Red),
                _ => Some(Style::Dim),
            };
            vec![
                Cell::plain(&r.gid),
                Cell::plain(&r.status),
                Cell::styled(r.outcome.clone(), style),
                Cell::plain(&r.message),
            ]
        })
        .collect();
    let mut out = summary;
    if !rows.is_empty() {
        out.push_str(&table(
            &["GID", "STATUS", "RESULT", "MESSAGE"],
            &rows,
            paint,
        ));
    }
    out
}

pub fn participants(p: &Participants, now: DateTime<Utc>, paint: Paint) -> String {
    let mut rows = Vec::new();
    for part in &p.participants {
        let endpoints: Vec<Option<&EndpointView>> = if part.endpoints.is_empty() {
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
                // gRPC, the default, goes unmarked.
                Cell::plain(e.map_or_else(
                    || "(no endpoint)".to_string(),
                    |e| match e.protocol.as_str() {
                        "grpc" => e.url.clone(),
                        other => format!("{} ({other})", e.url),
                    },
                )),
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
