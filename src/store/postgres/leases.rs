//! Leases: the recovery loop's claim of due work (`FOR UPDATE SKIP LOCKED`,
//! bumping the fence), renewal of held leases and their release. Renewal
//! and release match on owner and fence, so a lease taken over elsewhere
//! is neither extended nor given back by its old owner.

use std::time::Duration;

use sqlx::PgPool;

use super::super::rows::ms;
use super::PgStore;
use crate::clock::Countdown;
use crate::domain::{BranchId, Gid};
use crate::store::{Claimed, Lease, StoreResult};

/// Leases as two parallel arrays, the shape `unnest` wants.
/// Sorted by gid: multi-row statements lock in gid order, so they never
/// deadlock with each other.
fn lease_arrays(leases: &[Lease]) -> (Vec<String>, Vec<i64>) {
    let mut pairs: Vec<(String, i64)> = leases
        .iter()
        .map(|l| (l.gid.as_str().to_string(), l.fence))
        .collect();
    pairs.sort();
    pairs.into_iter().unzip()
}

/// One lease to extend (`PgStore::extend_lease`).
pub(super) struct Extension {
    pub(super) gid: String,
    pub(super) fence: i64,
    pub(super) owner: String,
    pub(super) cover: Countdown,
}

/// Extends a batch of leases, each only while its owner and fence match;
/// true for each one extended. Never shortens a lease.
pub(super) async fn flush_extensions(
    pool: PgPool,
    mut items: Vec<Extension>,
) -> StoreResult<Vec<bool>> {
    let order: Vec<String> = items.iter().map(|e| e.gid.clone()).collect();
    // Locked in gid order, like every multi-row statement of the store.
    items.sort_by(|a, b| a.gid.cmp(&b.gid));
    let mut gid = Vec::with_capacity(items.len());
    let mut fence = Vec::with_capacity(items.len());
    let mut owner = Vec::with_capacity(items.len());
    let mut cover = Vec::with_capacity(items.len());
    for e in items {
        gid.push(e.gid);
        fence.push(e.fence);
        owner.push(e.owner);
        // What is left when the statement goes out, not what was asked
        // before the batch formed (see `Countdown`).
        cover.push(ms(e.cover.left()));
    }
    let extended: Vec<String> = sqlx::query_scalar(
        "UPDATE global_transactions g
            SET lease_until = GREATEST(g.lease_until, now() + l.cover_ms * interval '1 millisecond')
           FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) AS l(gid, fence, owner, cover_ms)
          -- The ANY makes the planner look the rows up by key.
          WHERE g.gid = ANY($1) AND g.gid = l.gid AND g.fence = l.fence AND g.owner = l.owner
         RETURNING g.gid",
    )
    .bind(gid)
    .bind(fence)
    .bind(owner)
    .bind(cover)
    .fetch_all(&pool)
    .await?;
    Ok(order.iter().map(|g| extended.contains(g)).collect())
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    gid: String,
    fence: i64,
    previous_owner: Option<String>,
}

impl PgStore {
    pub(super) async fn claim_due(
        &self,
        owner: &str,
        limit: i64,
        lease: Duration,
    ) -> StoreResult<Vec<Claimed>> {
        let rows: Vec<ClaimRow> = sqlx::query_as(
            "WITH due AS (
                SELECT gid, owner AS previous_owner
                  FROM global_transactions
                 WHERE next_attempt_at <= now() AND NOT paused
                   AND (owner IS NULL OR lease_until < now())
                 ORDER BY next_attempt_at
                 LIMIT $2
                   FOR UPDATE SKIP LOCKED
            ), g AS (
                UPDATE global_transactions g
                   SET owner = $1, lease_until = now() + $3 * interval '1 millisecond', fence = g.fence + 1
                  FROM due
                 WHERE g.gid = due.gid
                RETURNING g.gid, g.fence, due.previous_owner
            ), ev AS (
                -- A lapsed lease taken over is history: the rows do not
                -- keep who drove a transaction (see `store::history`).
                INSERT INTO transaction_events (gid, at, kind, message, actor)
                SELECT gid, now(), 'taken_over', 'lease of ' || previous_owner || ' lapsed', $1
                  FROM g WHERE previous_owner IS NOT NULL
            )
            SELECT gid, fence, previous_owner FROM g",
        )
        .bind(owner)
        .bind(limit)
        .bind(ms(lease))
        .fetch_all(&self.durable)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Claimed {
                lease: Lease {
                    gid: Gid::from_trusted(r.gid),
                    fence: r.fence,
                },
                previous_owner: r.previous_owner,
            })
            .collect())
    }

    pub(super) async fn next_due(&self, horizon: Duration) -> StoreResult<Option<Duration>> {
        // Only rows whose retry time comes within the horizon: a range of
        // the `global_transactions_due` index, which holds unfinished work
        // only, so this stays cheap however many transactions wait further
        // out (flagged ones on a long back-off, say).
        let due_in_us: Option<i64> = sqlx::query_scalar(
            "SELECT (EXTRACT(EPOCH FROM min(CASE WHEN owner IS NULL THEN next_attempt_at
                                                 ELSE GREATEST(next_attempt_at, lease_until) END)
                                     - now()) * 1000000)::bigint
               FROM global_transactions
              WHERE next_attempt_at IS NOT NULL
                AND next_attempt_at <= now() + $1 * interval '1 millisecond'
                AND NOT paused",
        )
        .bind(ms(horizon))
        .fetch_one(&self.durable)
        .await?;
        Ok(due_in_us.map(|us| Duration::from_micros(us.max(0) as u64)))
    }

    pub(super) async fn renew(
        &self,
        owner: &str,
        leases: &[Lease],
        lease: Duration,
    ) -> StoreResult<Vec<Gid>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let (gids, fences) = lease_arrays(leases);
        let renewed: Vec<String> = sqlx::query_scalar(
            "UPDATE global_transactions g
                SET lease_until = GREATEST(lease_until, now() + $4 * interval '1 millisecond')
               FROM unnest($2::text[], $3::bigint[]) AS l(gid, fence)
              -- The ANY makes the planner look the rows up by key instead
              -- of hashing the whole table against the array.
              WHERE g.gid = ANY($2) AND g.gid = l.gid AND g.fence = l.fence AND g.owner = $1
             RETURNING g.gid",
        )
        .bind(owner)
        .bind(gids)
        .bind(fences)
        .bind(ms(lease))
        .fetch_all(&self.durable)
        .await?;
        Ok(renewed.into_iter().map(Gid::from_trusted).collect())
    }

    /// Through the batch of [`flush_extensions`]: a saga's later step
    /// (and any call its lease would not cover) extends the lease durably
    /// before it is sent, which under load was a statement for a good part
    /// of all sagas.
    pub(super) async fn extend_lease(
        &self,
        owner: &str,
        lease: &Lease,
        cover: Countdown,
    ) -> StoreResult<bool> {
        self.hot
            .extend_lease(Extension {
                gid: lease.gid.as_str().to_string(),
                fence: lease.fence,
                owner: owner.to_string(),
                cover,
            })
            .await
    }

    pub(super) async fn claim_try_call(
        &self,
        gid: &Gid,
        branch_id: &BranchId,
        cover: Countdown,
    ) -> StoreResult<bool> {
        // Only while the transaction is trying, and bumping its branch
        // counter like a branch insert does: a decision that read the
        // branch before this mark fails its compare-and-set and reads again,
        // so it sees that a Try is out.
        let done = sqlx::query(
            "WITH g AS (
                UPDATE global_transactions
                   SET branch_seq = branch_seq + 1
                 WHERE gid = $1 AND status = 'trying'
                RETURNING gid
            )
            UPDATE branches b
               SET call_until = now() + $3 * interval '1 millisecond'
              FROM g
             WHERE b.gid = g.gid AND b.branch_id = $2
               AND (b.call_until IS NULL OR b.call_until < now())",
        )
        .bind(gid.as_str())
        .bind(branch_id.as_str())
        .bind(ms(cover.left()))
        .execute(&self.durable)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn release(&self, owner: &str, leases: &[Lease]) -> StoreResult<u64> {
        if leases.is_empty() {
            return Ok(0);
        }
        let (gids, fences) = lease_arrays(leases);
        let done = sqlx::query(
            "UPDATE global_transactions g
                SET owner = NULL, lease_until = NULL
               FROM unnest($2::text[], $3::bigint[]) AS l(gid, fence)
              -- The ANY makes the planner look the rows up by key instead
              -- of hashing the whole table against the array.
              WHERE g.gid = ANY($2) AND g.gid = l.gid AND g.fence = l.fence AND g.owner = $1",
        )
        .bind(owner)
        .bind(gids)
        .bind(fences)
        .execute(&self.durable)
        .await?;
        Ok(done.rows_affected())
    }
}
