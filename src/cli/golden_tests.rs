//! The text and JSON the CLI prints for fixed documents, compared with
//! files under `src/cli/golden/` byte for byte: a refactoring of the
//! rendering cannot change the output unnoticed. After a deliberate
//! change, `CONCORD_UPDATE_GOLDEN=1 cargo test --lib cli::golden_tests`
//! rewrites the files; review their diff.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::model::blocked_by;
use super::model::{
    ActionResult, BranchView, EndpointView, EventView, ParticipantView, Participants, PhaseView,
    Resolution, Stats, TxDetail, TxSummary,
};
use super::render::{self, Paint};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn ago(minutes: i64) -> Option<DateTime<Utc>> {
    Some(now() - Duration::minutes(minutes))
}

fn summary(gid: &str, status: &str) -> TxSummary {
    TxSummary {
        gid: gid.into(),
        mode: "tcc".into(),
        status: status.into(),
        created_at: ago(20),
        updated_at: ago(1),
        deadline: ago(19),
        decided_at: ago(14),
        finished_at: None,
        attempts: 12,
        needs_attention: true,
        attention_reason: Some("12 phase-2 rounds failed".into()),
        rollback_reason: Some("deadline passed".into()),
        paused: false,
        next_attempt_at: Some(now() + Duration::seconds(40)),
        lease_owner: Some("host-1-abc".into()),
        lease_until: Some(now() + Duration::seconds(2)),
        branch_count: 2,
        participants: vec!["order".into(), "payment".into()],
        resolution: None,
        initiator: None,
    }
}

fn phase(phase: &str, status: &str, failing: bool) -> PhaseView {
    PhaseView {
        phase: phase.into(),
        status: status.into(),
        attempts: if failing { 12 } else { 1 },
        last_code: failing.then(|| "UNAVAILABLE".into()),
        last_error: failing.then(|| "connection refused".into()),
        last_attempt_at: ago(2),
        failing_since: failing.then(|| now() - Duration::minutes(14)),
    }
}

fn event(id: i64, minutes: i64, kind: &str) -> EventView {
    EventView {
        id,
        at: ago(minutes),
        kind: kind.into(),
        status: None,
        branch_id: None,
        phase: None,
        attempt: None,
        code: None,
        message: None,
        actor: Some("host-1-abc".into()),
    }
}

fn detail(gid: &str, status: &str) -> TxDetail {
    let mut d = TxDetail {
        transaction: summary(gid, status),
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
                next_attempt_at: Some(now() + Duration::seconds(40)),
                lease_owner: None,
                policy: Some("timeout 2s, at most 5 calls".into()),
                skipped: None,
            },
        ],
        events: vec![
            EventView {
                status: Some("trying".into()),
                ..event(1, 20, "begin")
            },
            EventView {
                branch_id: Some("2".into()),
                phase: Some("try".into()),
                attempt: Some(1),
                code: Some("OK".into()),
                status: Some("succeeded".into()),
                ..event(2, 19, "call")
            },
            EventView {
                status: Some("cancelling".into()),
                message: Some("deadline passed".into()),
                ..event(3, 14, "decided")
            },
            EventView {
                branch_id: Some("2".into()),
                phase: Some("cancel".into()),
                attempt: Some(12),
                code: Some("UNAVAILABLE".into()),
                message: Some("connection refused".into()),
                ..event(4, 2, "call")
            },
            EventView {
                actor: Some("alice".into()),
                message: Some("looking into it".into()),
                ..event(5, 1, "operator_pause")
            },
        ],
        metadata: BTreeMap::from([("traceparent".to_string(), "00-abc-def-01".to_string())]),
    };
    d.blocked_by = blocked_by(&d, now());
    d
}

/// Every document the golden files hold, by file name.
fn documents() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let failing = detail("g-failing", "cancelling");
    let mut paused = detail("g-paused", "cancelling");
    paused.transaction.paused = true;
    paused.transaction.lease_owner = None;
    paused.blocked_by = blocked_by(&paused, now());
    let mut resolved = detail("g-resolved", "cancelling");
    resolved.transaction.resolution = Some(Resolution {
        resolved_at: ago(2),
        resolved_by: "alice".into(),
        note: "refunded by hand".into(),
    });
    resolved.blocked_by = blocked_by(&resolved, now());
    let mut trying = detail("g-trying", "trying");
    trying.transaction.deadline = Some(now() + Duration::seconds(25));
    trying.transaction.decided_at = None;
    trying.transaction.needs_attention = false;
    trying.transaction.rollback_reason = None;
    trying.transaction.attention_reason = None;
    trying.transaction.lease_owner = None;
    trying.branches.truncate(1);
    trying.branches[0].phases.truncate(1);
    trying.blocked_by = blocked_by(&trying, now());
    let mut done = detail("g-done", "confirmed");
    done.transaction.finished_at = ago(13);
    done.transaction.needs_attention = false;
    done.transaction.lease_owner = None;
    done.transaction.rollback_reason = None;
    // Begun by an authenticated identity (the others while auth was off).
    done.transaction.initiator = Some("checkout".into());
    done.blocked_by = blocked_by(&done, now());
    for (name, d) in [
        ("detail-failing", &failing),
        ("detail-paused", &paused),
        ("detail-resolved", &resolved),
        ("detail-trying", &trying),
        ("detail-done", &done),
    ] {
        out.push((name, render::tx_detail(d, now(), Paint(false))));
    }
    out.push((
        "detail-failing-colour",
        render::tx_detail(&failing, now(), Paint(true)),
    ));
    out.push((
        "detail-failing-json",
        serde_json::to_string_pretty(&failing).unwrap(),
    ));
    let list: Vec<TxSummary> = [&failing, &paused, &resolved, &trying, &done]
        .iter()
        .map(|d| d.transaction.clone())
        .collect();
    out.push(("list", render::tx_list(&list, now(), Paint(false))));
    out.push(("list-colour", render::tx_list(&list, now(), Paint(true))));
    let action = ActionResult {
        gid: "g-paused".into(),
        action: "pause".into(),
        changed: true,
        message: "paused".into(),
        transaction: Some(paused.transaction.clone()),
    };
    out.push(("action", render::action(&action, Paint(false))));
    let endpoint = |url: &str, failures: u32| EndpointView {
        url: url.into(),
        protocol: "grpc".into(),
        registered_at: ago(60),
        last_seen_at: ago(5),
        breaker: if failures > 0 { "open" } else { "closed" }.into(),
        last_success_at: ago(30),
        recent_calls: 10,
        recent_failures: failures,
        failure_rate: Some(f64::from(failures) / 10.0),
        last_failure_at: (failures > 0).then(|| now() - Duration::minutes(1)),
        last_error: (failures > 0).then(|| "connection refused".into()),
    };
    let participants = Participants {
        instance_id: "host-1-abc".into(),
        participants: vec![
            ParticipantView {
                name: "order".into(),
                actions: vec!["reserve".into()],
                endpoints: vec![
                    endpoint("http://10.0.0.1:50052", 0),
                    endpoint("http://10.0.0.2:50052", 4),
                ],
            },
            ParticipantView {
                name: "payment".into(),
                actions: vec!["capture".into(), "refund".into()],
                endpoints: vec![],
            },
        ],
    };
    out.push((
        "participants",
        render::participants(&participants, now(), Paint(false)),
    ));
    let stats = Stats {
        total: 120,
        by_status: ["confirmed", "trying", "cancelling", "succeeded"]
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), i as u64 * 3))
            .collect(),
        unfinished: 9,
        retry_backlog: 3,
        retry_due: 1,
        needs_attention: 1,
        paused: 1,
        resolved: 2,
        oldest_unfinished: Some(failing.transaction.clone()),
    };
    out.push(("stats", render::stats(&stats, now(), Paint(false))));
    out
}

#[test]
fn output_matches_the_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/cli/golden");
    let update = std::env::var_os("CONCORD_UPDATE_GOLDEN").is_some();
    let mut differ = Vec::new();
    for (name, text) in documents() {
        let path = dir.join(format!("{name}.txt"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let expected =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if expected != text {
            differ.push(format!(
                "{name}:\n--- expected\n{expected}\n--- got\n{text}"
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
