//! The statements that drive a transaction on SQLite: Begin, a branch
//! before its Try, a Try's outcome, a decision, a saga's submission and the
//! progress of a round. Each runs inside the writer's batch transaction
//! (see `writer`), with the same conditions as on PostgreSQL: a branch only
//! while the transaction is trying and before its deadline, a decision
//! only if status, branch count and fence are as read, progress only under
//! the current fence and owner. They run on the writer's thread, so they
//! are synchronous (rusqlite) and their statements cached prepared.

use std::time::Instant;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::events::{Event, Events};
use super::rows::{after, us};
use crate::domain::Gid;
use crate::machine::{CallStatus, Outcome, Phase, Status};
use crate::store::policy::StoredPolicy;
use crate::store::progress::{Progress, clamp};
use crate::store::rows::ms;
use crate::store::{
    CallRecord, Decision, NewBranch, NewSaga, NewTransaction, StoreError, StoreResult,
};

/// What a branch insert found.
pub(super) struct BranchInsert {
    /// The transaction's branch counter after the insert; `None` when the
    /// transaction was not trying (or not there).
    pub seq: Option<i32>,
    pub metadata: Option<String>,
    /// The inserted branch id; `None` on conflict with an existing one.
    pub inserted: Option<String>,
}

fn json<T: serde::Serialize>(what: &str, v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Database(format!("{what}: {e}")))
}

/// True when the transaction was created.
pub(super) fn begin(c: &Connection, t: &NewTransaction, ev: &mut Events) -> StoreResult<bool> {
    let created =
        c.prepare_cached(
            "INSERT INTO global_transactions
                (gid, mode, status, metadata, timeout_ms, deadline, next_attempt_at, created_at,
                 updated_at, initiator)
             VALUES (?1, 'tcc', 'trying', ?2, ?3, ?4, ?4, ?5, ?5, ?6)
             ON CONFLICT (gid) DO NOTHING",
        )?
        .execute(params![
            t.gid.as_str(),
            json("metadata", &t.metadata)?,
            ms(t.timeout),
            us(t.deadline),
            us(t.now),
            t.initiator,
        ])? == 1;
    if created {
        ev.push(Event {
            status: Some("trying".into()),
            message: t.initiator.as_ref().map(|who| format!("begun by {who}")),
            ..Event::new(t.gid.as_str(), t.now, "begun", &t.actor)
        });
    }
    Ok(created)
}

pub(super) fn add_branch(
    c: &Connection,
    b: &NewBranch,
    clock: DateTime<Utc>,
    at: Instant,
    ev: &mut Events,
) -> StoreResult<BranchInsert> {
    let gid = b.gid.as_str();
    // The counter moves even when the branch id exists already, as on
    // PostgreSQL: a decision read before this call must not apply.
    let row: Option<(i32, String)> = c
        .prepare_cached(
            "UPDATE global_transactions SET branch_seq = branch_seq + 1, updated_at = ?2
              WHERE gid = ?1 AND status = 'trying' AND deadline > ?2
             RETURNING branch_seq, metadata",
        )?
        .query_row(params![gid, us(b.now)], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((seq, metadata)) = row else {
        return Ok(BranchInsert {
            seq: None,
            metadata: None,
            inserted: None,
        });
    };
    let id = b
        .branch_id
        .as_ref()
        .map_or_else(|| seq.to_string(), |id| id.as_str().to_string());
    let inserted =
        c.prepare_cached(
            "INSERT INTO branches
                (gid, branch_id, participant, action, payload, call_timeout_ms, created_at,
                 updated_at, call_until, policy, url_call, first_phase)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (gid, branch_id) DO NOTHING",
        )?
        .execute(params![
            gid,
            id,
            b.participant.as_str(),
            b.action.as_str(),
            b.payload.as_slice(),
            b.call_timeout.map(ms),
            us(b.now),
            // The Try about to be sent is out until then (by this process's clock).
            us(after(clock, b.call_cover.left_at(at))),
            StoredPolicy::of(&b.policy),
            crate::store::records::url_call_text(&b.url_call),
            if b.tried_by_initiator {
                CallStatus::Succeeded.as_str()
            } else {
                CallStatus::Pending.as_str()
            },
        ])? == 1;
    if inserted {
        ev.push(Event {
            branch: Some(id.clone()),
            message: Some(format!("{}.{}", b.participant, b.action)),
            ..Event::new(gid, b.now, "branch_registered", &b.actor)
        });
    }
    Ok(BranchInsert {
        seq: Some(seq),
        metadata: Some(metadata),
        inserted: inserted.then_some(id),
    })
}

/// The new fence when the compare-and-set matched.
pub(super) fn decide(
    c: &Connection,
    d: &Decision,
    clock: DateTime<Utc>,
    at: Instant,
    ev: &mut Events,
) -> StoreResult<Option<i64>> {
    let lease_until = after(clock, d.lease.left_at(at));
    let fence: Option<i64> = c
        .prepare_cached(
            "UPDATE global_transactions
                SET status = ?5, decided_at = ?6, rollback_reason = ?7, attempts = 0, owner = ?8,
                    lease_until = ?9, fence = fence + 1, next_attempt_at = ?6, updated_at = ?6
              WHERE gid = ?1 AND status = ?2 AND branch_seq = ?3 AND fence = ?4
             RETURNING fence",
        )?
        .query_row(
            params![
                d.gid.as_str(),
                d.expected_status.as_str(),
                d.expected_branch_seq,
                d.expected_fence,
                d.next.status.as_str(),
                us(d.now),
                d.next.rollback_reason.as_deref(),
                d.owner,
                us(lease_until),
            ],
            |r| r.get(0),
        )
        .optional()?;
    if fence.is_some() {
        ev.push(Event {
            status: Some(d.next.status.as_str().into()),
            message: d.next.rollback_reason.clone(),
            ..Event::new(d.gid.as_str(), d.now, "decided", &d.actor)
        });
    }
    Ok(fence)
}

pub(super) fn record_try(
    c: &Connection,
    gid: &Gid,
    call: &CallRecord,
    expected_second_phase: CallStatus,
    now: DateTime<Utc>,
    actor: &str,
    ev: &mut Events,
) -> StoreResult<()> {
    let (code, message) = match &call.outcome {
        Outcome::Succeeded => (None, None),
        other => (
            Some(other.code().to_string()),
            Some(other.message().to_string()),
        ),
    };
    // Compare-and-set on phase 2, as the caller asked.
    c.prepare_cached(
        "UPDATE branches
            SET first_phase = ?3, last_code = ?4, last_error = ?5, last_attempt_at = ?6,
                updated_at = ?6, call_until = NULL
          WHERE gid = ?1 AND branch_id = ?2 AND second_phase = ?7",
    )?
    .execute(params![
        gid.as_str(),
        call.branch_id.as_str(),
        call.outcome.call_status().as_str(),
        code.as_deref(),
        message.as_deref(),
        us(now),
        expected_second_phase.as_str(),
    ])?;
    // The call is history even when it arrived late.
    ev.push(Event {
        branch: Some(call.branch_id.as_str().to_string()),
        phase: Some("try"),
        attempt: Some(clamp(call.attempt)),
        code: Some(code.unwrap_or_else(|| "OK".into())),
        message,
        ..Event::new(gid.as_str(), now, "call", actor)
    });
    Ok(())
}

/// A round's or a saga's progress; `false` when fenced out.
pub(super) fn progress(c: &Connection, p: &Progress, ev: &mut Events) -> StoreResult<bool> {
    let now = us(p.now);
    // The flag and status as they were: a write that changes the flag
    // makes an alert (below); a saga turning from running copies events.
    let was: Option<(bool, String)> = c
        .prepare_cached(
            "SELECT needs_attention, status FROM global_transactions
              WHERE gid = ?1 AND fence = ?2 AND owner = ?3",
        )?
        .query_row(params![p.gid, p.fence, p.owner], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let was_running = was
        .as_ref()
        .is_some_and(|(_, s)| s == Status::Running.as_str());
    let was_flagged = was.map(|(f, _)| f);
    let written =
        c.prepare_cached(
            "UPDATE global_transactions
                SET status = ?4, decided_at = ?5, rollback_reason = ?6, attempts = ?7,
                    needs_attention = ?8, attention_reason = ?9, next_attempt_at = ?10,
                    owner = CASE WHEN ?11 THEN NULL ELSE owner END,
                    lease_until = CASE WHEN ?11 THEN NULL ELSE lease_until END,
                    finished_at = CASE WHEN ?10 IS NULL THEN ?12 END,
                    updated_at = ?12
              WHERE gid = ?1 AND fence = ?2 AND owner = ?3",
        )?
        .execute(params![
            p.gid,
            p.fence,
            p.owner,
            p.status.as_str(),
            p.decided_at.map(us),
            p.reason.as_deref(),
            p.attempts,
            p.needs_attention,
            p.attention_reason.as_deref(),
            p.next_attempt_at.map(us),
            p.release,
            now,
        ])? == 1;
    if !written {
        return Ok(false);
    }
    if p.copy_successes && was_running {
        copy_successes(c, &p.gid, ev)?;
    }
    if !p.branches.is_empty() {
        // One statement for every branch row of the write.
        let rows: Vec<serde_json::Value> = p
            .branches
            .iter()
            .map(|b| serde_json::json!([b.id, b.first, b.second, b.attempts, b.code, b.error]))
            .collect();
        c.prepare_cached(
            "UPDATE branches
                SET first_phase = COALESCE(u.value ->> 1, first_phase), second_phase = u.value ->> 2,
                    attempts = u.value ->> 3, last_code = u.value ->> 4, last_error = u.value ->> 5,
                    last_attempt_at = ?3, updated_at = ?3
               FROM json_each(?2) AS u
              WHERE branches.gid = ?1 AND branches.branch_id = u.value ->> 0",
        )?
        .execute(params![p.gid, json("branches", &rows)?, now])?;
    }
    let was_flagged = was_flagged.unwrap_or(false);
    let finished = p.next_attempt_at.is_none();
    let alert = match (was_flagged, p.needs_attention && !finished) {
        (false, true) => Some(("needs_attention", p.attention_reason.clone())),
        (true, false) if finished => Some((
            "attention_cleared",
            Some(format!("finished: {}", p.status.as_str())),
        )),
        (true, false) => Some((
            "attention_cleared",
            Some(format!("no longer needs attention: {}", p.status.as_str())),
        )),
        _ => None,
    };
    if let Some((kind, reason)) = alert {
        super::alerts::insert(c, &p.gid, kind, reason.as_deref(), p.now)?;
    }
    for e in &p.events {
        ev.push(Event {
            gid: p.gid.clone(),
            at: now,
            kind: e.kind.clone(),
            status: e.status.map(str::to_string),
            branch: e.branch.clone(),
            phase: e.phase,
            attempt: e.attempt,
            code: e.code.clone(),
            message: e.message.clone(),
            actor: Some(p.owner.clone()),
        });
    }
    Ok(true)
}

/// A saga turning from running to compensation: its successful actions
/// were left to the branch rows (`history`), which compensation
/// overwrites; they become events first, read before this write's branch
/// update. Not for one stored already (by a version that wrote every call).
fn copy_successes(c: &Connection, gid: &str, ev: &mut Events) -> StoreResult<()> {
    let rows: Vec<(String, i32, i64)> = c
        .prepare_cached(
            "SELECT b.branch_id, b.attempts, b.last_attempt_at FROM branches b
              WHERE b.gid = ?1 AND b.first_phase = 'succeeded' AND b.last_attempt_at IS NOT NULL
                AND NOT EXISTS (
                    SELECT 1 FROM transaction_events e
                     WHERE e.gid = b.gid AND e.kind = 'call' AND e.branch_id = b.branch_id
                       AND e.phase = 'execute' AND e.code = 'OK')
              ORDER BY b.created_at, b.branch_id",
        )?
        .query_map(params![gid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (branch, attempt, at) in rows {
        ev.push(Event {
            gid: gid.to_string(),
            at,
            kind: "call".into(),
            branch: Some(branch),
            phase: Some(Phase::Execute.as_str()),
            attempt: Some(attempt),
            code: Some("OK".into()),
            ..Event::default()
        });
    }
    Ok(())
}

/// The saga and its steps, leased to the submitter; `false` when the gid
/// exists.
pub(super) fn submit_saga(
    c: &Connection,
    saga: &NewSaga,
    clock: DateTime<Utc>,
    at: Instant,
) -> StoreResult<bool> {
    let lease_until = after(clock, saga.lease.left_at(at));
    let created =
        c.prepare_cached(
            "INSERT INTO global_transactions
                (gid, mode, status, metadata, timeout_ms, deadline, concurrency, next_attempt_at,
                 owner, lease_until, fence, created_at, updated_at, initiator)
             VALUES (?1, 'saga', 'running', ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?6, ?6, ?9)
             ON CONFLICT (gid) DO NOTHING",
        )?
        .execute(params![
            saga.gid.as_str(),
            json("metadata", &saga.metadata)?,
            saga.timeout.map_or(0, ms),
            us(saga.deadline),
            i32::try_from(saga.concurrency).unwrap_or(i32::MAX),
            us(saga.now),
            saga.owner,
            us(lease_until),
            saga.initiator,
        ])? == 1;
    if !created {
        return Ok(false);
    }
    let mut insert = c.prepare_cached(
        "INSERT INTO branches
            (gid, branch_id, participant, action, compensation, payload, call_timeout_ms,
             depends_on, compensate_rejected, created_at, updated_at, policy, url_call)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12)",
    )?;
    for (i, step) in saga.steps.iter().enumerate() {
        insert.execute(params![
            saga.gid.as_str(),
            (i + 1).to_string(),
            step.participant.as_str(),
            step.action.as_str(),
            step.compensation.as_str(),
            step.payload.as_slice(),
            step.call_timeout.map(ms),
            json("depends_on", &step.depends_on)?,
            step.compensate_rejected,
            us(saga.now),
            StoredPolicy::of(&step.policy),
            crate::store::records::url_call_text(&step.url_call),
        ])?;
    }
    // No `submitted` event: the rows tell it (`history`).
    Ok(true)
}
