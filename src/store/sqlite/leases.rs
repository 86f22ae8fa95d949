//! Leases on SQLite: the recovery loop's claim of due work (bumping the
//! fence), renewal and release, matched on owner and fence as on
//! PostgreSQL. One writer runs at a time, so a claim needs no `SKIP
//! LOCKED`: it reads the due rows and takes them in the same transaction.
//! They run on the writer's thread (see `writer`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::events::{Event, Events};
use super::rows::{after, us};
use crate::domain::{BranchId, Gid};
use crate::store::{Claimed, Lease, StoreResult};

fn until(now: DateTime<Utc>, lease: Duration) -> i64 {
    us(after(now, lease))
}

pub(super) fn claim_due(
    c: &Connection,
    owner: &str,
    limit: i64,
    lease: Duration,
    now: DateTime<Utc>,
    ev: &mut Events,
) -> StoreResult<Vec<Claimed>> {
    let due: Vec<(String, Option<String>)> = c
        .prepare_cached(
            "SELECT gid, owner FROM global_transactions
              WHERE next_attempt_at <= ?1 AND NOT paused AND (owner IS NULL OR lease_until < ?1)
              ORDER BY next_attempt_at
              LIMIT ?2",
        )?
        .query_map(params![us(now), limit], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut take = c.prepare_cached(
        "UPDATE global_transactions SET owner = ?2, lease_until = ?3, fence = fence + 1
          WHERE gid = ?1 RETURNING fence",
    )?;
    let mut claimed = Vec::with_capacity(due.len());
    for (gid, previous_owner) in due {
        let fence: i64 = take.query_row(params![gid, owner, until(now, lease)], |r| r.get(0))?;
        // A lapsed lease taken over is history: the rows do not keep who
        // drove a transaction (see `store::history`).
        if let Some(previous) = &previous_owner {
            ev.push(Event {
                message: Some(format!("lease of {previous} lapsed")),
                ..Event::new(&gid, now, "taken_over", owner)
            });
        }
        claimed.push(Claimed {
            lease: Lease {
                gid: Gid::from_trusted(gid),
                fence,
            },
            previous_owner,
        });
    }
    Ok(claimed)
}

/// As on PostgreSQL; read on a reader connection, with this host's clock
/// (the one the writer stamps leases with).
pub(super) async fn next_due(
    readers: &sqlx::SqlitePool,
    horizon: Duration,
) -> StoreResult<Option<Duration>> {
    let now = Utc::now();
    let earliest: Option<i64> = sqlx::query_scalar(
        "SELECT min(CASE WHEN owner IS NULL THEN next_attempt_at
                         ELSE max(next_attempt_at, COALESCE(lease_until, 0)) END)
           FROM global_transactions
          WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ?1 AND NOT paused",
    )
    .bind(us(after(now, horizon)))
    .fetch_one(readers)
    .await?;
    Ok(earliest.map(|at| Duration::from_micros(at.saturating_sub(us(now)).max(0) as u64)))
}

/// Extends a lease to `until` unless it is longer already (a call may be
/// out under it); `false` if it is no longer `owner`'s at `fence`.
fn lengthen(c: &Connection, owner: &str, lease: &Lease, until: i64) -> StoreResult<bool> {
    let n = c
        .prepare_cached(
            "UPDATE global_transactions SET lease_until = max(COALESCE(lease_until, 0), ?4)
              WHERE gid = ?1 AND fence = ?2 AND owner = ?3",
        )?
        .execute(params![lease.gid.as_str(), lease.fence, owner, until])?;
    Ok(n == 1)
}

pub(super) fn renew(
    c: &Connection,
    owner: &str,
    leases: &[Lease],
    lease: Duration,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Gid>> {
    let mut renewed = Vec::with_capacity(leases.len());
    for l in leases {
        if lengthen(c, owner, l, until(now, lease))? {
            renewed.push(l.gid.clone());
        }
    }
    Ok(renewed)
}

/// Extends one held lease to at least `cover` from now; `false` if it is
/// no longer this owner's.
pub(super) fn extend(
    c: &Connection,
    owner: &str,
    lease: &Lease,
    cover: Duration,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    lengthen(c, owner, lease, until(now, cover))
}

/// Marks a repeated Try of an existing branch as out for `cover`, unless
/// one still is; as on PostgreSQL, only while the transaction is trying,
/// and bumping its branch counter so that a decision that read the branch
/// before the mark reads again.
pub(super) fn claim_try_call(
    c: &Connection,
    gid: &Gid,
    branch_id: &BranchId,
    cover: Duration,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let trying = c
        .prepare_cached(
            "UPDATE global_transactions SET branch_seq = branch_seq + 1
              WHERE gid = ?1 AND status = 'trying'",
        )?
        .execute(params![gid.as_str()])?
        == 1;
    if !trying {
        return Ok(false);
    }
    let n = c
        .prepare_cached(
            "UPDATE branches SET call_until = ?3
              WHERE gid = ?1 AND branch_id = ?2 AND (call_until IS NULL OR call_until < ?4)",
        )?
        .execute(params![
            gid.as_str(),
            branch_id.as_str(),
            until(now, cover),
            us(now)
        ])?;
    Ok(n == 1)
}

pub(super) fn release(c: &Connection, owner: &str, leases: &[Lease]) -> StoreResult<u64> {
    let mut free = c.prepare_cached(
        "UPDATE global_transactions SET owner = NULL, lease_until = NULL
          WHERE gid = ?1 AND fence = ?2 AND owner = ?3",
    )?;
    let mut released = 0;
    for l in leases {
        released += free.execute(params![l.gid.as_str(), l.fence, owner])? as u64;
    }
    Ok(released)
}
