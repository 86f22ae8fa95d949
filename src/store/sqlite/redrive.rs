//! The re-drive of a participant that is back, as `postgres/redrive.rs`:
//! every transaction waiting on it becomes due now. No lease or fence is
//! taken or checked: only the due time moves, so whoever claims the work
//! next drives it under its own lease, and a round in flight keeps its
//! lease and writes its own next time. Due at now plus [`CALL_MARGIN`], for
//! the reason given there.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::events::{Event, Events};
use super::rows::us;
use crate::clock::CALL_MARGIN;
use crate::domain::ParticipantName;
use crate::store::StoreResult;

/// How many transactions were made due.
pub(super) fn redrive(
    c: &Connection,
    participant: &ParticipantName,
    actor: &str,
    now: DateTime<Utc>,
    ev: &mut Events,
) -> StoreResult<u64> {
    let moved: Vec<String> = c
        .prepare_cached(
            "UPDATE global_transactions
            SET next_attempt_at = ?2
          WHERE next_attempt_at > ?2 AND NOT paused
            AND finished_at IS NULL AND resolved_at IS NULL
            AND status IN ('confirming', 'cancelling', 'running', 'compensating')
            AND EXISTS (
                SELECT 1 FROM branches b
                 WHERE b.gid = global_transactions.gid AND b.participant = ?1
                   -- An unfinished call of this participant: phase 2 or a
                   -- compensation, or a saga's forward action.
                   AND (b.second_phase IN ('pending', 'unknown')
                        OR (global_transactions.mode = 'saga' AND b.first_phase IN ('pending', 'unknown'))))
         RETURNING gid",
        )?
        .query_map(params![participant.as_str(), us(now + CALL_MARGIN)], |r| {
            r.get(0)
        })?
        .collect::<Result<_, _>>()?;
    for gid in &moved {
        ev.push(Event {
            message: Some(format!("participant {participant} is back")),
            ..Event::new(gid, now, "redriven", actor)
        });
    }
    Ok(moved.len() as u64)
}
