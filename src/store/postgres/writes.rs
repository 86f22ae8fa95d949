//! The relaxed writes, batched: Try outcomes and the progress of phase-2
//! rounds and sagas. They go through [`GroupWriter`]s on the relaxed pool
//! (`synchronous_commit = off`), so that under load one statement carries
//! the writes of many transactions. Every progress row is still fenced on
//! its own: a stale owner's row matches nothing while the others apply.
//!
//! A successful Try's record is first held back ([`HeldTries`]): the
//! initiator normally commits a few milliseconds later, and the decision's
//! statement then carries the record (`hot.rs`), so the hot path makes no
//! statement of its own for it. A record no decision took within
//! [`TRY_LINGER`] goes out here as before.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::oneshot;

use crate::machine::{CallStatus, Outcome};
use crate::store::batch::GroupWriter;
use crate::store::progress::{Progress, clamp};
use crate::store::{StoreError, StoreResult};

/// How long a successful Try's record waits for its transaction's decision
/// to carry it before it is written on its own. Long enough for an
/// initiator's next Tries and its Commit under load (p99 of a whole TCC-2
/// is 60-80 ms at full load), short against the 1 s a Commit served by
/// another instance waits for the record (`engine::tcc`). A crash in this
/// window loses the record, as a crash before the relaxed write always
/// could: the Try stays pending and a Commit refuses (a rollback, never a
/// confirm of an unreserved branch).
pub(super) const TRY_LINGER: Duration = Duration::from_millis(100);

/// A Try outcome to record.
pub(super) struct TryWrite {
    pub gid: String,
    pub branch_id: String,
    pub outcome: Outcome,
    /// The branch row is updated only while its phase 2 is this.
    pub expected_second_phase: CallStatus,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub actor: String,
}

/// Successful Try records not yet written, by gid, each with whoever waits
/// for it to be written.
#[derive(Default)]
pub(super) struct HeldTries {
    by_gid: Mutex<HashMap<String, Vec<Held>>>,
    next: AtomicU64,
}

struct Held {
    id: u64,
    write: TryWrite,
    done: oneshot::Sender<StoreResult<()>>,
}

/// Whoever waits for the Try records a statement took over.
#[derive(Default)]
pub(super) struct Taken {
    done: Vec<oneshot::Sender<StoreResult<()>>>,
}

impl Taken {
    /// Tells every waiter how the statement that carried them went.
    pub(super) fn settle(self, result: &StoreResult<impl Sized>) {
        for done in self.done {
            let _ = done.send(match result {
                Ok(_) => Ok(()),
                Err(e) => Err(e.clone()),
            });
        }
    }
}

impl HeldTries {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Vec<Held>>) -> R) -> R {
        f(&mut self.by_gid.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Holds `write` until a decision of its transaction takes it or
    /// [`TRY_LINGER`] passed, then writes it through `writers`; returns once
    /// it is written either way.
    pub(super) async fn record(&self, write: TryWrite, writers: &Writers) -> StoreResult<()> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let gid = write.gid.clone();
        let (done, mut written) = oneshot::channel();
        self.with(|m| {
            m.entry(gid.clone())
                .or_default()
                .push(Held { id, write, done })
        });
        if let Ok(result) = tokio::time::timeout(TRY_LINGER, &mut written).await {
            return result.unwrap_or_else(|_| Err(dropped()));
        }
        let mine = self.with(|m| {
            let held = m.get_mut(&gid)?;
            let at = held.iter().position(|h| h.id == id)?;
            let mine = held.swap_remove(at);
            if held.is_empty() {
                m.remove(&gid);
            }
            Some(mine)
        });
        match mine {
            Some(held) => writers.record_try(held.write).await,
            // A decision took it in the meantime.
            None => written.await.unwrap_or_else(|_| Err(dropped())),
        }
    }

    /// Every record held for `gid`, for a statement that writes them;
    /// settle the [`Taken`] once it ran.
    pub(super) fn take(&self, gid: &str) -> (Vec<TryWrite>, Taken) {
        let held = self.with(|m| m.remove(gid)).unwrap_or_default();
        let mut writes = Vec::with_capacity(held.len());
        let mut taken = Taken::default();
        for h in held {
            writes.push(h.write);
            taken.done.push(h.done);
        }
        (writes, taken)
    }
}

fn dropped() -> StoreError {
    StoreError::Unavailable("try record dropped with its statement".into())
}

/// The batched writers of one store.
pub(super) struct Writers {
    tries: GroupWriter<TryWrite, ()>,
    progress: GroupWriter<Progress, bool>,
}

impl Writers {
    /// Starts the writers on `pool`; needs a Tokio runtime.
    pub(super) fn start(pool: PgPool) -> Self {
        Self {
            tries: GroupWriter::on_pool(
                pool.clone(),
                |t: &TryWrite| (t.gid.clone(), t.branch_id.clone()),
                flush_tries,
            ),
            progress: GroupWriter::on_pool(pool, |p: &Progress| p.gid.clone(), flush_progress),
        }
    }

    pub(super) async fn record_try(&self, t: TryWrite) -> StoreResult<()> {
        self.tries.write(t).await
    }

    /// `false` when the lease was lost (fenced out).
    pub(super) async fn progress(&self, p: Progress) -> StoreResult<bool> {
        self.progress.write(p).await
    }
}

/// Try records as the column arrays the statements `unnest`, in gid and
/// branch order, like every multi-row statement here (see
/// `flush_progress`): a late Try record can meet the phase-2 write of the
/// same branches.
#[derive(Default)]
pub(super) struct TryColumns {
    pub(super) gid: Vec<String>,
    pub(super) branch: Vec<String>,
    pub(super) status: Vec<&'static str>,
    pub(super) code: Vec<Option<String>>,
    pub(super) message: Vec<Option<String>>,
    pub(super) attempt: Vec<i32>,
    pub(super) at: Vec<DateTime<Utc>>,
    pub(super) actor: Vec<String>,
    pub(super) expected: Vec<&'static str>,
}

impl TryColumns {
    pub(super) fn of(mut items: Vec<TryWrite>) -> Self {
        items.sort_by(|a, b| (&a.gid, &a.branch_id).cmp(&(&b.gid, &b.branch_id)));
        let mut c = Self::default();
        for t in items {
            let (code, message) = match &t.outcome {
                Outcome::Succeeded => (None, None),
                other => (
                    Some(other.code().to_string()),
                    Some(other.message().to_string()),
                ),
            };
            c.gid.push(t.gid);
            c.branch.push(t.branch_id);
            c.status.push(t.outcome.call_status().as_str());
            c.expected.push(t.expected_second_phase.as_str());
            c.code.push(code);
            c.message.push(message);
            c.attempt.push(clamp(t.attempt));
            c.at.push(t.at);
            c.actor.push(t.actor);
        }
        c
    }
}

async fn flush_tries(pool: PgPool, items: Vec<TryWrite>) -> StoreResult<Vec<()>> {
    let n = items.len();
    let c = TryColumns::of(items);
    sqlx::query(
        "WITH u AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::int[], $7::timestamptz[], $8::text[], $9::text[])
                AS u(gid, branch_id, status, code, message, attempt, at, actor, expected)
        ), b AS (
            UPDATE branches br
               SET first_phase = u.status, last_code = u.code, last_error = u.message,
                   last_attempt_at = u.at, updated_at = u.at, call_until = NULL
              FROM u
             -- ANY lets the planner use the primary key instead of hashing
             -- the whole table against a batch it cannot size.
             WHERE br.gid = ANY($1) AND br.gid = u.gid AND br.branch_id = u.branch_id
               -- Compare-and-set on phase 2, as the caller asked.
               AND br.second_phase = u.expected
        )
        -- The call is history even when it arrived late.
        INSERT INTO transaction_events (gid, at, kind, branch_id, phase, attempt, code, message, actor)
        SELECT u.gid, u.at, 'call', u.branch_id, 'try', u.attempt, COALESCE(u.code, 'OK'), u.message, u.actor
          FROM u",
    )
    .bind(c.gid)
    .bind(c.branch)
    .bind(c.status)
    .bind(c.code)
    .bind(c.message)
    .bind(c.attempt)
    .bind(c.at)
    .bind(c.actor)
    .bind(c.expected)
    .execute(&pool)
    .await?;
    Ok(vec![(); n])
}

async fn flush_progress(pool: PgPool, mut items: Vec<Progress>) -> StoreResult<Vec<bool>> {
    let n = items.len();
    // Results go back in the callers' order; rows are written in gid order,
    // the order every multi-row statement here locks in, so that two
    // batches (or a batch and the lease renewal) never deadlock.
    let gids: Vec<String> = items.iter().map(|p| p.gid.clone()).collect();
    items.sort_by(|a, b| a.gid.cmp(&b.gid));
    let mut t_gid = Vec::with_capacity(n);
    let mut t_fence = Vec::with_capacity(n);
    let mut t_owner = Vec::with_capacity(n);
    let mut t_status = Vec::with_capacity(n);
    let mut t_decided = Vec::with_capacity(n);
    let mut t_reason = Vec::with_capacity(n);
    let mut t_attempts = Vec::with_capacity(n);
    let mut t_na = Vec::with_capacity(n);
    let mut t_ar = Vec::with_capacity(n);
    let mut t_next = Vec::with_capacity(n);
    let mut t_release = Vec::with_capacity(n);
    let mut t_now = Vec::with_capacity(n);
    let (mut b_gid, mut b_id, mut b_first, mut b_second) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut b_attempts, mut b_code, mut b_error) = (Vec::new(), Vec::new(), Vec::new());
    let (mut e_gid, mut e_kind, mut e_status, mut e_branch) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut e_phase, mut e_attempt, mut e_code, mut e_message) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Usually empty: only a saga turning to compensation copies anything.
    let mut copy = Vec::new();
    for p in items {
        if p.copy_successes {
            copy.push(p.gid.clone());
        }
        for b in p.branches {
            b_gid.push(p.gid.clone());
            b_id.push(b.id);
            b_first.push(b.first);
            b_second.push(b.second);
            b_attempts.push(b.attempts);
            b_code.push(b.code);
            b_error.push(b.error);
        }
        for e in p.events {
            e_gid.push(p.gid.clone());
            e_kind.push(e.kind);
            e_status.push(e.status);
            e_branch.push(e.branch);
            e_phase.push(e.phase);
            e_attempt.push(e.attempt);
            e_code.push(e.code);
            e_message.push(e.message);
        }
        t_gid.push(p.gid);
        t_fence.push(p.fence);
        t_owner.push(p.owner);
        t_status.push(p.status.as_str());
        t_decided.push(p.decided_at);
        t_reason.push(p.reason);
        t_attempts.push(p.attempts);
        t_na.push(p.needs_attention);
        t_ar.push(p.attention_reason);
        t_next.push(p.next_attempt_at);
        t_release.push(p.release);
        t_now.push(p.now);
    }
    let written: Vec<String> = sqlx::query_scalar(
        "WITH t AS (
            SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[],
                                 $6::text[], $7::int[], $8::boolean[], $9::text[], $10::timestamptz[],
                                 $11::boolean[], $12::timestamptz[])
                AS t(gid, fence, owner, status, decided_at, reason, attempts, na, ar, next_at, release, now)
        ), old AS MATERIALIZED (
            -- The flag as it was: a write that changes it makes an alert
            -- (below). Fenced writes are the only ones that move it here.
            -- MATERIALIZED: read once by key; inlined into the alerts'
            -- join, the planner looked each row up with only `gid` on the
            -- (created_at, gid) index, a scan of the whole index per row
            -- that grew with the history (issue 16's growth).
            SELECT gid, needs_attention AS na, status FROM global_transactions WHERE gid = ANY($1)
        ), g AS (
            UPDATE global_transactions g
               SET status = t.status, decided_at = t.decided_at, rollback_reason = t.reason,
                   attempts = t.attempts, needs_attention = t.na, attention_reason = t.ar,
                   next_attempt_at = t.next_at,
                   owner = CASE WHEN t.release THEN NULL ELSE g.owner END,
                   lease_until = CASE WHEN t.release THEN NULL ELSE g.lease_until END,
                   finished_at = CASE WHEN t.next_at IS NULL THEN t.now END,
                   updated_at = t.now
              FROM t
             WHERE g.gid = ANY($1) AND g.gid = t.gid AND g.fence = t.fence AND g.owner = t.owner
            RETURNING g.gid, t.now, t.owner, g.needs_attention AS na, g.attention_reason AS ar,
                      g.status AS st, g.finished_at AS fin
        ), u AS MATERIALIZED (
            -- The branch changes of the rows written, joined before the
            -- update: each one then looks its branch up by key. Joined
            -- inside the update, the planner (which expects one row from
            -- each side) scanned the unnested arrays once per branch of the
            -- batch, quadratic in the batch size, and chose to once the
            -- tables held a million transactions (issue 16's growth).
            SELECT u.*, g.now
              FROM unnest($13::text[], $14::text[], $15::text[], $16::text[], $17::int[], $18::text[], $19::text[])
                       AS u(gid, id, first, second, attempts, code, error)
              JOIN g ON g.gid = u.gid
        ), b AS (
            UPDATE branches br
               SET first_phase = COALESCE(u.first, br.first_phase), second_phase = u.second,
                   attempts = u.attempts, last_code = u.code, last_error = u.error,
                   last_attempt_at = u.now, updated_at = u.now
              FROM u
             WHERE br.gid = u.gid AND br.branch_id = u.id
        ), ev AS (
            INSERT INTO transaction_events (gid, at, kind, status, branch_id, phase, attempt, code, message, actor)
            SELECT e.gid, g.now, e.kind, e.status, e.branch_id, e.phase, e.attempt, e.code, e.message, g.owner
              FROM unnest($20::text[], $21::text[], $22::text[], $23::text[], $24::text[], $25::int[],
                          $26::text[], $27::text[])
                       WITH ORDINALITY AS e(gid, kind, status, branch_id, phase, attempt, code, message, ord)
              JOIN g ON g.gid = e.gid
             ORDER BY e.ord
        ), cp AS (
            -- A saga turning from running to compensation: its successful
            -- actions were left to the branch rows (`history`), which
            -- compensation overwrites; copy them into events first. Every
            -- part of this statement reads the rows as they were before it.
            INSERT INTO transaction_events (gid, at, kind, branch_id, phase, attempt, code)
            SELECT br.gid, br.last_attempt_at, 'call', br.branch_id, 'execute', br.attempts, 'OK'
              FROM branches br
              JOIN g ON g.gid = br.gid
              JOIN old o ON o.gid = br.gid
             WHERE br.gid = ANY($28::text[]) AND o.status = 'running'
               AND br.first_phase = 'succeeded' AND br.last_attempt_at IS NOT NULL
               -- Stored already by a version that wrote every call.
               AND NOT EXISTS (
                   SELECT 1 FROM transaction_events e
                    WHERE e.gid = br.gid AND e.kind = 'call' AND e.branch_id = br.branch_id
                      AND e.phase = 'execute' AND e.code = 'OK')
        ), al AS (
            -- One alert per change of needs_attention, in this same
            -- statement: flagged, or no longer (finished while flagged, or
            -- cleared, as a message's decision does).
            INSERT INTO alerts (gid, kind, reason, created_at, next_at)
            SELECT g.gid,
                   CASE WHEN g.na AND g.fin IS NULL THEN 'needs_attention' ELSE 'attention_cleared' END,
                   CASE WHEN g.na AND g.fin IS NULL THEN g.ar
                        WHEN g.fin IS NOT NULL THEN 'finished: ' || g.st
                        ELSE 'no longer needs attention: ' || g.st END,
                   g.now, g.now
              FROM g JOIN old o ON o.gid = g.gid
             WHERE (g.na AND NOT o.na AND g.fin IS NULL) OR (o.na AND (NOT g.na OR g.fin IS NOT NULL))
        )
        SELECT gid FROM g",
    )
    .bind(t_gid)
    .bind(t_fence)
    .bind(t_owner)
    .bind(t_status)
    .bind(t_decided)
    .bind(t_reason)
    .bind(t_attempts)
    .bind(t_na)
    .bind(t_ar)
    .bind(t_next)
    .bind(t_release)
    .bind(t_now)
    .bind(b_gid)
    .bind(b_id)
    .bind(b_first)
    .bind(b_second)
    .bind(b_attempts)
    .bind(b_code)
    .bind(b_error)
    .bind(e_gid)
    .bind(e_kind)
    .bind(e_status)
    .bind(e_branch)
    .bind(e_phase)
    .bind(e_attempt)
    .bind(e_code)
    .bind(e_message)
    .bind(copy)
    .fetch_all(&pool)
    .await?;
    Ok(gids.iter().map(|g| written.contains(g)).collect())
}
