//! Saga submission: the transaction, every step and the first event in
//! one durable statement, leased to the submitting instance at once so it
//! starts driving without a claim.

use super::super::rows::ms;
use super::PgStore;
use crate::store::policy::StoredPolicy;
use crate::store::{Lease, NewSaga, SagaSubmitted, StoreError, StoreResult};

impl PgStore {
    pub(super) async fn submit_saga(&self, saga: NewSaga) -> StoreResult<SagaSubmitted> {
        let metadata = serde_json::to_value(&saga.metadata)
            .map_err(|e| StoreError::Database(format!("metadata: {e}")))?;
        let n = saga.steps.len();
        let mut ids = Vec::with_capacity(n);
        let mut participants = Vec::with_capacity(n);
        let mut actions = Vec::with_capacity(n);
        let mut compensations = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        let mut timeouts = Vec::with_capacity(n);
        let mut deps = Vec::with_capacity(n);
        let mut compensate_rejected = Vec::with_capacity(n);
        let mut policies = Vec::with_capacity(n);
        let mut url_calls = Vec::with_capacity(n);
        for (i, step) in saga.steps.iter().enumerate() {
            ids.push((i + 1).to_string());
            participants.push(step.participant.as_str());
            actions.push(step.action.as_str());
            compensations.push(step.compensation.as_str());
            payloads.push(step.payload.as_slice());
            timeouts.push(step.call_timeout.map(ms));
            deps.push(
                step.depends_on
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
            compensate_rejected.push(step.compensate_rejected);
            policies.push(StoredPolicy::of(&step.policy));
            url_calls.push(crate::store::records::url_call_text(&step.url_call));
        }
        let created: i64 = sqlx::query_scalar(
            "WITH g AS (
                INSERT INTO global_transactions
                    (gid, mode, status, metadata, timeout_ms, deadline, concurrency, next_attempt_at,
                     owner, lease_until, fence, created_at, updated_at, initiator)
                VALUES ($1, 'saga', 'running', $2, $3, $4, $5, $6,
                        $7, now() + $8 * interval '1 millisecond', 1, $6, $6, $19)
                ON CONFLICT (gid) DO NOTHING
                RETURNING gid
            ), b AS (
                INSERT INTO branches
                    (gid, branch_id, participant, action, compensation, payload, call_timeout_ms,
                     depends_on, compensate_rejected, policy, created_at, updated_at, url_call)
                SELECT g.gid, s.id, s.participant, s.action, s.compensation, s.payload, s.timeout,
                       string_to_array(s.deps, ',')::integer[], s.compensate_rejected, s.policy::jsonb, $6, $6,
                       s.url_call::jsonb
                  FROM g, unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[],
                                 $14::bigint[], $15::text[], $16::boolean[], $18::text[], $20::text[])
                       AS s(id, participant, action, compensation, payload, timeout, deps, compensate_rejected,
                            policy, url_call)
            ), ev AS (
                INSERT INTO transaction_events (gid, at, kind, status, message, actor)
                SELECT gid, $6, 'submitted', 'running', $17, $7 FROM g
            )
            SELECT count(*) FROM g",
        )
        .bind(saga.gid.as_str())
        .bind(metadata)
        .bind(saga.timeout.map_or(0, ms))
        .bind(saga.deadline)
        .bind(i32::try_from(saga.concurrency).unwrap_or(i32::MAX))
        .bind(saga.now)
        .bind(&saga.owner)
        .bind(ms(saga.lease))
        .bind(ids)
        .bind(participants)
        .bind(actions)
        .bind(compensations)
        .bind(payloads)
        .bind(timeouts)
        .bind(deps)
        .bind(compensate_rejected)
        .bind(format!(
            "{n} steps{}",
            crate::store::begun_by(saga.initiator.as_deref())
        ))
        .bind(policies)
        .bind(&saga.initiator)
        .bind(url_calls)
        .fetch_one(&self.durable)
        .await?;
        if created == 1 {
            return Ok(SagaSubmitted::Created(Lease {
                gid: saga.gid,
                fence: 1,
            }));
        }
        match self.load(&saga.gid).await? {
            Some(found) => Ok(SagaSubmitted::Existing(Box::new(found))),
            None => Err(StoreError::Conflict(format!("gid {} vanished", saga.gid))),
        }
    }
}
