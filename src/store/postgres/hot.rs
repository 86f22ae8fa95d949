//! The durable statements of the hot path, batched: Begin, branch
//! registration and decisions (TCC), saga submissions (`saga.rs`) and
//! lease extensions (`leases.rs`).
//! Each goes through a [`GroupWriter`] on the
//! durable pool, so concurrent
//! transactions share one statement and one WAL flush (group commit) while
//! every caller still returns only once its own row is durable. Each row
//! keeps its own conditions (status, deadline, branch_seq, fence), so one
//! transaction's refusal does not affect the others in its batch.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::types::Json;

use super::PgStore;
use super::leases::Extension;
use super::writes::{TryColumns, TryWrite};
use crate::store::batch::GroupWriter;
use crate::store::policy::StoredPolicy;
use crate::store::rows::ms;
use crate::store::{
    BranchAdded, BranchRecord, Decision, Metadata, NewBranch, NewSaga, NewTransaction, StoreError,
    StoreResult,
};

/// What the branch insert found, per request.
#[derive(sqlx::FromRow)]
pub(super) struct BranchInsert {
    /// Position of the request in the batch, from 1.
    ord: i64,
    /// The transaction's branch counter after the insert; `None` when the
    /// transaction was not trying (or not there).
    branch_seq: Option<i32>,
    metadata: Option<Json<Metadata>>,
    /// The inserted branch id; `None` on conflict with an existing one.
    inserted: Option<String>,
}

/// A decision with the Try records of its transaction that were still held
/// back (`writes::HeldTries`): one statement writes both.
pub(super) struct DecisionWrite {
    pub(super) decision: Decision,
    pub(super) tries: Vec<TryWrite>,
}

pub(super) struct HotPath {
    begins: GroupWriter<NewTransaction, bool>,
    branches: GroupWriter<NewBranch, BranchInsert>,
    decisions: GroupWriter<DecisionWrite, Option<i64>>,
    /// Saga submissions (`saga.rs`).
    sagas: GroupWriter<NewSaga, bool>,
    /// Lease extensions before a call (`leases.rs`).
    extensions: GroupWriter<Extension, bool>,
}

impl HotPath {
    /// Starts the batchers on the durable pool; needs a Tokio runtime.
    pub(super) fn start(pool: PgPool) -> Self {
        Self {
            begins: GroupWriter::on_pool(
                pool.clone(),
                |t: &NewTransaction| t.gid.clone(),
                flush_begins,
            ),
            branches: GroupWriter::on_pool(
                pool.clone(),
                |b: &NewBranch| b.gid.clone(),
                flush_branches,
            ),
            decisions: GroupWriter::on_pool(
                pool.clone(),
                |d: &DecisionWrite| d.decision.gid.clone(),
                flush_decisions,
            ),
            sagas: GroupWriter::on_pool(
                pool.clone(),
                |s: &NewSaga| s.gid.clone(),
                super::saga::flush_sagas,
            ),
            extensions: GroupWriter::on_pool(
                pool,
                |e: &Extension| e.gid.clone(),
                super::leases::flush_extensions,
            ),
        }
    }

    /// True when the transaction was created.
    pub(super) async fn begin(&self, t: NewTransaction) -> StoreResult<bool> {
        self.begins.write(t).await
    }

    pub(super) async fn add_branch(&self, b: NewBranch) -> StoreResult<BranchInsert> {
        self.branches.write(b).await
    }

    /// True when the saga was created (its gid was new).
    pub(super) async fn submit_saga(&self, s: NewSaga) -> StoreResult<bool> {
        self.sagas.write(s).await
    }

    /// True when the lease was extended (still this owner's, same fence).
    pub(super) async fn extend_lease(&self, e: Extension) -> StoreResult<bool> {
        self.extensions.write(e).await
    }

    /// The new fence when the compare-and-set matched. The Try records are
    /// written whether it matched or not.
    pub(super) async fn decide(&self, d: DecisionWrite) -> StoreResult<Option<i64>> {
        self.decisions.write(d).await
    }
}

impl PgStore {
    /// Registers a branch through the batch; reads back only what the
    /// insert could not tell (a conflicting branch, a refusing transaction).
    pub(super) async fn add_branch(&self, b: NewBranch) -> StoreResult<BranchAdded> {
        let found = self.hot.add_branch(b.clone()).await?;
        // The Try's call ends, margin included, by the cover's end.
        let busy_until = b.call_cover.end();
        let (seq, inserted) = (found.branch_seq, found.inserted);
        let metadata = found.metadata.map(|m| m.0).unwrap_or_default();
        match (seq, inserted) {
            (None, _) => Ok(BranchAdded::NotAccepted(self.load_tx(&b.gid).await?)),
            // Everything in the new row is known here; no need to read it back.
            (Some(seq), Some(id)) => Ok(BranchAdded::Added {
                branch: BranchRecord::inserted(b, id, busy_until),
                metadata,
                seq,
            }),
            (Some(seq), None) => {
                let id = b
                    .branch_id
                    .as_ref()
                    .map(|id| id.as_str().to_string())
                    .unwrap_or_else(|| seq.to_string());
                let record = self.load_branch(&b.gid, &id).await?.ok_or_else(|| {
                    StoreError::Database("conflicting branch not readable".into())
                })?;
                Ok(BranchAdded::Existing {
                    branch: record,
                    metadata,
                })
            }
        }
    }
}

async fn flush_begins(pool: PgPool, items: Vec<NewTransaction>) -> StoreResult<Vec<bool>> {
    let mut gid = Vec::with_capacity(items.len());
    let mut metadata = Vec::with_capacity(items.len());
    let mut timeout = Vec::with_capacity(items.len());
    let mut deadline = Vec::with_capacity(items.len());
    let mut now = Vec::with_capacity(items.len());
    let mut actor = Vec::with_capacity(items.len());
    let mut initiator = Vec::with_capacity(items.len());
    for t in &items {
        gid.push(t.gid.as_str().to_string());
        metadata.push(
            serde_json::to_string(&t.metadata)
                .map_err(|e| StoreError::Database(format!("metadata: {e}")))?,
        );
        timeout.push(ms(t.timeout));
        deadline.push(t.deadline);
        now.push(t.now);
        actor.push(t.actor.clone());
        initiator.push(t.initiator.clone());
    }
    let created: Vec<String> = sqlx::query_scalar(
        "WITH n AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::text[])
                AS n(gid, metadata, timeout_ms, deadline, now, actor, initiator)
        ), ins AS (
            INSERT INTO global_transactions
                (gid, mode, status, metadata, timeout_ms, deadline, next_attempt_at, created_at, updated_at, initiator)
            SELECT gid, 'tcc', 'trying', metadata::jsonb, timeout_ms, deadline, deadline, now, now, initiator FROM n
            ON CONFLICT (gid) DO NOTHING
            RETURNING gid
        ), ev AS (
            INSERT INTO transaction_events (gid, at, kind, status, message, actor)
            SELECT n.gid, n.now, 'begun', 'trying', 'begun by ' || n.initiator, n.actor
              FROM n JOIN ins ON ins.gid = n.gid
        )
        SELECT gid FROM ins",
    )
    .bind(&gid)
    .bind(metadata)
    .bind(timeout)
    .bind(deadline)
    .bind(now)
    .bind(actor)
    .bind(initiator)
    .fetch_all(&pool)
    .await?;
    Ok(gid.iter().map(|g| created.contains(g)).collect())
}

async fn flush_branches(pool: PgPool, items: Vec<NewBranch>) -> StoreResult<Vec<BranchInsert>> {
    let n = items.len();
    // Rows are locked in gid order (see `flush_progress`); `position` maps
    // a row of the statement back to its caller.
    let mut position: Vec<usize> = (0..n).collect();
    position.sort_by(|&a, &b| items[a].gid.cmp(&items[b].gid));
    let mut gid = Vec::with_capacity(n);
    let mut branch = Vec::with_capacity(n);
    let mut participant = Vec::with_capacity(n);
    let mut action = Vec::with_capacity(n);
    let mut payload = Vec::with_capacity(n);
    let mut timeout = Vec::with_capacity(n);
    let mut policy = Vec::with_capacity(n);
    let mut cover = Vec::with_capacity(n);
    let mut now: Vec<DateTime<Utc>> = Vec::with_capacity(n);
    let mut actor = Vec::with_capacity(n);
    let mut url_call = Vec::with_capacity(n);
    let mut tried = Vec::with_capacity(n);
    for b in position.iter().map(|&i| &items[i]) {
        url_call.push(crate::store::records::url_call_text(&b.url_call));
        tried.push(b.tried_by_initiator);
        gid.push(b.gid.as_str().to_string());
        branch.push(b.branch_id.as_ref().map(|id| id.as_str().to_string()));
        participant.push(b.participant.as_str().to_string());
        action.push(b.action.as_str().to_string());
        payload.push(b.payload.as_slice());
        timeout.push(b.call_timeout.map(ms));
        policy.push(StoredPolicy::of(&b.policy));
        cover.push(ms(b.call_cover.left()));
        now.push(b.now);
        actor.push(b.actor.clone());
    }
    // The UPDATE takes each transaction row's lock, so a concurrent decision
    // either sees the branch or makes the insert find the transaction no
    // longer trying; branch_seq tells the decision a branch arrived after
    // it read.
    let rows: Vec<BranchInsert> = sqlx::query_as(
        "WITH r AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::bigint[],
                                 $7::timestamptz[], $8::text[], $9::bigint[], $10::text[], $11::text[],
                                 $12::boolean[])
                WITH ORDINALITY AS r(gid, branch_id, participant, action, payload, timeout, now, actor,
                                     cover_ms, policy, url_call, tried, ord)
        ), g AS (
            UPDATE global_transactions g
               SET branch_seq = g.branch_seq + 1, updated_at = r.now
              FROM r
             WHERE g.gid = ANY($1) AND g.gid = r.gid AND g.status = 'trying' AND g.deadline > r.now
            RETURNING g.gid, g.branch_seq, g.metadata
        ), b AS (
            INSERT INTO branches
                (gid, branch_id, participant, action, payload, call_timeout_ms, call_until, policy,
                 created_at, updated_at, url_call, first_phase)
            SELECT r.gid, COALESCE(r.branch_id, g.branch_seq::text), r.participant, r.action, r.payload,
                   r.timeout, now() + r.cover_ms * interval '1 millisecond', r.policy::jsonb, r.now, r.now,
                   r.url_call::jsonb, CASE WHEN r.tried THEN 'succeeded' ELSE 'pending' END
              FROM r JOIN g ON g.gid = r.gid
            ON CONFLICT (gid, branch_id) DO NOTHING
            RETURNING gid, branch_id
        ), ev AS (
            INSERT INTO transaction_events (gid, at, kind, branch_id, message, actor)
            SELECT r.gid, r.now, 'branch_registered', b.branch_id, r.participant || '.' || r.action, r.actor
              FROM r JOIN b ON b.gid = r.gid
        )
        SELECT r.ord, g.branch_seq, g.metadata, b.branch_id AS inserted
          FROM r LEFT JOIN g ON g.gid = r.gid LEFT JOIN b ON b.gid = r.gid",
    )
    .bind(&gid)
    .bind(branch)
    .bind(participant)
    .bind(action)
    .bind(payload)
    .bind(timeout)
    .bind(now)
    .bind(actor)
    .bind(cover)
    .bind(policy)
    .bind(url_call)
    .bind(tried)
    .fetch_all(&pool)
    .await?;
    let mut by_ord: HashMap<i64, BranchInsert> = rows.into_iter().map(|r| (r.ord, r)).collect();
    let mut results: Vec<Option<BranchInsert>> = (0..n).map(|_| None).collect();
    for (k, &caller) in position.iter().enumerate() {
        let ord = k as i64 + 1;
        let found = by_ord
            .remove(&ord)
            .ok_or_else(|| StoreError::Database(format!("branch insert {ord} has no result")))?;
        results[caller] = Some(found);
    }
    Ok(results.into_iter().flatten().collect())
}

async fn flush_decisions(
    pool: PgPool,
    writes: Vec<DecisionWrite>,
) -> StoreResult<Vec<Option<i64>>> {
    let n = writes.len();
    // Callers' order for the results; gid order for the locks (see
    // `flush_progress`).
    let order: Vec<String> = writes
        .iter()
        .map(|w| w.decision.gid.as_str().to_string())
        .collect();
    let mut items = Vec::with_capacity(n);
    let mut tries = Vec::new();
    for w in writes {
        items.push(w.decision);
        tries.extend(w.tries);
    }
    let tries = TryColumns::of(tries);
    items.sort_by(|a, b| a.gid.cmp(&b.gid));
    let mut gid = Vec::with_capacity(n);
    let mut expected = Vec::with_capacity(n);
    let mut seq = Vec::with_capacity(n);
    let mut fence = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    let mut now = Vec::with_capacity(n);
    let mut reason = Vec::with_capacity(n);
    let mut owner = Vec::with_capacity(n);
    let mut lease = Vec::with_capacity(n);
    let mut actor = Vec::with_capacity(n);
    for d in &items {
        gid.push(d.gid.as_str().to_string());
        expected.push(d.expected_status.as_str());
        seq.push(d.expected_branch_seq);
        fence.push(d.expected_fence);
        status.push(d.next.status.as_str());
        now.push(d.now);
        reason.push(d.next.rollback_reason.clone());
        owner.push(d.owner.clone());
        lease.push(ms(d.lease.left()));
        actor.push(d.actor.clone());
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "WITH d AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::timestamptz[],
                                 $7::text[], $8::text[], $9::bigint[], $10::text[])
                AS d(gid, expected, seq, fence, status, now, reason, owner, lease_ms, actor)
        ), g AS (
            UPDATE global_transactions g
               SET status = d.status, decided_at = d.now, rollback_reason = d.reason, attempts = 0,
                   owner = d.owner, lease_until = now() + d.lease_ms * interval '1 millisecond',
                   fence = g.fence + 1, next_attempt_at = d.now, updated_at = d.now
              FROM d
             WHERE g.gid = ANY($1) AND g.gid = d.gid AND g.status = d.expected
               AND g.branch_seq = d.seq AND g.fence = d.fence
            RETURNING g.gid, g.fence, d.now, d.status, d.reason, d.actor
        ), u AS (
            -- Try records held back for this decision: the same write as
            -- `flush_tries`, compare-and-set on phase 2 included, made
            -- whether or not the decision matched.
            SELECT * FROM unnest($11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                                 $16::int[], $17::timestamptz[], $18::text[], $19::text[])
                AS u(gid, branch_id, status, code, message, attempt, at, actor, expected)
        ), tb AS (
            UPDATE branches br
               SET first_phase = u.status, last_code = u.code, last_error = u.message,
                   last_attempt_at = u.at, updated_at = u.at, call_until = NULL
              FROM u
             WHERE br.gid = ANY($11) AND br.gid = u.gid AND br.branch_id = u.branch_id
               AND br.second_phase = u.expected
        ), ev AS (
            -- One insert, so the Try calls come before the decision in the
            -- history.
            INSERT INTO transaction_events (gid, at, kind, status, branch_id, phase, attempt, code, message, actor)
            SELECT gid, at, kind, status, branch_id, phase, attempt, code, message, actor FROM (
                SELECT u.gid, u.at, 'call' AS kind, NULL AS status, u.branch_id, 'try' AS phase,
                       u.attempt, COALESCE(u.code, 'OK') AS code, u.message, u.actor, 0 AS k
                  FROM u
                UNION ALL
                SELECT gid, now, 'decided', status, NULL, NULL, NULL, NULL, reason, actor, 1 FROM g
            ) e
             ORDER BY k
        )
        SELECT gid, fence FROM g",
    )
    .bind(&gid)
    .bind(expected)
    .bind(seq)
    .bind(fence)
    .bind(status)
    .bind(now)
    .bind(reason)
    .bind(owner)
    .bind(lease)
    .bind(actor)
    .bind(tries.gid)
    .bind(tries.branch)
    .bind(tries.status)
    .bind(tries.code)
    .bind(tries.message)
    .bind(tries.attempt)
    .bind(tries.at)
    .bind(tries.actor)
    .bind(tries.expected)
    .fetch_all(&pool)
    .await?;
    let fences: HashMap<String, i64> = rows.into_iter().collect();
    Ok(order.iter().map(|g| fences.get(g).copied()).collect())
}
