//! Saga submission: the transaction and every step in one durable
//! statement, leased to the submitting instance at once so it
//! starts driving without a claim. Submissions are group-committed like
//! Begin (see `hot.rs`): concurrent sagas share one statement and one WAL
//! flush, each caller returning once its own rows are durable. One
//! statement per saga was the largest item of PostgreSQL's time per Saga-2
//! (issue 16, BENCHMARKS.md).

use sqlx::PgPool;

use super::super::rows::ms;
use super::PgStore;
use crate::store::policy::StoredPolicy;
use crate::store::{Lease, NewSaga, SagaSubmitted, StoreError, StoreResult};

impl PgStore {
    pub(super) async fn submit_saga(&self, saga: NewSaga) -> StoreResult<SagaSubmitted> {
        let gid = saga.gid.clone();
        if self.hot.submit_saga(saga).await? {
            return Ok(SagaSubmitted::Created(Lease { gid, fence: 1 }));
        }
        match self.load(&gid).await? {
            Some(found) => Ok(SagaSubmitted::Existing(Box::new(found))),
            None => Err(StoreError::Conflict(format!("gid {gid} vanished"))),
        }
    }
}

/// Writes a batch of sagas; true for each one created (false: its gid
/// existed).
pub(super) async fn flush_sagas(pool: PgPool, items: Vec<NewSaga>) -> StoreResult<Vec<bool>> {
    let n = items.len();
    // Rows are inserted in gid order, as every multi-row statement of the
    // store locks (see `writes.rs`).
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| items[a].gid.cmp(&items[b].gid));
    let mut gid = Vec::with_capacity(n);
    let mut metadata = Vec::with_capacity(n);
    let mut timeout = Vec::with_capacity(n);
    let mut deadline = Vec::with_capacity(n);
    let mut concurrency = Vec::with_capacity(n);
    let mut now = Vec::with_capacity(n);
    let mut owner = Vec::with_capacity(n);
    let mut lease = Vec::with_capacity(n);
    let mut initiator = Vec::with_capacity(n);
    let (mut s_gid, mut ids, mut participants, mut actions) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut compensations, mut payloads, mut timeouts, mut deps) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut compensate_rejected, mut policies, mut url_calls) =
        (Vec::new(), Vec::new(), Vec::new());
    for saga in order.iter().map(|&i| &items[i]) {
        gid.push(saga.gid.as_str());
        metadata.push(
            serde_json::to_string(&saga.metadata)
                .map_err(|e| StoreError::Database(format!("metadata: {e}")))?,
        );
        timeout.push(saga.timeout.map_or(0, ms));
        deadline.push(saga.deadline);
        concurrency.push(i32::try_from(saga.concurrency).unwrap_or(i32::MAX));
        now.push(saga.now);
        owner.push(saga.owner.as_str());
        lease.push(ms(saga.lease.left()));
        initiator.push(saga.initiator.as_deref());
        for (i, step) in saga.steps.iter().enumerate() {
            s_gid.push(saga.gid.as_str());
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
    }
    let created: Vec<String> = sqlx::query_scalar(
        "WITH s AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::int[],
                                 $6::timestamptz[], $7::text[], $8::bigint[], $19::text[])
                AS s(gid, metadata, timeout_ms, deadline, concurrency, now, owner, lease_ms, initiator)
        ), g AS (
            INSERT INTO global_transactions
                (gid, mode, status, metadata, timeout_ms, deadline, concurrency, next_attempt_at,
                 owner, lease_until, fence, created_at, updated_at, initiator)
            SELECT gid, 'saga', 'running', metadata::jsonb, timeout_ms, deadline, concurrency, now,
                   owner, now() + lease_ms * interval '1 millisecond', 1, now, now, initiator
              FROM s
            ON CONFLICT (gid) DO NOTHING
            RETURNING gid, created_at
        ), b AS (
            INSERT INTO branches
                (gid, branch_id, participant, action, compensation, payload, call_timeout_ms,
                 depends_on, compensate_rejected, policy, created_at, updated_at, url_call)
            SELECT st.gid, st.id, st.participant, st.action, st.compensation, st.payload, st.timeout,
                   string_to_array(st.deps, ',')::integer[], st.compensate_rejected, st.policy::jsonb,
                   g.created_at, g.created_at, st.url_call::jsonb
              FROM unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::bytea[],
                          $15::bigint[], $16::text[], $17::boolean[], $18::text[], $20::text[])
                   AS st(gid, id, participant, action, compensation, payload, timeout, deps,
                         compensate_rejected, policy, url_call)
              JOIN g ON g.gid = st.gid
        )
        -- No `submitted` event: the rows tell it (`store::history`).
        SELECT gid FROM g",
    )
    .bind(&gid)
    .bind(metadata)
    .bind(timeout)
    .bind(deadline)
    .bind(concurrency)
    .bind(now)
    .bind(&owner)
    .bind(lease)
    .bind(s_gid)
    .bind(ids)
    .bind(participants)
    .bind(actions)
    .bind(compensations)
    .bind(payloads)
    .bind(timeouts)
    .bind(deps)
    .bind(compensate_rejected)
    .bind(policies)
    .bind(initiator)
    .bind(url_calls)
    .fetch_all(&pool)
    .await?;
    Ok(items
        .iter()
        .map(|s| created.iter().any(|c| c == s.gid.as_str()))
        .collect())
}
