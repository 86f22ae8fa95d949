//! Admin wire types from store rows, and the per-phase view of a branch
//! reconstructed from its call events.

use chrono::{DateTime, Utc};
use concord_proto::v1 as pb;

use crate::api::convert::{call_status, event, mode, status, timestamp};
use crate::engine::operator::ParticipantView;
use crate::machine::{CallStatus, Mode, Status};
use crate::store::admin::{AdminStats, AdminTx};
use crate::store::{BranchRecord, EventRecord};

pub fn from_timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

/// The wire status back to the machine's; `None` for UNSPECIFIED or unknown.
pub fn status_from_wire(raw: i32) -> Option<Status> {
    Status::ALL
        .into_iter()
        .find(|s| status(*s) as i32 == raw && raw != 0)
}

pub fn mode_from_wire(raw: i32) -> Result<Option<Mode>, String> {
    match pb::TransactionMode::try_from(raw) {
        Ok(pb::TransactionMode::Unspecified) => Ok(None),
        Ok(pb::TransactionMode::Tcc) => Ok(Some(Mode::Tcc)),
        Ok(pb::TransactionMode::Saga) => Ok(Some(Mode::Saga)),
        Ok(pb::TransactionMode::Msg) => Ok(Some(Mode::Msg)),
        Err(_) => Err(format!("unknown mode {raw}")),
    }
}

/// Whether the recovery loop will drive this transaction again.
fn will_retry(a: &AdminTx) -> bool {
    !a.tx.status.is_final() && a.resolution.is_none() && !a.tx.paused
}

pub fn summary(a: &AdminTx) -> pb::TransactionSummary {
    let tx = &a.tx;
    pb::TransactionSummary {
        gid: tx.gid.to_string(),
        mode: mode(tx.mode) as i32,
        status: status(tx.status) as i32,
        created_at: Some(timestamp(tx.created_at)),
        updated_at: Some(timestamp(tx.updated_at)),
        deadline: Some(timestamp(tx.deadline)),
        decided_at: tx.decided_at.map(timestamp),
        finished_at: tx.finished_at.map(timestamp),
        attempts: tx.attempts,
        needs_attention: tx.needs_attention,
        attention_reason: tx.attention_reason.clone().unwrap_or_default(),
        rollback_reason: tx.rollback_reason.clone().unwrap_or_default(),
        paused: tx.paused,
        next_attempt_at: tx.next_attempt_at.filter(|_| will_retry(a)).map(timestamp),
        lease_owner: tx.owner.clone().unwrap_or_default(),
        lease_until: tx.lease_until.filter(|_| tx.owner.is_some()).map(timestamp),
        branch_count: a.branch_count,
        participants: a.participants.clone(),
        initiator: tx.initiator.clone().unwrap_or_default(),
        resolution: a.resolution.as_ref().map(|r| pb::Resolution {
            resolved_at: Some(timestamp(r.at)),
            resolved_by: r.by.clone(),
            note: r.note.clone(),
        }),
    }
}

/// Per-phase history of one branch, from its call events (oldest first).
fn phases(a: &AdminTx, b: &BranchRecord, events: &[EventRecord]) -> Vec<pb::PhaseDetail> {
    let branch_id = b.branch_id.as_str();
    let calls: Vec<&EventRecord> = events
        .iter()
        .filter(|e| e.kind == "call" && e.branch_id.as_deref() == Some(branch_id))
        .collect();
    // The first phase is Try for TCC and the action (Execute) for sagas;
    // the second is Confirm/Cancel or Compensate.
    let first = match a.tx.mode {
        Mode::Tcc => "try",
        Mode::Saga | Mode::Msg => "execute",
    };
    let mut names: Vec<String> = Vec::new();
    if b.first_phase != CallStatus::NotRequired {
        names.push(first.into());
    }
    for c in &calls {
        if let Some(p) = &c.phase
            && !names.contains(p)
        {
            names.push(p.clone());
        }
    }
    // The phase owed but not called yet.
    let owed = match a.tx.status {
        Status::Compensating
            if b.first_phase != CallStatus::Pending && !b.owed_phase().is_done() =>
        {
            Some("compensate")
        }
        other => other.second_phase().map(|p| p.as_str()),
    };
    if let Some(p) = owed
        && !names.iter().any(|n| n == p)
    {
        names.push(p.to_string());
    }
    names
        .into_iter()
        .map(|name| {
            let of_phase: Vec<&&EventRecord> = calls
                .iter()
                .filter(|c| c.phase.as_deref() == Some(name.as_str()))
                .collect();
            let st = if name == first {
                b.first_phase
            } else {
                b.owed_phase()
            };
            // The failures since the last success (all of them if none).
            let since_ok: Vec<&&&EventRecord> = of_phase
                .iter()
                .rev()
                .take_while(|c| c.code.as_deref() != Some("OK"))
                .collect();
            let failing = !st.is_done() && !since_ok.is_empty();
            let last = of_phase.last();
            let mut attempts = of_phase.len() as u32;
            if a.tx.mode == Mode::Tcc && name != first {
                // Events of a round can be lost in a database crash; the
                // branch row's counter is the floor.
                attempts = attempts.max(b.attempts);
            }
            pb::PhaseDetail {
                phase: name,
                status: call_status(st) as i32,
                attempts,
                last_code: if failing {
                    since_ok[0].code.clone().unwrap_or_default()
                } else {
                    String::new()
                },
                last_error: if failing {
                    since_ok[0].message.clone().unwrap_or_default()
                } else {
                    String::new()
                },
                last_attempt_at: last.map(|c| timestamp(c.at)),
                failing_since: if failing {
                    since_ok.last().map(|c| timestamp(c.at))
                } else {
                    None
                },
            }
        })
        .collect()
}

pub fn detail(
    a: &AdminTx,
    branches: &[BranchRecord],
    events: &[EventRecord],
) -> pb::TransactionDetail {
    let owed = a.tx.status.second_phase().is_some();
    pb::TransactionDetail {
        transaction: Some(summary(a)),
        branches: branches
            .iter()
            .map(|b| pb::BranchDetail {
                branch_id: b.branch_id.to_string(),
                participant: b.participant.to_string(),
                action: b.action.to_string(),
                phases: phases(a, b, events),
                next_attempt_at: a
                    .tx
                    .next_attempt_at
                    .filter(|_| will_retry(a) && owed && !b.owed_phase().is_done())
                    .map(timestamp),
                lease_owner: a.tx.owner.clone().unwrap_or_default(),
                call_timeout: b.call_timeout.map(|d| prost_types::Duration {
                    seconds: d.as_secs() as i64,
                    nanos: d.subsec_nanos() as i32,
                }),
                policy: crate::api::convert::call_policy_pb(&b.policy),
                skip: b.skipped.as_ref().map(|k| pb::BranchSkip {
                    skipped_at: Some(timestamp(k.at)),
                    skipped_by: k.by.clone(),
                    note: k.note.clone(),
                }),
            })
            .collect(),
        events: events.iter().map(event).collect(),
        metadata: a.tx.metadata.clone().into_iter().collect(),
    }
}

pub fn stats(s: &AdminStats) -> pb::Stats {
    pb::Stats {
        by_status: s
            .by_status
            .iter()
            .map(|(st, n)| pb::StatusCount {
                status: status(*st) as i32,
                count: *n,
            })
            .collect(),
        total: s.total,
        unfinished: s.unfinished,
        retry_backlog: s.retry_backlog,
        retry_due: s.retry_due,
        needs_attention: s.needs_attention,
        paused: s.paused,
        resolved: s.resolved,
        oldest_unfinished: s.oldest_unfinished.as_ref().map(summary),
    }
}

/// A participant with its endpoints' health as this instance saw it.
pub fn participant(p: &ParticipantView) -> pb::ParticipantHealth {
    pb::ParticipantHealth {
        name: p.participant.name.to_string(),
        actions: p
            .participant
            .actions
            .iter()
            .map(|a| a.to_string())
            .collect(),
        endpoints: p
            .endpoints
            .iter()
            .map(|e| {
                let s = e.calls.as_ref();
                pb::EndpointHealth {
                    url: e.endpoint.url.to_string(),
                    registered_at: Some(timestamp(e.endpoint.registered_at)),
                    last_seen_at: Some(timestamp(e.endpoint.last_seen_at)),
                    breaker: s.map_or("unknown", |s| s.breaker.as_str()).to_string(),
                    last_success_at: s.and_then(|s| s.last_success_at).map(timestamp),
                    recent_calls: s.map_or(0, |s| s.recent_calls),
                    recent_failures: s.map_or(0, |s| s.recent_failures),
                    last_failure_at: s.and_then(|s| s.last_failure_at).map(timestamp),
                    last_error: s.and_then(|s| s.last_error.clone()).unwrap_or_default(),
                    protocol: e.endpoint.protocol.as_str().to_string(),
                }
            })
            .collect(),
    }
}
