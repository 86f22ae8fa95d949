//! The re-drive of a participant that is back: one statement that makes
//! every transaction waiting on it due now. No lease or fence is taken or
//! checked: only the due time moves, so whichever instance claims the work
//! next (`claim_due`) drives it under its own lease, and a round in flight
//! keeps its lease and writes its own next time. "Now" is now plus
//! [`CALL_MARGIN`]: the round that scheduled the retry may have ended with a
//! call that timed out here a moment ago and still runs at the participant
//! for as long as the request took to get there, so a re-drive waits the
//! margin every retry waits (the chaos run caught a re-driven Confirm
//! arriving 40 ms before the previous one's deadline).

use super::PgStore;
use crate::clock::CALL_MARGIN;
use crate::domain::ParticipantName;
use crate::store::StoreResult;

impl PgStore {
    pub(super) async fn redrive(
        &self,
        participant: &ParticipantName,
        actor: &str,
    ) -> StoreResult<u64> {
        let moved: i64 = sqlx::query_scalar(
            "WITH waiting AS (
                SELECT g.gid
                  FROM global_transactions g
                 WHERE g.next_attempt_at > now() + $3::bigint * interval '1 microsecond'
                   AND NOT g.paused
                   AND g.finished_at IS NULL AND g.resolved_at IS NULL
                   AND g.status IN ('confirming', 'cancelling', 'running', 'compensating')
                   AND EXISTS (
                       SELECT 1 FROM branches b
                        WHERE b.gid = g.gid AND b.participant = $1
                          -- An unfinished call of this participant: phase 2
                          -- or a compensation, or a saga's forward action.
                          AND (b.second_phase IN ('pending', 'unknown')
                               OR (g.mode = 'saga' AND b.first_phase IN ('pending', 'unknown'))))
                 -- Locks in gid order, as every multi-row write does, so
                 -- that it cannot deadlock with them.
                 ORDER BY g.gid
                   FOR UPDATE
            ), moved AS (
                UPDATE global_transactions g
                   SET next_attempt_at = now() + $3::bigint * interval '1 microsecond'
                  FROM waiting w
                 WHERE g.gid = w.gid
                RETURNING g.gid
            ), ev AS (
                INSERT INTO transaction_events (gid, at, kind, message, actor)
                SELECT gid, now(), 'redriven', 'participant ' || $1 || ' is back', $2 FROM moved
            )
            SELECT count(*) FROM moved",
        )
        .bind(participant.as_str())
        .bind(actor)
        .bind(CALL_MARGIN.as_micros() as i64)
        .fetch_one(&self.durable)
        .await?;
        Ok(moved as u64)
    }
}
