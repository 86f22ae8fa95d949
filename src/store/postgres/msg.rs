//! 2-phase messages: preparation (the transaction, its steps, its query-back
//! endpoint and the first event in one durable statement, unleased and due
//! for the query-back at its deadline), and the initiator's submit or abort,
//! a compare-and-set on the prepared status that bumps the fence. Progress
//! after that is the saga's fenced write (`writes`).

use super::super::rows::ms;
use super::PgStore;
use crate::domain::{Endpoint, EndpointUrl, Gid, Protocol};
use crate::machine::Status;
use crate::store::{Lease, MsgDecision, MsgPrepared, NewMsg, StoreError, StoreResult};

impl PgStore {
    pub(super) async fn prepare_msg(&self, msg: NewMsg) -> StoreResult<MsgPrepared> {
        let metadata = serde_json::to_value(&msg.metadata)
            .map_err(|e| StoreError::Database(format!("metadata: {e}")))?;
        let n = msg.steps.len();
        let mut ids = Vec::with_capacity(n);
        let mut participants = Vec::with_capacity(n);
        let mut actions = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        let mut timeouts = Vec::with_capacity(n);
        let mut deps = Vec::with_capacity(n);
        let mut url_calls = Vec::with_capacity(n);
        for (i, step) in msg.steps.iter().enumerate() {
            ids.push((i + 1).to_string());
            participants.push(step.participant.as_str());
            actions.push(step.action.as_str());
            payloads.push(step.payload.as_slice());
            timeouts.push(step.call_timeout.map(ms));
            url_calls.push(crate::store::records::url_call_text(&step.url_call));
            // In order: each step after the one before (as `tx show` says).
            deps.push(if i == 0 {
                String::new()
            } else {
                (i - 1).to_string()
            });
        }
        let created: i64 = sqlx::query_scalar(
            "WITH g AS (
                INSERT INTO global_transactions
                    (gid, mode, status, metadata, timeout_ms, deadline, concurrency, next_attempt_at,
                     created_at, updated_at, initiator)
                VALUES ($1, 'msg', 'prepared', $2, $3, $4, 1, $4, $5, $5, $16)
                ON CONFLICT (gid) DO NOTHING
                RETURNING gid
            ), b AS (
                INSERT INTO branches
                    (gid, branch_id, participant, action, payload, call_timeout_ms,
                     depends_on, compensate_rejected, created_at, updated_at, url_call)
                SELECT g.gid, s.id, s.participant, s.action, s.payload, s.timeout,
                       string_to_array(s.deps, ',')::integer[], false, $5, $5, s.url_call::jsonb
                  FROM g, unnest($6::text[], $7::text[], $8::text[], $9::bytea[], $10::bigint[],
                                 $11::text[], $17::text[])
                       AS s(id, participant, action, payload, timeout, deps, url_call)
            ), q AS (
                INSERT INTO message_queries (gid, url, protocol)
                SELECT gid, $12, $13 FROM g WHERE $12::text IS NOT NULL
            ), ev AS (
                INSERT INTO transaction_events (gid, at, kind, status, message, actor)
                SELECT gid, $5, 'prepared', 'prepared', $14, $15 FROM g
            )
            SELECT count(*) FROM g",
        )
        .bind(msg.gid.as_str())
        .bind(metadata)
        .bind(ms(msg.timeout))
        .bind(msg.deadline)
        .bind(msg.now)
        .bind(ids)
        .bind(participants)
        .bind(actions)
        .bind(payloads)
        .bind(timeouts)
        .bind(deps)
        .bind(msg.query.as_ref().map(|q| q.url.as_str()))
        .bind(msg.query.as_ref().map(|q| q.protocol.as_str()))
        .bind(match &msg.query {
            Some(q) => format!(
                "{n} steps; query-back {} ({}){}",
                q.url,
                q.protocol,
                crate::store::begun_by(msg.initiator.as_deref())
            ),
            None => format!(
                "{n} steps; no query-back{}",
                crate::store::begun_by(msg.initiator.as_deref())
            ),
        })
        .bind(&msg.actor)
        .bind(&msg.initiator)
        .bind(url_calls)
        .fetch_one(&self.durable)
        .await?;
        if created == 1 {
            return Ok(MsgPrepared::Created);
        }
        let Some((tx, branches)) = self.load(&msg.gid).await? else {
            return Err(StoreError::Conflict(format!("gid {} vanished", msg.gid)));
        };
        let query = self.msg_query(&msg.gid).await?;
        Ok(MsgPrepared::Existing(Box::new((tx, branches, query))))
    }

    pub(super) async fn decide_msg(&self, d: MsgDecision) -> StoreResult<Option<Lease>> {
        let next = &d.next;
        let aborted = next.status == Status::Aborted;
        let fence: Option<i64> = sqlx::query_scalar(
            "WITH old AS (
                -- A message flagged while its query-back failed is no
                -- longer: the alert webhooks say so (below).
                SELECT needs_attention AS na FROM global_transactions WHERE gid = $1
            ), u AS (
                UPDATE global_transactions
                   SET status = $2, decided_at = $3, rollback_reason = $4,
                       attempts = 0, needs_attention = false, attention_reason = NULL,
                       fence = fence + 1,
                       owner = CASE WHEN $5 THEN NULL ELSE $6 END,
                       lease_until = CASE WHEN $5 THEN NULL
                                          ELSE now() + $7 * interval '1 millisecond' END,
                       next_attempt_at = CASE WHEN $5 THEN NULL ELSE $3 END,
                       finished_at = CASE WHEN $5 THEN $3 END,
                       updated_at = $3
                 -- An operator's resolution closes the message for good.
                 WHERE gid = $1 AND mode = 'msg' AND status = 'prepared' AND resolved_at IS NULL
                RETURNING gid, fence
            ), b AS (
                UPDATE branches SET first_phase = 'not_required', updated_at = $3
                 WHERE gid = $1 AND $5 AND EXISTS (SELECT 1 FROM u)
            ), ev AS (
                INSERT INTO transaction_events (gid, at, kind, status, message, actor)
                SELECT gid, $3, k.kind, $2, $4, $8
                  FROM u, unnest(CASE WHEN $5 THEN ARRAY['decided', 'finished']
                                      ELSE ARRAY['decided'] END) AS k(kind)
            ), al AS (
                INSERT INTO alerts (gid, kind, reason, created_at, next_at)
                SELECT u.gid, 'attention_cleared', 'no longer needs attention: ' || $2, $3, $3
                  FROM u, old WHERE old.na
            )
            SELECT fence FROM u",
        )
        .bind(d.gid.as_str())
        .bind(next.status.as_str())
        .bind(d.now)
        .bind(next.reason.as_deref())
        .bind(aborted)
        .bind(&d.owner)
        .bind(ms(d.lease.left()))
        .bind(&d.actor)
        .fetch_optional(&self.durable)
        .await?;
        Ok(fence.map(|fence| Lease { gid: d.gid, fence }))
    }

    pub(super) async fn msg_query(&self, gid: &Gid) -> StoreResult<Option<Endpoint>> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT url, protocol FROM message_queries WHERE gid = $1")
                .bind(gid.as_str())
                .fetch_optional(&self.durable)
                .await?;
        Ok(row.map(|(url, protocol)| Endpoint {
            url: EndpointUrl::from_trusted(url),
            protocol: Protocol::from_stored(&protocol),
        }))
    }
}
