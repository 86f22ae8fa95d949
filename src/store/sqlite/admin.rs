//! The operator (admin) queries on SQLite: filtered, paginated listing,
//! detail, summary counts, and the writes of operator commands (each a
//! compare-and-set on what the operator rules saw, with its event, in the
//! writer's transaction). Lists of values travel as JSON arrays and are
//! read with `json_each`, SQLite's stand-in for PostgreSQL's arrays.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use sqlx::{AssertSqlSafe, SqlitePool};

use super::rows::{TxRow, at, us};
use crate::domain::Gid;
use crate::machine::Status;
use crate::store::admin::{
    AdminChange, AdminStats, AdminTx, AdminWrite, FinishedInMinute, ListCursor, Resolution,
    TxFilter, stored_as,
};
use crate::store::{BranchRecord, StoreResult};

/// Statuses after which nothing happens, as a JSON array.
fn final_statuses() -> String {
    let finals: Vec<&str> = Status::ALL
        .into_iter()
        .filter(|s| s.is_final())
        .map(Status::as_str)
        .collect();
    serde_json::to_string(&finals).unwrap_or_else(|_| "[]".into())
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Columns added to `g.*` by every admin read.
const AGGREGATES: &str = "(SELECT count(*) FROM branches b WHERE b.gid = g.gid) AS branch_count,
    (SELECT json_group_array(participant) FROM
        (SELECT DISTINCT b.participant FROM branches b WHERE b.gid = g.gid ORDER BY b.participant))
        AS participant_names";

#[derive(sqlx::FromRow)]
struct AdminRow {
    #[sqlx(flatten)]
    tx: TxRow,
    resolved_at: Option<i64>,
    resolved_by: Option<String>,
    resolution_note: Option<String>,
    branch_count: i64,
    #[sqlx(json)]
    participant_names: Vec<String>,
}

impl From<AdminRow> for AdminTx {
    fn from(r: AdminRow) -> Self {
        AdminTx {
            tx: r.tx.into(),
            resolution: r.resolved_at.map(|t| Resolution {
                at: at(t),
                by: r.resolved_by.unwrap_or_default(),
                note: r.resolution_note.unwrap_or_default(),
            }),
            branch_count: u32::try_from(r.branch_count).unwrap_or(u32::MAX),
            participants: r.participant_names,
        }
    }
}

#[derive(sqlx::FromRow)]
struct Totals {
    total: i64,
    unfinished: i64,
    retry_backlog: i64,
    retry_due: i64,
    needs_attention: i64,
    paused: i64,
    resolved: i64,
}

pub(super) async fn list(
    pool: &SqlitePool,
    filter: &TxFilter,
) -> StoreResult<(Vec<AdminTx>, Option<ListCursor>)> {
    let (cmp, order) = if filter.oldest_first {
        (">", "ASC")
    } else {
        ("<", "DESC")
    };
    let sql = format!(
        "SELECT g.*, {AGGREGATES}
           FROM global_transactions g
          WHERE (json_array_length(?1) = 0 OR g.status IN (SELECT value FROM json_each(?1)))
            AND (?2 IS NULL OR g.mode = ?2)
            AND (?3 IS NULL OR EXISTS
                    (SELECT 1 FROM branches b WHERE b.gid = g.gid AND b.participant = ?3))
            AND (?4 IS NULL OR g.created_at < ?4)
            AND (?5 IS NULL OR g.created_at > ?5)
            AND (?6 IS NULL OR g.updated_at < ?6)
            AND (NOT ?7 OR (g.needs_attention AND g.resolved_at IS NULL
                              AND g.status NOT IN (SELECT value FROM json_each(?13))))
            AND (?8 IS NULL OR (g.created_at < ?8 AND g.resolved_at IS NULL
                                AND g.status NOT IN (SELECT value FROM json_each(?13))))
            AND (?9 IS NULL OR substr(g.gid, 1, length(?9)) = ?9)
            AND (?10 IS NULL OR (g.created_at, g.gid) {cmp} (?10, ?11))
          ORDER BY g.created_at {order}, g.gid {order}
          LIMIT ?12"
    );
    let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
    let limit = i64::from(filter.limit.max(1));
    let rows: Vec<AdminRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(serde_json::to_string(&statuses).unwrap_or_else(|_| "[]".into()))
        .bind(filter.mode.map(|m| m.as_str()))
        .bind(filter.participant.as_deref())
        .bind(filter.created_before.map(us))
        .bind(filter.created_after.map(us))
        .bind(filter.updated_before.map(us))
        .bind(filter.needs_attention)
        .bind(filter.stuck_since.map(us))
        .bind(filter.gid_prefix.as_deref())
        .bind(filter.after.as_ref().map(|c| us(c.created_at)))
        .bind(filter.after.as_ref().map(|c| c.gid.as_str()))
        .bind(limit + 1)
        .bind(final_statuses())
        .fetch_all(pool)
        .await?;
    let mut page: Vec<AdminTx> = rows.into_iter().map(AdminTx::from).collect();
    let next = if page.len() as i64 > limit {
        page.truncate(limit as usize);
        page.last().map(|last| ListCursor {
            created_at: last.tx.created_at,
            gid: last.tx.gid.to_string(),
        })
    } else {
        None
    };
    Ok((page, next))
}

pub(super) async fn get(
    pool: &SqlitePool,
    gid: &Gid,
) -> StoreResult<Option<(AdminTx, Vec<BranchRecord>)>> {
    let sql = format!("SELECT g.*, {AGGREGATES} FROM global_transactions g WHERE g.gid = ?");
    let mut conn = pool.acquire().await?;
    let row: Option<AdminRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(gid.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some((
        row.into(),
        super::branches_of(&mut conn, gid).await?,
    )))
}

pub(super) async fn stats(pool: &SqlitePool, now: DateTime<Utc>) -> StoreResult<AdminStats> {
    let finals = final_statuses();
    let rows: Vec<(Status, i64)> =
        sqlx::query_as("SELECT status, count(*) AS n FROM global_transactions GROUP BY status")
            .fetch_all(pool)
            .await?;
    let mut by_status: Vec<(Status, u64)> = Status::ALL.into_iter().map(|s| (s, 0)).collect();
    for (status, n) in rows {
        if let Some(slot) = by_status.iter_mut().find(|(s, _)| *s == status) {
            slot.1 = count(n);
        }
    }
    let t: Totals = sqlx::query_as(
        "SELECT count(*) AS total,
                count(*) FILTER (WHERE open) AS unfinished,
                count(*) FILTER (WHERE open AND decided_at IS NOT NULL AND attempts > 0
                                   AND next_attempt_at IS NOT NULL) AS retry_backlog,
                count(*) FILTER (WHERE open AND decided_at IS NOT NULL AND attempts > 0
                                   AND NOT paused AND next_attempt_at <= ?2) AS retry_due,
                count(*) FILTER (WHERE open AND needs_attention) AS needs_attention,
                count(*) FILTER (WHERE open AND paused) AS paused,
                count(*) FILTER (WHERE resolved_at IS NOT NULL) AS resolved
           FROM (SELECT g.*, (g.status NOT IN (SELECT value FROM json_each(?1))
                              AND g.resolved_at IS NULL) AS open
                   FROM global_transactions g)",
    )
    .bind(&finals)
    .bind(us(now))
    .fetch_one(pool)
    .await?;
    let sql = format!(
        "SELECT g.*, {AGGREGATES} FROM global_transactions g
          WHERE g.status NOT IN (SELECT value FROM json_each(?1)) AND g.resolved_at IS NULL
          ORDER BY g.created_at, g.gid LIMIT 1"
    );
    let oldest: Option<AdminRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(&finals)
        .fetch_optional(pool)
        .await?;
    Ok(AdminStats {
        by_status,
        total: count(t.total),
        unfinished: count(t.unfinished),
        retry_backlog: count(t.retry_backlog),
        retry_due: count(t.retry_due),
        needs_attention: count(t.needs_attention),
        paused: count(t.paused),
        resolved: count(t.resolved),
        oldest_unfinished: oldest.map(AdminTx::from),
    })
}

/// Finished (and failed: cancelled or compensated) transactions per minute
/// since the minute of `since`, on the retention index's expression.
pub(super) async fn finished_per_minute(
    pool: &SqlitePool,
    since: DateTime<Utc>,
) -> StoreResult<Vec<FinishedInMinute>> {
    const MINUTE: i64 = 60_000_000;
    let failed: Vec<&str> = [Status::Cancelled, Status::Compensated]
        .iter()
        .map(|s| s.as_str())
        .collect();
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT (finished_at / ?2) * ?2 AS minute, count(*) AS finished,
                count(*) FILTER (WHERE status IN (SELECT value FROM json_each(?3))) AS failed
           FROM global_transactions
          WHERE (finished_at IS NOT NULL OR resolved_at IS NOT NULL)
            AND COALESCE(finished_at, resolved_at) >= ?1
            AND finished_at IS NOT NULL
          GROUP BY 1 ORDER BY 1",
    )
    .bind(us(since).div_euclid(MINUTE) * MINUTE)
    .bind(MINUTE)
    .bind(serde_json::to_string(&failed).unwrap_or_else(|_| "[]".into()))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(minute, finished, failed)| FinishedInMinute {
            minute: at(minute),
            finished: count(finished),
            failed: count(failed),
        })
        .collect())
}

/// Applies an operator write if the row is still as expected, with its
/// event; `false` if the row moved on.
pub(super) fn apply(c: &Connection, w: &AdminWrite, clock: DateTime<Utc>) -> StoreResult<bool> {
    if let AdminChange::SkipBranch { .. } = &w.change {
        return skip_branch(c, w, clock);
    }
    let set = match &w.change {
        AdminChange::SkipBranch { .. } => unreachable!("written above"),
        // Never schedule past the clock that decides what is due; plus the
        // margin every retry waits after a call that timed out
        // (`CALL_MARGIN`, 250 ms in microseconds).
        AdminChange::RetryAt(_) | AdminChange::RetryBranchAt { .. } => {
            "next_attempt_at = min(?6, ?8) + 250000"
        }
        AdminChange::SetPaused(_) => "paused = ?6",
        AdminChange::Resolve { .. } => {
            "resolved_at = ?5, resolved_by = ?7, resolution_note = ?6,
             needs_attention = 0, next_attempt_at = NULL,
             owner = NULL, lease_until = NULL, fence = fence + 1"
        }
    };
    let sql = format!(
        "UPDATE global_transactions
            SET {set}, updated_at = ?5
          WHERE gid = ?1 AND status = ?2 AND paused = ?3 AND needs_attention = ?4
            AND resolved_at IS NULL
         RETURNING status"
    );
    let change: Box<dyn rusqlite::ToSql> = match &w.change {
        AdminChange::RetryAt(t) | AdminChange::RetryBranchAt { at: t, .. } => Box::new(us(*t)),
        AdminChange::SetPaused(p) => Box::new(*p),
        AdminChange::Resolve { note } => Box::new(note.clone()),
        AdminChange::SkipBranch { .. } => unreachable!("written above"),
    };
    let (gid, now, clock) = (w.gid.as_str(), us(w.now), us(clock));
    let all: [&dyn rusqlite::ToSql; 8] = [
        &gid,
        &w.expected_status.as_str(),
        &w.expected_paused,
        &w.expected_needs_attention,
        &now,
        &change,
        &w.actor,
        &clock,
    ];
    // Each change uses a prefix of these (up to its highest `?N`), and
    // SQLite takes exactly as many as the statement has.
    let mut update = c.prepare_cached(&sql)?;
    let used = update.parameter_count().min(all.len());
    let status: Option<String> = update.query_row(&all[..used], |r| r.get(0)).optional()?;
    drop(update);
    let Some(status) = status else {
        return Ok(false);
    };
    c.prepare_cached(
        "INSERT INTO transaction_events (gid, at, kind, status, branch_id, message, actor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        w.gid.as_str(),
        us(w.now),
        w.event,
        status,
        w.change.branch().map(|b| b.as_str()),
        w.note.as_deref(),
        w.actor,
    ])?;
    // Resolving clears the flag: the alert webhooks say so, once.
    if let AdminChange::Resolve { note } = &w.change {
        let reason = format!("resolved by hand by {}: {note}", w.actor);
        super::alerts::insert(c, w.gid.as_str(), "attention_cleared", Some(&reason), w.now)?;
    }
    Ok(true)
}

/// [`AdminChange::SkipBranch`]: the transaction (compare-and-set, fenced,
/// finished or made due) only if the branch is as the rules saw it, then
/// the branch's skip and the events, in the writer's transaction.
fn skip_branch(c: &Connection, w: &AdminWrite, clock: DateTime<Utc>) -> StoreResult<bool> {
    let AdminChange::SkipBranch {
        branch_id,
        phase,
        expected,
        attempts,
        note,
        finishes,
    } = &w.change
    else {
        return Ok(false);
    };
    let expected = serde_json::to_string(&stored_as(*expected)).unwrap_or_else(|_| "[]".into());
    let updated: Option<String> = c
        .prepare_cached(
            "UPDATE global_transactions
            SET updated_at = ?5, fence = fence + 1,
                status = COALESCE(?9, status),
                finished_at = CASE WHEN ?9 IS NULL THEN finished_at ELSE ?5 END,
                next_attempt_at = CASE WHEN ?9 IS NULL
                                       -- + CALL_MARGIN, as every retry
                                       THEN min(COALESCE(next_attempt_at, ?10), ?10) + 250000 END
          WHERE gid = ?1 AND status = ?2 AND paused = ?3 AND needs_attention = ?4
            AND resolved_at IS NULL
            AND EXISTS (SELECT 1 FROM branches b
                         WHERE b.gid = ?1 AND b.branch_id = ?6 AND b.skipped_at IS NULL
                           AND b.second_phase IN (SELECT value FROM json_each(?7))
                           AND b.attempts = ?8)
         RETURNING status",
        )?
        .query_row(
            params![
                w.gid.as_str(),
                w.expected_status.as_str(),
                w.expected_paused,
                w.expected_needs_attention,
                us(w.now),
                branch_id.as_str(),
                expected,
                i64::from(*attempts),
                finishes.map(|s| s.as_str()),
                us(clock),
            ],
            |r| r.get(0),
        )
        .optional()?;
    let Some(status) = updated else {
        return Ok(false);
    };
    c.prepare_cached(
        "UPDATE branches SET skipped_at = ?3, skipped_by = ?4, skip_note = ?5, updated_at = ?3
          WHERE gid = ?1 AND branch_id = ?2",
    )?
    .execute(params![
        w.gid.as_str(),
        branch_id.as_str(),
        us(w.now),
        w.actor,
        note
    ])?;
    c.prepare_cached(
        "INSERT INTO transaction_events (gid, at, kind, status, branch_id, phase, message, actor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        w.gid.as_str(),
        us(w.now),
        w.event,
        w.expected_status.as_str(),
        branch_id.as_str(),
        phase.as_str(),
        note,
        w.actor,
    ])?;
    if finishes.is_some() {
        c.prepare_cached(
            "INSERT INTO transaction_events (gid, at, kind, status, message, actor)
             VALUES (?1, ?2, 'finished', ?3, 'every branch is done or skipped', ?4)",
        )?
        .execute(params![w.gid.as_str(), us(w.now), status, w.actor])?;
    }
    if let Some(finished) = finishes.filter(|_| w.expected_needs_attention) {
        let reason = format!(
            "finished: {} (branch {branch_id} skipped by {})",
            finished.as_str(),
            w.actor
        );
        super::alerts::insert(c, w.gid.as_str(), "attention_cleared", Some(&reason), w.now)?;
    }
    Ok(true)
}

/// Appends an operator event for an action carried out elsewhere.
pub(super) fn event(
    c: &Connection,
    gid: &Gid,
    kind: &str,
    message: Option<&str>,
    actor: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT INTO transaction_events (gid, at, kind, status, message, actor)
         SELECT gid, ?3, ?2, status, ?4, ?5 FROM global_transactions WHERE gid = ?1",
    )?
    .execute(params![gid.as_str(), kind, us(now), message, actor])?;
    Ok(())
}

// The retry SQL above spells the margin out; keep them equal.
const _: () = assert!(crate::clock::CALL_MARGIN.as_millis() == 250);
