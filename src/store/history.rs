//! A transaction's history as every reader gets it (`Store::events`): the
//! events the store keeps, plus those a saga's rows tell on their own.
//!
//! A saga's success path is not stored as events (issue 16: they were
//! 838 B of the 1,957 B a finished Saga-2 kept, and said nothing the rows
//! do not): its submission (`created_at`, the steps, the initiator), each
//! step's successful action while the saga runs or succeeded (the branch
//! row's status, attempts and `last_attempt_at`, all written by the same
//! statement that would have written the event, with the same time) and
//! its success (`finished_at`). They are rebuilt here, so the CLI, the
//! console and the APIs show the same history as before, except who wrote
//! them (the instance id), which no row keeps. Everything the rows cannot
//! tell stays an event: failures, retries, attention, compensation,
//! takeovers (`taken_over`) and operator actions. When a saga turns to
//! compensation, the statement that turns it copies the successful actions
//! from the branch rows into events first (`progress`), before
//! compensation overwrites those rows.

use crate::machine::{CallStatus, Mode, Outcome, Phase, Status};
use crate::store::{BranchRecord, CallRecord, EventRecord, TxRecord, begun_by};

/// Whether a saga's call is left to the rows: a successful action while
/// the saga is running or succeeded after the write.
pub(in crate::store) fn call_told_by_rows(status: Status, call: &CallRecord) -> bool {
    call.phase == Phase::Execute
        && call.outcome == Outcome::Succeeded
        && matches!(status, Status::Running | Status::Succeeded)
}

/// Whether a saga's `finished` is left to the rows: it succeeded.
pub(in crate::store) fn finish_told_by_rows(status: Status) -> bool {
    status == Status::Succeeded
}

/// Whether a saga's write turns it to compensation, so that its
/// successful actions must be copied from the branch rows into events
/// first (if it was running).
pub(in crate::store) fn turns_to_compensation(status: Status, changed: bool) -> bool {
    changed && matches!(status, Status::Compensating | Status::Compensated)
}

/// The history of `tx`: `stored` (oldest first) with the events its rows
/// tell added; a saga's history in time order. Rows written before this
/// version stored those events themselves; an event already stored is not
/// added twice.
pub(in crate::store) fn complete(
    tx: &TxRecord,
    branches: &[BranchRecord],
    stored: Vec<EventRecord>,
) -> Vec<EventRecord> {
    if tx.mode != Mode::Saga {
        return stored;
    }
    let mut derived = Vec::new();
    if !stored.iter().any(|e| e.kind == "submitted") {
        derived.push(EventRecord {
            at: tx.created_at,
            kind: "submitted".into(),
            status: Some(Status::Running.as_str().into()),
            message: Some(format!(
                "{} steps{}",
                branches.len(),
                begun_by(tx.initiator.as_deref())
            )),
            ..empty()
        });
    }
    // Once compensating, a step's row is its compensation's: its action's
    // success was copied into the stored events when the saga turned.
    if matches!(tx.status, Status::Running | Status::Succeeded) {
        for b in branches {
            let Some(at) = b.last_attempt_at else {
                continue;
            };
            let id = b.branch_id.as_str();
            let stored_already = stored.iter().any(|e| {
                e.kind == "call"
                    && e.branch_id.as_deref() == Some(id)
                    && e.phase.as_deref() == Some(Phase::Execute.as_str())
                    && e.code.as_deref() == Some("OK")
            });
            if b.first_phase != CallStatus::Succeeded || stored_already {
                continue;
            }
            derived.push(EventRecord {
                at,
                kind: "call".into(),
                branch_id: Some(id.to_string()),
                phase: Some(Phase::Execute.as_str().into()),
                attempt: Some(i32::try_from(b.attempts).unwrap_or(i32::MAX)),
                code: Some("OK".into()),
                ..empty()
            });
        }
    }
    if tx.status == Status::Succeeded
        && let Some(at) = tx.finished_at
        && !stored.iter().any(|e| e.kind == "finished")
    {
        derived.push(EventRecord {
            at,
            kind: "finished".into(),
            status: Some(Status::Succeeded.as_str().into()),
            message: tx.rollback_reason.clone(),
            ..empty()
        });
    }
    let mut all = stored;
    all.extend(derived);
    // Stable: events of one write (one time) keep their order, stored
    // ones before those rebuilt (the rows say nothing of order within a
    // write, and a write's call comes before its conclusion).
    all.sort_by_key(|e| e.at);
    all
}

/// An event told by the rows: not stored (id 0), by no one in particular.
fn empty() -> EventRecord {
    EventRecord {
        id: 0,
        at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
        kind: String::new(),
        status: None,
        branch_id: None,
        phase: None,
        attempt: None,
        code: None,
        message: None,
        actor: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{DateTime, TimeZone, Utc};

    use super::*;
    use crate::domain::{ActionName, BranchId, Gid, ParticipantName};
    use crate::machine::policy::CallPolicy;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    fn saga(status: Status) -> TxRecord {
        TxRecord {
            status,
            initiator: Some("alice".into()),
            finished_at: status.is_final().then(|| t(9)),
            next_attempt_at: (!status.is_final()).then(|| t(9)),
            ..TxRecord::inserted(
                Gid::from_trusted("g1".into()),
                Mode::Saga,
                crate::store::Metadata::new(),
                Duration::ZERO,
                t(100),
                t(0),
            )
        }
    }

    fn step(id: u32, first: CallStatus, attempts: u32, at: Option<i64>) -> BranchRecord {
        BranchRecord {
            branch_id: BranchId::from_trusted(id.to_string()),
            participant: ParticipantName::from_trusted("bank".into()),
            action: ActionName::from_trusted("debit".into()),
            payload: vec![],
            call_timeout: None,
            first_phase: first,
            second_phase: CallStatus::NotRequired,
            attempts,
            last_code: None,
            last_error: None,
            last_attempt_at: at.map(t),
            created_at: t(0),
            updated_at: at.map_or(t(0), t),
            compensation: Some(ActionName::from_trusted("credit".into())),
            depends_on: vec![],
            compensate_rejected: true,
            policy: CallPolicy::default(),
            call_busy_until: None,
            skipped: None,
            url_call: None,
        }
    }

    fn event(
        id: i64,
        at: i64,
        kind: &str,
        branch: Option<&str>,
        code: Option<&str>,
    ) -> EventRecord {
        EventRecord {
            id,
            at: t(at),
            kind: kind.into(),
            branch_id: branch.map(str::to_string),
            phase: branch.map(|_| "execute".into()),
            attempt: branch.map(|_| 1),
            code: code.map(str::to_string),
            actor: Some("host-1".into()),
            ..empty()
        }
    }

    /// Kind, branch, attempt and time of an event.
    type Line = (String, Option<String>, Option<i32>, DateTime<Utc>);

    fn kinds(events: &[EventRecord]) -> Vec<Line> {
        events
            .iter()
            .map(|e| (e.kind.clone(), e.branch_id.clone(), e.attempt, e.at))
            .collect()
    }

    #[test]
    fn a_clean_saga_is_told_by_its_rows() {
        let steps = [
            step(1, CallStatus::Succeeded, 1, Some(3)),
            step(2, CallStatus::Succeeded, 1, Some(9)),
        ];
        let h = complete(&saga(Status::Succeeded), &steps, vec![]);
        let k = |kind: &str, b: Option<&str>, a: Option<i32>, at| {
            (kind.to_string(), b.map(str::to_string), a, t(at))
        };
        assert_eq!(
            kinds(&h),
            [
                k("submitted", None, None, 0),
                k("call", Some("1"), Some(1), 3),
                k("call", Some("2"), Some(1), 9),
                k("finished", None, None, 9),
            ]
        );
        assert_eq!(h[0].message.as_deref(), Some("2 steps; begun by alice"));
        assert_eq!(h[1].code.as_deref(), Some("OK"));
        assert_eq!(h[3].status.as_deref(), Some("succeeded"));
        assert!(h.iter().all(|e| e.id == 0 && e.actor.is_none()));
    }

    #[test]
    fn a_stuck_saga_keeps_its_failures_in_time_order() {
        // Step 1 succeeded at 3 (told by its row), step 2 failed twice.
        let steps = [
            step(1, CallStatus::Succeeded, 1, Some(3)),
            step(2, CallStatus::Unknown, 2, Some(6)),
        ];
        let stored = vec![
            event(7, 4, "call", Some("2"), Some("UNAVAILABLE")),
            event(8, 4, "retry_scheduled", None, None),
            event(9, 6, "call", Some("2"), Some("UNAVAILABLE")),
        ];
        let h = complete(&saga(Status::Running), &steps, stored);
        let got: Vec<(&str, i64)> = h.iter().map(|e| (e.kind.as_str(), e.id)).collect();
        assert_eq!(
            got,
            [
                ("submitted", 0),
                ("call", 0),
                ("call", 7),
                ("retry_scheduled", 8),
                ("call", 9)
            ]
        );
        assert!(!h.iter().any(|e| e.kind == "finished"));
    }

    #[test]
    fn events_stored_by_an_earlier_version_are_not_doubled() {
        let steps = [step(1, CallStatus::Succeeded, 1, Some(3))];
        let stored = vec![
            event(1, 0, "submitted", None, None),
            event(2, 3, "call", Some("1"), Some("OK")),
            event(3, 9, "finished", None, None),
        ];
        let h = complete(&saga(Status::Succeeded), &steps, stored.clone());
        assert_eq!(h, stored);
    }

    #[test]
    fn a_compensating_saga_tells_only_its_submission() {
        // Its successful actions were copied into events when it turned;
        // its rows now hold the compensations.
        let steps = [step(1, CallStatus::Succeeded, 1, Some(8))];
        let stored = vec![event(5, 3, "call", Some("1"), Some("OK"))];
        let h = complete(&saga(Status::Compensating), &steps, stored);
        let got: Vec<&str> = h.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(got, ["submitted", "call"]);
    }

    #[test]
    fn other_modes_are_as_stored() {
        let tcc = TxRecord {
            mode: Mode::Tcc,
            ..saga(Status::Confirmed)
        };
        let stored = vec![
            event(2, 5, "finished", None, None),
            event(1, 9, "begun", None, None),
        ];
        assert_eq!(complete(&tcc, &[], stored.clone()), stored);
    }

    #[test]
    fn which_events_the_rows_tell() {
        let call = |phase, outcome| CallRecord {
            branch_id: BranchId::from_trusted("1".into()),
            phase,
            attempt: 1,
            outcome,
        };
        let ok = call(Phase::Execute, Outcome::Succeeded);
        assert!(call_told_by_rows(Status::Running, &ok));
        assert!(call_told_by_rows(Status::Succeeded, &ok));
        assert!(!call_told_by_rows(Status::Compensating, &ok));
        assert!(!call_told_by_rows(Status::Compensated, &ok));
        let failed = call(
            Phase::Execute,
            Outcome::Unknown {
                code: "UNAVAILABLE".into(),
                message: "down".into(),
            },
        );
        assert!(!call_told_by_rows(Status::Running, &failed));
        let undone = call(Phase::Compensate, Outcome::Succeeded);
        assert!(!call_told_by_rows(Status::Compensated, &undone));
        assert!(finish_told_by_rows(Status::Succeeded));
        assert!(!finish_told_by_rows(Status::Compensated));
        assert!(turns_to_compensation(Status::Compensating, true));
        assert!(!turns_to_compensation(Status::Compensating, false));
        assert!(!turns_to_compensation(Status::Succeeded, true));
    }
}
