//! What the CLI prints, as data: the documented JSON shape of every command
//! (`--output json`), converted from the wire types once. The text output
//! is rendered from the same values, so both always say the same thing.
//!
//! Stability: fields are only ever added. Times are RFC 3339 in UTC;
//! absent values are `null`; statuses are lowercase words ("confirming").
//!
//! Why a transaction is not finished ([`TxDetail::blocked_by`]) is decided
//! here too (`why.rs`), so that the JSON says it as the text does.

mod policy;
mod why;

pub use self::why::blocked_by;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use concord_proto::v1 as pb;
use serde::Serialize;

use crate::api::admin::convert::from_timestamp;
use crate::store::no_deadline;

/// Lowercase name of a protobuf enum value, without its type prefix.
fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

pub fn status_name(raw: i32) -> String {
    pb::TransactionStatus::try_from(raw).map_or_else(
        |_| "unknown".into(),
        |s| enum_name(s.as_str_name(), "TRANSACTION_STATUS_"),
    )
}

fn call_status_name(raw: i32) -> String {
    pb::CallStatus::try_from(raw).map_or_else(
        |_| "unknown".into(),
        |s| enum_name(s.as_str_name(), "CALL_STATUS_"),
    )
}

fn mode_name(raw: i32) -> String {
    pb::TransactionMode::try_from(raw).map_or_else(
        |_| "unknown".into(),
        |s| enum_name(s.as_str_name(), "TRANSACTION_MODE_"),
    )
}

fn time(t: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.as_ref().and_then(from_timestamp)
}

/// The wire's deadline; `None` for the far-future stand-in the store keeps
/// for a saga submitted without one.
fn deadline(t: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    time(t).filter(|d| *d < no_deadline())
}

fn text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: String,
    pub note: String,
}

/// One transaction, as in `tx list`.
#[derive(Debug, Clone, Serialize)]
pub struct TxSummary {
    pub gid: String,
    pub mode: String,
    /// State-machine status; a resolved transaction keeps the one it had.
    pub status: String,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Null when it has none (a saga submitted without a timeout).
    pub deadline: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Phase-2 rounds that did not finish it.
    pub attempts: u32,
    pub needs_attention: bool,
    pub attention_reason: Option<String>,
    pub rollback_reason: Option<String>,
    pub paused: bool,
    /// When it is driven next; null when it will not be.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub branch_count: u32,
    pub participants: Vec<String>,
    /// Set when an operator resolved it by hand.
    pub resolution: Option<Resolution>,
    /// The identity that began it; absent when authentication was off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initiator: Option<String>,
}

impl TxSummary {
    pub fn from_wire(t: &pb::TransactionSummary) -> Self {
        Self {
            gid: t.gid.clone(),
            mode: mode_name(t.mode),
            status: status_name(t.status),
            created_at: time(&t.created_at),
            updated_at: time(&t.updated_at),
            deadline: deadline(&t.deadline),
            decided_at: time(&t.decided_at),
            finished_at: time(&t.finished_at),
            attempts: t.attempts,
            needs_attention: t.needs_attention,
            attention_reason: text(&t.attention_reason),
            rollback_reason: text(&t.rollback_reason),
            paused: t.paused,
            next_attempt_at: time(&t.next_attempt_at),
            lease_owner: text(&t.lease_owner),
            lease_until: time(&t.lease_until),
            branch_count: t.branch_count,
            participants: t.participants.clone(),
            initiator: text(&t.initiator),
            resolution: t.resolution.as_ref().map(|r| Resolution {
                resolved_at: time(&r.resolved_at),
                resolved_by: r.resolved_by.clone(),
                note: r.note.clone(),
            }),
        }
    }

    pub fn is_final(&self) -> bool {
        crate::machine::Status::parse(&self.status).is_some_and(|s| s.is_final())
    }
}

/// `tx list`.
#[derive(Debug, Clone, Serialize)]
pub struct TxList {
    pub transactions: Vec<TxSummary>,
    /// Pass as `--cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseView {
    /// "try", "confirm" or "cancel".
    pub phase: String,
    /// "pending", "succeeded", "rejected", "unknown" or "not_required".
    pub status: String,
    pub attempts: u32,
    pub last_code: Option<String>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BranchView {
    pub branch_id: String,
    pub participant: String,
    pub action: String,
    pub phases: Vec<PhaseView>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    /// Its own call timeout and retry policy in one line; `null` when it
    /// follows the coordinator's settings.
    pub policy: Option<String>,
    /// Set when an operator skipped its owed call by hand.
    pub skipped: Option<SkipView>,
}

/// Who skipped a branch's owed call, when, and why.
#[derive(Debug, Clone, Serialize)]
pub struct SkipView {
    pub at: Option<DateTime<Utc>>,
    pub by: String,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub id: i64,
    pub at: Option<DateTime<Utc>>,
    pub kind: String,
    pub status: Option<String>,
    pub branch_id: Option<String>,
    pub phase: Option<String>,
    pub attempt: Option<u32>,
    pub code: Option<String>,
    pub message: Option<String>,
    /// Coordinator instance, or the name of an operator's token.
    pub actor: Option<String>,
}

/// `tx show`.
#[derive(Debug, Clone, Serialize)]
pub struct TxDetail {
    pub transaction: TxSummary,
    /// One line: why it is not finished (null once final).
    pub blocked_by: Option<String>,
    pub branches: Vec<BranchView>,
    /// Oldest first.
    pub events: Vec<EventView>,
    pub metadata: BTreeMap<String, String>,
}

impl TxDetail {
    pub fn from_wire(d: &pb::TransactionDetail, now: DateTime<Utc>) -> Self {
        let transaction = TxSummary::from_wire(&d.transaction.clone().unwrap_or_default());
        let branches = d
            .branches
            .iter()
            .map(|b| BranchView {
                branch_id: b.branch_id.clone(),
                participant: b.participant.clone(),
                action: b.action.clone(),
                phases: b
                    .phases
                    .iter()
                    .map(|p| PhaseView {
                        phase: p.phase.clone(),
                        status: call_status_name(p.status),
                        attempts: p.attempts,
                        last_code: text(&p.last_code),
                        last_error: text(&p.last_error),
                        last_attempt_at: time(&p.last_attempt_at),
                        failing_since: time(&p.failing_since),
                    })
                    .collect(),
                next_attempt_at: time(&b.next_attempt_at),
                lease_owner: text(&b.lease_owner),
                policy: policy::describe(b.call_timeout.as_ref(), b.policy.as_ref()),
                skipped: b.skip.as_ref().map(|k| SkipView {
                    at: time(&k.skipped_at),
                    by: k.skipped_by.clone(),
                    note: k.note.clone(),
                }),
            })
            .collect();
        let events = d
            .events
            .iter()
            .map(|e| EventView {
                id: e.id,
                at: time(&e.at),
                kind: e.kind.clone(),
                status: (e.status != 0).then(|| status_name(e.status)),
                branch_id: text(&e.branch_id),
                phase: text(&e.phase),
                attempt: (e.attempt != 0).then_some(e.attempt),
                code: text(&e.code),
                message: text(&e.message),
                actor: text(&e.actor),
            })
            .collect();
        let mut detail = Self {
            transaction,
            blocked_by: None,
            branches,
            events,
            metadata: d.metadata.clone().into_iter().collect(),
        };
        detail.blocked_by = why::blocked_by(&detail, now);
        detail
    }
}

/// `tx retry|rollback|resolve|pause|resume`.
#[derive(Debug, Clone, Serialize)]
pub struct ActionResult {
    pub gid: String,
    /// "retry", "rollback", "resolve", "pause" or "resume".
    pub action: String,
    /// False when it already was as asked; nothing was written.
    pub changed: bool,
    pub message: String,
    pub transaction: Option<TxSummary>,
}

/// `tx bulk ACTION`: what happened (or, dry, would happen) to each.
#[derive(Debug, Clone, Serialize)]
pub struct BulkView {
    /// "retry", "pause", "resume" or "resolve".
    pub action: String,
    pub dry_run: bool,
    pub results: Vec<BulkRow>,
    /// More matched than the limit; run again for the rest.
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BulkRow {
    pub gid: String,
    /// "changed", "unchanged", "refused", "would_change" or "failed".
    pub outcome: String,
    pub message: String,
    pub status: String,
}

impl BulkView {
    pub fn from_wire(action: &str, dry_run: bool, r: &pb::BulkActResponse) -> Self {
        BulkView {
            action: action.into(),
            dry_run,
            results: r
                .results
                .iter()
                .map(|b| BulkRow {
                    gid: b.gid.clone(),
                    outcome: b.outcome.clone(),
                    message: b.message.clone(),
                    status: status_name(b.status),
                })
                .collect(),
            truncated: r.truncated,
        }
    }

    /// How many came (or would come) to `outcome`.
    pub fn count(&self, outcome: &str) -> usize {
        self.results.iter().filter(|r| r.outcome == outcome).count()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointView {
    pub url: String,
    /// "grpc" or "http" (HTTP/JSON).
    pub protocol: String,
    pub registered_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// "closed", "open", "half_open", or "unknown" (not called yet by the
    /// answering instance).
    pub breaker: String,
    pub last_success_at: Option<DateTime<Utc>>,
    pub recent_calls: u32,
    pub recent_failures: u32,
    /// recent_failures / recent_calls; null with no recent call.
    pub failure_rate: Option<f64>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParticipantView {
    pub name: String,
    pub actions: Vec<String>,
    pub endpoints: Vec<EndpointView>,
}

/// `participants list`.
#[derive(Debug, Clone, Serialize)]
pub struct Participants {
    /// Call statistics and breakers are per coordinator instance: this one.
    pub instance_id: String,
    pub participants: Vec<ParticipantView>,
}

impl Participants {
    pub fn from_wire(r: &pb::ListParticipantHealthResponse) -> Self {
        Self {
            instance_id: r.instance_id.clone(),
            participants: r
                .participants
                .iter()
                .map(|p| ParticipantView {
                    name: p.name.clone(),
                    actions: p.actions.clone(),
                    endpoints: p
                        .endpoints
                        .iter()
                        .map(|e| EndpointView {
                            url: e.url.clone(),
                            // An older coordinator sends none: gRPC.
                            protocol: if e.protocol.is_empty() {
                                "grpc".into()
                            } else {
                                e.protocol.clone()
                            },
                            registered_at: time(&e.registered_at),
                            last_seen_at: time(&e.last_seen_at),
                            breaker: e.breaker.clone(),
                            last_success_at: time(&e.last_success_at),
                            recent_calls: e.recent_calls,
                            recent_failures: e.recent_failures,
                            failure_rate: (e.recent_calls > 0)
                                .then(|| f64::from(e.recent_failures) / f64::from(e.recent_calls)),
                            last_failure_at: time(&e.last_failure_at),
                            last_error: text(&e.last_error),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// `stats`.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub total: u64,
    /// Every status, zero included.
    pub by_status: BTreeMap<String, u64>,
    /// Not final and not resolved.
    pub unfinished: u64,
    /// Unfinished with a phase-2 retry scheduled, and how many are due.
    pub retry_backlog: u64,
    pub retry_due: u64,
    pub needs_attention: u64,
    pub paused: u64,
    pub resolved: u64,
    pub oldest_unfinished: Option<TxSummary>,
}

impl Stats {
    pub fn from_wire(s: &pb::Stats) -> Self {
        Self {
            total: s.total,
            by_status: s
                .by_status
                .iter()
                .map(|c| (status_name(c.status), c.count))
                .collect(),
            unfinished: s.unfinished,
            retry_backlog: s.retry_backlog,
            retry_due: s.retry_due,
            needs_attention: s.needs_attention,
            paused: s.paused,
            resolved: s.resolved,
            oldest_unfinished: s.oldest_unfinished.as_ref().map(TxSummary::from_wire),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::api::convert::timestamp;

    #[test]
    fn a_saga_without_deadline_has_none() {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let wire = |deadline| pb::TransactionSummary {
            gid: "g1".into(),
            deadline: Some(timestamp(deadline)),
            ..Default::default()
        };
        let none = TxSummary::from_wire(&wire(no_deadline()));
        assert_eq!(none.deadline, None);
        let json = serde_json::to_value(&none).unwrap();
        assert!(json["deadline"].is_null(), "{json}");
        assert_eq!(TxSummary::from_wire(&wire(at)).deadline, Some(at));
    }
}
