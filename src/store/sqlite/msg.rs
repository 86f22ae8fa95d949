//! 2-phase messages on SQLite, as `postgres/msg.rs`: preparation (the
//! message, its steps, its query-back endpoint and the first event in the
//! writer's batch, unleased and due for the query-back at its deadline) and
//! the initiator's submit or abort, a compare-and-set on the prepared
//! status that bumps the fence. Progress after that is the saga's fenced
//! write (`drive::progress`). The writes run on the writer's thread.

use std::time::Instant;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use sqlx::SqlitePool;

use super::events::{Event, Events};
use super::rows::{after, us};
use crate::domain::{Endpoint, EndpointUrl, Gid, Protocol};
use crate::machine::Status;
use crate::store::rows::ms;
use crate::store::{MsgDecision, NewMsg, StoreError, StoreResult};

/// True when the message was created (`false`: the gid exists).
pub(super) fn prepare(c: &Connection, msg: &NewMsg, ev: &mut Events) -> StoreResult<bool> {
    let metadata = serde_json::to_string(&msg.metadata)
        .map_err(|e| StoreError::Database(format!("metadata: {e}")))?;
    let now = us(msg.now);
    let created =
        c.prepare_cached(
            "INSERT INTO global_transactions
                (gid, mode, status, metadata, timeout_ms, deadline, concurrency, next_attempt_at,
                 created_at, updated_at, initiator)
             VALUES (?1, 'msg', 'prepared', ?2, ?3, ?4, 1, ?4, ?5, ?5, ?6)
             ON CONFLICT (gid) DO NOTHING",
        )?
        .execute(params![
            msg.gid.as_str(),
            metadata,
            ms(msg.timeout),
            us(msg.deadline),
            now,
            msg.initiator,
        ])? == 1;
    if !created {
        return Ok(false);
    }
    for (i, step) in msg.steps.iter().enumerate() {
        // In order: each step after the one before (as `tx show` says).
        let deps: Vec<usize> = if i == 0 { Vec::new() } else { vec![i - 1] };
        let deps = serde_json::to_string(&deps)
            .map_err(|e| StoreError::Database(format!("depends_on: {e}")))?;
        c.prepare_cached(
            "INSERT INTO branches
                (gid, branch_id, participant, action, payload, call_timeout_ms,
                 depends_on, compensate_rejected, created_at, updated_at, url_call)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?8, ?9)",
        )?
        .execute(params![
            msg.gid.as_str(),
            (i + 1).to_string(),
            step.participant.as_str(),
            step.action.as_str(),
            step.payload.as_slice(),
            step.call_timeout.map(ms),
            deps,
            now,
            crate::store::records::url_call_text(&step.url_call),
        ])?;
    }
    if let Some(query) = &msg.query {
        c.prepare_cached("INSERT INTO message_queries (gid, url, protocol) VALUES (?1, ?2, ?3)")?
            .execute(params![
                msg.gid.as_str(),
                query.url.as_str(),
                query.protocol.as_str()
            ])?;
    }
    ev.push(Event {
        status: Some(Status::Prepared.as_str().into()),
        message: Some(match &msg.query {
            Some(q) => format!(
                "{} steps; query-back {} ({}){}",
                msg.steps.len(),
                q.url,
                q.protocol,
                crate::store::begun_by(msg.initiator.as_deref())
            ),
            None => format!(
                "{} steps; no query-back{}",
                msg.steps.len(),
                crate::store::begun_by(msg.initiator.as_deref())
            ),
        }),
        ..Event::new(msg.gid.as_str(), msg.now, "prepared", &msg.actor)
    });
    Ok(true)
}

/// The new fence when the compare-and-set on `prepared` matched.
pub(super) fn decide(
    c: &Connection,
    d: &MsgDecision,
    clock: DateTime<Utc>,
    at: Instant,
    ev: &mut Events,
) -> StoreResult<Option<i64>> {
    let next = &d.next;
    let aborted = next.status == Status::Aborted;
    let now = us(d.now);
    // A message flagged while its query-back failed is no longer: say so.
    let was_flagged: bool = c
        .prepare_cached("SELECT needs_attention FROM global_transactions WHERE gid = ?1")?
        .query_row(params![d.gid.as_str()], |r| r.get(0))
        .optional()?
        .unwrap_or(false);
    let fence: Option<i64> = c
        .prepare_cached(
            "UPDATE global_transactions
            SET status = ?2, decided_at = ?3, rollback_reason = ?4,
                attempts = 0, needs_attention = 0, attention_reason = NULL,
                fence = fence + 1,
                owner = CASE WHEN ?5 THEN NULL ELSE ?6 END,
                lease_until = CASE WHEN ?5 THEN NULL ELSE ?7 END,
                next_attempt_at = CASE WHEN ?5 THEN NULL ELSE ?3 END,
                finished_at = CASE WHEN ?5 THEN ?3 END,
                updated_at = ?3
          -- An operator's resolution closes the message for good.
          WHERE gid = ?1 AND mode = 'msg' AND status = 'prepared' AND resolved_at IS NULL
         RETURNING fence",
        )?
        .query_row(
            params![
                d.gid.as_str(),
                next.status.as_str(),
                now,
                next.reason.as_deref(),
                aborted,
                d.owner,
                us(after(clock, d.lease.left_at(at))),
            ],
            |r| r.get(0),
        )
        .optional()?;
    if fence.is_none() {
        return Ok(None);
    }
    if was_flagged {
        let reason = format!("no longer needs attention: {}", next.status.as_str());
        super::alerts::insert(c, d.gid.as_str(), "attention_cleared", Some(&reason), d.now)?;
    }
    let kinds: &[&str] = if aborted {
        c.prepare_cached(
            "UPDATE branches SET first_phase = 'not_required', updated_at = ?2 WHERE gid = ?1",
        )?
        .execute(params![d.gid.as_str(), now])?;
        &["decided", "finished"]
    } else {
        &["decided"]
    };
    for kind in kinds {
        ev.push(Event {
            status: Some(next.status.as_str().into()),
            message: next.reason.clone(),
            ..Event::new(d.gid.as_str(), d.now, kind, &d.actor)
        });
    }
    Ok(fence)
}

/// Where to ask the initiator of message `gid` back.
pub(super) async fn query(pool: &SqlitePool, gid: &Gid) -> StoreResult<Option<Endpoint>> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT url, protocol FROM message_queries WHERE gid = ?")
            .bind(gid.as_str())
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(url, protocol)| Endpoint {
        url: EndpointUrl::from_trusted(url),
        protocol: Protocol::from_stored(&protocol),
    }))
}
